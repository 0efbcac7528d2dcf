"""cloudsim's own serialization rules, as a mixin for a cloudpickle pickler.

PiCloud's pickler had rules plain cloudpickle lacks. :class:`RulesMixin`
adds them in ``reducer_override`` (which the C pickler calls for every object
except exact instances of the builtin scalars and containers, so plain data
pays nothing):

- file objects follow PiCloud's rules (``files.py``, ``file-objects``);
- a file method (``f.read``) is refused;
- itertools iterators are refused, as PiCloud did (``unpicklable``), even
  where this Python could pickle them;
- ``__transient__`` attributes are left out (``transient.py``).

Everything else goes on to the next ``reducer_override`` in the MRO (the
by-value policy of ``pickler._Pickler``, then cloudpickle's own).

Not for: choosing what travels by value, sizes, or messages.
"""

from __future__ import annotations

import itertools
import types
from typing import Any, Callable, Dict, Optional

from cloudsim.errors import CloudPicklingError
from cloudsim.wire import files as _files
from cloudsim.wire import transient as _transient

__all__ = ["RulesMixin", "REFUSED_TYPES", "refuse_type"]


def _itertools_types() -> Dict[type, str]:
    found: Dict[type, str] = {}
    for name, value in vars(itertools).items():
        if isinstance(value, type) and not name.startswith("__"):
            found[value] = f"itertools.{name}"
    tee_a, _ = itertools.tee([])
    found[type(tee_a)] = "itertools._tee"
    _, group = next(itertools.groupby([1]))
    found[type(group)] = "itertools._grouper"
    return found


#: type -> display name, for the types PiCloud refused although this Python may pickle them
REFUSED_TYPES: Dict[type, str] = _itertools_types()


def refuse_type(obj: Any) -> CloudPicklingError:
    """The error for an object of a refused type (e.g. ``itertools.count``)."""
    name = REFUSED_TYPES.get(type(obj), type(obj).__qualname__)
    return CloudPicklingError(f"Cannot pickle objects of type {name}: itertools iterators cannot be sent (pitfall: unpicklable)")


class RulesMixin:
    """Mix into a ``cloudpickle.Pickler`` subclass (first in the bases) to apply cloudsim's rules.

    Attributes:
        limit: ``max_transmit_size`` in bytes, for the size of a sent file (None: no limit).
    """

    limit: Optional[int] = None

    def __init__(self, *args: Any, limit: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.limit = limit
        # type -> what transient.names_for learned about it, for this pickling run only
        self._transient_types: Dict[type, Any] = {}

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        rule = _TYPE_RULES.get(cls, _UNKNOWN)
        if rule is _UNKNOWN:
            rule = _rule_for_new_type(cls)
        if rule is not None:
            return rule(self, obj)
        if cls is types.BuiltinMethodType or cls is types.MethodType:
            if _files.is_file_method(obj):
                raise _files.refuse_file_method(obj)
        elif cls is not types.FunctionType and not isinstance(obj, type):
            names = _transient.names_for(obj, self._transient_types, self.dispatch_table)  # type: ignore[attr-defined]
            if names:
                return _transient.reduce_without(obj, names, self.proto)  # type: ignore[attr-defined]
        return super().reducer_override(obj)  # type: ignore[misc]


def _file_rule(pickler: RulesMixin, obj: Any) -> Any:
    return _files.reduce_file(obj, pickler.limit)


def _refused_rule(pickler: RulesMixin, obj: Any) -> Any:
    raise refuse_type(obj)


# type -> rule(pickler, obj) returning a reduction or raising, or None for "no rule"; filled
# lazily for subclasses (pytest's captured sys.stdout is a TextIOWrapper subclass), e.g.
# {io.TextIOWrapper: _file_rule, itertools.count: _refused_rule, Point: None}
_TYPE_RULES: Dict[type, Optional[Callable[[RulesMixin, Any], Any]]] = {t: _file_rule for t in _files.FILE_TYPES}
_TYPE_RULES.update({t: _refused_rule for t in REFUSED_TYPES})
_FIXED = dict(_TYPE_RULES)
_UNKNOWN = object()


def _rule_for_new_type(cls: type) -> Optional[Callable[[RulesMixin, Any], Any]]:
    if len(_TYPE_RULES) > 50_000:  # many dynamic classes: start again from the fixed rules
        _TYPE_RULES.clear()
        _TYPE_RULES.update(_FIXED)
    try:
        rule = _file_rule if issubclass(cls, _files.FILE_TYPES) else None
    except TypeError:
        rule = None
    _TYPE_RULES[cls] = rule
    return rule
