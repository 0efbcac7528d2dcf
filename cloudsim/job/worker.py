"""What runs inside a worker interpreter: the job loop.

A worker is forked from the clean server process (``zygote.py``), never from
the client. It keeps running jobs until the client tells it to stop, it is
killed, or a job leaves it unusable (``_kill_process``, leaked threads and the
like), which is what makes the interpreter *persistent* as on the cloud::

    recv ("run", specs) ─► for each job: unpickle ─► run under the sandbox ─►
        pickle result ─► hygiene checks ─► outcome ─► ("results", [...]) ─► client

A job's ``stdout``/``stderr`` are the worker's file descriptors 1 and 2, which
point at two files in the worker's own directory, so output written by C code
and child processes is captured too; each job reads back what it added.

This module imports nothing from the client side of cloudsim.
"""

from __future__ import annotations

import collections
import os
import pickle
import resource
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple


from cloudsim.job import context as _context
from cloudsim.wire import pickler as _wire_pickler  # imported here, so the server loads it once for every worker
from cloudsim.server import protocol

OUTPUT_LIMIT = 64000  # bytes of stdout/stderr kept per job, as the original simulator

# The quirk families plug into the job loop through hooks: modules listed here
# are imported once in the server (before any fork) and may define
#   install(settings)   once per worker, before its first job (sandboxes, audit hooks)
#   before(job)         before each job runs (baselines: threads, children, globals)
#   after(job)          after it returns, before its outcome is sent: may add
#                       pitfall records to job.pitfalls, lines to job.stderr_notes,
#                       and set job.retire to have the interpreter replaced
HOOK_MODULES = (
    "cloudsim.job.imports",     # import-order, dynamic-import, c-extensions
    "cloudsim.job.sandbox",     # network: timeout, no-listen, separate-network
    "cloudsim.job.datafiles",   # non-code-files, sqlite
    "cloudsim.job.hygiene",     # leaked-threads, leaked-subprocesses, persistent-interpreter
    "cloudsim.job.passbyvalue", # pass-by-value
)
if os.environ.get("CLOUDSIM__NO_CHECKS"):  # bench/ only: measures what the checks cost per job
    HOOK_MODULES = HOOK_MODULES[:1]


def _load_hooks() -> List[Any]:
    import importlib

    hooks = []
    for name in HOOK_MODULES:
        try:
            hooks.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return hooks


HOOKS = _load_hooks()
_BEFORE = [h.before for h in HOOKS if hasattr(h, "before")]
_AFTER = [h.after for h in HOOKS if hasattr(h, "after")]


class JobRun:
    """The state of one job while the worker runs it, as the hooks see it."""

    __slots__ = ("jid", "opts", "pitfalls", "stderr_notes", "retire", "func_name", "func", "args", "kwargs",
                 "args_bytes", "kwargs_bytes", "result", "ok", "settings", "scratch")

    def __init__(self, jid: int, opts: Optional[dict], settings: dict) -> None:
        self.jid = jid
        self.opts = opts or {}
        self.settings = settings
        self.pitfalls: List[dict] = []
        self.stderr_notes: List[str] = []
        self.retire = bool(self.opts.get("kill_process"))
        self.func_name = "?"
        self.func: Any = None
        self.args: Any = ()
        self.kwargs: Any = {}
        self.args_bytes: bytes = b""
        self.kwargs_bytes: Optional[bytes] = None
        self.result: Any = None
        self.ok = False
        # per-hook state between before() and after(), keyed by hook module name
        self.scratch: Dict[str, Any] = {}


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGKILL this worker when the server process dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


class _Output:
    """Per-job view of fd 1 and 2, which point at two files in the job's directory.

    In a simulated worker the files replace fd 1 and 2 for good (the
    interpreter runs nothing but jobs). ``scoped=True`` (a Dask worker, whose
    own logging writes to fd 2 between jobs) points fd 1 and 2 at the files
    only while a job runs, and puts them back in :meth:`collect`.
    """

    def __init__(self, worker_dir: str, scoped: bool = False) -> None:
        self.scoped = scoped
        self.fds: List[int] = []
        self._saved: List[int] = []
        self._streams: Tuple[Any, Any] = (sys.stdout, sys.stderr)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            path = os.path.join(worker_dir, name)
            out = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            if scoped:
                self.fds.append(out)
                self._saved.append(os.dup(fd))
            else:
                os.dup2(out, fd)
                os.close(out)
                self.fds.append(fd)
        if not scoped:
            self._redirect()
            sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr

    @staticmethod
    def _redirect() -> None:
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)

    def start(self) -> None:
        for fd in self.fds:
            if os.fstat(fd).st_size:
                os.ftruncate(fd, 0)
        if self.scoped:
            self._streams = (sys.stdout, sys.stderr)
            for stream in self._streams:
                try:
                    stream.flush()
                except Exception:
                    pass
            for fd, target in zip(self.fds, (1, 2)):
                os.dup2(fd, target)
            self._redirect()

    def collect(self) -> Tuple[str, str]:
        texts = []
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        for fd in self.fds:
            size = os.fstat(fd).st_size
            if not size:
                texts.append("")
                continue
            start = max(0, size - OUTPUT_LIMIT)
            data = os.pread(fd, size - start, start)
            texts.append(data.decode("utf-8", "backslashreplace"))
        if self.scoped:
            for saved, target in zip(self._saved, (1, 2)):
                os.dup2(saved, target)
            sys.stdout, sys.stderr = self._streams
        return texts[0], texts[1]


class JobRunner:
    """Runs one job at a time in this interpreter under the hooks: the job wrapper.

    The simulator's :class:`Worker` feeds it from its channel; a Dask worker
    (``cloudsim.dask.task``) calls it from Dask's task thread.
    """

    def __init__(self, worker_dir: str, settings: dict) -> None:
        self.worker_dir = worker_dir
        self.settings = settings
        self.max_size = int(settings.get("max_transmit_size", 1_000_000))
        self.output: Optional[_Output] = None

    def install(self, scoped_output: bool = False) -> None:
        """Prepare this interpreter for jobs: the job directory, output capture, every hook's install()."""
        os.makedirs(self.worker_dir, exist_ok=True)
        os.chdir(self.worker_dir)
        self.output = _Output(self.worker_dir, scoped=scoped_output)
        for hook in HOOKS:
            if hasattr(hook, "install"):
                hook.install(self.settings)
        from cloudsim.alias import install_cloud_alias

        install_cloud_alias()  # the server's own cloud package: `import cloud` works in jobs

    def run(self, spec: tuple, ctx: "_context.JobContext") -> Tuple[tuple, bool]:
        jid, func_bytes, args_bytes, kwargs_bytes, opts = spec
        job = JobRun(jid, opts, self.settings)
        job.args_bytes, job.kwargs_bytes = args_bytes, kwargs_bytes
        output = self.output
        assert output is not None
        output.start()
        ctx.jid = jid
        if job.opts.get("env"):
            os.environ.update(job.opts["env"])
        os.chdir(self.worker_dir)
        for hook in _BEFORE:
            self._guard(hook, job)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        ok, payload, exc_type, tb_text = self._execute(job, func_bytes, args_bytes, kwargs_bytes)
        runtime = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        ctx.jid = None
        job.ok = ok
        for hook in _AFTER:
            self._guard(hook, job)
        job.func = job.args = job.kwargs = job.result = None
        if job.stderr_notes:
            try:
                sys.stderr.write("\n".join(job.stderr_notes) + "\n")
            except Exception:
                pass
        save_coverage()
        stdout, stderr = output.collect()
        outcome = (
            jid,
            ok,
            payload,
            exc_type,
            tb_text,
            stdout,
            stderr,
            runtime,
            usage1.ru_utime - usage0.ru_utime,
            usage1.ru_stime - usage0.ru_stime,
            usage1.ru_maxrss * 1024 if sys.platform != "darwin" else usage1.ru_maxrss,
            job.pitfalls,
            job.retire,
        )
        return outcome, job.retire

    @staticmethod
    def _guard(hook: Callable[[JobRun], None], job: JobRun) -> None:
        try:
            hook(job)
        except Exception:  # a broken check must not lose the job's result
            job.stderr_notes.append(f"cloudsim: the check {hook.__module__}.{hook.__name__} failed:\n" + traceback.format_exc())

    def _execute(self, job: JobRun, func_bytes: bytes, args_bytes: bytes, kwargs_bytes: Optional[bytes]):
        """Run one job; returns (ok, result_bytes, exc_type, traceback_text)."""
        try:
            func = pickle.loads(func_bytes)
            args = pickle.loads(args_bytes)
            kwargs = pickle.loads(kwargs_bytes) if kwargs_bytes is not None else {}
        except BaseException as exc:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return False, None, type(exc).__name__, (
                f"Could not depickle job: {type(exc).__name__}: {exc}\n"
                "The job's function or arguments could not be rebuilt on the server (pitfall: could-not-depickle).\n"
                + text
            )
        job.func, job.args, job.kwargs = func, args, kwargs
        job.func_name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        try:
            result = func(*args, **kwargs)
        except SystemExit as exc:
            return False, None, "SystemExit", _exit_message(exc, job.func_name)
        except BaseException as exc:  # the job's own failure, reported as the cloud would
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            text = "".join(traceback.format_exception(type(exc), exc, tb))
            return False, None, type(exc).__name__, text
        finally:
            del func, args, kwargs
        job.result = result
        # The wire's result pickler: PiCloud's rules (files, __transient__, refusals) and, only
        # when it fails or is too large, the path to the culprit and a serialization log.
        try:
            data = _wire_pickler.serialize_result(result, job.func_name, self.max_size)
        except _wire_pickler.ResultError as exc:
            return False, None, exc.exc_type, exc.text
        return True, data, None, None


class Worker(JobRunner):
    """One simulated worker interpreter's loop: jobs arrive on its channel to the client."""

    def __init__(self, sock: socket.socket, worker_id: int, worker_dir: str, settings: dict) -> None:
        super().__init__(worker_dir, settings)
        self.channel = protocol.Channel(sock)
        self.worker_id = worker_id
        # jobs received but not started yet, in order
        self.pending: Deque[tuple] = collections.deque()
        self.stop = False

    def handle(self, message: tuple) -> None:
        tag = message[0]
        if tag == protocol.RUN:
            self.pending.extend(message[1])
        elif tag == protocol.CANCEL:
            dropped = set(message[1])
            self.pending = collections.deque(s for s in self.pending if s[0] not in dropped)
        elif tag == protocol.EXIT:
            self.stop = True

    # ---- the loop -------------------------------------------------------
    def serve(self) -> int:
        self.install()
        ctx = _context.JobContext(self.channel, self.handle)
        ctx.settings = self.settings
        _context.install(ctx)
        self.channel.send((protocol.READY, os.getpid()))
        try:
            while not self.stop:
                if not self.pending:
                    self.handle(self.channel.recv())
                    continue
                while self.channel.poll(0):
                    self.handle(self.channel.recv())
                if not self.pending or self.stop:
                    continue
                outcome, retire = self.run(self.pending.popleft(), ctx)
                # Each outcome leaves before the next job starts, so when a worker
                # dies the client knows exactly which job it was running.
                self.channel.send((protocol.RESULTS, [outcome]))
                if retire:
                    return 0
        except protocol.ChannelClosed:
            return 0
        return 0


def _exit_message(exc: SystemExit, func_name: str) -> str:
    code = exc.code
    return (
        f"Job called sys.exit({code!r}) in {func_name}(): a job must return its result, never exit.\n"
        "Why: on the cloud a job that exits ends in error (pitfall: sys-exit).\n"
        "Fix: use `return value` to finish, and raise an exception to report a failure."
    )


def main(sock: socket.socket, worker_id: int, worker_dir: str, settings: dict) -> int:
    """Entry point in the freshly forked worker; returns the exit status."""
    _set_parent_death_signal()
    try:
        os.setpgid(0, 0)  # the job's own children share this group, so they can be killed with it
    except OSError:
        pass
    if os.getppid() == 1:  # the server died between fork and prctl
        return 0
    _restart_coverage()
    return Worker(sock, worker_id, worker_dir, settings).serve()


_COVERAGE: Any = None


def _restart_coverage() -> None:
    """Under coverage, give this worker its own data file (the server's Coverage came with the fork)."""
    global _COVERAGE
    coverage = sys.modules.get("coverage")  # the server imported it only if coverage is measuring
    if coverage is None:
        return
    inherited = coverage.Coverage.current()
    if inherited is None:
        return
    inherited.stop()
    here = os.getcwd()
    os.chdir(os.environ.get("CLOUDSIM__CLIENT_CWD", here))
    try:
        _COVERAGE = coverage.process_startup(force=True)
    finally:
        os.chdir(here)


def save_coverage() -> None:
    """Write this worker's coverage data now: workers end with os._exit or SIGKILL, never atexit."""
    if _COVERAGE is not None:
        try:
            _COVERAGE.save()
        except Exception:
            pass
