"""Serializing a job for the trip to the server, with PiCloud's size limit.

Each piece of a job (the function, the positional arguments as one tuple, the
keyword arguments as one dict, each ``map`` job's arguments) is pickled with
cloudpickle on its own and checked on its own against ``max_transmit_size``
(``transmit-size``: sizes are never summed). Pickling happens at call time, so
the job gets a copy of the data as it was then (``pass-by-value``).

Which objects travel by value is one policy, :func:`travels_by_value`: code
of the user's own modules goes by value (the server has no copy of it);
the standard library, installed packages and cloudsim itself go by reference
(the server has them installed).
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import sysconfig
import site
import threading
from typing import Any, Dict, Optional, Tuple

import cloudpickle

from cloudsim.errors import CloudPicklingError, TransmitSizeError

PROTOCOL = pickle.HIGHEST_PROTOCOL
_HELP = "Please see docs/pitfalls.md#unpicklable for more information about pickle errors."


def _installed_roots() -> Tuple[str, ...]:
    """Directories whose modules the server has installed: the standard library and site-packages."""
    roots = set()
    if os.environ.get("CLOUDSIM__SERVER"):
        # On the server, sys.path was laid out by the client: everything but the
        # flat module directory is installed code.
        module_dir = os.environ.get("CLOUDSIM__MODULE_DIR", "")
        roots.update(os.path.realpath(p) for p in sys.path if p and os.path.realpath(p) != os.path.realpath(module_dir))
        return tuple(sorted(roots))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    try:
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # pragma: no cover - virtualenv's old site.py
        pass
    user_site = getattr(site, "USER_SITE", None)
    if user_site and site.ENABLE_USER_SITE:
        roots.add(os.path.realpath(user_site))
    return tuple(sorted(roots))


_ROOTS: Optional[Tuple[str, ...]] = None
# module name -> True when its code travels by value
_BY_VALUE: Dict[str, bool] = {}
_LOCK = threading.Lock()


def travels_by_value(module_name: Optional[str]) -> bool:
    """True when the named module is user code the server does not have installed."""
    global _ROOTS
    if not module_name or module_name == "__main__":
        return False  # cloudpickle already sends __main__ code by value
    cached = _BY_VALUE.get(module_name)
    if cached is not None:
        return cached
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or not path:
        answer = False
    else:
        if _ROOTS is None:
            _ROOTS = _installed_roots()
        real = os.path.realpath(path)
        cloudsim_root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if real.startswith(cloudsim_root + os.sep) and module_name.split(".")[0] in ("cloudsim", "pytest_cloudsim"):
            answer = False
        else:
            answer = not any(real.startswith(root + os.sep) for root in _ROOTS)
    if answer:
        with _LOCK:
            cloudpickle.register_pickle_by_value(module)
    _BY_VALUE[module_name] = answer
    return answer


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, with the user's own modules sent by value."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) or callable(obj):
            module_name = getattr(obj, "__module__", None)
            if isinstance(module_name, str) and module_name not in _BY_VALUE:
                travels_by_value(module_name)
        return super().reducer_override(obj)


_ATOMIC = (int, float, str, bytes, bool, type(None))


def _is_plain(obj: Any) -> bool:
    """True for small tuples/lists of builtin scalars, which the standard pickle handles alone."""
    if isinstance(obj, (tuple, list)) and len(obj) <= 16:
        return all(type(x) in _ATOMIC for x in obj)
    return type(obj) in _ATOMIC


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for the server; raises CloudPicklingError with the reason."""
    if _is_plain(obj):
        return pickle.dumps(obj, PROTOCOL)
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=PROTOCOL).dump(obj)
    except CloudPicklingError:
        raise
    except RecursionError as exc:
        raise CloudPicklingError(
            f"Could not pickle: the object is nested too deeply ({exc}).\n"
            "Fix: flatten the data structure, or pass it in smaller pieces."
        ) from exc
    except Exception as exc:
        raise CloudPicklingError(f"Could not pickle {type(obj).__name__}: {type(exc).__name__}: {exc}\n{_HELP}") from exc
    return buf.getvalue()


def check_size(data: bytes, what: str, limit: int) -> None:
    """Raise TransmitSizeError when one serialized piece is over ``limit`` bytes."""
    if len(data) > limit:
        raise TransmitSizeError(
            f"{what} would send {len(data):,} bytes; the limit max_transmit_size is {limit:,} bytes.\n"
            "  Why: each serialized piece of a job is limited, so large data is not sent by accident (pitfall: transmit-size).\n"
            "  Fix: pass only what the job needs (store large data with cloud.files), "
            "or raise max_transmit_size (at most 16,000,000).\n"
            "  See: docs/pitfalls.md#transmit-size"
        )


def serialize(obj: Any, what: str, limit: int) -> bytes:
    """Pickle one piece of a job and check its size."""
    data = dumps(obj)
    check_size(data, what, limit)
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)
