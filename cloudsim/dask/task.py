"""What runs inside a Dask worker: cloudsim's job wrapper, and the shipped modules.

:func:`run_job` is the Dask task of every cloudsim job. On its first job a
worker process becomes a job interpreter as a simulated worker does: the
hooks are installed (network timeout, firewall, non-code files, hygiene,
pass-by-value), ``import cloud`` works, and the job's output goes to files
of its own. Then each job runs through :class:`cloudsim.job.worker.JobRunner`
exactly as in the simulator, with two differences that sharing the
interpreter with Dask asks for:

- the sandbox and checks apply to the job's thread and the threads it starts
  (``cloudsim.job.scope``), never to Dask's own threads;
- fd 1 and 2 point at the job's output files only while it runs.

A job starts only when the client says so (:func:`_may_start`): Dask may
hold it queued for a while, and the client may have killed it meanwhile; the
answer also marks the exact moment it starts to hold one of the cap's slots.

A job that leaves the interpreter unusable (leaked threads or processes,
``_kill_process``) pauses its worker, so Dask gives it no further job; the
client then restarts that worker process.

Jobs call the API through :class:`ClientLink`, a socket to the client's
backend opened on the first call (like the simulator's channel, it is
cloudsim's own connection, outside the job's firewall).

Shipped modules arrive with :class:`ModulesPlugin`, a Dask worker plugin that
writes them into one flat directory per worker (``<local_directory>/cloudsim-
modules``, last on ``sys.path``), also on workers that start later.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any, Dict, Optional, Tuple

from distributed.diagnostics.plugin import WorkerPlugin

from cloudsim.dask import LATER, NOT_STARTED
from cloudsim.job import context as _context
from cloudsim.job import scope as _scope
from cloudsim.server import protocol

HELLO = "hello"
MODULE_DIR_NAME = "cloudsim-modules"

# session -> the jid of the job this worker ran last (kept only on one-thread workers)
_LAST_JOB: Dict[str, int] = {}
_ONE_THREAD: Optional[bool] = None  # this worker runs one task at a time (found on its first job)
# session -> (runner, link) in this worker process
_SESSIONS: Dict[str, Tuple[Any, "ClientLink"]] = {}
_INSTALLED = False


class ClientLink(_context.JobContext):
    """A job's link to the client's backend: a socket opened on the first API call."""

    def __init__(self, address: Tuple[str, int], token: str, settings: dict) -> None:
        super().__init__(None, lambda message: None)  # type: ignore[arg-type]
        self.address = address
        self.token = token
        self.settings = settings
        self._connecting = threading.Lock()

    def request(self, method: str, payload: Any) -> Any:
        if self.channel is None:
            with self._connecting:
                if self.channel is None:
                    with _scope.exempt():
                        sock = socket.create_connection(self.address, timeout=30)
                    sock.settimeout(None)
                    channel = protocol.Channel(sock)
                    channel.send((HELLO, self.token))
                    self.channel = channel
        return super().request(method, payload)


def module_dir(local_directory: str) -> str:
    return os.path.join(local_directory, MODULE_DIR_NAME)


def _use_module_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    if path not in sys.path:
        sys.path.append(path)  # last, as the simulator's: installed packages win (preinstalled-conflict)


class ModulesPlugin(WorkerPlugin):
    """A Dask worker plugin carrying a session's shipped modules: {relative path: source bytes}."""

    idempotent = False  # registering a session's plugin again replaces it: more modules were shipped

    def __init__(self, files: Dict[str, bytes]) -> None:
        self.files = files

    def setup(self, worker: Any) -> None:
        target = module_dir(worker.local_directory)
        _use_module_dir(target)
        for rel, data in self.files.items():
            path = os.path.join(target, rel)
            try:
                with open(path, "rb") as f:
                    if f.read() == data:
                        continue
            except OSError:
                pass
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    def teardown(self, worker: Any) -> None:
        pass


def _session(settings: dict) -> Tuple[Any, ClientLink]:
    """This worker's runner and link for the client session ``settings`` belong to."""
    global _INSTALLED
    found = _SESSIONS.get(settings["session"])
    if found is not None:
        return found
    from distributed import get_worker

    from cloudsim.job import worker as _worker

    local = get_worker().local_directory
    modules = module_dir(local)
    _use_module_dir(modules)
    runner = _worker.JobRunner(os.path.join(local, "cloudsim-jobs", settings["session"]), settings)
    cwd = os.getcwd()
    try:
        if not _INSTALLED:
            _scope.ALL = False
            os.environ["CLOUDSIM__MODULE_DIR"] = modules
            runner.install(scoped_output=True)
            _INSTALLED = True
        else:  # a later client of the same worker: its own network settings, project tree and modules
            from cloudsim.job import datafiles, sandbox

            _forget_shipped_modules(modules)

            os.makedirs(runner.worker_dir, exist_ok=True)
            runner.output = _worker._Output(runner.worker_dir, scoped=True)
            sandbox.install(settings)
            datafiles.install_settings(settings)
    finally:
        os.chdir(cwd)
    host, port = settings["api_address"]
    link = ClientLink((host, int(port)), settings["api_token"], settings)
    _SESSIONS[settings["session"]] = (runner, link)
    return runner, link


def _forget_shipped_modules(directory: str) -> None:
    """Unload the modules an earlier client shipped here, so a new client's jobs import its own files.

    Within one client a module is a snapshot that never refreshes (as on
    the cloud); a Dask worker, unlike a cloud worker, can serve several
    clients in turn, and one client's ``foo`` must not answer for another's.
    """
    prefix = os.path.join(directory, "")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(prefix):
            del sys.modules[name]


def run_job(settings: dict, spec: tuple) -> Tuple[tuple, Optional[str]]:
    """The Dask task of one cloudsim job: returns (the job's outcome, this worker's address if it retires).

    The worker's process-wide default socket timeout is the job's only while
    it runs: it is saved before the session's sandbox sets it, and restored
    after, so Dask's own work between jobs keeps the worker's value.
    """
    timeout = socket.getdefaulttimeout()
    cwd = os.getcwd()
    try:
        runner, link = _session(settings)
        answer = _may_start(link, spec[0], settings["session"])
        if not answer:
            return (NOT_STARTED if answer is False else LATER), None
        _context.install(link)
        try:
            with _scope.job_thread():
                outcome, retire = runner.run(spec, link)
        finally:
            _context.install(None)  # type: ignore[arg-type]
            if _one_thread():
                _LAST_JOB[settings["session"]] = spec[0]
    finally:
        socket.setdefaulttimeout(timeout)
        try:
            os.chdir(cwd)
        except OSError:
            pass
    if not retire:
        return outcome, None
    return outcome, _pause_worker()


def _may_start(link: ClientLink, jid: int, session: str) -> Optional[bool]:
    """Ask the client whether job ``jid`` starts now: True; False, it was killed while queued in Dask
    (or the client is gone); None, not now (every slot of the cap is taken).

    On a one-thread worker the request names the job this worker ran last
    for the same client: it has returned, so its slot is free even if its
    outcome is still on the way to the client (Dask hands the worker the
    next job at once).
    """
    link.jid = jid
    try:
        return link.request("start", _LAST_JOB.get(session))
    except Exception:  # the client closed, or is gone: nothing may run on its account
        return False
    finally:
        link.jid = None


def _one_thread() -> bool:
    """True on a worker that runs one task at a time (then "the job it ran last" is exact)."""
    global _ONE_THREAD
    if _ONE_THREAD is None:
        from distributed import get_worker

        worker = get_worker()
        nthreads = getattr(getattr(worker, "state", None), "nthreads", None) or getattr(worker, "nthreads", None)
        _ONE_THREAD = nthreads == 1
    return _ONE_THREAD


def _pause_worker() -> Optional[str]:
    """Take this worker out of service until the client restarts it; return its address."""
    try:
        from distributed import get_worker
        from distributed.core import Status

        worker = get_worker()

        def pause() -> None:
            worker.status = Status.paused

        worker.loop.add_callback(pause)
        return worker.address
    except Exception:  # pragma: no cover - the client restarts the worker anyway
        return None


async def exit_worker() -> None:
    """Run on a worker's event loop to end its process at once; its nanny starts a fresh one.

    A coroutine, so ``Client.run(..., wait=False)`` may start it without waiting for an answer.
    """
    os._exit(1)


def running_on(keys: list, dask_scheduler: Any = None) -> Dict[str, Optional[str]]:
    """Run on the scheduler: the worker each task runs on, e.g. {'cloudsim-..-7': 'tcp://127.0.0.1:4242'}.

    ``Client.run_on_scheduler`` passes the scheduler by keyword, so it is the last parameter.
    """
    out: Dict[str, Optional[str]] = {}
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        ws = getattr(ts, "processing_on", None) if ts is not None else None
        out[key] = ws.address if ws is not None else None
    return out


def known_keys(keys: list, dask_scheduler: Any = None) -> list:
    """Run on the scheduler: those of ``keys`` it still has a task for."""
    return [key for key in keys if key in dask_scheduler.tasks]
