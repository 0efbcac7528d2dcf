"""The messages of the wire: what could not be sent, the path to the culprit, why, and the fix.

Built from a walked :class:`~cloudsim.wire.tree.Node` tree, in the layout of
every cloudsim pitfall message (what / Why / Fix / See) plus the culprit's
path and the serialization log::

    cloud.call(save): the positional arguments cannot be pickled: TypeError: cannot pickle 'sqlite3.Connection' object
      Culprit: args[0].db._conn -> sqlite3.Connection
      Why: sqlite is a file-based database ...
      Fix: ... or declare the attribute transient: __transient__ = ['_conn'] on class Store ...
      See: docs/pitfalls.md#sqlite  [pitfall: sqlite]
      Serialization log: /tmp/cloudsim-1000/logs/serialization/2024-05-01/101500-4242-1-....txt (JSON: ....json)

Not for: walking objects (``tree.py``) or writing logs (``log.py``).
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from cloudsim.errors import CloudPicklingError, TransmitSizeError
from cloudsim.wire.tree import Node, format_size

__all__ = ["unpicklable_text", "size_text", "largest_parts", "LIMIT_FIX"]

#: How to raise the limit, in every size message.
LIMIT_FIX = (
    "raise the limit: cloud.start_simulator(max_transmit_size=N), cloud.config.max_transmit_size = N "
    "or CLOUDSIM_MAX_TRANSMIT_SIZE=N (at most 16,000,000; PiCloud's name max_transmit_data works too)"
)

_GENERATORS = {"generator", "coroutine", "async_generator"}


def _hint(node: Node) -> Tuple[str, str, str]:
    """(why, fix, pitfall id) for a culprit, by its type."""
    t = node.type
    if t in _GENERATORS:
        return (f"a {t} is code paused inside this interpreter; it cannot be serialized, so it cannot be sent "
                "to a job or returned from one.",
                f"pass the data it would produce (e.g. list(...)) or what it needs, and create the {t} inside the job",
                "unpicklable")
    if t.startswith("itertools."):
        return ("itertools iterators cannot be sent (PiCloud refused them).",
                "pass the data (e.g. list(iterator)) and build the iterator inside the job", "unpicklable")
    if t == "re.Match":
        return ("regular expression match objects (returned by re.search/re.match) cannot be serialized.",
                "pass the matched text (m.group(), m.groups()) or the pattern and the string, and match inside the job",
                "unpicklable")
    if t.startswith("_thread.") or t.startswith("threading.") or t.startswith("multiprocessing.synchronize."):
        return ("a lock belongs to the threads of one interpreter; it cannot be serialized.",
                "create the lock inside the job", "unpicklable")
    if t.startswith("sqlite3."):
        return ("sqlite is a file-based database: its connection cannot be pickled, and its file is not on the "
                "cloud, so a job cannot reach it (pitfall: sqlite).",
                "use a socket-based database server (PostgreSQL, MySQL, ...) that the job connects to itself "
                "over the network; for read-only data, send the data instead",
                "sqlite")
    if t.startswith("socket.") or t.startswith("ssl."):
        return ("a socket is a connection of this process; it cannot be serialized.",
                "open the connection inside the job (the cloud is on another network: see separate-network)",
                "unpicklable")
    return (f"objects of type {t} cannot be pickled (extension objects without pickle support, and objects "
            "whose own __reduce__ refuses, cannot be sent).",
            "create the object inside the job, or give its class __reduce__ or __getstate__ and __setstate__",
            "unpicklable")


def _transient_fix(tree: Node, target: Optional[Node]) -> Optional[str]:
    """Advice on ``__transient__`` for the attribute nearest above (or at) ``target``, if any."""
    if target is None:
        return None
    node = next((n for n in reversed(tree.chain(target)) if n.attr is not None and n.owner is not None), None)
    if node is None or node.attr is None or node.owner is None:
        return None
    if node.owner_decides:
        return (f"leave {node.attr!r} out of what {node.owner}.__getstate__/__reduce__ returns "
                "(the class pickles its own way, so __transient__ does not apply)")
    return (f"if the job does not need it, declare the attribute transient: __transient__ = [{node.attr!r}] "
            f"on class {node.owner.rpartition('.')[2]} (it then arrives missing in the job)")


def _global_name(path: str) -> Optional[Tuple[str, str]]:
    """('CACHE', 'resize') when the path goes through resize.__globals__['CACHE']."""
    match = re.search(r"([A-Za-z_][\w]*|func)\.__globals__\[(['\"])(.+?)\2\]", path)
    return (match.group(3), match.group(1)) if match else None


def _log_line(log: str) -> str:
    return f"  Serialization log: {log}"


def unpicklable_text(first: str, tree: Node, exc: BaseException, log: str) -> Tuple[str, type]:
    """The message when a piece cannot be pickled, and the exception class to raise.

    Args:
        first: the start of the first line, e.g. ``"cloud.call(foo): the positional arguments cannot be pickled"``.
        tree: the walked piece.
        exc: what the pickler raised on the whole piece.
        log: the serialization log's location (or why there is none).
    """
    culprits = tree.culprits()
    culprit = culprits[0] if culprits else None
    cause = culprit.exc if culprit is not None and culprit.exc is not None else exc
    cls = TransmitSizeError if isinstance(cause, TransmitSizeError) else CloudPicklingError
    cause_lines = str(cause).strip().splitlines() or [""]
    lines: List[str] = []
    if isinstance(cause, CloudPicklingError) and len(cause_lines) > 1:
        # a rule of cloudsim (files, transient) refused it: its own text says why and how to fix
        lines.append(f"{first}: {cause_lines[0]}")
        if culprit is not None:
            lines.append(f"  Culprit: {culprit.path} -> {culprit.type}")
        body = [line for line in cause_lines[1:] if line.strip()]
        see = [line for line in body if line.strip().startswith("See:")]
        lines.extend(line for line in body if not line.strip().startswith("See:"))
        extra = _transient_fix(tree, culprit)
        if extra:
            lines.append(f"  Or: {extra}.")
        lines.extend(see)
    else:
        head = cause_lines[0]
        lines.append(f"{first}: {type(cause).__name__}: {head}" if not isinstance(cause, CloudPicklingError)
                     else f"{first}: {head}")
        if culprit is not None:
            why, fix, pid = _hint(culprit)
            lines.append(f"  Culprit: {culprit.path} -> {culprit.type}")
            glob = _global_name(culprit.path)
            if glob is not None:
                why += f" It is reached through the global {glob[0]!r}, which travels with the function {glob[1]}()."
            extra = _transient_fix(tree, culprit)
            if extra:
                fix += f"; or {extra}"
        else:
            why, fix, pid = ("the object refused to be pickled.",
                             "create the object inside the job, or make it picklable", "unpicklable")
        lines.append(f"  Why: {why}")
        lines.append(f"  Fix: {fix}.")
        lines.append(f"  See: docs/pitfalls.md#{pid}  [pitfall: {pid}]")
    lines.append(_log_line(log))
    return "\n".join(lines), cls


def largest_parts(tree: Node, total: int, limit: int = 6) -> List[Node]:
    """The parts that make a piece large: every node of a third of the total or more, else the root's biggest."""
    big = [n for n in tree.iter() if n is not tree and n.size is not None and n.size * 3 >= total]
    if not big:
        big = sorted((c for c in tree.children if c.size), key=lambda n: -(n.size or 0))[:5]
    return big[:limit]


def size_text(first: str, tree: Node, size: int, limit: int, log: str, role: str = "") -> str:
    """The message when a piece is larger than ``max_transmit_size``.

    Args:
        first: the first line (size and limit are added).
        tree: the walked piece, with sizes.
        size: its pickled size; limit: ``max_transmit_size``.
        log: the serialization log's location (or why there is none).
        role: ``"result"`` for a return value (the fix then says to return less).
    """
    parts = largest_parts(tree, size)
    lines = [first]
    why = ("each serialized piece of a job (the function with the globals it refers to, the positional arguments, "
           "the keyword arguments, each map job's arguments, a file, the return value) is checked on its own, "
           "so large data is not sent by accident.")
    deepest = parts[-1] if parts else None
    chain = [p for p in parts if deepest is not None and deepest.path.startswith(p.path)]
    if deepest is not None and chain == parts:
        glob = _global_name(deepest.path)
        if glob is not None:
            why = (f"the global {glob[0]!r} that {glob[1]}() refers to travels with the function, whole, "
                   f"even if the job uses little of it; {deepest.path} is {format_size(deepest.size)}.")
    lines.append(f"  Why: {why}")
    if parts:
        lines.append("  Largest parts (each pickled alone):")
        lines.extend(f"      {p.path}: {format_size(p.size)} ({p.type})" for p in parts)
    fixes = ["return less data (store large results with cloud.files or in a database)" if role == "result"
             else "pass only what the job needs"]
    if deepest is not None:
        extra = _transient_fix(tree, deepest)
        if extra:
            fixes.append(extra)
    fixes.append("store large data with cloud.files and fetch it in the job")
    fixes.append(f"or {LIMIT_FIX}")
    lines.append("  Fix: " + "; ".join(fixes) + ".")
    lines.append("  See: docs/pitfalls.md#transmit-size  [pitfall: transmit-size]")
    lines.append(_log_line(log))
    return "\n".join(lines)
