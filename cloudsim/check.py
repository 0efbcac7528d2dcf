"""``cloudsim.check``: run one call the way the cloud would, and report every pitfall found.

Code that works on a laptop can break on the cloud in ways a single run does
not show: a job that depends on what an earlier job left in its interpreter,
or on something only the client had. ``check`` runs the call three times
through the simulator and compares::

    run 1  cloud.call(func, ...)                      ─► result, info(jid, ['pitfalls'])
    run 2  cloud.call(func, ..., _kill_process=True)  ─► the interpreter of run 1, which retires after it
    run 3  cloud.call(func, ...)                      ─► another interpreter
                      │
                      └─► CheckReport: each run's outcome, every pitfall record, and a
                          persistent-interpreter finding when the outcomes disagree

Each run is serialized and shipped as any job is, so what bites at call time
(``unpicklable``, ``transmit-size``) is a finding too, not an exception.

It uses only the public API. With no simulator running it starts one and
closes it afterwards; its collection hides pitfall warnings and
``PitfallError`` and reads each job's records with ``cloud.info(jid,
['pitfalls'])``, so it gathers rather than raises. The simulator it starts
has ``pitfalls='warn'``, not ``'ignore'``: the job-side checks (module
globals, leaked threads, ...) skip work for ids the policy ignores, so an
'ignore' simulator would find less; for the same reason a running simulator
whose policy ignores an id hides that id from the check too. Placement of the
runs: the simulator gives a job to the interpreter that became idle last, so
run 2 lands where run 1 ran unless other jobs of the client run at the same
time (the report cannot see pids).

Not for: running the function locally, or inside a job (it raises there).
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

import cloudsim
from cloudsim import pitfalls as _pitfalls
from cloudsim.errors import CloudException, PitfallError, TransmitSizeError

__all__ = ["check", "CheckReport", "CheckRun"]

log = logging.getLogger(__name__)

# Jobs started by check() in this process: the pytest plugin leaves their pitfalls
# (and their children's) to the check's report instead of failing the test with them.
_CHECK_JIDS: Set[int] = set()
_LOCK = threading.Lock()

# "(pitfall: sys-exit)" or "[pitfall: sys-exit]" in an error text
_PITFALL_MARK = re.compile(r"[(\[]pitfall: ([a-z][a-z-]*)[)\]]")

_JOB_NUMBER = re.compile(r"\b[Jj]ob \d+")

_INTERPRETERS = {1: "an interpreter", 2: "the interpreter of run 1", 3: "another interpreter"}


@dataclass
class CheckRun:
    """One run of the checked call.

    Attributes:
        run: 1, 2 or 3.
        interpreter: where it ran, e.g. ``'the interpreter of run 1'``.
        jid: the job's id, or None when it was not sent.
        status: the job's final status (``'done'``, ``'error'``, ...) or ``'not sent'``.
        value: the return value when ``status == 'done'``.
        error: the error text otherwise (the remote traceback, or why it was not sent).
        exc_type: the class name of the error, e.g. ``'ZeroDivisionError'``.
        pitfalls: the pitfall records of this run (dicts with ``id`` and ``message``).
    """

    run: int
    interpreter: str
    jid: Optional[int] = None
    status: str = "not sent"
    value: Any = None
    error: Optional[str] = None
    exc_type: Optional[str] = None
    pitfalls: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def outcome(self) -> str:
        """One line: the value or the error, e.g. ``'done: 6'`` or ``'error: ZeroDivisionError'``."""
        if self.ok:
            text = repr(self.value)
            return "done: " + (text if len(text) <= 200 else text[:197] + "...")
        headline = _headline(self.error or "")
        return f"{self.status}: {self.exc_type or 'error'}" + (f" ({headline[:160]})" if headline else "")


class CheckReport:
    """What :func:`check` found: the three runs, every pitfall, and whether they agree.

    Attributes:
        function: the checked call, e.g. ``'mymod.work(3)'``.
        runs: the :class:`CheckRun` of each run.
        pitfalls: every pitfall record found, each with ``run`` (1 to 3, or None for a
            comparison of runs) and ``jid`` added.
    """

    def __init__(self, function: str, runs: List[CheckRun], pitfalls: List[Dict[str, Any]]) -> None:
        self.function = function
        self.runs = runs
        self.pitfalls = pitfalls

    @property
    def ok(self) -> bool:
        """True when every run finished ``done``, their results agree, and no pitfall was found."""
        return not self.pitfalls and all(run.ok for run in self.runs)

    @property
    def results(self) -> List[Any]:
        """The return value of each run; a failed run gives its :class:`CloudException`, as
        ``cloud.result(..., ignore_errors=True)`` does."""
        return [
            run.value if run.ok else CloudException(run.error or run.status, jid=run.jid, status=run.status,
                                                    exc_type=run.exc_type, traceback=run.error)
            for run in self.runs
        ]

    @property
    def ids(self) -> List[str]:
        """The ids of the pitfalls found, each once, in the order found."""
        return list(dict.fromkeys(p["id"] for p in self.pitfalls))

    def raise_for_pitfalls(self) -> None:
        """Raise :class:`PitfallError` (the report as its message) when a pitfall was found."""
        if self.pitfalls:
            raise PitfallError(str(self), pitfalls=[dict(p) for p in self.pitfalls])

    def __str__(self) -> str:
        if self.ok:
            return f"cloudsim.check({self.function}): OK, no pitfalls; the 3 runs agree ({self.runs[0].outcome()})."
        found = f"{len(self.ids)} pitfall{'s' if len(self.ids) != 1 else ''}" if self.pitfalls else "no pitfall"
        lines = [f"cloudsim.check({self.function}): {found}" + ("" if self.pitfalls else ", but not every run succeeded")]
        for run in self.runs:
            where = f"job {run.jid}, {run.interpreter}" if run.jid is not None else "refused at cloud.call"
            lines.append(f"  run {run.run} ({where}): {run.outcome()}")
        for pitfall_id in self.ids:
            records = [p for p in self.pitfalls if p["id"] == pitfall_id]
            runs = sorted({p["run"] for p in records if p.get("run")})
            labels = [f"run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}"] if runs else []
            if any(p.get("run") is None for p in records):
                labels.append("comparing the runs")
            where = f" ({'; '.join(labels)})"
            lines.append(f"[{pitfall_id}]{where}")
            shown: Set[str] = set()
            for rec in records:  # the same finding on several runs differs only by its job number
                key = _JOB_NUMBER.sub("job N", rec["message"])
                if key not in shown:
                    shown.add(key)
                    lines.extend("  " + line for line in rec["message"].splitlines())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<CheckReport {self.function} ok={self.ok} pitfalls={self.ids}>"


def _headline(text: str) -> str:
    """The line that says what went wrong: a traceback's exception line, else the first line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
        after = lines[frames[-1] + 1:] if frames else lines[1:]
        for line in after:  # the first line back at column 0 follows the last frame's code
            if not line.startswith(" "):
                return line.strip()
    return lines[0].strip()


def _describe_call(func: Callable, args: tuple, kwargs: dict) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    module = getattr(func, "__module__", None)
    if module and module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items() if not k.startswith("_")]
    text = ", ".join(shown)
    return f"{name}({text if len(text) <= 80 else text[:77] + '...'})"


def _marked_ids(text: str) -> List[str]:
    """Catalogue ids named as ``(pitfall: id)`` in an error text, each once."""
    return [i for i in dict.fromkeys(_PITFALL_MARK.findall(text or "")) if i in _pitfalls.CATALOGUE]


def _from_error_text(text: str, known: Set[str]) -> List[Dict[str, Any]]:
    """Records for the pitfalls an error text names that the run's records do not have yet."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    what = lines[-1] if lines else "the job failed"
    for line in lines:  # the cloud's own explanations come first; a traceback ends with the exception
        if "pitfall:" in line:
            what = line.strip()
            break
    return [
        {"id": i, "message": text.strip(), "what": what}
        for i in _marked_ids(text) if i not in known
    ]


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays, whose == is elementwise
        try:
            return pickle.dumps(a) == pickle.dumps(b)
        except Exception:
            return False


def _agree(x: CheckRun, y: CheckRun) -> bool:
    if x.ok != y.ok:
        return False
    if x.ok:
        return _same(x.value, y.value)
    return (x.status, x.exc_type) == (y.status, y.exc_type)


def _run(number: int, func: Callable, args: tuple, kwargs: Dict[str, Any], kill_process: bool) -> CheckRun:
    run = CheckRun(run=number, interpreter=_INTERPRETERS[number])
    try:
        jid = cloudsim.call(func, *args, _kill_process=kill_process, **kwargs)
    except PitfallError as exc:  # the running simulator's policy says 'error' for a call-time pitfall
        run.error, run.exc_type, run.pitfalls = str(exc), type(exc).__name__, [dict(p) for p in exc.pitfalls]
        return run
    except pickle.PicklingError as exc:  # CloudPicklingError and TransmitSizeError among them
        run.error, run.exc_type = str(exc), type(exc).__name__
        run.pitfalls = _from_error_text(run.error, set())
        if not run.pitfalls:
            pitfall_id = "transmit-size" if isinstance(exc, TransmitSizeError) else "unpicklable"
            run.pitfalls = [{"id": pitfall_id, "message": run.error, "what": run.error.splitlines()[0] if run.error else ""}]
        return run
    with _LOCK:
        _CHECK_JIDS.add(jid)
    run.jid = jid
    for attempt in range(2):  # a PitfallError comes before the value; the second collection has no pitfalls left
        try:
            run.value = cloudsim.result(jid)
            break
        except PitfallError:
            continue
        except CloudException as exc:
            run.error, run.exc_type = exc.traceback or str(exc.parameter), exc.exc_type or type(exc).__name__
            break
    info = cloudsim.info(jid, ["status", "pitfalls"])[jid]
    run.status = info["status"]
    run.pitfalls = [dict(p) for p in info.get("pitfalls") or ()]
    if not run.ok:
        run.pitfalls += _from_error_text(run.error or "", {p["id"] for p in run.pitfalls})
    return run


def _disagreement(function: str, runs: List[CheckRun]) -> Optional[Dict[str, Any]]:
    """A persistent-interpreter record when the runs' outcomes differ, else None."""
    r1, r2, r3 = runs
    if any(r.status == "not sent" for r in runs) or (_agree(r1, r2) and _agree(r1, r3)):
        return None
    outcomes = "; ".join(f"run {r.run} ({r.interpreter}) {r.outcome()}" for r in runs)
    if _agree(r1, r3):
        what = f"{function} gave another outcome when run again in the same interpreter: {outcomes}."
        why = "what run 1 left in its interpreter (module globals, caches, imports) changed run 2."
    elif _agree(r1, r2):
        what = f"{function} gave another outcome in another interpreter: {outcomes}."
        why = "the outcome depends on the interpreter the job lands in: state left there by earlier jobs."
    else:
        what = f"{function} gave a different outcome on every run: {outcomes}."
        why = ("the function depends on what earlier runs left in the interpreter, or is not deterministic "
               "(time, randomness); if it is meant to vary, ignore this finding.")
    rec = _pitfalls.record(
        "persistent-interpreter", what, why,
        "make the job depend only on its arguments: no module-level state carried from one job to the next.",
    )
    rec["run"] = None
    rec["jid"] = None
    return rec


def check(func: Callable, *args: Any, _raise_on_pitfall: bool = False, **kwargs: Any) -> CheckReport:
    """Run ``func(*args, **kwargs)`` through the simulator the way the cloud would, and report.

    The call is serialized and shipped three times: twice in one interpreter,
    then once in another; the outcomes are compared and every pitfall the
    runs hit is gathered (nothing is warned or raised unless asked).

    Args:
        func, *args, **kwargs: as for ``cloud.call``; reserved keywords such as
            ``_max_runtime`` or ``_env`` apply to every run. ``_kill_process`` is
            the check's own and cannot be given.
        _raise_on_pitfall: raise :class:`PitfallError` (the report as its message)
            when a pitfall is found.

    Returns:
        The :class:`CheckReport`: ``str(report)``, ``report.ok``, ``report.pitfalls``, ``report.results``.

    Raises:
        TypeError: ``func`` is not callable, ``_kill_process`` is given, or the
            arguments do not fit ``func`` (as ``cloud.call`` raises).
        CloudException: called inside a job, or the simulator cannot start.
        PitfallError: with ``_raise_on_pitfall=True`` and a pitfall found.
    """
    if "_kill_process" in kwargs:
        raise TypeError("check() sets _kill_process itself (run 2 retires its interpreter); leave it out")
    if not callable(func):
        raise TypeError(f"check() first argument ({func!r}) is not callable")
    if cloudsim.running_on_cloud():
        raise CloudException("cloudsim.check() runs in the client, not inside a job.")
    function = _describe_call(func, args, kwargs)
    started_here = not cloudsim.is_simulated()
    if started_here:
        log.debug("check(%s): no simulator running, starting one for the check", function)
        cloudsim.start_simulator(pitfalls="warn")  # see the module docstring: 'ignore' would find less
    try:
        with warnings.catch_warnings():
            # The report is the output: pitfall warnings of the check's own jobs would only repeat it.
            warnings.simplefilter("ignore", _pitfalls.PitfallWarning)
            runs = [
                _run(1, func, args, kwargs, kill_process=False),
                _run(2, func, args, kwargs, kill_process=True),
                _run(3, func, args, kwargs, kill_process=False),
            ]
    finally:
        if started_here:
            cloudsim.close()
    found: List[Dict[str, Any]] = []
    for run in runs:
        for rec in run.pitfalls:
            found.append({**rec, "run": run.run, "jid": rec.get("jid", run.jid)})
    extra = _disagreement(function, runs)
    if extra is not None:
        found.append(extra)
    report = CheckReport(function, runs, found)
    if _raise_on_pitfall:
        report.raise_for_pitfalls()
    return report
