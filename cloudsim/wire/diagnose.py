"""The error path of the wire: turn a failed or oversized pickling into a message that names the culprit.

Called by ``pickler.serialize`` (client side: call, map) and
``pickler.serialize_result`` (a job's return value) only after pickling
failed or produced too many bytes; the fast path never comes here::

    failure ─► Walker(the same pickler).walk(piece) ─► tree of parts with sizes
           ─► log.write(tree)                        ─► .txt + .json on disk
           ─► explain.*_text(tree)                   ─► CloudPicklingError / TransmitSizeError text

Not for: the rules themselves (``rules.py``) or the policy of what travels by value.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Dict, Optional, Tuple

from cloudsim.errors import CloudPicklingError, TransmitSizeError
from cloudsim.wire import explain as _explain
from cloudsim.wire import log as _log
from cloudsim.wire.tree import Node, Walker, format_size

__all__ = ["root_label", "unpicklable", "too_big", "result_unpicklable", "result_too_big"]

PROTOCOL = pickle.HIGHEST_PROTOCOL


def root_label(obj: Any, what: str) -> str:
    """The name a path starts from: ``args``, ``kwargs``, the function's name, or ``obj``."""
    if "keyword arguments" in what:
        return "kwargs"
    if "positional arguments" in what or "arguments of job" in what:
        return "args"
    if "function" in what:
        name = getattr(obj, "__name__", None)
        return name if isinstance(name, str) and name.isidentifier() else "func"
    return "obj"


def _is_recursion(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, RecursionError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def _walker(pickler_cls: type, limit: Optional[int], expand_min: float) -> Walker:
    def dump(obj: Any) -> bytes:
        buf = io.BytesIO()
        pickler_cls(buf, protocol=PROTOCOL, limit=limit).dump(obj)
        return buf.getvalue()

    reducer = pickler_cls(io.BytesIO(), protocol=PROTOCOL, limit=limit)

    def reduce(obj: Any) -> Any:
        rv = reducer.reducer_override(obj)
        if rv is NotImplemented:
            fn = reducer.dispatch_table.get(type(obj))
            rv = fn(obj) if fn is not None else obj.__reduce_ex__(PROTOCOL)
        return rv

    return Walker(dump, reduce, expand_min=expand_min)


def _write(what: str, reason: str, tree: Node, header: Dict[str, Any]) -> str:
    try:
        txt, js = _log.write(what, reason, tree, header)
    except Exception as exc:  # the log is a help; the error itself must still be raised
        return f"not written ({type(exc).__name__}: {exc})"
    return f"{txt} (JSON: {js})"


def _deep_text(first: str) -> str:
    return (f"{first}: the object is nested too deeply to be pickled (RecursionError).\n"
            "  Why: pickling follows references recursively; a very deep structure (a long linked list, "
            "a deep tree) exceeds Python's recursion limit.\n"
            "  Fix: flatten the data structure, or pass it in smaller pieces.\n"
            "  See: docs/pitfalls.md#unpicklable  [pitfall: unpicklable]")


def _fallback(first: str, exc: BaseException, pid: str, broken: BaseException) -> str:
    """The message when the walk itself failed: the original error, still in the usual layout."""
    lines = str(exc).strip().splitlines() or [""]
    head = lines[0] if isinstance(exc, CloudPicklingError) else f"{type(exc).__name__}: {lines[0]}"
    return (f"{first}: {head}\n"
            f"  (cloudsim could not find the culprit: {type(broken).__name__}: {broken})\n"
            f"  See: docs/pitfalls.md#{pid}  [pitfall: {pid}]")


def _unpicklable(obj: Any, label: str, what: str, first: str, exc: BaseException,
                 pickler_cls: type, limit: Optional[int]) -> Tuple[str, type]:
    try:
        return _unpicklable_walk(obj, label, what, first, exc, pickler_cls, limit)
    except KeyboardInterrupt:
        raise
    except BaseException as broken:  # the walk is a help: never hide the error it explains
        cls = TransmitSizeError if isinstance(exc, TransmitSizeError) else CloudPicklingError
        return _fallback(first, exc, "unpicklable", broken), cls


def _unpicklable_walk(obj: Any, label: str, what: str, first: str, exc: BaseException,
                      pickler_cls: type, limit: Optional[int]) -> Tuple[str, type]:
    if _is_recursion(exc):
        return _deep_text(first), CloudPicklingError
    tree = _walker(pickler_cls, limit, float("inf")).walk(obj, label)
    culprits = tree.culprits()
    header = {"limit": limit, "error": f"{type(exc).__name__}: {exc}",
              "culprit": culprits[0].path if culprits else None}
    log = _write(what, "unpicklable", tree, header)
    return _explain.unpicklable_text(first, tree, exc, log)


def unpicklable(obj: Any, what: str, root: Optional[str], exc: BaseException,
                pickler_cls: type, limit: Optional[int]) -> CloudPicklingError:
    """The error to raise when piece ``obj`` (described by ``what``) could not be pickled.

    Returns a :class:`TransmitSizeError` when the cause is a file over the limit,
    else a :class:`CloudPicklingError`, both with the culprit's path and the log's location.
    """
    label = root or root_label(obj, what)
    text, cls = _unpicklable(obj, label, what, f"{what} cannot be pickled", exc, pickler_cls, limit)
    return cls(text)


def _too_big(obj: Any, label: str, what: str, first: str, size: int, limit: int,
             pickler_cls: type, role: str = "") -> str:
    try:
        return _too_big_walk(obj, label, what, first, size, limit, pickler_cls, role)
    except KeyboardInterrupt:
        raise
    except BaseException as broken:  # the walk is a help: never hide the error it explains
        return (f"{first}\n  (cloudsim could not list the largest parts: {type(broken).__name__}: {broken})\n"
                f"  Fix: pass only what the job needs, or {_explain.LIMIT_FIX}.\n"
                "  See: docs/pitfalls.md#transmit-size  [pitfall: transmit-size]")


def _too_big_walk(obj: Any, label: str, what: str, first: str, size: int, limit: int,
                  pickler_cls: type, role: str = "") -> str:
    walker = _walker(pickler_cls, limit, max(1024.0, size / 50))
    walker._measured[id(obj)] = (size, None)  # known already: do not pickle the whole piece again
    walker._keep.append(obj)
    tree = walker.walk(obj, label)
    parts = _explain.largest_parts(tree, size)
    header = {"limit": limit, "size": size, "largest": [f"{p.path}: {format_size(p.size)}" for p in parts]}
    log = _write(what, "transmit-size", tree, header)
    return _explain.size_text(first, tree, size, limit, log, role=role)


def too_big(obj: Any, size: int, what: str, root: Optional[str], pickler_cls: type, limit: int) -> TransmitSizeError:
    """The error to raise when piece ``obj`` pickles to ``size`` bytes, over ``limit``."""
    label = root or root_label(obj, what)
    first = (f"{what} would send {size:,} bytes ({format_size(size)}); "
             f"the limit max_transmit_size is {limit:,} bytes ({format_size(limit)}).")
    return TransmitSizeError(_too_big(obj, label, what, first, size, limit, pickler_cls))


def result_unpicklable(result: Any, func_name: str, exc: BaseException,
                       pickler_cls: type, limit: int) -> Tuple[str, str]:
    """(exception type name, text) for a job whose return value could not be pickled."""
    first = f"The return value of {func_name}() could not be pickled to travel back to the client"
    what = f"the return value of {func_name}()"
    text, cls = _unpicklable(result, "result", what, first, exc, pickler_cls, limit)
    return ("TransmitSizeError" if cls is TransmitSizeError else "PicklingError"), text


def result_too_big(result: Any, func_name: str, size: int, pickler_cls: type, limit: int) -> Tuple[str, str]:
    """(exception type name, text) for a job whose return value pickles to more than ``limit`` bytes."""
    first = (f"The return value of {func_name}() is {size:,} bytes ({format_size(size)}) once pickled; "
             f"the limit max_transmit_size is {limit:,} bytes ({format_size(limit)}).")
    what = f"the return value of {func_name}()"
    return "TransmitSizeError", _too_big(result, "result", what, first, size, limit, pickler_cls, role="result")

