"""The ``cloud`` API: PiCloud's functions, with the original's argument rules.

This is the facade. It validates what the user passed (types, reserved
keywords, arity), serializes the job (``cloudsim.wire``), and hands it to a
:class:`cloudsim.backend.Backend`: the simulator or a Dask cluster in the
client, or, inside a job, :class:`InJobBackend`, which forwards every call to
the client's backend (that is what makes recursion, and its deadlock, real).
Nothing here knows which backend runs the jobs.
Everything that comes back is turned into PiCloud's return values and
exceptions here, and the pitfalls found on a job are emitted once, when its
outcome is collected.

It never touches a pipe or a process.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import os
import pickle
import sys
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from cloudsim import keywords as _kw
from cloudsim import pitfalls as _pitfalls
from cloudsim.config import config
from cloudsim.errors import CloudException, CloudTimeoutError, NotStartedError
from cloudsim.job import context as _context
from cloudsim.wire import pickler as _wire

finished_statuses = ["done", "stalled", "error", "killed"]
c1, c2, m1 = "c1", "c2", "m1"
MAP_LIMIT = 10_000

_lock = threading.RLock()
_cloud: Any = None  # the running Backend (simulator or Dask), in the client
_in_job: Optional["InJobBackend"] = None


class _JobSettings:
    """The settings a job sees (sent by the client with the worker)."""

    def __init__(self, values: dict) -> None:
        self.max_transmit_size = int(values.get("max_transmit_size", 1_000_000))
        self.pitfalls = values.get("pitfalls", "warn")
        self.force_redirect_job_output = True
        self.import_order_seed = None


class InJobBackend:
    """The cloud as seen from inside a job: every call is a request to the client's backend."""

    simulated = True  # answered per call by connection_info(); is_simulated() asks the context

    def __init__(self, ctx: _context.JobContext) -> None:
        self.ctx = ctx
        self.settings = _JobSettings(getattr(ctx, "settings", {}) or {})

    def submit(self, items: Sequence[tuple]) -> List[int]:
        for item in items:
            if item[3].get("callbacks"):
                raise CloudException(
                    "_callback and _callback_on_error cannot be used from inside a job: the callback would run "
                    "in the client's interpreter. Fix: join the jobs in the job instead, or submit with "
                    "_depends_on and do the follow-up work in a dependent job."
                )
        return self.ctx.request("submit", list(items))

    def ship(self, seeds: set) -> None:
        """Inside a job the code is on the server already: nothing to ship."""
        return None

    def collect(self, jids, timeout, deadlock_check=True, want_results=True):
        return self.ctx.request("collect", (list(jids), timeout, deadlock_check, want_results))

    def status(self, jids):
        return self.ctx.request("status", list(jids))

    def info(self, jids, fields):
        return self.ctx.request("info", (list(jids), list(fields)))

    def kill(self, jids):
        return self.ctx.request("kill", None if jids is None else list(jids))

    def delete(self, jids):
        return self.ctx.request("delete", list(jids))

    def connection_info(self):
        info = dict(self.ctx.request("connection_info", None))
        info["running_on_cloud"] = True
        return info

    def mark_unreadable(self, jid: int, message: str) -> None:
        pass


def _backend() -> Any:
    global _in_job
    ctx = _context.current()
    if ctx is not None:
        if _in_job is None or _in_job.ctx is not ctx:
            _in_job = InJobBackend(ctx)
        return _in_job
    cloud = _cloud
    if cloud is not None:
        return cloud
    if config.use_simulator:
        _start(False, {}, rebind=False)  # a lazy start leaves the functions the user holds valid
        return _cloud
    raise NotStartedError(
        "There is no cloud yet: call cloudsim.start_simulator() (cloud.start_simulator() in PiCloud code) "
        "before using the cloud API, or set CLOUDSIM_USE_SIMULATOR=1 to start it on first use."
    )


# ---------------------------------------------------------------- lifecycle
def start_simulator(force_restart: bool = False, **settings: Any) -> None:
    """Start the simulated cloud; ``settings`` override ``cloudsim.config`` for this run.

    As PiCloud's: does nothing when a simulator is already running (unless
    ``force_restart``), and does nothing inside a job.
    """
    _start(force_restart, settings, rebind=True)


def _start(force_restart: bool, settings: Dict[str, Any], rebind: bool) -> None:
    if _context.current() is not None:
        return
    with _lock:
        if _cloud is not None and getattr(_cloud, "simulated", False) and not force_restart and not settings:
            return
        resolved = config.resolve(**settings)
        from cloudsim.server.manager import Simulator

        _install(Simulator(resolved), rebind)


def _install(backend: Any, rebind: bool) -> None:
    """Close the running backend, start ``backend`` in its place (lock held)."""
    global _cloud
    if _cloud is not None:
        old, _cloud = _cloud, None
        old.close()
    backend.start()
    _cloud = backend
    if rebind:
        _rebind()


def start_dask(address: Optional[str] = None, n_workers: Optional[int] = None,
               dashboard_address: Optional[str] = None, restart_workers: bool = False, **settings: Any) -> None:
    """Run jobs on a Dask ``distributed`` cluster, behind the same ``cloud`` API and job wrapper.

    Args:
        address: a running scheduler (``"tcp://host:8786"``); None starts a
            local cluster of worker processes on loopback, which ``close()``
            stops again (a cluster given by address is left running).
        n_workers: the local cluster's worker processes (one job at a time
            each); default ``max_concurrent_jobs``. Ignored with ``address``.
        dashboard_address: where the local cluster serves Dask's dashboard
            (e.g. ``"127.0.0.1:8787"``); off by default.
        restart_workers: with ``address``, restart the cluster's workers
            first, so jobs start in fresh interpreters as after
            ``start_simulator()`` (this ends whatever else runs on them).
        **settings: as for :func:`start_simulator` (``max_concurrent_jobs``,
            ``max_transmit_size``, ``network_timeout``, ...).

    Needs the ``dask`` extra (``pip install 'picloud-cloudsim[dask]'``). Always starts
    afresh: a running simulator or cluster is closed first. Does nothing
    inside a job.
    """
    if _context.current() is not None:
        return
    with _lock:
        resolved = config.resolve("start_dask", **settings)
        from cloudsim.dask.backend import DaskBackend

        _install(DaskBackend(resolved, address=address, n_workers=n_workers, dashboard_address=dashboard_address,
                             restart_workers=restart_workers), rebind=True)


def setkey(api_key: Any = None, api_secretkey: Any = None, server_url: Any = None, restart: bool = False,
           immutable: bool = False) -> None:
    """PiCloud's switch to its network service, which no longer exists: explains what to do instead."""
    raise CloudException(
        "cloud.setkey() connected to PiCloud's service, which cloudsim replaces with a local simulation. "
        "Fix: remove the setkey() call and start the simulator with cloud.start_simulator() "
        "(or set CLOUDSIM_USE_SIMULATOR=1 to start it on first use)."
    )


def close() -> bool:
    """Stop the cloud (simulator or Dask) and everything it started. True if something was open."""
    global _cloud
    with _lock:
        cloud, _cloud = _cloud, None
    if cloud is None:
        return False
    cloud.close()
    return True


atexit.register(close)


def is_simulated() -> bool:
    """True while the simulator runs (and inside its jobs); False on a Dask cluster."""
    ctx = _context.current()
    if ctx is not None:
        return bool((getattr(ctx, "settings", None) or {}).get("simulated", True))
    return _cloud is not None and bool(_cloud.simulated)


def running_on_cloud() -> bool:
    """True inside a job, False in the client."""
    return _context.current() is not None


def connection_info() -> Dict[str, Any]:
    """How the cloud is reached: ``connection_type`` is ``'simulation'``, with the settings in force."""
    if _context.current() is None and _cloud is None:
        return {"opened": False, "connection_type": "simulation" if config.use_simulator else None}
    return _backend().connection_info()


# ----------------------------------------------------------------- submitting
def _func_name(func: Callable) -> str:
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    return f"{module}.{name}" if module else str(name)


def _check_arity(func: Callable, args: tuple, kwargs: dict) -> None:
    """Raise Python's own TypeError now when the job could not even be called (as PiCloud did)."""
    code = getattr(func, "__code__", None)
    if code is not None and not kwargs and inspect.isfunction(func):
        # fast path for plain positional calls: no Signature object needed
        if not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS) and not code.co_kwonlyargcount:
            total = code.co_argcount
            required = total - len(func.__defaults__ or ())
            if required <= len(args) <= total:
                return
    if isinstance(func, type) or not (inspect.isfunction(func) or inspect.ismethod(func)):
        return
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{getattr(func, '__qualname__', func)}(): {exc}") from None


def call(func: Callable, *args: Any, **kwargs: Any) -> int:
    """Run ``func(*args, **kwargs)`` as a job on the cloud; returns its jid at once."""
    backend = _backend()
    if not callable(func):
        raise TypeError(f"cloud.call first argument ({func!r}) is not callable")
    opts, user_kwargs = _kw.split(kwargs)
    _check_arity(func, args, user_kwargs)
    limit = backend.settings.max_transmit_size
    name = _func_name(func)
    opts["function"] = name
    short = getattr(func, "__name__", "func")
    with _wire.collecting() as seeds:
        func_b = _wire.serialize(func, f"cloud.call({short}): the function", limit)
        args_b = _wire.serialize(args, f"cloud.call({short}): the positional arguments", limit)
        kwargs_b = _wire.serialize(user_kwargs, f"cloud.call({short}): the keyword arguments", limit) if user_kwargs else None
    if seeds:
        _ship(backend, seeds, opts)
    return backend.submit([(func_b, args_b, kwargs_b, opts)])[0]


def _ship(backend: Any, seeds: set, opts: Dict[str, Any]) -> None:
    """Send the user modules the job refers to (once per module) and note what the worker needs."""
    shipment = backend.ship(seeds)
    if shipment is None:
        return
    worker = dict(opts.get("worker") or {})
    worker["modver"] = shipment.version
    if shipment.project_dirs:
        worker["project_dirs"] = shipment.project_dirs
    if shipment.unshipped:
        worker["unshipped"] = shipment.unshipped
    if len(shipment.seeds) > 1:
        seed = backend.settings.import_order_seed
        if seed is None:
            import random

            seed = random.getrandbits(32)
        worker["seeds"] = shipment.seeds
        worker["import_seed"] = seed
        opts["import_order_seed"] = seed
    opts["worker"] = worker
    if shipment.pitfalls:
        _pitfalls.emit(shipment.pitfalls, backend.settings.pitfalls, stacklevel=4)
        opts["client_pitfalls"] = shipment.pitfalls


def map(func: Callable, *iterables: Iterable, **kwargs: Any) -> List[int]:  # noqa: A001 - PiCloud's name
    """Run ``func`` once per element (zipped, shorter iterables padded with None); returns the jids."""
    if not callable(func):
        raise TypeError(f"cloud.map first argument ({func!r}) is not callable")
    if not iterables:
        raise ValueError("cloud.map needs at least 2 arguments")
    opts, _ = _kw.split(kwargs, for_map=True)
    for i, it in enumerate(iterables, 1):
        if isinstance(it, (str, bytes)) or not hasattr(it, "__iter__"):
            raise TypeError(f"map argument {i} ({it!r}) is not an iterable")
    if all(hasattr(it, "__len__") for it in iterables) and max(len(it) for it in iterables) > MAP_LIMIT:  # type: ignore[arg-type]
        raise ValueError("No more than 10,000 arguments can be submitted in cloud.map")
    backend = _backend()
    limit = backend.settings.max_transmit_size
    opts["function"] = _func_name(func)
    short = getattr(func, "__name__", "func")
    rows = list(itertools.islice(itertools.zip_longest(*iterables), MAP_LIMIT + 1))
    if len(rows) > MAP_LIMIT:
        raise ValueError("No more than 10,000 arguments can be submitted in cloud.map")
    if not rows:
        return []
    with _wire.collecting() as seeds:
        func_b = _wire.serialize(func, f"cloud.map({short}): the function", limit)
        arg_bytes = [
            _wire.serialize(row, f"cloud.map({short}): the arguments of job {i} (element {i})", limit)
            for i, row in enumerate(rows)
        ]
    if seeds:
        _ship(backend, seeds, opts)
    first = dict(opts)
    rest = dict(opts)
    rest.pop("client_pitfalls", None)  # reported once, on the map's first job
    items = [(func_b, args_b, None, first if i == 0 else rest) for i, args_b in enumerate(arg_bytes)]
    return backend.submit(items)


# ------------------------------------------------------------------ waiting
def _jids(jids: Any) -> List[int]:
    return _kw.jid_list(jids)


def _is_scalar(jids: Any) -> bool:
    return isinstance(jids, int) and not isinstance(jids, bool)


def _settle(outcomes: List[tuple], backend: Any, want_values: bool, ignore_errors: bool) -> List[Any]:
    """Emit pitfalls, echo output, unpickle values and raise the first failure (unless ignored)."""
    policy = getattr(backend.settings, "pitfalls", "warn")
    values: List[Any] = []
    first_error: Optional[CloudException] = None
    for jid, _status, ok, data, error, pits, echo in outcomes:
        if echo is not None:
            out, err = echo
            if out:
                sys.stdout.write(out)
            if err:
                sys.stderr.write(err)
        if pits:
            _pitfalls.emit(pits, policy, stacklevel=4, jid=jid)
        if ok and want_values:
            try:
                value = pickle.loads(data) if data is not None else None
            except Exception as exc:
                message = (
                    f"The result of job {jid} could not be unpickled on the client: {type(exc).__name__}: {exc}\n"
                    "Why: the job returned an object whose class or module the client cannot load.\n"
                    "Fix: return plain data, or make sure the class is importable in the client."
                )
                backend.mark_unreadable(jid, message)
                error = CloudException(message, jid=jid, status="error", exc_type=type(exc).__name__, traceback=message)
                ok = False
            else:
                values.append(value)
                continue
        if not ok:
            if first_error is None:
                first_error = error
            if want_values:
                values.append(error)
        elif want_values:
            values.append(None)
    if first_error is not None and not ignore_errors:
        raise first_error
    return values


def join(jids: Any, timeout: Optional[float] = None, ignore_errors: bool = False, deadlock_check: bool = True) -> None:
    """Block until the jobs finish; raises CloudException for a failed one (unless ``ignore_errors``)."""
    ids = _jids(jids)
    _check_timeout(timeout)
    backend = _backend()
    _settle(backend.collect(ids, timeout, deadlock_check, False), backend, False, ignore_errors)


def result(jids: Any, timeout: Optional[float] = None, ignore_errors: bool = False, deadlock_check: bool = True) -> Any:
    """The return value of a job (a list for several jids); blocks until they finish."""
    ids = _jids(jids)
    _check_timeout(timeout)
    backend = _backend()
    values = _settle(backend.collect(ids, timeout, deadlock_check, True), backend, True, ignore_errors)
    return values[0] if _is_scalar(jids) else values


def iresult(jids: Any, timeout: Optional[float] = None, num_in_parallel: int = 10, ignore_errors: bool = False) -> Iterator[Any]:
    """Results in jid order, each as soon as it is ready; ``timeout`` applies to each item."""
    ids = _jids(jids)
    _check_timeout(timeout)
    if not isinstance(num_in_parallel, int) or isinstance(num_in_parallel, bool):
        raise TypeError("num_in_parallel must be an integer")
    backend = _backend()
    backend.status(ids)  # unknown jids fail now, not at the first next()

    return _ResultIterator(backend, ids, timeout, ignore_errors)


class _ResultIterator:
    """iresult's iterator: in jid order; a failed job raises once and iteration goes on after it."""

    def __init__(self, backend: Any, ids: List[int], timeout: Optional[float], ignore_errors: bool) -> None:
        self._backend = backend
        self._ids = ids
        self._next = 0
        self._timeout = timeout
        self._ignore_errors = ignore_errors

    def __iter__(self) -> "_ResultIterator":
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def __next__(self) -> Any:
        if self._next >= len(self._ids):
            raise StopIteration
        jid = self._ids[self._next]
        try:
            outcome = self._backend.collect([jid], self._timeout, True, True)
        except CloudTimeoutError as exc:
            if type(exc) is CloudTimeoutError:
                raise CloudTimeoutError("__iresult iterator timed out", jid=jid) from None
            raise
        self._next += 1
        return _settle(outcome, self._backend, True, self._ignore_errors)[0]


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout!r}")


# ------------------------------------------------------------------ queries
def status(jids: Any) -> Union[str, List[str]]:
    """``waiting``, ``queued``, ``processing``, ``done``, ``error``, ``stalled`` or ``killed``."""
    ids = _jids(jids)
    statuses = _backend().status(ids)
    return statuses[0] if _is_scalar(jids) else statuses


def finished(jids: Any, ignore_errors: bool = False) -> bool:
    """True when every job has finished; raises for a failed one unless ``ignore_errors``."""
    ids = _jids(jids)
    backend = _backend()
    statuses = backend.status(ids)
    if not ignore_errors:
        for jid, st in zip(ids, statuses):
            if st in ("error", "stalled", "killed"):
                _settle(backend.collect([jid], 0, False, False), backend, False, False)
    return all(st in finished_statuses for st in statuses)


def info(jids: Any, info_requested: Union[str, Sequence[str], None] = None) -> Dict[int, Dict[str, Any]]:
    """Fields of each job (``stdout``, ``stderr``, ``status``, ``runtime`` by default; ``pitfalls`` too)."""
    from cloudsim.server.info import DEFAULT_FIELDS

    ids = _jids(jids)
    if info_requested is None:
        fields: List[str] = list(DEFAULT_FIELDS)
    elif isinstance(info_requested, str):
        fields = [info_requested]
    elif isinstance(info_requested, (list, tuple)) and all(isinstance(f, str) for f in info_requested):
        fields = list(info_requested)
    else:
        raise TypeError("info_requested must be a valid string value or list of strings")
    return _backend().info(ids, fields)


def kill(jids: Any = None) -> None:
    """Cancel waiting/queued jobs and stop processing ones; no argument: every unfinished job."""
    if jids is None:
        _backend().kill(None)
        return
    ids = _jids(jids)
    if not ids:
        return
    _backend().kill(ids)


def delete(jids: Any) -> None:
    """Forget jobs (killing unfinished ones); later look-ups raise CloudException."""
    ids = _jids(jids)
    if ids:
        _backend().delete(ids)


def _simulator_pids() -> List[int]:
    """The server and worker pids of the running simulator (for tests and diagnostics)."""
    cloud = _cloud
    return cloud.process_ids() if cloud is not None else []


# ------------------------------------------------------------ rebinding
# As PiCloud's module functions were bound methods of a Cloud object, re-bound
# on every start_simulator(), the public functions are rebuilt for each start:
# a function taken with `from cloud import call` before that goes stale
# (pitfall: cloud-import-from) and says how to call it instead.
REBOUND = ("call", "map", "status", "result", "iresult", "join", "kill", "delete", "info",
           "finished", "connection_info", "is_simulated", "running_on_cloud", "close")
_generation = 0
_bound_modules: List[Any] = []


def _make_bound(name: str, impl: Callable, generation: int) -> Callable:
    def bound(*args: Any, **kwargs: Any) -> Any:
        if generation != _generation and _context.current() is None:
            from cloudsim.errors import StaleFunctionError

            raise StaleFunctionError(
                f"This {name}() was taken from the cloud module (e.g. `from cloud import {name}`) before "
                f"cloud.start_simulator() re-bound the module's functions, so it no longer reaches the cloud "
                f"(pitfall: cloud-import-from).\n"
                f"Fix: `import cloud` (or `import cloudsim as cloud`) and call `cloud.{name}(...)` through the "
                f"namespace; see docs/pitfalls.md#cloud-import-from"
            )
        return impl(*args, **kwargs)

    bound.__name__ = bound.__qualname__ = name
    bound.__doc__ = impl.__doc__
    bound.__wrapped__ = impl  # type: ignore[attr-defined]
    return bound


def bind_api(module: Any) -> None:
    """Put this generation's API functions on ``module`` (the ``cloudsim`` package)."""
    if module not in _bound_modules:
        _bound_modules.append(module)
    impls = globals()
    for name in REBOUND:
        setattr(module, name, _make_bound(name, impls[name], _generation))


def _rebind() -> None:
    global _generation
    _generation += 1
    for module in _bound_modules:
        bind_api(module)


# ------------------------------------------------------------ fork-danger
def _before_fork() -> None:
    """Warn once per started cloud when the client forks while its threads run (pitfall: fork-danger)."""
    cloud = _cloud
    if cloud is None or getattr(cloud, "fork_warned", False):
        return
    cloud.fork_warned = True
    policy = cloud.settings.pitfalls
    if _pitfalls.action_for(policy, "fork-danger") == "ignore":
        return
    rec = _pitfalls.record(
        "fork-danger",
        f"The client process forked while the cloudsim {cloud.kind} is running.",
        "the cloud client runs threads (a manager thread, callbacks); a forked child inherits their locks "
        "in whatever state they were, and may hang or corrupt the simulator's state.",
        "fork before start_simulator(), after close(), or use a 'spawn'/'forkserver' start method "
        "(multiprocessing.set_start_method('forkserver')) or subprocess.",
    )
    import warnings

    _pitfalls.LOG.add(rec)
    warnings.warn(rec["message"], _pitfalls.category("fork-danger"), stacklevel=3)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)
