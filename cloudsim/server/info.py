"""The fields of ``cloud.info``: PiCloud's names, computed from a job record.

Grouped fields come back as dotted keys, as the original's did
(``memory`` gives ``memory.max_usage`` and ``memory.failcnt``), and each
dotted key can be asked for directly.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Sequence

from cloudsim.server.scheduler import PROCESSING, QUEUED, WAITING, Job

DEFAULT_FIELDS = ("stdout", "stderr", "status", "runtime")


def _dt(ts: Any) -> Any:
    return None if ts is None else datetime.datetime.fromtimestamp(ts)


def _runtime(job: Job, now: float) -> float:
    if job.status == PROCESSING and job.started is not None:
        return max(0.0, now - job.started)
    return float(job.runtime or 0.0)


def _output(name: str) -> Callable[[Job, float], Any]:
    def get(job: Job, now: float) -> Any:
        if job.status in (QUEUED, WAITING, PROCESSING):
            return None
        return getattr(job, name) or ""
    return get


_FIELDS: Dict[str, Callable[[Job, float], Any]] = {
    "status": lambda j, n: j.status,
    "stdout": _output("stdout"),
    "stderr": _output("stderr"),
    "exception": lambda j, n: j.exception,
    "runtime": _runtime,
    "created": lambda j, n: _dt(j.created),
    "finished": lambda j, n: _dt(j.finished_at),
    "started": lambda j, n: _dt(j.started),
    "label": lambda j, n: j.label,
    "priority": lambda j, n: j.priority,
    "function": lambda j, n: j.opts.get("function"),
    "depends_on": lambda j, n: list(j.depends_on),
    "depends_on_errors": lambda j, n: j.depends_on_errors,
    "parent": lambda j, n: j.parent,
    "type": lambda j, n: j.opts.get("type", "c1"),
    "cores": lambda j, n: j.opts.get("cores", 1),
    "env": lambda j, n: j.opts.get("env_name"),
    "vol": lambda j, n: list(j.opts.get("vol", ())),
    "profile": lambda j, n: j.opts.get("profile", False),
    "restartable": lambda j, n: j.opts.get("restartable", True),
    "kill_process": lambda j, n: bool(j.opts.get("kill_process")),
    "max_runtime": lambda j, n: (j.opts.get("max_runtime") or 0) / 60.0 or None,
    "fast_serialization": lambda j, n: j.opts.get("fast_serialization", 0),
    "memory.max_usage": lambda j, n: j.max_rss,
    "memory.failcnt": lambda j, n: 0 if j.max_rss is not None else None,
    "cputime.user": lambda j, n: j.cpu_user,
    "cputime.system": lambda j, n: j.cpu_system,
    "exc_type": lambda j, n: j.exc_type,
    "import_order_seed": lambda j, n: j.opts.get("import_order_seed"),
    "pitfalls": lambda j, n: [dict(p) for p in j.pitfalls],
}
_GROUPS = {
    "memory": ("memory.max_usage", "memory.failcnt"),
    "cputime": ("cputime.user", "cputime.system"),
}
FIELD_NAMES = tuple(_FIELDS) + tuple(_GROUPS) + ("all",)


def expand(fields: Sequence[str]) -> List[str]:
    """Resolve groups and ``all`` into field names; unknown names are a ValueError naming the valid ones."""
    out: List[str] = []
    for name in fields:
        if name == "all":
            out.extend(_FIELDS)
        elif name in _GROUPS:
            out.extend(_GROUPS[name])
        elif name in _FIELDS:
            out.append(name)
        else:
            import difflib

            close = difflib.get_close_matches(name, FIELD_NAMES, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"Unknown info field {name!r}{hint}. Valid fields: {', '.join(FIELD_NAMES)}.")
    return out


def job_info(job: Job, fields: Sequence[str], now: float) -> Dict[str, Any]:
    return {name: _FIELDS[name](job, now) for name in expand(fields)}
