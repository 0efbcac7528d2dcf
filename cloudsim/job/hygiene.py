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

- Threads: ``threading.Thread.start`` is wrapped once (``install``) to keep
  where each thread was started (a few frames, no source lines). ``before``
  keeps the set of live threads, ``after`` compares; threads alive before the
  job (the worker's own) are never blamed. Threads started outside the
  ``threading`` module (C libraries' own pools) are not seen.
- Subprocesses: the worker is made a *child subreaper* (Linux), so orphaned
  grandchildren come back to it. ``after`` asks ``waitpid(-1, WNOHANG)``:
  ``ChildProcessError`` means no child at all, the common case, in about a
  microsecond; only when children exist are they listed from
  ``/proc/self/task/*/children`` and, if leaked, walked with psutil.
- Globals: user code is a module whose file is in the flat module directory
  (``CLOUDSIM__MODULE_DIR``), and a function sent by value from a named module
  (its ``__globals__``; a ``__main__`` function is pass-by-value's business).
  A module's baseline is taken when it finishes importing (a path hook on the
  module directory) and after every job; the check compares identities of the
  values (rebinding) and a shallow fingerprint of containers and plain
  objects: length and identities of their items (in-place change). Nested
  changes (``ITEMS[0].append``) and changes inside objects such as arrays are
  not seen. A changed global is reported once, by the job that changed it.

With ``_kill_process=True`` the interpreter is discarded anyway, so only the
subprocess check runs (a child in a session of its own would outlive the
interpreter).

This module is imported by the worker: it imports only the standard library
and :mod:`cloudsim.pitfalls` (psutil lazily, when something leaked).
"""

from __future__ import annotations

import collections
import importlib.machinery
import os
import reprlib
import signal
import sys
import threading
import time
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from cloudsim import pitfalls as _pitfalls

__all__ = [
    "install",
    "before",
    "loaded",
    "after",
    "GRACE",
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
_KEY = __name__  # this module's key in job.scratch

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxset = _repr.maxtuple = 6

# Installed state of this worker.
_INSTALLED = False
_MODULE_DIR = ""  # realpath of the flat module directory, e.g. '/tmp/server/modules'
_CHECK_GLOBALS = True
_BASELINE_CHILDREN: Set[int] = set()  # children of the worker before its first job


# ================================================================== threads
_ORIGINAL_START = threading.Thread.start


def _start(self: threading.Thread) -> None:
    """``Thread.start``, keeping where the thread was started (cheap: a few frame fields)."""
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


def _new_threads(baseline: Iterable[threading.Thread]) -> List[threading.Thread]:
    known = baseline if isinstance(baseline, (set, frozenset)) else set(baseline)
    current = threading.current_thread()
    return [
        t for t in threading.enumerate()
        if t not in known and t is not current and not isinstance(t, threading._DummyThread)  # type: ignore[attr-defined]
    ]


def leaked_threads(baseline: Iterable[threading.Thread], grace: float = GRACE) -> List[threading.Thread]:
    """Threads not in ``baseline`` still alive after a shared ``grace`` of joining."""
    new = _new_threads(baseline)
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


def _check_threads(job: Any, baseline: Set[threading.Thread]) -> None:
    leaked = leaked_threads(baseline)
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

    Args:
        label: the module name used in reports, e.g. ``'counter_mod'``.
        namespace: the dict to watch.
    """

    __slots__ = ("label", "namespace", "values", "prints")

    def __init__(self, label: str, namespace: Dict[str, Any]) -> None:
        self.label = label
        self.namespace = namespace
        self.values: Dict[str, Any] = {}
        # name -> fingerprint for names whose values can change in place, e.g. {'ITEMS': (0, ())}
        self.prints: Dict[str, Any] = {}
        self.take()

    def take(self) -> None:
        """Remember the namespace as it is now (references keep old objects alive: ids stay unique)."""
        values = {}
        prints = {}
        for name, value in list(self.namespace.items()):
            if (name[:2] == "__" and name[-2:] == "__") or isinstance(value, types.ModuleType):
                continue  # dunders, and modules: importing pkg.sub binds 'sub' in pkg
            values[name] = value
            fp = fingerprint(value)
            if fp is not None:
                prints[name] = fp
        self.values = values
        self.prints = prints

    def changes(self) -> List[Tuple[str, str, str]]:
        """What changed since :meth:`take`: ``[(name, how, detail), ...]``, how in rebound/changed/added/deleted."""
        out: List[Tuple[str, str, str]] = []
        namespace = self.namespace
        missing = _MISSING
        try:
            items = list(namespace.items())
        except RuntimeError:
            items = list(namespace.copy().items())
        seen = 0
        for name, value in items:
            if (name[:2] == "__" and name[-2:] == "__") or isinstance(value, types.ModuleType):
                continue
            seen += 1
            old = self.values.get(name, missing)
            if old is missing:
                out.append((name, "added", _describe_value(value)))
            elif old is not value:
                out.append((name, "rebound", f"{_describe_value(old)} -> {_describe_value(value)}"))
            elif name in self.prints and fingerprint(value) != self.prints[name]:
                out.append((name, "changed", f"now {_describe_value(value)}"))
        if seen != len(self.values) or any(how == "added" for _name, how, _detail in out):
            current = {name for name, _ in items}
            out.extend((name, "deleted", "") for name in self.values if name not in current)
        return out


_MISSING = object()

# module name -> baseline, for the user modules of the flat directory loaded in this worker,
# e.g. {'counter_mod': <GlobalsBaseline counter_mod>}
_MODULES: Dict[str, GlobalsBaseline] = {}
_SEEN_MODULE_COUNT = -1  # len(sys.modules) when it was last scanned for user modules


def _in_module_dir(path: Any) -> bool:
    if not _MODULE_DIR or not isinstance(path, str) or not path:
        return False
    real = os.path.realpath(path)
    return real == _MODULE_DIR or real.startswith(_MODULE_DIR + os.sep)


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
    if not _MODULE_DIR:
        return
    sys.path_hooks.insert(0, _path_hook)
    for entry in list(sys.path_importer_cache):
        if _in_module_dir(entry):
            del sys.path_importer_cache[entry]
    _scan_modules()


def _report_globals(job: Any, changes: List[Tuple[str, str, str, str]], by_value: bool) -> None:
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
    if by_value:
        why += (" (Today the simulator sends this function's module by value, so here the change is lost with "
                "the job; on the cloud the module is imported in the interpreter and the change stays.)")
    job.pitfalls.append(_pitfalls.record(
        "persistent-interpreter",
        f"Job {job.jid} ({job.func_name}) left module-level globals of user code changed: "
        + "; ".join(parts) + more + ".",
        why,
        "avoid writing to module globals in jobs; if you must, reset them to their initial values before "
        "the job returns (e.g. in try/finally), or run such jobs with _kill_process=True.",
        globals=names,
    ))


def _function_namespace(func: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(module name, globals) of a job function sent by value from a named module, else None."""
    inner = getattr(func, "__func__", func)
    if not isinstance(inner, types.FunctionType):
        return None
    module_name = getattr(inner, "__module__", None)
    if not module_name or module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__dict__", None) is inner.__globals__:
        return None  # by reference: a real module, checked as such when it is user code
    return module_name, inner.__globals__


# ===================================================================== hooks
def install(settings: dict) -> None:
    """Once per worker: thread start sites, subreaper, import baselines of user modules."""
    global _INSTALLED, _MODULE_DIR, _CHECK_GLOBALS, _BASELINE_CHILDREN
    if _INSTALLED:
        return
    _INSTALLED = True
    threading.Thread.start = _start  # type: ignore[method-assign]
    _set_child_subreaper()
    _BASELINE_CHILDREN = _direct_children() if _reap_zombies() else set()
    try:
        _CHECK_GLOBALS = _pitfalls.action_for(settings.get("pitfalls", "warn"), "persistent-interpreter") != "ignore"
    except (ValueError, TypeError):
        _CHECK_GLOBALS = True
    module_dir = os.environ.get("CLOUDSIM__MODULE_DIR", "")
    _MODULE_DIR = os.path.realpath(module_dir) if module_dir else ""
    if _CHECK_GLOBALS:
        _install_import_baselines()


def before(job: Any) -> None:
    """Keep the threads alive before the job (they are not the job's)."""
    if job.retire:  # _kill_process: the interpreter goes anyway
        return
    job.scratch[_KEY] = {"threads": set(threading.enumerate())}


def loaded(job: Any) -> None:
    """After the job's function is unpickled, before it runs: baseline a by-value function's globals."""
    if job.retire or not _CHECK_GLOBALS:
        return
    found = _function_namespace(job.func)
    if found is not None:
        state = job.scratch.setdefault(_KEY, {})
        state["function"] = GlobalsBaseline(found[0], found[1])


def after(job: Any) -> None:
    """Check what the job left behind (see the module docstring)."""
    state = job.scratch.get(_KEY)
    if state is not None and not job.retire:
        _check_threads(job, state["threads"])
    _check_children(job)
    if not _CHECK_GLOBALS or (job.retire and state is None):
        return
    _check_globals(job, state)


def _check_globals(job: Any, state: Optional[dict]) -> None:
    _scan_modules()
    changes: List[Tuple[str, str, str, str]] = []
    for label, baseline in list(_MODULES.items()):
        found = baseline.changes()
        if found:
            changes.extend((label, name, how, detail) for name, how, detail in found)
            baseline.take()
    by_value = False
    function_baseline = state.get("function") if state else None
    if function_baseline is not None:
        found = function_baseline.changes()
        if found:
            by_value = True
            changes.extend((function_baseline.label, name, how, detail) for name, how, detail in found)
    if changes and not job.opts.get("kill_process"):
        _report_globals(job, changes, by_value)
