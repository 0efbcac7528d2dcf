"""What a job leaves behind in its interpreter: threads, subprocesses, changed globals.

Interpreters are persistent on the cloud: later jobs run in the interpreter a
job used. PiCloud asked jobs to clean up after themselves and enforced part of
it. This hook module checks, after every job::

    job returns ─► leaked-threads:      threads it started still alive?  (50 ms grace)
               │       yes: list them on stderr, pitfall, retire the interpreter
               ├─► leaked-subprocesses: children still alive?  (zombies are reaped)
               │       yes: kill the whole tree, list it on stderr, pitfall, retire
               └─► persistent-interpreter: module-level globals of user code changed?
                       yes: pitfall naming module.name (the interpreter stays: that is the point)

The job's result is delivered either way (status ``done``).

How each check stays cheap (it runs on every job):

- Threads: ``threading.Thread.start`` is wrapped once (``install``) to number
  each thread and keep where it was started (a few frames, no source lines).
  The last number is noted at the end of each job; when no thread was
  started since, ``after`` has nothing to look at. Threads alive before the
  job (the worker's own) are never blamed. Threads started outside
  ``threading.Thread.start`` (C libraries' own pools) are not seen.
- Subprocesses: the worker is made a *child subreaper* (Linux), so orphaned
  grandchildren come back to it. ``after`` asks ``waitpid(-1, WNOHANG)``:
  ``ChildProcessError`` means no child at all, the common case, in about a
  microsecond; only when children exist are they listed from
  ``/proc/self/task/*/children`` and, if leaked, walked with psutil.
- Globals: user code is a module whose file is in the flat module directory
  (``CLOUDSIM__MODULE_DIR``), where the client ships the user's modules. (Code
  of ``__main__`` travels by value: each job gets a fresh copy of its globals,
  so a change there cannot persist; that is ``pass-by-value``'s business.)
  A module's baseline is taken when it finishes importing (a path hook on the
  module directory) and after every job; the check compares identities of the
  values (rebinding) and a shallow fingerprint of containers and plain
  objects: length and identities of their items (in-place change). Nested
  changes (``ITEMS[0].append``) and changes inside objects such as arrays are
  not seen. A changed global is reported once, by the job that changed it.

With ``_kill_process=True`` the interpreter is discarded anyway, so only the
subprocess check runs (a child in a session of its own would outlive the
interpreter). There is no ``before`` hook: the state before a job is the
state the previous job's check left.

This module is imported by the worker: it imports only the standard library
and :mod:`cloudsim.pitfalls` (psutil lazily, when something leaked).
"""

from __future__ import annotations

import collections
import importlib.machinery
import itertools
import operator
import os
import reprlib
import signal
import sys
import threading
import time
import types
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.job import scope as _scope

__all__ = [
    "install",
    "after",
    "GRACE",
    "leaked_threads",
    "leaked_children",
    "started_at",
    "fingerprint",
    "GlobalsBaseline",
]

#: Seconds, in total, that threads and subprocesses still running when a job
#: returns get to finish before they count as leaked.
GRACE = 0.05
_STACK_LIMIT = 12  # frames kept per started thread
_LIST_LIMIT = 20  # threads/processes/globals named in one report
_SHALLOW_LIMIT = 1000  # containers longer than this are fingerprinted by length and their ends

_HERE = os.path.dirname(os.path.abspath(__file__))
_WORKER_FILES = frozenset({os.path.join(_HERE, "worker.py")})

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxset = _repr.maxtuple = 6

# Installed state of this worker.
_INSTALLED = False
# the flat module directory as given and as its realpath, e.g. ('/tmp/server/modules',)
_MODULE_DIRS: Tuple[str, ...] = ()
_CHECK_GLOBALS = True
_BASELINE_CHILDREN: Set[int] = set()  # children of the worker before its first job


# ================================================================== threads
_ORIGINAL_START = threading.Thread.start


# How many threads were started through threading.Thread.start in this worker, and that
# count when the last job ended (or at install). A job's threads are those numbered above
# the mark: the mark is not taken in before(), because other hooks' before() (the imports
# hook imports the job's modules) already run code of the job.
_STARTS = itertools.count(1)
_started = 0
_mark = 0


def _start(self: threading.Thread) -> None:
    """``Thread.start``, keeping where the thread was started (cheap: a few frame fields)."""
    global _started
    if not _scope.ALL:
        if not _scope.applies():  # a thread of the Dask worker's own, not the job's
            return _ORIGINAL_START(self)
        _scope.mark(self)
    _started = next(_STARTS)
    self._cloudsim_start_number = _started  # type: ignore[attr-defined]
    try:
        frames = []
        frame: Optional[types.FrameType] = sys._getframe(1)
        while frame is not None and len(frames) < _STACK_LIMIT:
            code = frame.f_code
            if code.co_filename in _WORKER_FILES:  # the job's own frames end here
                break
            frames.append((code.co_filename, frame.f_lineno, code.co_name))
            frame = frame.f_back
        self._cloudsim_started_at = frames  # type: ignore[attr-defined]
    except Exception:  # never stop a thread from starting
        pass
    _ORIGINAL_START(self)


def started_at(thread: threading.Thread) -> List[Tuple[str, int, str]]:
    """Where ``thread`` was started, outermost frame first: ``[(file, line, function), ...]``."""
    frames = getattr(thread, "_cloudsim_started_at", None) or []
    return list(reversed(frames))


def _callable_name(func: Any) -> str:
    if func is None:
        return ""
    inner = getattr(func, "__func__", func)
    module = getattr(inner, "__module__", None) or ""
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None) or type(func).__name__
    return f"{module}.{name}" if module else name


def _thread_target(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    if target is not None:
        return _callable_name(target)
    run = type(thread).run
    if run is not threading.Thread.run:  # a subclass that overrides run()
        return _callable_name(run)
    return "(none)"


def _describe_thread(thread: threading.Thread) -> Dict[str, Any]:
    frames = started_at(thread)
    return {
        "name": thread.name,
        "target": _thread_target(thread),
        "daemon": bool(thread.daemon),
        "ident": thread.ident,
        "started_at": [f"{f}:{line} in {func}" for f, line, func in frames],
    }


def _new_threads(since: int) -> List[threading.Thread]:
    current = threading.current_thread()
    return [
        t for t in threading.enumerate()
        if getattr(t, "_cloudsim_start_number", 0) > since and t is not current
    ]


def leaked_threads(since: int, grace: float = GRACE) -> List[threading.Thread]:
    """Threads started after start number ``since`` still alive after a shared ``grace`` of joining.

    Threads alive before (the worker's own, or any started before ``since``)
    are never returned, nor threads started outside ``threading.Thread.start``.
    """
    if since == _started:  # no thread was started at all: the common case, nothing to look at
        return []
    new = _new_threads(since)
    if not new:
        return []
    deadline = time.monotonic() + grace
    for thread in new:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            thread.join(left)
        except RuntimeError:  # not started yet (in limbo)
            pass
    return [t for t in new if t.is_alive()]


def _check_threads(job: Any, since: int) -> None:
    leaked = leaked_threads(since)
    if not leaked:
        return
    described = [_describe_thread(t) for t in leaked[:_LIST_LIMIT]]
    count = f"{len(leaked)} thread{'s' if len(leaked) != 1 else ''}"
    lines = [f"cloudsim: job {job.jid} returned with {count} it started still running (pitfall: leaked-threads):"]
    for info in described:
        lines.append(f"  thread {info['name']!r} ({'daemon' if info['daemon'] else 'non-daemon'}), "
                     f"target {info['target']}, started at:")
        lines.extend(f"    {where}" for where in info["started_at"] or ["(unknown)"])
    if len(leaked) > _LIST_LIMIT:
        lines.append(f"  ... and {len(leaked) - _LIST_LIMIT} more")
    lines.append("cloudsim: the job's interpreter is killed and replaced; the next job gets a new one.")
    job.stderr_notes.extend(lines)
    names = ", ".join(
        f"{i['name']!r} (target {i['target']}"
        + (f", started at {i['started_at'][-1]}" if i["started_at"] else "") + ")"
        for i in described
    )
    job.pitfalls.append(_pitfalls.record(
        "leaked-threads",
        f"Job {job.jid} ({job.func_name}) returned with {count} still running: {names}.",
        "the cloud reuses a job's interpreter for later jobs, so a thread left running would go on inside "
        "them; PiCloud lists such threads on the job's stderr and kills the interpreter (cloudsim does too).",
        "stop and join every thread before the job returns (threading.enumerate() shows them), shut down "
        "thread pools (executor.shutdown()) and the threads of libraries you started; or use _kill_process=True.",
        threads=described,
    ))
    job.retire = True


# ============================================================== subprocesses
def _set_child_subreaper() -> None:
    """Make orphaned descendants of this worker its children again (Linux), so none escapes the check."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


def _reap_zombies() -> bool:
    """Reap children that have exited; True when live children remain."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        except OSError:
            return True
        if pid == 0:
            return True


def _direct_children() -> Set[int]:
    """Pids of this process's children (all threads'), from /proc; psutil where /proc lacks them."""
    pids: Set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.update(int(p) for p in f.read().split())
        return pids
    except (OSError, ValueError):
        pass
    try:
        import psutil

        return {p.pid for p in psutil.Process().children()}
    except Exception:
        return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def leaked_children(baseline: Set[int], grace: float = GRACE) -> List[int]:
    """Live children outside ``baseline`` after ``grace``; exited ones are reaped on the way."""
    if not _reap_zombies():
        return []
    deadline = time.monotonic() + grace
    while True:
        live = sorted(pid for pid in _direct_children() - baseline if _alive(pid))
        if not live or time.monotonic() >= deadline:
            return live
        time.sleep(0.005)
        if not _reap_zombies():
            return []


def _kill_tree(pids: List[int]) -> List[Dict[str, Any]]:
    """Kill these children and all their descendants; return what each was (pid, command line)."""
    import psutil

    procs: List[Any] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
        except psutil.Error:
            continue
    described = []
    seen = set()
    for proc in procs:
        if proc.pid in seen:
            continue
        seen.add(proc.pid)
        try:
            cmdline = " ".join(proc.cmdline()) or f"[{proc.name()}]"
        except psutil.Error:
            cmdline = "(gone)"
        described.append({"pid": proc.pid, "cmdline": cmdline[:300], "parent": _safe_ppid(proc)})
    for proc in procs:  # children first would let grandchildren be orphaned; SIGKILL is immediate for all
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    deadline = time.monotonic() + 5
    while _reap_zombies() and time.monotonic() < deadline:  # orphaned grandchildren come back here
        if not any(_alive(pid) for pid in _direct_children()):
            _reap_zombies()
            break
        time.sleep(0.01)
    return described


def _safe_ppid(proc: Any) -> Optional[int]:
    try:
        return proc.ppid()
    except Exception:
        return None


def _check_children(job: Any) -> None:
    leaked = leaked_children(_BASELINE_CHILDREN)
    if not leaked:
        return
    described = _kill_tree(leaked)
    shown = described[:_LIST_LIMIT]
    count = f"{len(described)} subprocess{'es' if len(described) != 1 else ''}"
    lines = [f"cloudsim: job {job.jid} returned with {count} it started still running; "
             f"killed {'them' if len(described) != 1 else 'it'} (pitfall: leaked-subprocesses):"]
    lines.extend(f"  pid {d['pid']}: {d['cmdline']}" for d in shown)
    if len(described) > _LIST_LIMIT:
        lines.append(f"  ... and {len(described) - _LIST_LIMIT} more")
    lines.append("cloudsim: the job's interpreter is killed and replaced; the next job gets a new one.")
    job.stderr_notes.extend(lines)
    names = ", ".join(f"pid {d['pid']} ({d['cmdline'][:80]})" for d in shown)
    job.pitfalls.append(_pitfalls.record(
        "leaked-subprocesses",
        f"Job {job.jid} ({job.func_name}) returned with {count} still running: {names}.",
        "the cloud reuses a job's interpreter for later jobs, so subprocesses must end with the job that "
        "started them; cloudsim killed them and the interpreter.",
        "wait for every subprocess before the job returns (proc.wait(), proc.communicate(), "
        "subprocess.run()), terminate the ones you no longer need, and close multiprocessing pools "
        "(pool.close(); pool.join()).",
        processes=described,
    ))
    job.retire = True


# =================================================================== globals
_SCALARS = (int, float, complex, str, bytes, bool, type(None), range, frozenset, tuple)
_OPAQUE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
           type, property, classmethod, staticmethod)
_PLAIN_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range,
                          types.FunctionType, types.BuiltinFunctionType, types.ModuleType, type})


def _ids(values: Iterable[Any], size: int) -> Tuple[Any, ...]:
    if size <= _SHALLOW_LIMIT:
        return tuple(map(id, values))
    return ("long", size)


def fingerprint(value: Any) -> Any:
    """A shallow fingerprint of a global's value: what changes when it is changed in place.

    ``None`` for values that cannot change in place (numbers, strings,
    tuples, ...) and for functions, classes and modules; for lists, dicts,
    sets, byte arrays and plain objects, their length and the identities of
    their items (of their attributes, for objects). Containers longer than
    1,000 items are fingerprinted by their length and first and last items.
    """
    kind = type(value)
    if kind is list:  # the common cases first, without isinstance chains
        n = len(value)
        if n <= _SHALLOW_LIMIT:
            return (n, tuple(map(id, value)))
    elif kind is dict:
        n = len(value)
        if n <= _SHALLOW_LIMIT:
            return (n, tuple(map(id, value)), tuple(map(id, value.values())))
    elif kind in _PLAIN_TYPES:
        return None
    if isinstance(value, _SCALARS) or isinstance(value, _OPAQUE):
        return None
    try:
        if isinstance(value, dict):
            n = len(value)
            if n > _SHALLOW_LIMIT:
                head = list(zip(range(32), value.items()))
                return (n, tuple((id(k), id(v)) for _, (k, v) in head))
            return (n, tuple(map(id, value)), tuple(map(id, value.values())))
        if isinstance(value, (list, collections.deque)):
            n = len(value)
            if n > _SHALLOW_LIMIT:
                return (n, tuple(map(id, list(value)[:32])), tuple(map(id, list(value)[-32:])))
            return (n, tuple(map(id, value)))
        if isinstance(value, (set, bytearray)):
            n = len(value)
            if isinstance(value, bytearray):
                return (n, hash(bytes(value[:4096])))
            return (n, _ids(value, n))
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            return ("obj", len(attrs), tuple(map(id, attrs)), tuple(map(id, attrs.values())))
    except Exception:  # a container changing under our feet (a leaked thread): call it changed
        return ("unreadable", object())
    return None


def _describe_value(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


class GlobalsBaseline:
    """A snapshot of one namespace's globals (a module's ``__dict__`` or a function's ``__globals__``).

    Dunder names and names bound to modules (``import pkg.sub`` binds ``sub``
    in ``pkg``) are not state. :meth:`changes` has a fast path that runs at C
    speed when nothing changed, the common case: the namespace's size, the
    identity of every value, and the fingerprints of the containers.

    Args:
        label: the module name used in reports, e.g. ``'counter_mod'``.
        namespace: the dict to watch.
    """

    __slots__ = ("label", "namespace", "size", "names", "values", "prints")

    def __init__(self, label: str, namespace: Dict[str, Any]) -> None:
        self.label = label
        self.namespace = namespace
        self.size = 0  # len(namespace) at the snapshot, dunders included
        self.names: Tuple[str, ...] = ()  # the state names, e.g. ('COUNTER', 'ITEMS', 'bump')
        self.values: Tuple[Any, ...] = ()  # their values, same order (references keep ids unique)
        # name -> fingerprint for names whose values can change in place, e.g. {'ITEMS': (0, ())}
        self.prints: Dict[str, Any] = {}
        self.take()

    def take(self) -> None:
        """Remember the namespace as it is now."""
        names = []
        values = []
        prints = {}
        items = _items(self.namespace)
        for name, value in items:
            if (name[:2] == "__" and name[-2:] == "__") or isinstance(value, types.ModuleType):
                continue
            names.append(name)
            values.append(value)
            fp = fingerprint(value)
            if fp is not None:
                prints[name] = fp
        self.size = len(items)
        self.names = tuple(names)
        self.values = tuple(values)
        self.prints = prints

    def unchanged(self) -> bool:
        """The fast check: True when no global was added, deleted, rebound or changed in place."""
        namespace = self.namespace
        if len(namespace) != self.size:
            return False
        if not all(map(operator.is_, map(namespace.get, self.names, itertools.repeat(_MISSING)), self.values)):
            return False
        for name, fp in self.prints.items():
            if fingerprint(namespace.get(name)) != fp:
                return False
        return True

    def changes(self) -> List[Tuple[str, str, str]]:
        """What changed since :meth:`take`: ``[(name, how, detail), ...]``, how in rebound/changed/added/deleted.

        When only names that are not state changed (a dunder, a submodule),
        the snapshot is refreshed and nothing is reported.
        """
        if self.unchanged():
            return []
        out: List[Tuple[str, str, str]] = []
        old_values = dict(zip(self.names, self.values))
        items = _items(self.namespace)
        current = set()
        for name, value in items:
            if (name[:2] == "__" and name[-2:] == "__") or isinstance(value, types.ModuleType):
                continue
            current.add(name)
            old = old_values.get(name, _MISSING)
            if old is _MISSING:
                out.append((name, "added", _describe_value(value)))
            elif old is not value:
                out.append((name, "rebound", f"{_describe_value(old)} -> {_describe_value(value)}"))
            elif name in self.prints and fingerprint(value) != self.prints[name]:
                out.append((name, "changed", f"now {_describe_value(value)}"))
        out.extend((name, "deleted", "") for name in self.names if name not in current)
        if not out:
            self.take()
        return out


def _items(namespace: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """The namespace's items, even while a leaked thread changes it."""
    for _ in range(3):
        try:
            return list(namespace.items())
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return list(namespace.copy().items())


_MISSING = object()

# module name -> baseline, for the user modules of the flat directory loaded in this worker,
# e.g. {'counter_mod': <GlobalsBaseline counter_mod>}
_MODULES: Dict[str, GlobalsBaseline] = {}
_SEEN_MODULE_COUNT = -1  # len(sys.modules) when it was last scanned for user modules


def _in_module_dir(path: Any) -> bool:
    """True for a path in the flat module directory (by prefix: no file system call per module)."""
    if not _MODULE_DIRS or not isinstance(path, str) or not path:
        return False
    return any(path == d or path.startswith(d + os.sep) for d in _MODULE_DIRS)


def _register(module: types.ModuleType) -> None:
    """Take the baseline of a user module (at the end of its import, or when first noticed)."""
    name = getattr(module, "__name__", None)
    if not name:
        return
    entry = _MODULES.get(name)
    if entry is not None and entry.namespace is module.__dict__:
        entry.take()
    else:
        _MODULES[name] = GlobalsBaseline(name, module.__dict__)


def _scan_modules() -> None:
    """Find user modules imported without the path hook (cheap: only when sys.modules grew)."""
    global _SEEN_MODULE_COUNT
    count = len(sys.modules)
    if count == _SEEN_MODULE_COUNT:
        return
    _SEEN_MODULE_COUNT = count
    for name, module in list(sys.modules.items()):
        if name in _MODULES and _MODULES[name].namespace is getattr(module, "__dict__", None):
            continue
        if _in_module_dir(getattr(module, "__file__", None)):
            _register(module)


class _SnapshotSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads a module of the flat directory and takes its baseline right after it ran."""

    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        _register(module)


class _SnapshotSourcelessLoader(importlib.machinery.SourcelessFileLoader):
    """As :class:`_SnapshotSourceLoader`, for ``.pyc`` files."""

    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        _register(module)


_FINDER_HOOK = importlib.machinery.FileFinder.path_hook(
    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    (_SnapshotSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
    (_SnapshotSourcelessLoader, importlib.machinery.BYTECODE_SUFFIXES),
)


def _path_hook(path: str) -> Any:
    """``sys.path_hooks`` entry: our finder for the flat module directory (and packages in it)."""
    if not _in_module_dir(path):
        raise ImportError("not the flat module directory")
    return _FINDER_HOOK(path)


def _install_import_baselines() -> None:
    if not _MODULE_DIRS:
        return
    sys.path_hooks.insert(0, _path_hook)
    for entry in list(sys.path_importer_cache):
        if _in_module_dir(entry):
            del sys.path_importer_cache[entry]
    _scan_modules()


def _report_globals(job: Any, changes: List[Tuple[str, str, str, str]]) -> None:
    shown = changes[:_LIST_LIMIT]
    names = [f"{label}.{name}" for label, name, _how, _detail in changes]
    parts = []
    for label, name, how, detail in shown:
        text = {"rebound": "rebound", "changed": "changed in place", "added": "added",
                "deleted": "deleted"}[how]
        parts.append(f"{label}.{name} ({text}{': ' + detail if detail else ''})")
    more = f", and {len(changes) - _LIST_LIMIT} more" if len(changes) > _LIST_LIMIT else ""
    why = ("the cloud reuses a job's interpreter for later jobs (persistent interpreter), so the next job "
           "that runs there starts with these values, not the ones in your module's source.")
    job.pitfalls.append(_pitfalls.record(
        "persistent-interpreter",
        f"Job {job.jid} ({job.func_name}) left module-level globals of user code changed: "
        + "; ".join(parts) + more + ".",
        why,
        "avoid writing to module globals in jobs; if you must, reset them to their initial values before "
        "the job returns (e.g. in try/finally), or run such jobs with _kill_process=True.",
        globals=names,
    ))


# ===================================================================== hooks
def install(settings: dict) -> None:
    """Once per worker: thread start sites, subreaper, import baselines of user modules."""
    global _INSTALLED, _MODULE_DIRS, _CHECK_GLOBALS, _BASELINE_CHILDREN, _mark
    if _INSTALLED:
        return
    _INSTALLED = True
    threading.Thread.start = _start  # type: ignore[method-assign]
    _mark = _started
    _set_child_subreaper()
    _BASELINE_CHILDREN = _direct_children() if _reap_zombies() else set()
    try:
        _CHECK_GLOBALS = _pitfalls.action_for(settings.get("pitfalls", "warn"), "persistent-interpreter") != "ignore"
    except (ValueError, TypeError):
        _CHECK_GLOBALS = True
    module_dir = os.environ.get("CLOUDSIM__MODULE_DIR", "")
    if module_dir:
        given = os.path.abspath(module_dir).rstrip(os.sep)
        _MODULE_DIRS = tuple(dict.fromkeys((given, os.path.realpath(given))))
    if _CHECK_GLOBALS:
        _install_import_baselines()


def after(job: Any) -> None:
    """Check what the job left behind (see the module docstring)."""
    global _mark
    since, _mark = _mark, _started
    if job.opts.get("kill_process"):  # the interpreter goes anyway: only children can outlive it
        _check_children(job)
        return
    _check_threads(job, since)
    _check_children(job)
    if _CHECK_GLOBALS:
        _check_globals(job)


def _check_globals(job: Any) -> None:
    _scan_modules()
    changes: List[Tuple[str, str, str, str]] = []
    for label, baseline in list(_MODULES.items()):
        found = baseline.changes()
        if found:
            changes.extend((label, name, how, detail) for name, how, detail in found)
            baseline.take()
    if changes:
        _report_globals(job, changes)
