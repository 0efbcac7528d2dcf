"""Serializing a job for the trip to the server, with PiCloud's size limit.

Each piece of a job (the function, the positional arguments as one tuple, the
keyword arguments as one dict, each ``map`` job's arguments) is pickled with
cloudpickle on its own and checked on its own against ``max_transmit_size``
(``transmit-size``: sizes are never summed). Pickling happens at call time, so
the job gets a copy of the data as it was then (``pass-by-value``).

Which code travels by value is one policy, :func:`travels_by_value`: only
``__main__``'s (the server has a different ``__main__``). The user's own
modules travel by reference, like the standard library and installed
packages, because ``cloudsim.shipping`` sends them to the server's flat
module directory; the pickler notes which modules a pickle refers to
(:class:`collecting`), and those are the seeds of that shipping.

On top of that policy, :class:`_WirePickler` (call/map) and :class:`_ResultPickler`
(return values, in the worker) apply PiCloud's rules (``rules.py``: files,
``__transient__``, refused types). Success costs one pickling and nothing more;
only a failure or an oversized piece is walked (``diagnose.py``) to name the
culprit's path or the largest parts and to write a serialization log.
"""

from __future__ import annotations

import collections
import io
import pickle
import threading
import types
from typing import Any, Optional

import cloudpickle


PROTOCOL = pickle.HIGHEST_PROTOCOL


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


def _code_reduce_keeping_filename(code: types.CodeType) -> Any:
    """cloudpickle's code reducer, but the code keeps its file name, so a job's traceback names the
    client's file and line, as PiCloud's did (cloudpickle writes '<dynamic-code>' instead)."""
    rebuild, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return rebuild, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


_CLOUDPICKLE_CODE_REDUCE = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, noting which modules the pickle refers to by reference (the seeds of shipping)."""

    if _CLOUDPICKLE_CODE_REDUCE is not None:
        dispatch_table = collections.ChainMap({types.CodeType: _code_reduce_keeping_filename},
                                              cloudpickle.Pickler.dispatch_table)

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


# --- cloudsim's rules and the error path (files, transient, refusals; culprit paths, logs) ---
# The by-value policy above stays in _Pickler; the rules are mixed in front of it.
from cloudsim.wire.rules import RulesMixin as _RulesMixin  # noqa: E402 - kept next to its use


class _WirePickler(_RulesMixin, _Pickler):
    """What ``call``/``map`` send: the policy of :class:`_Pickler` plus cloudsim's rules (``rules.py``)."""


class _ResultPickler(_RulesMixin, cloudpickle.Pickler):
    """What a job sends back: cloudsim's rules over cloudpickle (the client has the user's modules)."""


def _dump(obj: Any, pickler: type, limit: Optional[int]) -> bytes:
    """Pickle ``obj`` with ``pickler``; plain data takes the standard pickle's fast path."""
    if _is_plain(obj):
        return pickle.dumps(obj, PROTOCOL)
    buf = io.BytesIO()
    pickler(buf, protocol=PROTOCOL, limit=limit).dump(obj)
    return buf.getvalue()


def dumps(obj: Any, limit: Optional[int] = None, what: str = "the object") -> bytes:
    """Pickle ``obj`` for the server; raises CloudPicklingError naming the culprit's path."""
    try:
        return _dump(obj, _WirePickler, limit)
    except Exception as exc:
        from cloudsim.wire import diagnose

        raise diagnose.unpicklable(obj, what, None, exc, _WirePickler, limit) from exc


def serialize(obj: Any, what: str, limit: int, root: Optional[str] = None) -> bytes:
    """Pickle one piece of a job and check its size on its own (``transmit-size``).

    Only when that fails is the piece walked (``diagnose.py``) to name the
    culprit or the largest parts, and a serialization log written.

    Args:
        obj: the piece: the function, the args tuple, the kwargs dict, or one map job's args.
        what: how messages name it, e.g. ``"cloud.call(foo): the positional arguments"``.
        limit: ``max_transmit_size`` in bytes.
        root: the name paths start from (``"args"``); guessed from ``what`` when None.

    Raises:
        CloudPicklingError: the piece cannot be pickled (the message gives the culprit's path and the log).
        TransmitSizeError: it pickles to more than ``limit`` bytes, or holds a file larger than that.
    """
    try:
        data = _dump(obj, _WirePickler, limit)
    except Exception as exc:
        from cloudsim.wire import diagnose

        raise diagnose.unpicklable(obj, what, root, exc, _WirePickler, limit) from exc
    if len(data) > limit:
        from cloudsim.wire import diagnose

        raise diagnose.too_big(obj, len(data), what, root, _WirePickler, limit)
    return data


class ResultError(Exception):
    """A job's return value cannot travel back: ``exc_type`` (``PicklingError``/``TransmitSizeError``) and ``text``."""

    def __init__(self, exc_type: str, text: str) -> None:
        super().__init__(text)
        self.exc_type = exc_type
        self.text = text


def serialize_result(result: Any, func_name: str, limit: int) -> bytes:
    """Pickle a job's return value for the trip back, checked against ``limit`` (in the worker).

    Raises:
        ResultError: the value cannot be pickled (``unpicklable``) or is too large
            (``transmit-size``); its text names the path (``result.items[3] -> generator``).
    """
    try:
        data = _dump(result, _ResultPickler, limit)
    except BaseException as exc:  # a __reduce__ may even raise SystemExit: the job fails, the worker lives
        from cloudsim.wire import diagnose

        raise ResultError(*diagnose.result_unpicklable(result, func_name, exc, _ResultPickler, limit)) from None
    if len(data) > limit:
        from cloudsim.wire import diagnose

        raise ResultError(*diagnose.result_too_big(result, func_name, len(data), _ResultPickler, limit))
    return data


def loads(data: bytes) -> Any:
    return pickle.loads(data)
