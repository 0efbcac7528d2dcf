"""A job that changes its arguments changes copies (``pass-by-value``): say so, naming the argument.

The function and its arguments reach the job as pickled bytes, so a job that
mutates an argument mutates its own copy; the client's object never changes
(the wire makes that true; this hook *explains* it). After each job,
:func:`after` compares the arguments as the job left them with what it
received, and for each one that changed adds a ``pass-by-value`` pitfall
naming the parameter (``list_param`` of ``foo``, ``items[1]`` of ``*items``,
``args[0]`` when the signature is unknown).

Keeping it cheap, in three steps, each only when the previous could not decide:

1. arguments that are all immutable scalars (or tuples of them) cannot have
   changed: nothing to do (a type test per argument);
2. re-pickle the arguments with the standard pickle and compare with the
   bytes received: equal means unchanged (one ``pickle.dumps``, C speed, no
   unpickling);
3. otherwise unpickle the received bytes again and compare argument by
   argument, each pickled the same way on both sides; an argument that cannot
   be pickled, or is a file, is skipped.

Not for: globals the function changes (``persistent-interpreter`` in
``hygiene.py``).
"""

from __future__ import annotations

import inspect
import io
import pickle
from typing import Any, Dict, List, Optional, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.wire import pickler as _wire  # imported in the server before forking: no cost per job

__all__ = ["after", "changed_arguments", "parameter_names"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
MAX_RECORDS = 5
_IMMUTABLE = frozenset({int, float, complex, str, bytes, bool, type(None), range, type(Ellipsis)})


def _immutable(value: Any, depth: int = 0) -> bool:
    cls = type(value)
    if cls in _IMMUTABLE:
        return True
    if (cls is tuple or cls is frozenset) and depth < 3 and len(value) <= 64:
        return all(_immutable(v, depth + 1) for v in value)
    return False


def _all_immutable(values: Any) -> bool:
    for value in values:
        if type(value) not in _IMMUTABLE and not _immutable(value):
            return False
    return True


def _canonical(value: Any) -> Optional[bytes]:
    """The same bytes for the same state on both sides, or None when ``value`` cannot be compared."""
    if isinstance(value, io.IOBase):  # a sent file: reading it moves its position, which is not a change
        return None
    try:
        return pickle.dumps(value, PROTOCOL)
    except Exception:
        pass
    try:
        return _wire._dump(value, _wire._ResultPickler, None)
    except Exception:
        return None


def _unchanged_fast(values: Any, received: Optional[bytes]) -> bool:
    if received is None:
        return False
    try:
        return pickle.dumps(values, PROTOCOL) == received
    except Exception:
        return False


def _loads(data: bytes, kind: type) -> Any:
    """The arguments as received; empty when they cannot be rebuilt a second time (nothing to compare)."""
    try:
        value = pickle.loads(data)
    except Exception:
        return kind()
    return value if isinstance(value, kind) else kind()


def changed_arguments(args: tuple, kwargs: Dict[str, Any], args_bytes: bytes,
                      kwargs_bytes: Optional[bytes]) -> Tuple[List[int], List[str], Optional[tuple], Optional[dict]]:
    """Which arguments differ from what was received.

    Returns:
        (positions of changed positional arguments, names of changed keyword
        arguments, the received args, the received kwargs); the received values
        are None when they did not have to be unpickled again.
    """
    positions: List[int] = []
    keys: List[str] = []
    received_args: Optional[tuple] = None
    received_kwargs: Optional[dict] = None
    if args and not _all_immutable(args) and not _unchanged_fast(args, args_bytes):
        received_args = _loads(args_bytes, tuple)
        for i, (before, now) in enumerate(zip(received_args, args)):
            if _immutable(now):
                continue
            b0, b1 = _canonical(before), _canonical(now)
            if b0 is not None and b1 is not None and b0 != b1:
                positions.append(i)
    if kwargs and kwargs_bytes is not None and not _all_immutable(kwargs.values()) \
            and not _unchanged_fast(kwargs, kwargs_bytes):
        received_kwargs = _loads(kwargs_bytes, dict)
        for key, now in kwargs.items():
            if _immutable(now) or key not in received_kwargs:
                continue
            b0, b1 = _canonical(received_kwargs[key]), _canonical(now)
            if b0 is not None and b1 is not None and b0 != b1:
                keys.append(key)
    return positions, keys, received_args, received_kwargs


def parameter_names(func: Any, nargs: int) -> List[str]:
    """The parameter each of ``nargs`` positional arguments binds to: ``['list_param', 'items[0]', ...]``."""
    names: List[str] = []
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    for i in range(nargs):
        if i < len(positional):
            names.append(positional[i])
        elif var is not None:
            names.append(f"{var}[{i - len(positional)}]")
        else:
            names.append(f"args[{i}]")
    return names


def _keyword_name(func: Any, key: str) -> str:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return f"kwargs[{key!r}]"
    if key in params:
        return key
    var = next((p.name for p in params.values() if p.kind == p.VAR_KEYWORD), None)
    return f"{var}[{key!r}]" if var else f"kwargs[{key!r}]"


def after(job: Any) -> None:
    """Add a ``pass-by-value`` pitfall for each argument the job changed."""
    if job.func is None:  # the job's data never unpickled: nothing ran
        return
    args = job.args if type(job.args) is tuple else tuple(job.args or ())
    kwargs = job.kwargs
    if _all_immutable(args) and (not kwargs or _all_immutable(kwargs.values())):
        return  # the usual case, decided without pickling
    positions, keys, _, _ = changed_arguments(args, kwargs, job.args_bytes, job.kwargs_bytes)
    if not positions and not keys:
        return
    names = parameter_names(job.func, len(args)) if positions else []
    changed = [names[i] for i in positions] + [_keyword_name(job.func, k) for k in keys]
    func = job.func_name
    for name in changed[:MAX_RECORDS]:
        job.pitfalls.append(_pitfalls.record(
            "pass-by-value",
            f"Job {job.jid} changed its argument {name} of {func}(); the change stays on the cloud.",
            "arguments are copied to the cloud (pass-by-value); the client's object is never updated.",
            "return the new value from the job and use cloud.result().",
            argument=name,
            function=func,
        ))
