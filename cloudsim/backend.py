"""The boundary between the ``cloud`` facade and whatever runs the jobs.

The facade (``client.py``) talks to one :class:`Backend` and never asks which
it is: the simulator (:class:`cloudsim.server.manager.Simulator`), a Dask
cluster (:class:`cloudsim.dask.backend.DaskBackend`), or, inside a job, the
link back to the client (``client.InJobBackend``).

:class:`JobTable` is what the two client-side backends share: PiCloud's job
table (the pure :class:`~cloudsim.server.scheduler.Scheduler`: statuses,
dependencies, the job cap, the wait-for graph), blocking ``collect`` with
exact deadlock detection, callbacks, and the answers to API calls made by
jobs. A backend built on it only says how a ready job reaches an
interpreter (``_dispatch``) and how a running one is stopped
(``_kill_processing``).
"""

from __future__ import annotations

import abc
import itertools
import logging
import os
import pickle
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.errors import CloudDeadlockError, CloudException, CloudTimeoutError
from cloudsim.server.scheduler import DONE, ERROR, KILLED, PROCESSING, STALLED, Job, Scheduler

log = logging.getLogger(__name__)

# jids come from one counter for the life of the client process, as PiCloud's
_JIDS = itertools.count(1)
_JIDS_LOCK = threading.Lock()

# One outcome of collect(): what the facade needs to return or raise for a job.
# (jid, status, ok, result_bytes, error, pitfalls_to_emit, echo)
Outcome = Tuple[int, str, bool, Optional[bytes], Optional[CloudException], List[dict], Optional[Tuple[str, str]]]

# What a job's interpreter reports when the job ends (the job wrapper builds it, see cloudsim.job.worker):
# (jid, ok, result_bytes, exc_type, traceback_text, stdout, stderr, runtime, cpu_user, cpu_system,
#  max_rss, pitfalls, retire)
JobOutcome = Tuple[int, bool, Optional[bytes], Optional[str], Optional[str], str, str, float, float, float, int, List[dict], bool]


def job_settings(settings: Any, session: str, root: str) -> Dict[str, Any]:
    """The settings every job interpreter of a session gets (``cloudsim.job`` reads them)."""
    return {
        "max_transmit_size": settings.max_transmit_size,
        "network_timeout": settings.network_timeout,
        "allow_hosts": list(settings.allow_hosts),
        "session": session,
        "project_dirs": _project_dirs(),
        "server_root": root,
        "pitfalls": settings.pitfalls if isinstance(settings.pitfalls, str) else dict(settings.pitfalls),
    }


def _project_dirs() -> List[str]:
    """The client's project tree (non-code-files): its working directory and its script's directory."""
    import sys

    dirs = [os.path.realpath(os.getcwd())]
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        from cloudsim.shipping.analysis import installed_roots

        main_dir = os.path.dirname(os.path.realpath(main_file))
        installed = any(main_dir == r or main_dir.startswith(r + os.sep) for r in installed_roots())
        if main_dir not in dirs and not installed:  # e.g. pytest's own __main__
            dirs.append(main_dir)
    return dirs


def next_jids(n: int) -> List[int]:
    with _JIDS_LOCK:
        return [next(_JIDS) for _ in range(n)]


class Backend(abc.ABC):
    """What the facade needs from a cloud. Every method may be called from any thread.

    Attributes:
        settings: the resolved settings (``cloudsim.config.Settings``-like) in force.
        simulated: True for the simulator, what ``cloud.is_simulated()`` reports.
    """

    settings: Any
    simulated: bool = True

    @abc.abstractmethod
    def submit(self, items: Sequence[tuple], parent: Optional[int] = None) -> List[int]:
        """Enter jobs, ``items`` being (func_bytes, args_bytes, kwargs_bytes, opts); return their jids."""

    @abc.abstractmethod
    def ship(self, seeds: Set[str]) -> Any:
        """Make the user modules ``seeds`` need available to jobs; a ``Shipment`` or None."""

    @abc.abstractmethod
    def collect(self, jids: Sequence[int], timeout: Optional[float], deadlock_check: bool = True,
                want_results: bool = True, caller: Optional[int] = None) -> List[Outcome]:
        """Wait for jobs to finish and return their outcomes (the facade raises or returns)."""

    @abc.abstractmethod
    def status(self, jids: Sequence[int]) -> List[str]:
        """PiCloud's status of each job."""

    @abc.abstractmethod
    def info(self, jids: Sequence[int], fields: Sequence[str]) -> Dict[int, dict]:
        """The requested info fields of each job."""

    @abc.abstractmethod
    def kill(self, jids: Optional[Iterable[int]]) -> None:
        """Stop jobs (None: every unfinished one)."""

    @abc.abstractmethod
    def delete(self, jids: Iterable[int]) -> None:
        """Forget jobs, killing unfinished ones."""

    @abc.abstractmethod
    def connection_info(self) -> dict:
        """How the cloud is reached (``connection_type`` and details)."""

    def mark_unreadable(self, jid: int, message: str) -> None:
        """The client could not unpickle a job's result; the job becomes an error."""

    def start(self) -> None:
        """Start what the backend needs; called once, before any other method."""

    def close(self) -> None:
        """Release everything the backend started (and nothing it did not)."""

    def process_ids(self) -> List[int]:
        """Pids of the local processes the backend started (for leak checks)."""
        return []


class Waiter:
    """One blocked join/result: the jobs it still waits for."""

    __slots__ = ("pending", "event", "deadlock", "caller")

    def __init__(self, pending: int, caller: Optional[int]) -> None:
        self.pending = pending
        self.event = threading.Event()
        self.deadlock: Optional[str] = None
        self.caller = caller


def job_error(job: Job) -> CloudException:
    """The CloudException a failed job raises in join/result, as PiCloud's."""
    if job.status == ERROR or (job.status == KILLED and job.exception):
        text = job.exception or "unknown error"
    elif job.status == KILLED:
        text = "Killed"
    elif job.status == STALLED:
        text = job.exception or "Could not start due to dependency erroring"
    else:
        text = "unknown error"
    return CloudException(text, jid=job.jid, status=job.status, hint=job.hint,
                          exc_type=job.exc_type, traceback=job.traceback)


class JobTable(Backend):
    """PiCloud's job table and blocking calls, shared by the client-side backends.

    Subclasses implement :meth:`_dispatch` (hand ready jobs to interpreters,
    lock held) and :meth:`_kill_processing` (stop a running job, lock held),
    and may override :meth:`_unassign` (a queued job handed out ahead of time
    is killed) and :meth:`_take_back` (a job blocks in join: take back work
    queued behind it).
    """

    kind = "backend"  # what close()d errors call it, e.g. "simulator"

    def __init__(self, settings: Any, cap: int) -> None:
        self.settings = settings
        self.cap = cap
        self.lock = threading.Lock()
        self.sched = Scheduler(cap)
        # jid -> waiters blocked on it
        self._waiters: Dict[int, List[Waiter]] = {}
        # jid of a job blocked in join -> its waiter
        self._blocked_waiters: Dict[int, Waiter] = {}
        self._callbacks: "queue.Queue[Optional[Tuple[Callable, int]]]" = queue.Queue()
        self._callback_thread: Optional[threading.Thread] = None
        self._closed = False

    # ------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _dispatch(self) -> None:
        """Hand ready jobs to interpreters (lock held)."""

    @abc.abstractmethod
    def _kill_processing(self, job: Job, message: str) -> None:
        """Stop a running job and finish it as killed with ``message`` (lock held)."""

    def _unassign(self, job: Job) -> None:
        """A queued job that was handed out ahead of time is being killed (lock held)."""

    def _take_back(self, job: Job) -> None:
        """``job`` blocks in join: take back jobs queued behind it in its interpreter (lock held)."""

    # ------------------------------------------------------------ submitting
    def submit(self, items: Sequence[tuple], parent: Optional[int] = None) -> List[int]:
        if not items:
            return []
        opts0 = items[0][3]
        deps = tuple(opts0.get("depends_on", ()))
        with self.lock:
            self._check_open()
            self.sched.check_dependencies(deps)
            jids = next_jids(len(items))
            finished: List[Job] = []
            for jid, (func_b, args_b, kwargs_b, opts) in zip(jids, items):
                job = Job(jid, (func_b, args_b, kwargs_b), opts, opts.get("priority", 5), opts.get("label"), parent)
                client_pits = opts.get("client_pitfalls")
                if client_pits:  # already reported at call time
                    job.pitfalls.extend(client_pits)
                    job.pitfalls_emitted = len(client_pits)
                finished.extend(self.sched.add(job, tuple(opts.get("depends_on", ())), opts.get("depends_on_errors", "abort")))
            for job in finished:
                self._completed(job)
            self._dispatch()
        return jids

    def _check_open(self) -> None:
        if self._closed:
            raise CloudException(f"The {self.kind} was closed; start it again to use it.")

    def _apply_outcome(self, job: Job, outcome: JobOutcome) -> None:
        """Record what the job's interpreter reported, and finish the job (lock held)."""
        (_jid, ok, payload, exc_type, tb_text, stdout, stderr, runtime,
         cpu_user, cpu_sys, max_rss, pits, _retire) = outcome
        job.result = payload
        job.exc_type = exc_type
        job.traceback = tb_text
        job.stdout, job.stderr = stdout, stderr
        job.runtime, job.cpu_user, job.cpu_system, job.max_rss = runtime, cpu_user, cpu_sys, max_rss
        if pits:
            job.pitfalls.extend(pits)
        for f in self.sched.finish(job, DONE if ok else ERROR, None if ok else tb_text):
            self._completed(f)

    def _fail_all(self, message: str) -> None:
        """The backend broke: every unfinished job ends in error with ``message`` (lock held)."""
        self._closed = True
        for job in list(self.sched.jobs.values()):
            if not job.is_finished:
                job.exception = message
                for f in self.sched.finish(job, ERROR):
                    self._completed(f)

    def _kill_unfinished(self, message: str) -> None:
        """On close: finish every unfinished job as killed (lock held)."""
        done: List[Job] = []
        for job in [j for j in self.sched.jobs.values() if not j.is_finished]:
            job.exception = job.exception or message
            done.extend(self.sched.finish(job, KILLED))
        for job in done:
            self._completed(job)

    # ------------------------------------------------------------- finishing
    def _completed(self, job: Job) -> None:
        """A job reached a finished status: wake its waiters, queue its callbacks (lock held)."""
        for waiter in self._waiters.pop(job.jid, ()):
            waiter.pending -= 1
            if waiter.pending <= 0:
                waiter.event.set()
        callbacks = job.opts.get("callbacks")
        if callbacks:
            which = "on_done" if job.status == DONE else "on_error"
            for cb in callbacks.get(which, ()):
                self._queue_callback(cb, job.jid)

    def _queue_callback(self, cb: Callable, jid: int) -> None:
        if self._callback_thread is None:
            self._callback_thread = threading.Thread(target=self._run_callbacks, name="cloudsim-callbacks", daemon=True)
            self._callback_thread.start()
        self._callbacks.put((cb, jid))

    def _run_callbacks(self) -> None:
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            cb, jid = item
            try:
                code = getattr(cb, "__code__", None)
                if code is not None and code.co_argcount == 0:
                    cb()
                else:
                    cb(jid)
            except Exception:  # a broken callback must not stop the others
                log.exception("callback %r for job %s raised", cb, jid)

    def _stop_callbacks(self) -> None:
        self._callbacks.put(None)

    # ----------------------------------------------------------------- kill
    def kill(self, jids: Optional[Iterable[int]]) -> None:
        with self.lock:
            if jids is None:
                targets = [j for j in self.sched.jobs.values() if not j.is_finished]
            else:
                targets = [self._job(jid) for jid in jids]
            for job in targets:
                if job.is_finished:
                    continue
                if job.status == PROCESSING:
                    self._kill_processing(job, "Killed by cloud.kill() while processing (pitfall: job-kill).")
                    continue
                if job.assigned:
                    self._unassign(job)
                for f in self.sched.cancel(job, "Killed by cloud.kill() before it started (pitfall: job-kill)."):
                    self._completed(f)
            self._dispatch()

    def _runtime_exceeded(self, job: Job) -> None:
        """A job ran past its ``_max_runtime``: stop it (lock held)."""
        minutes = job.opts["max_runtime"] / 60.0
        self._kill_processing(job, (
            f"Killed: the job ran longer than its _max_runtime of {minutes:g} minutes "
            f"({job.opts['max_runtime']:g} s) and was stopped (pitfall: max-runtime)."
        ))

    def delete(self, jids: Iterable[int]) -> None:
        jids = list(jids)
        with self.lock:
            for jid in jids:
                self._job(jid)
        self.kill([jid for jid in jids if not self.sched.jobs[jid].is_finished])
        with self.lock:
            for jid in jids:
                self.sched.forget(jid)

    # ------------------------------------------------------------- querying
    def _job(self, jid: int) -> Job:
        job = self.sched.jobs.get(jid)
        if job is None:
            raise CloudException("Does not exist or was purged from cache", jid=jid)
        return job

    def status(self, jids: Sequence[int]) -> List[str]:
        with self.lock:
            return [self._job(jid).status for jid in jids]

    def info(self, jids: Sequence[int], fields: Sequence[str]) -> Dict[int, dict]:
        from cloudsim.server.info import job_info

        now = time.time()
        with self.lock:
            return {jid: job_info(self._job(jid), fields, now) for jid in jids}

    def collect(self, jids: Sequence[int], timeout: Optional[float], deadlock_check: bool = True,
                want_results: bool = True, caller: Optional[int] = None) -> List[Outcome]:
        with self.lock:
            jobs = [self._job(jid) for jid in jids]
            pending = {j.jid for j in jobs if not j.is_finished}
            if not pending:
                return self._outcomes(jobs, want_results)
            waiter = Waiter(len(pending), caller)
            for jid in pending:
                self._waiters.setdefault(jid, []).append(waiter)
            if caller is not None and deadlock_check and timeout is None:
                self._block(caller, pending, waiter)
        try:
            waiter.event.wait(timeout)
        finally:
            with self.lock:
                for jid in pending:
                    lst = self._waiters.get(jid)
                    if lst and waiter in lst:
                        lst.remove(waiter)
                        if not lst:
                            del self._waiters[jid]
                if caller is not None:
                    self.sched.unblock(caller)
                    self._blocked_waiters.pop(caller, None)
                remaining = [j.jid for j in jobs if not j.is_finished]
                outcomes = None if remaining or waiter.deadlock is not None else self._outcomes(jobs, want_results)
        if waiter.deadlock is not None:
            raise CloudDeadlockError(waiter.deadlock, jid=caller)
        if outcomes is None:
            raise CloudTimeoutError("cloud.join timed out", jid=remaining if len(remaining) > 1 else remaining[0])
        return outcomes

    def _outcomes(self, jobs: List[Job], want_results: bool) -> List[Outcome]:
        """What collect() returns for finished jobs; reports each pitfall and echo once (lock held)."""
        out: List[Outcome] = []
        for job in jobs:
            pits: List[dict] = []
            if len(job.pitfalls) > job.pitfalls_emitted:
                pits = job.pitfalls[job.pitfalls_emitted:]
                job.pitfalls_emitted = len(job.pitfalls)
            echo = None
            if not self.settings.force_redirect_job_output and not job.echoed:
                job.echoed = True
                echo = (job.stdout or "", job.stderr or "")
            done = job.status == DONE
            out.append((job.jid, job.status, done, job.result if (want_results and done) else None,
                        None if done else job_error(job), pits, echo))
        return out

    def _block(self, caller: int, pending: Set[int], waiter: Waiter) -> None:
        """A job blocks in join: take back work queued behind it, then look for a deadlock (lock held)."""
        job = self.sched.jobs.get(caller)
        if job is None or job.status != PROCESSING:
            return
        self._take_back(job)
        self.sched.block(caller, pending)
        self._blocked_waiters[caller] = waiter
        found = self.sched.find_deadlock()
        if found is None:
            return
        text = found.describe()
        for jid in found.blocked:
            w = self._blocked_waiters.get(jid)
            stuck = self.sched.jobs.get(jid)
            if stuck is not None:
                stuck.pitfalls.append(_pitfalls.record(
                    "recursion-deadlock",
                    f"Job {jid} blocked in cloud.join/cloud.result on jobs that could never start.",
                    "a job blocked in join keeps its slot; under max_concurrent_jobs the jobs it waits for never get one.",
                    "submit follow-up work with _depends_on instead of blocking inside a job.",
                ))
            if w is not None:
                w.deadlock = text
                w.event.set()

    def mark_unreadable(self, jid: int, message: str) -> None:
        with self.lock:
            job = self.sched.jobs.get(jid)
            if job is not None and job.status == DONE:
                job.status = ERROR
                job.exc_type = "UnpicklingError"
                job.exception = job.traceback = message
                job.result = None

    # -------------------------------------------------------------- the API
    def answer_api(self, jid: Optional[int], method: str, data: bytes, reply: Callable[[bool, bytes], None]) -> None:
        """A job called the cloud API: answer it through ``reply(ok, pickled)``.

        ``collect`` blocks, so it is answered from a thread of its own; the
        rest are answered at once in the caller's thread.
        """
        if method == "collect":
            threading.Thread(target=self._answer, args=(jid, method, data, reply),
                             name=f"cloudsim-join-{jid}", daemon=True).start()
        else:
            self._answer(jid, method, data, reply)

    def _answer(self, jid: Optional[int], method: str, data: bytes, reply: Callable[[bool, bytes], None]) -> None:
        try:
            payload = pickle.loads(data)
            if method == "submit":
                value: Any = self.submit(payload, parent=jid)
            elif method == "collect":
                jids, timeout, deadlock_check, want = payload
                value = self.collect(jids, timeout, deadlock_check, want, caller=jid)
            elif method == "status":
                value = self.status(payload)
            elif method == "info":
                value = self.info(*payload)
            elif method == "kill":
                self.kill(payload)
                value = None
            elif method == "delete":
                self.delete(payload)
                value = None
            elif method == "connection_info":
                value = self.connection_info()
            else:
                raise CloudException(f"unknown request {method!r}")
            ok, blob = True, pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:
            ok = False
            try:
                blob = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
            except Exception:
                blob = pickle.dumps(CloudException(f"{type(exc).__name__}: {exc}"))
        reply(ok, blob)
