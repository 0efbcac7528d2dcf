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
import types
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
    """True when code of this module must travel inside the pickle: only ``__main__``'s.

    The user's own modules travel by reference, like installed ones, because
    the client ships them to the server's flat module directory
    (``cloudsim.shipping``); so this is only ``__main__``, which the server has
    a different one of (``main-module``), and which cloudpickle sends by value.
    """
    return module_name == "__main__"


_collecting = threading.local()


class collecting:
    """Context manager: gather the user modules every pickle made in this thread refers to (shipping seeds)."""

    def __enter__(self) -> "set":
        self.previous = getattr(_collecting, "seeds", None)
        _collecting.seeds = set()
        return _collecting.seeds

    def __exit__(self, *exc: object) -> None:
        _collecting.seeds = self.previous


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, noting which modules the pickle refers to by reference (the seeds of shipping)."""

    def reducer_override(self, obj: Any) -> Any:
        seeds = getattr(_collecting, "seeds", None)
        if seeds is not None:
            if isinstance(obj, types.ModuleType):
                seeds.add(obj.__name__)
            elif isinstance(obj, type) or callable(obj):
                module_name = getattr(obj, "__module__", None)
                if isinstance(module_name, str) and module_name != "__main__":
                    seeds.add(module_name)
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
