"""``__transient__``: attributes an object leaves behind when it is sent (``transient``).

As in PiCloud: an object, or its class, may name attributes in
``__transient__`` (a list, tuple or set of attribute names). Those
attributes are dropped from the pickled state, so they *arrive missing* on
the other side (not as ``None``). An object whose class has its own
``__reduce__``, ``__reduce_ex__`` or ``__getstate__`` (or a ``copyreg``
reducer) decides for itself what is sent; ``__transient__`` does not apply
to it.

Not for: deciding what travels by value (``pickler.travels_by_value``) or
anything else about the pickler; the rules pickler (``rules.py``) calls
:func:`names_for` and :func:`reduce_without` for instances only.
"""

from __future__ import annotations

import copyreg
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from cloudsim.errors import CloudPicklingError

__all__ = ["names_for", "reduce_without", "decides_for_itself"]

_OBJECT_GETSTATE = getattr(object, "__getstate__", None)  # Python 3.11+ has a default __getstate__

# per-pickle cache: type -> (class-level names or None, decides for itself, instances have a __dict__)
TypeInfo = Tuple[Optional[Any], bool, bool]


def decides_for_itself(cls: type, dispatch: Optional[Mapping] = None) -> bool:
    """True when ``cls`` pickles its own way (custom reduce or getstate, or a registered reducer).

    Args:
        cls: the type of the object.
        dispatch: the pickler's dispatch table (cloudpickle's reducers), if any.
    """
    if cls in copyreg.dispatch_table or (dispatch is not None and cls in dispatch):
        return True
    if getattr(cls, "__reduce_ex__", None) is not object.__reduce_ex__:
        return True
    if getattr(cls, "__reduce__", None) is not object.__reduce__:
        return True
    getstate = getattr(cls, "__getstate__", None)
    return getstate is not None and getstate is not _OBJECT_GETSTATE


def _type_info(cls: type, cache: Dict[type, TypeInfo], dispatch: Optional[Mapping]) -> TypeInfo:
    info = cache.get(cls)
    if info is None:
        try:
            class_names = getattr(cls, "__transient__", None)
        except Exception:  # a metaclass with a strange __getattr__
            class_names = None
        info = (class_names, decides_for_itself(cls, dispatch), bool(getattr(cls, "__dictoffset__", 0)))
        cache[cls] = info
    return info


def _checked(names: Any, obj: Any) -> FrozenSet[str]:
    if isinstance(names, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in names):
        return frozenset(names)
    raise CloudPicklingError(
        f"__transient__ of {type(obj).__qualname__} must be a list, tuple or set of attribute names, "
        f"not {names!r} (pitfall: transient).\n"
        "  Fix: e.g. __transient__ = ('cache',) on the class, or obj.__transient__ = ['cache'].\n"
        "  See: docs/pitfalls.md#transient"
    )


def names_for(obj: Any, cache: Dict[type, TypeInfo], dispatch: Optional[Mapping] = None) -> Optional[FrozenSet[str]]:
    """The transient attribute names that apply to instance ``obj``, or None (the usual case).

    Args:
        obj: an instance (not a class).
        cache: a dict kept for one pickling run, so each type is inspected once.
        dispatch: the pickler's dispatch table; types it knows pickle their own way.

    Raises:
        CloudPicklingError: ``__transient__`` is not a list, tuple or set of names.
    """
    class_names, own_way, has_dict = _type_info(type(obj), cache, dispatch)
    if own_way:
        return None
    names = None
    if has_dict:
        try:
            names = obj.__dict__.get("__transient__")
        except Exception:
            names = None
    if names is None:
        names = class_names
    if not names:
        return None
    return _checked(names, obj)


def _drop(state: Any, names: FrozenSet[str]) -> Any:
    if isinstance(state, dict):
        return {k: v for k, v in state.items() if k not in names}
    if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        return tuple(None if s is None else {k: v for k, v in s.items() if k not in names} for s in state)
    return state


def reduce_without(obj: Any, names: FrozenSet[str], protocol: int) -> Any:
    """``obj``'s default reduction with the ``names`` attributes left out of its state."""
    rv = object.__reduce_ex__(obj, protocol)
    if not isinstance(rv, tuple) or len(rv) < 3:
        return rv
    parts = list(rv)
    parts[2] = _drop(parts[2], names)
    return tuple(parts)
