"""The size tree: what an object is made of once pickled, found only after something went wrong.

When a piece of a job cannot be pickled, or is too large, cloudsim walks it
the way the pickler saw it and returns a tree of :class:`Node` (each with a
path such as ``args[0].db._conn``, a type, and its size pickled alone), so
the message can name the culprit and the largest parts, and the serialization
log can show the whole tree. The walk *returns* what it found rather than
printing (as ray's ``check_serialize`` does)::

    walk(obj, "args") ─► measure(obj): pickle it alone ─► failed or large?
                              │ yes                          │ no: a leaf
                              ▼
                         children(obj): the parts the pickler would save
                         (items, attributes from the reduction, a function's
                         referenced globals, defaults, closure) ─► recurse

The deepest node that fails while all its parts pickle is the *culprit*.
Sizes are measured part by part, so shared objects count in each place.

This costs several picklings of the same data, which is why it only runs
on the error path, never when a call succeeds. It is bounded: at most
``max_nodes`` nodes, ``max_depth`` levels, and a limited number of parts
looked at per container.

Not for: deciding anything about what may be sent (``rules.py``).
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cloudpickle

from cloudsim.wire import transient as _transient

__all__ = ["Node", "Walker", "type_name", "format_size"]

_ATOMS = (int, float, complex, bool, type(None))
_DATA = (str, bytes, bytearray)
_SMALL = 64  # bytes: a str/bytes shorter than this is never a node of its own

try:  # cloudpickle's own answers (private helpers, stable since 2.x); fall back if they move
    _by_reference = cloudpickle.cloudpickle._should_pickle_by_reference
except AttributeError:  # pragma: no cover
    def _by_reference(obj: Any, name: Optional[str] = None) -> bool:
        return getattr(obj, "__qualname__", "").count("<") == 0 and getattr(obj, "__module__", "__main__") != "__main__"

try:
    _code_globals = cloudpickle.cloudpickle._extract_code_globals
except AttributeError:  # pragma: no cover
    def _code_globals(code: types.CodeType) -> Any:
        names = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                names |= set(_code_globals(const))
        return names


def type_name(obj: Any) -> str:
    """``'module.Qualname'`` of ``obj``'s type, or just the name for builtins: ``'generator'``, ``'re.Match'``."""
    cls = type(obj)
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def format_size(size: Optional[int]) -> str:
    """``3.1 MB``, ``12.5 KB``, ``312 bytes`` (decimal units, as the limit is in bytes)."""
    if size is None:
        return "?"
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.1f} KB"
    return f"{size} bytes"


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class Node:
    """One part of a pickled object.

    Attributes:
        path: how to reach it from the piece, e.g. ``"args[0].db._conn"``.
        type: its type name, e.g. ``"sqlite3.Connection"``.
        size: bytes when pickled alone; None if that failed.
        error: ``"TypeError: cannot pickle 'generator' object"`` when pickling it failed.
        culprit: True on the deepest failing node, whose parts all pickle.
        attr: the attribute name when the node is an instance attribute (``"_conn"``).
        owner: the type name of the object holding that attribute.
        owner_decides: True when the owner pickles its own way (``__transient__`` would not apply).
        note: extra facts, e.g. ``"1,200 more parts not examined"``.
        children: the parts looked at, in the order the pickler saves them.
    """

    path: str
    type: str
    size: Optional[int] = None
    error: Optional[str] = None
    culprit: bool = False
    attr: Optional[str] = None
    owner: Optional[str] = None
    owner_decides: bool = False
    note: str = ""
    children: List["Node"] = field(default_factory=list)
    exc: Optional[BaseException] = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def iter(self) -> Iterator["Node"]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.iter()

    def culprits(self) -> List["Node"]:
        return [n for n in self.iter() if n.culprit]

    def chain(self, target: "Node") -> List["Node"]:
        """The nodes from this one down to ``target`` (inclusive), or [] when it is not below."""
        if self is target:
            return [self]
        for child in self.children:
            below = child.chain(target)
            if below:
                return [self] + below
        return []

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "type": self.type, "size": self.size}
        if self.error is not None:
            out["failed"] = True
            out["error"] = self.error
        if self.culprit:
            out["culprit"] = True
        if self.attr is not None:
            out["attribute"] = self.attr
            out["owner"] = self.owner
        if self.note:
            out["note"] = self.note
        out["children"] = [c.to_dict() for c in self.children]
        return out

    def lines(self, indent: int = 0) -> Iterator[str]:
        """The tree as text, one node a line: path, type, size, and a mark on failures."""
        mark = ""
        if self.culprit:
            mark = f"   <-- FAILED HERE: {self.error}"
        elif self.failed:
            mark = "   (failed)"
        note = f"   [{self.note}]" if self.note else ""
        size = format_size(self.size) if self.size is not None else "cannot be pickled"
        yield f"{'  ' * indent}{self.path}  ({self.type}, {size}){mark}{note}"
        for child in self.children:
            yield from child.lines(indent + 1)


@dataclass
class _Link:
    """A part of an object: how to name it, the object, and (for attributes) whose attribute it is."""

    label: str
    obj: Any
    attr: Optional[str] = None
    owner: Optional[str] = None
    owner_decides: bool = False


def _key(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 60 else text[:57] + "..."


def _seq(obj: Any, prefix: str = "") -> List[_Link]:
    return [_Link(f"{prefix}[{i}]", v) for i, v in enumerate(obj)]


def _mapping(items: Any, prefix: str = "") -> List[_Link]:
    return [_Link(f"{prefix}[{_key(k)}]", v) for k, v in items]


def _function_parts(func: types.FunctionType) -> List[_Link]:
    if _by_reference(func):
        return []
    parts: List[_Link] = []
    g = func.__globals__
    for name in sorted(_code_globals(func.__code__)):
        if name in g and not isinstance(g[name], types.ModuleType):
            parts.append(_Link(f".__globals__[{name!r}]", g[name]))
    if func.__defaults__:
        parts.extend(_seq(func.__defaults__, ".__defaults__"))
    if func.__kwdefaults__:
        parts.extend(_mapping(func.__kwdefaults__.items(), ".__kwdefaults__"))
    if func.__closure__:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__):
            try:
                parts.append(_Link(f".<closure>.{name}", cell.cell_contents))
            except ValueError:  # an empty cell
                pass
    if func.__dict__:
        parts.extend(_mapping(func.__dict__.items(), ".__dict__"))
    return parts


_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slots__"})


def _class_parts(cls: type) -> List[_Link]:
    if _by_reference(cls):
        return []
    return [_Link(f".{name}", value) for name, value in vars(cls).items()
            if name not in _CLASS_SKIP and not isinstance(value, (types.FunctionType, staticmethod, classmethod, property))]


def _state_parts(state: Any, owner: Any) -> List[_Link]:
    owner_name = type_name(owner)
    decides = _transient.decides_for_itself(type(owner))
    dicts: List[dict] = []
    if isinstance(state, dict):
        dicts.append(state)
    elif isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        dicts.extend(s for s in state if s)
    elif state is not None:
        return [_Link(".__getstate__()", state)]
    parts = []
    for d in dicts:
        for k, v in d.items():
            if isinstance(k, str) and k.isidentifier():
                parts.append(_Link(f".{k}", v, attr=k, owner=owner_name, owner_decides=decides))
            else:
                parts.append(_Link(f".__dict__[{_key(k)}]", v))
    return parts


def _reduction_parts(obj: Any, rv: Any) -> List[_Link]:
    if not isinstance(rv, tuple) or len(rv) < 2:
        return []  # a global reference: nothing inside
    func, args = rv[0], rv[1]
    parts: List[_Link] = []
    if func is getattr(__import__("copyreg"), "__newobj__") and isinstance(args, tuple):
        parts.extend(_Link(f".__new__ args[{i}]", a) for i, a in enumerate(args[1:]))
    elif isinstance(args, tuple) and func is not getattr:
        parts.extend(_Link(f".<reduce arg {i}>", a) for i, a in enumerate(args))
    if len(rv) > 2:
        parts.extend(_state_parts(rv[2], obj))
    if len(rv) > 3 and rv[3] is not None:
        parts.extend(_Link(f"[{i}]", v) for i, v in enumerate(rv[3]))
    if len(rv) > 4 and rv[4] is not None:
        parts.extend(_Link(f"[{_key(k)}]", v) for k, v in rv[4])
    return parts


class Walker:
    """Walks one object the way a given pickler saves it, measuring each part.

    Args:
        dump: pickles one object alone and returns the bytes (raises as the pickler does).
        reduce: the pickler's reduction of one object (its rules, then the default), for
            objects that are not plain containers, functions or classes.
        max_nodes, max_depth: bounds of the walk.
        max_children: parts looked at per object when it pickles but is large.
        search_children: parts looked at per object when it fails (to find the culprit).
        expand_min: an object that pickles is only looked into when at least this many bytes.
    """

    def __init__(
        self,
        dump: Callable[[Any], bytes],
        reduce: Callable[[Any], Any],
        *,
        max_nodes: int = 2000,
        max_depth: int = 14,
        max_children: int = 1000,
        search_children: int = 20000,
        expand_min: float = float("inf"),
    ) -> None:
        self.dump = dump
        self.reduce = reduce
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.max_children = max_children
        self.search_children = search_children
        self.expand_min = expand_min
        self.nodes = 0
        # id(obj) -> (size or None, exception or None); objects kept alive in _keep so ids stay unique
        self._measured: Dict[int, Tuple[Optional[int], Optional[BaseException]]] = {}
        self._keep: List[Any] = []

    def measure(self, obj: Any) -> Tuple[Optional[int], Optional[BaseException]]:
        """(size, None) when ``obj`` pickles alone, else (None, the exception)."""
        key = id(obj)
        hit = self._measured.get(key)
        if hit is not None:
            return hit
        try:
            result: Tuple[Optional[int], Optional[BaseException]] = (len(self.dump(obj)), None)
        except KeyboardInterrupt:
            raise
        except RecursionError as exc:
            result = (None, exc)
        except BaseException as exc:  # SystemExit from a __reduce__ is the object's fault too
            result = (None, exc)
        self._measured[key] = result
        self._keep.append(obj)
        return result

    def children(self, obj: Any) -> List[_Link]:
        """The parts of ``obj`` that its pickling saves, each with its path label."""
        cls = type(obj)
        try:
            if cls is dict:
                return _mapping(list(obj.items()))
            if cls is list or cls is tuple:
                return _seq(obj)
            if cls is set or cls is frozenset:
                return [_Link(f".<element {i}>", v) for i, v in enumerate(obj)]
            if cls in _ATOMS or cls in _DATA or cls is types.ModuleType:
                return []
            if cls is types.FunctionType:
                return _function_parts(obj)
            if cls is types.MethodType:
                return [_Link(".__self__", obj.__self__), _Link(".__func__", obj.__func__)]
            if cls is types.BuiltinMethodType:
                owner = getattr(obj, "__self__", None)
                return [] if owner is None or isinstance(owner, types.ModuleType) else [_Link(".__self__", owner)]
            if cls is functools.partial:
                return ([_Link(".func", obj.func)] + _seq(obj.args, ".args")
                        + _mapping(obj.keywords.items(), ".keywords"))
            if cls is types.CellType:
                return [_Link(".cell_contents", obj.cell_contents)]
            if isinstance(obj, type):
                return _class_parts(obj)
            rv = self.reduce(obj)
        except KeyboardInterrupt:
            raise
        except BaseException:  # the object cannot even be taken apart: it is a leaf
            return []
        try:
            return _reduction_parts(obj, rv)
        except Exception:
            return []

    def walk(self, obj: Any, path: str) -> Node:
        """The tree of ``obj`` named ``path`` (e.g. ``"args"``)."""
        return self._node(obj, _Link(path, obj), "", 0, set())

    def _node(self, obj: Any, link: _Link, prefix: str, depth: int, on_path: set) -> Node:
        size, exc = self.measure(obj)
        node = Node(path=prefix + link.label, type=type_name(obj), size=size,
                    error=None if exc is None else _exc_text(exc), exc=exc,
                    attr=link.attr, owner=link.owner, owner_decides=link.owner_decides)
        self.nodes += 1
        failed = exc is not None
        if not failed and (size is None or size < self.expand_min):
            return node
        if isinstance(exc, RecursionError) or depth >= self.max_depth or id(obj) in on_path:
            node.culprit = failed
            return node
        if not failed and self.nodes >= self.max_nodes:
            return node
        parts = self.children(obj)
        limit = self.search_children if failed else self.max_children
        on_path.add(id(obj))
        failing = 0
        try:
            for i, part in enumerate(parts):
                if i >= limit:
                    node.note = f"{len(parts) - limit:,} more parts not examined"
                    break
                child = part.obj
                if type(child) in _ATOMS or (type(child) in _DATA and len(child) < _SMALL):
                    continue
                csize, cexc = self.measure(child)
                if cexc is not None:
                    failing += 1
                    if failing <= 3:
                        node.children.append(self._node(child, part, node.path, depth + 1, on_path))
                    continue
                if self.nodes >= self.max_nodes:
                    continue
                if csize is not None and csize >= self.expand_min:
                    node.children.append(self._node(child, part, node.path, depth + 1, on_path))
                else:
                    self.nodes += 1
                    node.children.append(Node(path=node.path + part.label, type=type_name(child), size=csize,
                                              attr=part.attr, owner=part.owner, owner_decides=part.owner_decides))
        finally:
            on_path.discard(id(obj))
        if failed and not any(c.failed for c in node.children):
            node.culprit = True
        return node
