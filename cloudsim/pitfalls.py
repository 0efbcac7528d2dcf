"""The pitfall catalogue: one warning category, one doc line and one message format per quirk.

A *pitfall* is a behaviour of the (simulated) cloud that surprises code
written for a laptop: a job that mutates its argument, a module edited after
it was shipped, a thread left running. Every quirk of the catalogue has a
stable id (``pass-by-value``, ``module-snapshot``, ...) and this module maps
each id to:

- a warning category, a subclass of :class:`PitfallWarning`, so users can
  filter one pitfall with ``-W error::cloudsim.pitfalls.PassByValueWarning``;
- a :class:`PitfallKind` with its section, a one-line doc and the anchor of
  its section in ``docs/pitfalls.md``.

It also owns how a pitfall is reported, so every layer says it the same way:

    format_message() / record()     build the text and the JSON-able record
            |
    validate_policy() / action_for()    the ``pitfalls`` setting: warn, error, ignore
            |
    emit() ──► warnings.warn(category)  and  PitfallError for 'error'
            └─► LOG (PitfallLog)        everything reported in this process

Which code *detects* a pitfall is not decided here: the wire, shipping and
job layers find them and hand records to :func:`emit`. This module imports
nothing of cloudsim but :mod:`cloudsim.errors`, so any layer (including the
job interpreter) can use it cheaply.
"""

from __future__ import annotations

import difflib
import inspect
import json
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Type, Union

from cloudsim.errors import PitfallError

__all__ = [
    "PitfallWarning",
    # A. What crosses the wire
    "PassByValueWarning",
    "TransmitSizeWarning",
    "UnpicklableWarning",
    "TransientWarning",
    "SpecialTypesWarning",
    "FileObjectsWarning",
    "NonCodeFilesWarning",
    "SqliteWarning",
    # B. Network
    "NetworkTimeoutWarning",
    "NoListenWarning",
    "SeparateNetworkWarning",
    # C. The job's interpreter
    "FreshInterpreterWarning",
    "PersistentInterpreterWarning",
    "LeakedThreadsWarning",
    "LeakedSubprocessesWarning",
    "KillProcessWarning",
    "SysExitWarning",
    "MainModuleWarning",
    "RuntimePatchesWarning",
    "ImportOrderWarning",
    "PackageBehaviorWarning",
    "ForkDangerWarning",
    "CloudImportFromWarning",
    # D. Code shipping
    "ModuleSnapshotWarning",
    "DynamicImportWarning",
    "CExtensionsWarning",
    "CouldNotDepickleWarning",
    "FlatModuleDirWarning",
    "PreinstalledConflictWarning",
    # E. Scheduling
    "JobCapWarning",
    "RecursionDeadlockWarning",
    "DependenciesWarning",
    "MaxRuntimeWarning",
    "JobKillWarning",
    "JobOutputWarning",
    # The catalogue and reporting
    "PitfallKind",
    "CATALOGUE",
    "IDS",
    "DOCS_PAGE",
    "category",
    "format_message",
    "record",
    "ACTIONS",
    "validate_policy",
    "action_for",
    "emit",
    "PitfallLog",
    "LOG",
]

#: The user-facing page with one section per id; a pitfall's anchor is ``DOCS_PAGE#<id>``.
DOCS_PAGE = "docs/pitfalls.md"


class PitfallWarning(UserWarning):
    """Base category of every pitfall warning; filter it to act on all pitfalls at once."""

    #: The catalogue id of the pitfall, e.g. ``'pass-by-value'`` ('' on the base).
    id: str = ""


# The docstring of each category is also its catalogue doc line (PitfallKind.doc):
# one sentence, what bites and why. It is written once, here.

# --- A. What crosses the wire ------------------------------------------------


class PassByValueWarning(PitfallWarning):
    """A job works on copies of its function, arguments and captured globals, so changes it makes never reach the client."""

    id = "pass-by-value"


class TransmitSizeWarning(PitfallWarning):
    """Each serialized piece of a job (function, arguments, a file, the result) must fit in max_transmit_size, 1,000,000 bytes by default."""

    id = "transmit-size"


class UnpicklableWarning(PitfallWarning):
    """Generators, iterators, match objects, locks, sockets and connections cannot be serialized, so they cannot be sent to or returned from a job."""

    id = "unpicklable"


class TransientWarning(PitfallWarning):
    """Attributes named in an object's __transient__ are left out when it is sent, so they arrive missing."""

    id = "transient"


class SpecialTypesWarning(PitfallWarning):
    """Functions, lambdas, closures, methods, partials, ranges, read-only files and PIL images have special support, so they can be sent."""

    id = "special-types"


class FileObjectsWarning(PitfallWarning):
    """Only a real file open read-only can be sent (copied anew on every call); writable files, stdin, streams, virtual files and file methods are refused."""

    id = "file-objects"


class NonCodeFilesWarning(PitfallWarning):
    """Only code is shipped, so the data files of your project are not there when a job opens them."""

    id = "non-code-files"


class SqliteWarning(PitfallWarning):
    """A sqlite database is a local file behind an unpicklable connection, so a job cannot reach it."""

    id = "sqlite"


# --- B. Network --------------------------------------------------------------


class NetworkTimeoutWarning(PitfallWarning):
    """Sockets in a job time out after 30 seconds by default, where Python's default is to wait forever."""

    id = "network-timeout"


class NoListenWarning(PitfallWarning):
    """The cloud's firewall blocks incoming connections, so a job cannot listen on a socket."""

    id = "no-listen"


class SeparateNetworkWarning(PitfallWarning):
    """The cloud is on another network, so a job cannot reach services on the client's machine or private network unless they allow it."""

    id = "separate-network"


# --- C. The job's interpreter --------------------------------------------------


class FreshInterpreterWarning(PitfallWarning):
    """Jobs run in an interpreter of their own, without the client's modules, sys.path, monkeypatches, __main__ or environment."""

    id = "fresh-interpreter"


class PersistentInterpreterWarning(PitfallWarning):
    """Later jobs reuse a job's interpreter, so module globals a job changes leak into the jobs that follow."""

    id = "persistent-interpreter"


class LeakedThreadsWarning(PitfallWarning):
    """Threads still running when a job returns get the job's interpreter killed, because they would leak into later jobs."""

    id = "leaked-threads"


class LeakedSubprocessesWarning(PitfallWarning):
    """Subprocesses still running when a job returns are killed along with its interpreter, because they would leak into later jobs."""

    id = "leaked-subprocesses"


class KillProcessWarning(PitfallWarning):
    """With _kill_process=True a job's interpreter is thrown away after the job, so no state reaches the next one."""

    id = "kill-process"


class SysExitWarning(PitfallWarning):
    """A job must return, not exit: sys.exit() makes it fail, and os._exit() or a crash kills its interpreter."""

    id = "sys-exit"


class MainModuleWarning(PitfallWarning):
    """__main__ in a job is the server's, not your script, so code that looks names up in __main__ fails there."""

    id = "main-module"


class RuntimePatchesWarning(PitfallWarning):
    """Changes made at runtime to modules or classes on the client are not sent, because jobs import modules fresh."""

    id = "runtime-patches"


class ImportOrderWarning(PitfallWarning):
    """Modules may be imported in any logically possible order on the cloud, so code that relies on one order breaks."""

    id = "import-order"


class PackageBehaviorWarning(PitfallWarning):
    """Some packages are configured differently on the server, e.g. there is no display and matplotlib uses the Agg backend."""

    id = "package-behavior"


class ForkDangerWarning(PitfallWarning):
    """The client runs threads, so forking the client process while the simulator runs can hang or corrupt the child."""

    id = "fork-danger"


class CloudImportFromWarning(PitfallWarning):
    """start_simulator() rebinds the cloud module's functions, so one taken with `from cloud import ...` before it is stale."""

    id = "cloud-import-from"


# --- D. Code shipping ----------------------------------------------------------


class ModuleSnapshotWarning(PitfallWarning):
    """Your modules are sent once, at the first call, so later edits or reloads never reach the cloud while the client runs."""

    id = "module-snapshot"


class DynamicImportWarning(PitfallWarning):
    """Modules are found by reading import statements, so one reached only through __import__ or importlib is not shipped."""

    id = "dynamic-import"


class CExtensionsWarning(PitfallWarning):
    """Your own compiled extension modules are not uploaded, so a job can import one only if it is installed on the server."""

    id = "c-extensions"


class CouldNotDepickleWarning(PitfallWarning):
    """A job whose function or arguments cannot be deserialized on the server, e.g. for a missing module, fails before it starts."""

    id = "could-not-depickle"


class FlatModuleDirWarning(PitfallWarning):
    """All shipped top-level modules share one directory on the server, so two different files with the same module name conflict."""

    id = "flat-module-dir"


class PreinstalledConflictWarning(PitfallWarning):
    """A module of yours named like a package installed on the server is shadowed by the installed one."""

    id = "preinstalled-conflict"


# --- E. Scheduling -------------------------------------------------------------


class JobCapWarning(PitfallWarning):
    """At most max_concurrent_jobs jobs (16 by default) run at once; the others wait queued."""

    id = "job-cap"


class RecursionDeadlockWarning(PitfallWarning):
    """Jobs that block on jobs they started can deadlock once every running slot holds a waiting job."""

    id = "recursion-deadlock"


class DependenciesWarning(PitfallWarning):
    """A job with _depends_on waits until its dependencies finish and, by default, stalls when one of them fails."""

    id = "dependencies"


class MaxRuntimeWarning(PitfallWarning):
    """A job that runs longer than its _max_runtime minutes is killed."""

    id = "max-runtime"


class JobKillWarning(PitfallWarning):
    """cloud.kill cancels queued jobs and kills running ones, whose interpreter is replaced."""

    id = "job-kill"


class JobOutputWarning(PitfallWarning):
    """A job's stdout and stderr are captured on the job and read with cloud.info, not printed on the client."""

    id = "job-output"


# --- The catalogue -------------------------------------------------------------


@dataclass(frozen=True)
class PitfallKind:
    """One entry of the catalogue: a quirk id and where it belongs.

    Attributes:
        id: the stable id, e.g. ``'pass-by-value'``.
        section: the catalogue section, ``'A'`` to ``'E'``.
        section_title: the section's title, e.g. ``'What crosses the wire'``.
        category: the warning class emitted for this id.
        doc: one line, what bites and why.
        anchor: where the id is explained, e.g. ``'docs/pitfalls.md#pass-by-value'``.
    """

    id: str
    section: str
    section_title: str
    category: Type[PitfallWarning]
    doc: str
    anchor: str


# section letter, title, categories in catalogue order
_SECTIONS: Tuple[Tuple[str, str, Tuple[Type[PitfallWarning], ...]], ...] = (
    (
        "A",
        "What crosses the wire",
        (
            PassByValueWarning,
            TransmitSizeWarning,
            UnpicklableWarning,
            TransientWarning,
            SpecialTypesWarning,
            FileObjectsWarning,
            NonCodeFilesWarning,
            SqliteWarning,
        ),
    ),
    ("B", "Network", (NetworkTimeoutWarning, NoListenWarning, SeparateNetworkWarning)),
    (
        "C",
        "The job's interpreter",
        (
            FreshInterpreterWarning,
            PersistentInterpreterWarning,
            LeakedThreadsWarning,
            LeakedSubprocessesWarning,
            KillProcessWarning,
            SysExitWarning,
            MainModuleWarning,
            RuntimePatchesWarning,
            ImportOrderWarning,
            PackageBehaviorWarning,
            ForkDangerWarning,
            CloudImportFromWarning,
        ),
    ),
    (
        "D",
        "Code shipping",
        (
            ModuleSnapshotWarning,
            DynamicImportWarning,
            CExtensionsWarning,
            CouldNotDepickleWarning,
            FlatModuleDirWarning,
            PreinstalledConflictWarning,
        ),
    ),
    (
        "E",
        "Scheduling",
        (
            JobCapWarning,
            RecursionDeadlockWarning,
            DependenciesWarning,
            MaxRuntimeWarning,
            JobKillWarning,
            JobOutputWarning,
        ),
    ),
)

#: id -> PitfallKind, in catalogue order, e.g. {'pass-by-value': PitfallKind(...), ...}
CATALOGUE: Dict[str, PitfallKind] = {
    cls.id: PitfallKind(
        id=cls.id,
        section=letter,
        section_title=title,
        category=cls,
        # Under ``python -OO`` docstrings are gone and doc is ''; nothing depends on it.
        doc=inspect.cleandoc(cls.__doc__ or ""),
        anchor=f"{DOCS_PAGE}#{cls.id}",
    )
    for letter, title, classes in _SECTIONS
    for cls in classes
}

#: Every catalogue id.
IDS: FrozenSet[str] = frozenset(CATALOGUE)

# Spellings users plausibly type for an id, each mapped to the id:
# 'PassByValueWarning', 'passbyvalue', 'pass_by_value' -> 'pass-by-value'.
_ALIASES: Dict[str, str] = {}
for _kind in CATALOGUE.values():
    _name = _kind.category.__name__.lower()
    for _alias in (_name, _name[: -len("warning")], _kind.id.replace("-", "_")):
        _ALIASES[_alias] = _kind.id
del _kind, _name, _alias


def _suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the choices closest to ``word``, or ''.

    Known spellings of an id (its class name, underscores) are matched first,
    then the closest choices by :func:`difflib.get_close_matches`.
    """
    choices = list(choices)
    key = word.strip().lower()
    alias = _ALIASES.get(key.replace("-", "_")) or _ALIASES.get(key)
    if alias is not None and alias in choices and alias != word:
        matches = [alias]
    else:
        matches = difflib.get_close_matches(key, choices, n=3, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


_WHERE_IDS = f"The pitfall ids are documented in {DOCS_PAGE} and listed in cloudsim.pitfalls.IDS."


def category(id: str) -> Type[PitfallWarning]:
    """Return the warning category of a catalogue id.

    Args:
        id: a catalogue id, e.g. ``'pass-by-value'``.

    Returns:
        The :class:`PitfallWarning` subclass for the id.

    Raises:
        TypeError: ``id`` is not a string.
        ValueError: ``id`` is not in the catalogue; the message names close
            matches and where the ids are documented.
    """
    if not isinstance(id, str):
        raise TypeError(f"a pitfall id must be a str, not {type(id).__name__}")
    kind = CATALOGUE.get(id)
    if kind is None:
        raise ValueError(f"unknown pitfall id {id!r}{_suggest(id, CATALOGUE)}. {_WHERE_IDS}")
    return kind.category


# --- Messages and records ----------------------------------------------------------


def format_message(id: str, what: str, why: str, fix: str) -> str:
    """Build the text a user sees for a pitfall: what happened, why, the fix, the docs.

    The layout is fixed so people and tools can read it::

        Job 7 changed its argument list_param of foo(); the change stays on the cloud.
          Why: arguments are copied to the cloud (pass-by-value); ...
          Fix: return the new value from the job and use cloud.result().
          See: docs/pitfalls.md#pass-by-value  [pitfall: pass-by-value]

    Args:
        id: the catalogue id (validated).
        what: what happened, naming the culprit (one sentence).
        why: why it matters on the cloud.
        fix: how to change the code.

    Returns:
        The four-line message.

    Raises:
        ValueError: ``id`` is not a catalogue id.
    """
    category(id)
    return (
        f"{what}\n"
        f"  Why: {why}\n"
        f"  Fix: {fix}\n"
        f"  See: {CATALOGUE[id].anchor}  [pitfall: {id}]"
    )


_RECORD_KEYS = frozenset({"id", "message", "what"})


def record(id: str, what: str, why: str, fix: str, **details: Any) -> Dict[str, Any]:
    """Build a pitfall record: what the job keeps in ``info(jid, ['pitfalls'])``.

    Records cross process boundaries and end up in reports, so they are
    plain JSON-able dicts: ``{'id', 'message', 'what', **details}``.

    Args:
        id: the catalogue id (validated).
        what, why, fix: as for :func:`format_message`.
        **details: extra JSON-able facts, e.g. ``argument='list_param'``.

    Returns:
        The record.

    Raises:
        ValueError: ``id`` is not a catalogue id.
        TypeError: a detail would overwrite ``message``/``what``, or is not JSON-able.
    """
    message = format_message(id, what, why, fix)
    clash = _RECORD_KEYS.intersection(details)
    if clash:
        raise TypeError(f"record() detail {sorted(clash)[0]!r} would overwrite a field of the record")
    for key, value in details.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"record() detail {key!r} is not JSON-serializable ({type(value).__name__}): {exc}"
            ) from None
    return {"id": id, "message": message, "what": what, **details}


# --- The policy: what to do with each pitfall -----------------------------------

ACTIONS: Tuple[str, ...] = ("warn", "error", "ignore")

_DEFAULT_KEY = "default"
_ALLOWED_ACTIONS = ", ".join(repr(a) for a in ACTIONS)
_POLICY_EXAMPLE = "'default=warn,pass-by-value=error'"

Policy = Union[str, Mapping[str, str]]


def _action(value: Any, key: Optional[str]) -> str:
    """Normalize one action (case and spaces do not matter) or raise ValueError naming it."""
    if isinstance(value, str) and value.strip().lower() in ACTIONS:
        return value.strip().lower()
    where = f" for {key!r}" if key is not None else ""
    hint = _suggest(value, ACTIONS) if isinstance(value, str) else ""
    raise ValueError(f"invalid pitfalls action {value!r}{where}{hint}. Allowed actions: {_ALLOWED_ACTIONS}.")


def _key(value: Any) -> str:
    """Normalize one policy key, an id or 'default', or raise ValueError naming it."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in IDS or key == _DEFAULT_KEY:
            return key
        hint = _suggest(value, [*CATALOGUE, _DEFAULT_KEY])
    else:
        hint = ""
    raise ValueError(
        f"unknown pitfall id {value!r} in the pitfalls setting{hint}. "
        f"Use a pitfall id or 'default'. {_WHERE_IDS}"
    )


def _parse_policy_string(text: str) -> Dict[str, str]:
    """Parse ``'default=warn,pass-by-value=error'``; a bare action sets the default."""
    policy: Dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            raise ValueError(
                f"empty entry in the pitfalls setting {text!r}; "
                f"expected 'id=action' entries separated by commas, e.g. {_POLICY_EXAMPLE}."
            )
        if "=" in item:
            name, _, value = item.partition("=")
            policy[_key(name)] = _action(value, name.strip())
        else:
            policy[_DEFAULT_KEY] = _action(item, None)
    return policy


def validate_policy(value: Policy) -> Union[str, Dict[str, str]]:
    """Check a ``pitfalls`` setting and return it normalized.

    The setting says what to do when a pitfall is found: ``'warn'`` (a
    warning of the pitfall's category), ``'error'`` (a :class:`PitfallError`)
    or ``'ignore'``, for every pitfall or per id. Later entries win.

    Args:
        value: one action (``'error'``); a mapping of id or ``'default'`` to an
            action (``{'default': 'warn', 'pass-by-value': 'error'}``); or the
            same as a string (``'default=warn,pass-by-value=error'``, where a
            bare action such as ``'error,sys-exit=warn'`` sets the default).

    Returns:
        The action as a lower-case str, or a plain dict of lower-case ids
        (and ``'default'``) to actions.

    Raises:
        ValueError: an unknown id or action (with a close match and the
            allowed actions), or an empty entry.
        TypeError: ``value`` is neither a str nor a mapping.
    """
    if isinstance(value, str):
        if "=" in value or "," in value:
            return _parse_policy_string(value)
        return _action(value, None)
    if isinstance(value, Mapping):
        return {_key(k): _action(v, str(k).strip()) for k, v in value.items()}
    raise TypeError(
        f"the pitfalls setting must be an action ({_ALLOWED_ACTIONS}) or a mapping of id to action, "
        f"not {type(value).__name__}"
    )


def action_for(policy: Policy, id: str) -> str:
    """Return the action in force for one pitfall id.

    A mapping without the id falls back to its ``'default'`` entry, else ``'warn'``.

    Raises:
        ValueError: a bad policy (see :func:`validate_policy`) or an unknown id.
    """
    return _action_for_normalized(validate_policy(policy), id)


def _action_for_normalized(policy: Union[str, Dict[str, str]], id: str) -> str:
    category(id)
    if isinstance(policy, str):
        return policy
    return policy.get(id, policy.get(_DEFAULT_KEY, "warn"))


# --- Reporting ---------------------------------------------------------------------


class PitfallLog:
    """Every pitfall reported in this process, in order, safe to use from any thread.

    The client keeps one (:data:`LOG`) so summaries, such as the pytest
    plugin's, can list what was found even when warnings were filtered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # records in the order added, each with its jid when known,
        # e.g. [{'id': 'pass-by-value', 'message': '...', 'what': '...', 'jid': 7}]
        self._records: List[Dict[str, Any]] = []

    def add(self, record: Mapping[str, Any], jid: Any = None) -> None:
        """Keep a copy of ``record``, with ``'jid': jid`` added when a jid is given.

        Raises:
            ValueError: the record's id is not a catalogue id.
        """
        category(record["id"])
        entry = dict(record)
        if jid is not None:
            entry["jid"] = jid
        with self._lock:
            self._records.append(entry)

    def snapshot(self) -> List[Dict[str, Any]]:
        """Return copies of the records kept so far, oldest first."""
        with self._lock:
            return [dict(r) for r in self._records]

    def counts(self) -> Dict[str, int]:
        """Return how many records each id has, ids in catalogue order, e.g. ``{'pass-by-value': 2}``."""
        with self._lock:
            counter = Counter(r["id"] for r in self._records)
        return {id: counter[id] for id in CATALOGUE if id in counter}

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


#: The process-wide log that :func:`emit` fills.
LOG = PitfallLog()


def _checked(records: Iterable[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """Materialize ``records`` and check each has a known id and a message, before acting on any."""
    checked = list(records)
    for rec in checked:
        if not isinstance(rec, Mapping) or not isinstance(rec.get("message"), str):
            raise TypeError(f"a pitfall record must be a mapping with 'id' and a str 'message', not {rec!r}")
        category(rec.get("id"))  # type: ignore[arg-type]
    return checked


def emit(
    records: Iterable[Mapping[str, Any]],
    policy: Policy,
    *,
    stacklevel: int = 2,
    jid: Any = None,
) -> None:
    """Report pitfall records as the policy says: warn, raise, or ignore each one.

    Every record that is not ignored is added to :data:`LOG` first; then each
    ``'warn'`` record becomes a warning of its category; finally, if any
    record's action is ``'error'``, one :class:`PitfallError` lists them all.
    Warnings come before the error so nothing found is hidden by it.

    Args:
        records: pitfall records (see :func:`record`).
        policy: the ``pitfalls`` setting (see :func:`validate_policy`).
        stacklevel: as for :func:`warnings.warn`, counted from the caller of
            ``emit``: 2 blames the code that called the caller.
        jid: the job the records are about, kept in the log and named by the error.

    Raises:
        PitfallError: some record's action is ``'error'``; ``.pitfalls`` holds those records.
        ValueError: a bad policy or an unknown id (before anything is reported).
        TypeError: a record without a str ``message``.
    """
    normalized = validate_policy(policy)
    checked = _checked(records)
    acted = [(rec, _action_for_normalized(normalized, rec["id"])) for rec in checked]
    for rec, action in acted:
        if action != "ignore":
            LOG.add(rec, jid=jid)
    errors: List[Dict[str, Any]] = []
    for rec, action in acted:
        if action == "warn":
            warnings.warn(rec["message"], category(rec["id"]), stacklevel=stacklevel + 1)
        elif action == "error":
            errors.append(dict(rec))
    if errors:
        ids = ", ".join(dict.fromkeys(r["id"] for r in errors))
        count = "1 pitfall is" if len(errors) == 1 else f"{len(errors)} pitfalls are"
        message = f"{count} set to 'error' by the pitfalls setting ({ids}):\n" + "\n".join(
            r["message"] for r in errors
        )
        raise PitfallError(message, pitfalls=errors, jid=jid)
