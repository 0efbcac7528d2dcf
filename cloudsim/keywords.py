"""PiCloud's reserved keyword arguments of ``call`` and ``map``, validated as the original did.

Keywords that start with ``_`` and are listed here belong to the cloud; every
other keyword goes to the user's function. Each is checked in the original's
order with the original's exception types (a few Python 2 accidents are made
explicit: a ``str`` jid is refused, a non-``str`` label is a TypeError). The
ones that mean nothing on a laptop (``_type``, ``_cores``, ``_vol``, ...) are
still validated and recorded in ``info``, never silently misread.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from cloudsim.errors import CloudException

RESERVED = (
    "_label", "_priority", "_restartable", "_depends_on", "_depends_on_errors", "_fast_serialization",
    "_type", "_high_cpu", "_cores", "_env", "_vol", "_max_runtime", "_profile", "_kill_process",
    "_os_env_vars", "_callback", "_callback_on_error",
)
TYPES = ("c1", "c2", "f2", "m1", "s1")
_CORES = {"c1": (1,), "c2": (1, 2, 4, 8), "m1": (1, 2, 4, 8), "f2": (1, 2, 4, 8, 16), "s1": (1,)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def jid_list(value: Any, what: str = "jid(s)") -> List[int]:
    """Flatten a jid argument (an int, a range, or an iterable of those) into a list of ints."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{what} must be integers, not {type(value).__name__} {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, range):
        return list(value)
    if not hasattr(value, "__iter__"):
        raise TypeError(f"{what} must be integers, not {type(value).__name__}")
    out: List[int] = []
    for item in value:
        if isinstance(item, range):
            out.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        else:
            raise TypeError(f"{what} must be integers; got {type(item).__name__} {item!r}")
    return out


def split(kwargs: Dict[str, Any], for_map: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Separate and validate reserved keywords. Returns (job options, keywords for the function)."""
    opts: Dict[str, Any] = {}
    user = {k: v for k, v in kwargs.items() if k not in RESERVED}
    if for_map and user:
        key = next(iter(user))
        raise ValueError(f"Cannot pass keyword arguments into cloud.map Unexpected keyword argument {key}")
    if for_map and ("_callback" in kwargs or "_callback_on_error" in kwargs):
        key = "_callback" if "_callback" in kwargs else "_callback_on_error"
        raise ValueError(f"Cannot pass keyword arguments into cloud.map Unexpected keyword argument {key}")

    if "_label" in kwargs and kwargs["_label"] is not None:
        label = kwargs["_label"]
        if not isinstance(label, str) or not label.isascii():
            raise TypeError("_job_label must be an ASCII string")
        opts["label"] = label
    if "_priority" in kwargs:
        if not isinstance(kwargs["_priority"], int):
            raise TypeError(" _priority must be an integer")
        opts["priority"] = int(kwargs["_priority"])
    if "_restartable" in kwargs:
        if not isinstance(kwargs["_restartable"], bool):
            raise TypeError("_restartable must be boolean")
        opts["restartable"] = kwargs["_restartable"]
    if "_depends_on" in kwargs:
        deps = kwargs["_depends_on"]
        try:
            opts["depends_on"] = tuple(jid_list(deps, "_depends_on"))
        except TypeError:
            raise TypeError("_depends_on must be a job id (int) or an iterable of job ids (ints or ranges)") from None
    if "_depends_on_errors" in kwargs:
        value = kwargs["_depends_on_errors"]
        if not isinstance(value, str):
            raise TypeError("_depends_on_errors must be a string")
        if value not in ("abort", "ignore"):
            raise ValueError("_depends_on_errors must be either 'abort' or 'ignore'")
        opts["depends_on_errors"] = value
    if "_fast_serialization" in kwargs:
        if not _is_int(kwargs["_fast_serialization"]):
            raise TypeError("_fast_serialization must be an integer (0, 1 or 2)")
        opts["fast_serialization"] = kwargs["_fast_serialization"]
    job_type = "c1"
    if "_type" in kwargs:
        job_type = kwargs["_type"]
        if not isinstance(job_type, str):
            raise TypeError("_type must be a string")
        if job_type not in TYPES:
            raise ValueError(f"_type {job_type!r} is not a valid type; choose one of {', '.join(TYPES)}")
    if kwargs.get("_high_cpu"):
        if not isinstance(kwargs["_high_cpu"], bool):
            raise TypeError("_high_cpu must be boolean")
        job_type = "c2"
    opts["type"] = job_type
    if "_cores" in kwargs:
        cores = kwargs["_cores"]
        if not _is_int(cores) or cores <= 0:
            raise TypeError("_cores must be a positive integer")
        if cores not in _CORES[job_type]:
            raise ValueError(f"_cores={cores} is not available for _type {job_type!r}; allowed: {_CORES[job_type]}")
        opts["cores"] = cores
    if kwargs.get("_env") is not None:
        opts["env_name"] = str(kwargs["_env"])
    if "_vol" in kwargs and kwargs["_vol"] is not None:
        vol = kwargs["_vol"]
        if isinstance(vol, str):
            vol = [vol]
        if not isinstance(vol, (list, tuple)) or not all(isinstance(v, str) for v in vol):
            raise TypeError("_vol must be a string or a list of strings")
        opts["vol"] = list(vol)
    if kwargs.get("_max_runtime") is not None:
        value = kwargs["_max_runtime"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"_max_runtime must be a number of minutes (int or float), not {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"_max_runtime must be greater than 0 minutes, got {value!r}")
        opts["max_runtime"] = float(value) * 60.0
    if "_profile" in kwargs:
        opts["profile"] = bool(kwargs["_profile"])
    if "_kill_process" in kwargs:
        opts["kill_process"] = bool(kwargs["_kill_process"])
    if kwargs.get("_os_env_vars") is not None:
        names = kwargs["_os_env_vars"]
        if isinstance(names, dict):
            env = {str(k): str(v) for k, v in names.items()}
        elif isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            env = {n: os.environ[n] for n in names if n in os.environ}
        else:
            raise TypeError("_os_env_vars must be a list of environment variable names or a dict")
        opts["env"] = env
    callbacks = {}
    for key, which in (("_callback", "on_done"), ("_callback_on_error", "on_error")):
        value = kwargs.get(key)
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(callable(c) for c in items):
            raise CloudException("All callbacks must be callable")
        callbacks[which] = list(items)
    if callbacks:
        opts["callbacks"] = callbacks
    worker = {}
    if opts.get("kill_process"):
        worker["kill_process"] = True
    if opts.get("env"):
        worker["env"] = opts["env"]
    opts["worker"] = worker or None
    return opts, user
