"""The simulated cloud as the client sees it: job records, workers, the manager thread.

One :class:`Simulator` per ``start_simulator()``. Its state (the scheduler's
job table, the workers, who waits for what) is guarded by one lock. Client
threads submit and hand ready jobs straight to idle workers; one manager
thread reads everything that comes back::

    call/map ─► submit ─► Scheduler (queued/waiting) ─► dispatch ─► worker ("run")
                                                                       │
    result/join ◄── Waiter.event ◄── _completed ◄── manager thread ◄───┘ ("results", "api")

The manager thread waits on the server's control socket, every worker's
socket and a wake-up pipe at once, so a worker that dies (EOF, then the
server's exit report naming the signal) is noticed at once, and a blocked
``join`` inside a job never stalls it. Timers (``_max_runtime``, lost-worker
grace) live in a heap the loop sleeps on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import pickle
import queue
import selectors
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.errors import CloudDeadlockError, CloudException, CloudTimeoutError
from cloudsim.server import protocol
from cloudsim.server.pool import ServerProcess, WorkerHandle, kill_worker_tree
from cloudsim.server.scheduler import (
    DONE, ERROR, KILLED, PROCESSING, QUEUED, STALLED, Job, Scheduler,
)

log = logging.getLogger(__name__)

# jids come from one counter for the life of the client process, as PiCloud's
_JIDS = itertools.count(1)
_JIDS_LOCK = threading.Lock()

_MAX_BATCH = 64  # jobs handed to one worker ahead of time when the backlog is large
_LOST_GRACE = 2.0  # seconds to wait for a dead worker's exit status before reporting without it


def next_jids(n: int) -> List[int]:
    with _JIDS_LOCK:
        return [next(_JIDS) for _ in range(n)]


class Waiter:
    """One blocked join/result: the jobs it still waits for."""

    __slots__ = ("pending", "event", "deadlock", "caller")

    def __init__(self, pending: int, caller: Optional[int]) -> None:
        self.pending = pending
        self.event = threading.Event()
        self.deadlock: Optional[str] = None
        self.caller = caller


# One outcome of collect(): what the facade needs to return or raise for a job.
# (jid, status, ok, result_bytes, error, pitfalls_to_emit, echo)
Outcome = Tuple[int, str, bool, Optional[bytes], Optional[CloudException], List[dict], Optional[Tuple[str, str]]]


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


class Simulator:
    """The simulated cloud: the backend behind the ``cloud`` API in the client."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.cap = settings.max_concurrent_jobs
        self.lock = threading.Lock()
        self.sched = Scheduler(self.cap)
        self.session = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = os.path.abspath(settings.server_root)
        self.session_dir = os.path.join(self.root, "sessions", self.session)
        self.module_dir = os.path.join(self.root, "modules")
        worker_settings = {
            "max_transmit_size": settings.max_transmit_size,
            "network_timeout": settings.network_timeout,
            "allow_hosts": list(settings.allow_hosts),
            "session": self.session,
            "project_dirs": _project_dirs(),
            "server_root": self.root,
            "pitfalls": settings.pitfalls if isinstance(settings.pitfalls, str) else dict(settings.pitfalls),
        }
        self.server = ServerProcess(worker_settings, self.session_dir, self.module_dir)
        # worker id -> WorkerHandle, e.g. {1: <worker 1 pid 4242 outstanding 0>}
        self.workers: Dict[int, WorkerHandle] = {}
        self.idle: List[WorkerHandle] = []
        self.spawning = 0
        self._wids = itertools.count(1)
        # pid -> exit status reported by the server before the worker's socket closed
        self._exit_codes: Dict[int, Optional[int]] = {}
        # pid -> worker whose socket closed, waiting for its exit status
        self._lost: Dict[int, WorkerHandle] = {}
        # jid -> waiters blocked on it
        self._waiters: Dict[int, List[Waiter]] = {}
        # jid of a job blocked in join -> its waiter
        self._blocked_waiters: Dict[int, Waiter] = {}
        # (deadline, seq, kind, key) for _max_runtime kills and lost-worker grace
        self._timers: List[tuple] = []
        self._timer_seq = itertools.count()
        self._callbacks: "queue.Queue[Optional[Tuple[Callable, int]]]" = queue.Queue()
        self._callback_thread: Optional[threading.Thread] = None
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._running = False
        self._closed = False
        self._store: Any = None
        self._server_path: List[str] = []
        self.thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        self.server.start(self.settings.startup_timeout, while_waiting=_warm_up)
        assert self.server.control is not None
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.selector.register(self.server.control.fileno(), selectors.EVENT_READ, self.server.control)
        self._running = True
        self.thread = threading.Thread(target=self._loop, name="cloudsim-manager", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the manager, the server and every worker; fail jobs still unfinished."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._running = False
            unfinished = [j for j in self.sched.jobs.values() if not j.is_finished]
            done: List[Job] = []
            for job in unfinished:
                job.exception = job.exception or "Killed: the simulator was closed"
                done.extend(self.sched.finish(job, KILLED))
            for job in done:
                self._completed(job)
            workers = list(self.workers.values())
        self._wake()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5)
        for w in workers:
            try:
                w.channel.send((protocol.EXIT,))
            except protocol.ChannelClosed:
                pass
        self.server.stop()
        for w in workers:
            if _pid_alive(w.pid):
                kill_worker_tree(w.pid)
            w.channel.close()
        self._callbacks.put(None)
        if self._store is not None:
            try:
                self._store.release(self.session)
            except OSError:
                log.debug("could not release session %s in %s", self.session, self.module_dir)
        try:
            self.selector.close()
        except Exception:
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # ------------------------------------------------------------ submitting
    def submit(self, items: Sequence[tuple], parent: Optional[int] = None) -> List[int]:
        """Enter jobs; ``items`` are (func_bytes, args_bytes, kwargs_bytes, opts). Returns their jids."""
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

    def ship(self, seeds: Set[str]) -> Any:
        """Ship the user modules ``seeds`` need to the flat module directory (see cloudsim.shipping)."""
        from cloudsim.shipping import snapshot

        if self._store is None:
            from cloudsim.shipping.store import FlatStore

            self._store = FlatStore(self.module_dir)
            path = self.server.info.get("sys_path", [])
            self._server_path = [p for p in path if os.path.realpath(p) != os.path.realpath(self.module_dir)]
        return snapshot.prepare(sorted(seeds), self._store, self.session, self._server_path)

    def _check_open(self) -> None:
        if self._closed:
            raise CloudException("The simulator was closed; call cloud.start_simulator() again to use it.")

    # -------------------------------------------------------------- dispatch
    def _dispatch(self) -> None:
        """Hand ready jobs to idle workers and ask for workers when needed (lock held)."""
        sched = self.sched
        while self.idle and sched.has_ready():
            worker = self.idle.pop()
            if worker.retiring or worker.wid not in self.workers:
                continue
            self._send_jobs(worker, self._batch())
        if sched.has_ready():
            # every idle worker is busy now: start one per ready job still without
            # a worker, without ever having more than `cap` interpreters
            live = sum(1 for w in self.workers.values() if not w.retiring)
            want = min(sched.ready_count() - self.spawning, self.cap - live - self.spawning)
            for _ in range(max(0, want)):
                self._spawn()

    def _batch(self) -> List[Job]:
        backlog = self.sched.ready_count()
        workers = max(1, len(self.workers) + self.spawning)
        n = 1
        if backlog > 2 * workers:
            n = min(_MAX_BATCH, backlog // (2 * workers))
        jobs = self.sched.take_ready(n)
        for i, job in enumerate(jobs):  # the interpreter ends after such a job
            if job.opts.get("kill_process"):
                self.sched.requeue(jobs[i + 1:])
                return jobs[: i + 1]
        return jobs

    def _send_jobs(self, worker: WorkerHandle, jobs: List[Job]) -> None:
        if not jobs:
            self.idle.append(worker)
            return
        specs = []
        for job in jobs:
            func_b, args_b, kwargs_b = job.spec
            specs.append((job.jid, func_b, args_b, kwargs_b, job.opts.get("worker")))
            job.worker = worker.wid
        start_now = not worker.outstanding
        worker.outstanding.extend(jobs)
        if start_now:
            self._start(worker, jobs[0])
        try:
            worker.channel.send((protocol.RUN, specs))
        except protocol.ChannelClosed:
            pass  # the manager thread sees the EOF and handles the loss

    def _start(self, worker: WorkerHandle, job: Job) -> None:
        self.sched.start(job)
        max_runtime = job.opts.get("max_runtime")
        if max_runtime:
            self._add_timer(time.monotonic() + max_runtime, "runtime", (job.jid, worker.wid))

    def _spawn(self) -> None:
        wid = next(self._wids)
        self.spawning += 1
        try:
            self.server.request_worker(wid, os.path.join(self.session_dir, f"w{wid}"))
        except protocol.ChannelClosed:
            self.spawning -= 1

    def _add_timer(self, deadline: float, kind: str, key: Any) -> None:
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), kind, key))
        self._wake()

    # ---------------------------------------------------------- manager loop
    def _loop(self) -> None:
        try:
            while self._running:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                for key, _ in self.selector.select(timeout):
                    source = key.data
                    if source is None:
                        try:
                            os.read(self._wake_r, 4096)
                        except (BlockingIOError, OSError):
                            pass
                    elif source is self.server.control:
                        self._on_control()
                    else:
                        self._on_worker(source)
                if self._timers:
                    self._fire_timers()
        except Exception:  # pragma: no cover - a bug here must not hang clients silently
            log.exception("cloudsim manager thread crashed")
            with self.lock:
                self._closed = True
                for job in list(self.sched.jobs.values()):
                    if not job.is_finished:
                        job.exception = "The simulator's manager thread crashed; see the log."
                        for f in self.sched.finish(job, ERROR):
                            self._completed(f)

    def _on_control(self) -> None:
        control = self.server.control
        assert control is not None
        try:
            messages = control.recv_available()
        except protocol.ChannelClosed:
            self.selector.unregister(control.fileno())
            if self._running:
                log.error("the simulated server exited unexpectedly; see %s", self.server.log_path)
                with self.lock:
                    self._closed = True
                    for job in list(self.sched.jobs.values()):
                        if not job.is_finished:
                            job.exception = f"The simulated server died; its log: {self.server.log_path}"
                            for f in self.sched.finish(job, ERROR):
                                self._completed(f)
            return
        for message in messages:
            tag = message[0]
            if tag == protocol.SPAWNED:
                sock = self.server.receive_worker_socket()
                worker = WorkerHandle(message[1], message[2], protocol.Channel(sock))
                with self.lock:
                    self.spawning -= 1
                    self.workers[worker.wid] = worker
                self.selector.register(worker.channel.fileno(), selectors.EVENT_READ, worker)
            elif tag == protocol.EXITED:
                self._on_exit(message[1], message[2])
            elif tag == protocol.SPAWN_FAILED:
                with self.lock:
                    self.spawning -= 1
                log.error("could not start a worker: %s", message[2])

    def _on_worker(self, worker: WorkerHandle) -> None:
        try:
            messages = worker.channel.recv_available()
        except protocol.ChannelClosed:
            self._on_worker_lost(worker)
            return
        for message in messages:
            tag = message[0]
            if tag == protocol.RESULTS:
                with self.lock:
                    for outcome in message[1]:
                        self._on_outcome(worker, outcome)
                    if not worker.outstanding and not worker.retiring:
                        self.idle.append(worker)
                    self._dispatch()
            elif tag == protocol.READY:
                with self.lock:
                    self.idle.append(worker)
                    self._dispatch()
            elif tag == protocol.API:
                self._on_api(worker, message)

    def _on_outcome(self, worker: WorkerHandle, outcome: tuple) -> None:
        (jid, ok, payload, exc_type, tb_text, stdout, stderr, runtime,
         cpu_user, cpu_sys, max_rss, pits, retire) = outcome
        job = None
        while worker.outstanding:
            head = worker.outstanding.popleft()
            if head.jid == jid:
                job = head
                break
        if job is not None and job.status == PROCESSING:
            job.result = payload
            job.exc_type = exc_type
            job.traceback = tb_text
            job.stdout, job.stderr = stdout, stderr
            job.runtime, job.cpu_user, job.cpu_system, job.max_rss = runtime, cpu_user, cpu_sys, max_rss
            if pits:
                job.pitfalls.extend(pits)
            for f in self.sched.finish(job, DONE if ok else ERROR, None if ok else tb_text):
                self._completed(f)
        if retire:
            worker.retiring = True
            self._requeue_outstanding(worker)
        elif worker.outstanding:
            self._start(worker, worker.outstanding[0])

    def _requeue_outstanding(self, worker: WorkerHandle) -> None:
        jobs = [j for j in worker.outstanding if j.status == QUEUED]
        worker.outstanding.clear()
        self.sched.requeue(jobs)

    def _on_worker_lost(self, worker: WorkerHandle) -> None:
        try:
            self.selector.unregister(worker.channel.fileno())
        except (KeyError, ValueError):
            pass
        worker.channel.close()
        with self.lock:
            self.workers.pop(worker.wid, None)
            if worker in self.idle:
                self.idle.remove(worker)
            head = worker.outstanding[0] if worker.outstanding else None
            if head is not None and head.status == PROCESSING and not worker.retiring:
                if worker.pid in self._exit_codes:
                    self._fail_lost(worker, self._exit_codes.pop(worker.pid))
                else:
                    self._lost[worker.pid] = worker
                    self._add_timer(time.monotonic() + _LOST_GRACE, "lost", worker.pid)
            else:
                self._requeue_outstanding(worker)
                self._exit_codes.pop(worker.pid, None)
            self._dispatch()

    def _on_exit(self, pid: int, code: Optional[int]) -> None:
        with self.lock:
            worker = self._lost.pop(pid, None)
            if worker is not None:
                self._fail_lost(worker, code)
                self._dispatch()
            elif any(w.pid == pid for w in self.workers.values()):
                self._exit_codes[pid] = code  # the EOF on its socket is still on the way

    def _fail_lost(self, worker: WorkerHandle, code: Optional[int]) -> None:
        head = worker.outstanding.popleft() if worker.outstanding else None
        self._requeue_outstanding(worker)
        if head is None or head.is_finished:
            return
        how = protocol.describe_returncode(code)
        head.exc_type = "WorkerDied"
        text = (
            f"The job's interpreter died while running it: {how}.\n"
            "The simulator replaced the interpreter; other jobs are not affected.\n"
            "If the job called os._exit() or exit()-like C code, make it return instead (pitfall: sys-exit)."
        )
        head.traceback = text
        for f in self.sched.finish(head, ERROR, text):
            self._completed(f)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _deadline, _seq, kind, key = heapq.heappop(self._timers)
            with self.lock:
                if kind == "runtime":
                    jid, wid = key
                    job = self.sched.jobs.get(jid)
                    if job is not None and job.status == PROCESSING and job.worker == wid:
                        minutes = job.opts["max_runtime"] / 60.0
                        self._kill_processing(job, (
                            f"Killed: the job ran longer than its _max_runtime of {minutes:g} minutes "
                            f"({job.opts['max_runtime']:g} s) and was stopped (pitfall: max-runtime)."
                        ))
                elif kind == "lost":
                    worker = self._lost.pop(key, None)
                    if worker is not None:
                        self._fail_lost(worker, self._exit_codes.pop(key, None))
                self._dispatch()

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

    # ----------------------------------------------------------------- kill
    def _kill_processing(self, job: Job, message: str) -> None:
        worker = self.workers.get(job.worker) if job.worker is not None else None
        job.exc_type = "Killed"
        for f in self.sched.finish(job, KILLED, message):
            self._completed(f)
        if worker is not None:
            worker.retiring = True
            if worker.outstanding and worker.outstanding[0] is job:
                worker.outstanding.popleft()
            self._requeue_outstanding(worker)
            if worker in self.idle:
                self.idle.remove(worker)
            kill_worker_tree(worker.pid)

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
                worker = self.workers.get(job.worker) if job.assigned and job.worker is not None else None
                if worker is not None and job in worker.outstanding:
                    worker.outstanding.remove(job)
                    try:
                        worker.channel.send((protocol.CANCEL, [job.jid]))
                    except protocol.ChannelClosed:
                        pass
                for f in self.sched.cancel(job, "Killed by cloud.kill() before it started (pitfall: job-kill)."):
                    self._completed(f)
            self._dispatch()

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

    def collect(self, jids: Sequence[int], timeout: Optional[float], deadlock_check: bool = True,
                want_results: bool = True, caller: Optional[int] = None) -> List[Outcome]:
        """Wait for jobs to finish and return their outcomes (the facade raises or returns)."""
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
        """A job blocks in join: take back jobs its worker holds ahead, then look for a deadlock (lock held)."""
        job = self.sched.jobs.get(caller)
        if job is None or job.status != PROCESSING:
            return
        worker = self.workers.get(job.worker) if job.worker is not None else None
        if worker is not None and len(worker.outstanding) > 1:
            ahead = [j for j in list(worker.outstanding)[1:] if j.status == QUEUED]
            for j in ahead:
                worker.outstanding.remove(j)
            try:
                worker.channel.send((protocol.CANCEL, [j.jid for j in ahead]))
            except protocol.ChannelClosed:
                pass
            self.sched.requeue(ahead)
            self._dispatch()
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
        """The client could not unpickle a job's result: the job becomes an error with the reason."""
        with self.lock:
            job = self.sched.jobs.get(jid)
            if job is not None and job.status == DONE:
                job.status = ERROR
                job.exc_type = "UnpicklingError"
                job.exception = job.traceback = message
                job.result = None

    def info(self, jids: Sequence[int], fields: Sequence[str]) -> Dict[int, dict]:
        from cloudsim.server.info import job_info

        now = time.time()
        with self.lock:
            return {jid: job_info(self._job(jid), fields, now) for jid in jids}

    # -------------------------------------------------------------- the API
    def _on_api(self, worker: WorkerHandle, message: tuple) -> None:
        """A job called the cloud API: answer it (blocking calls get a thread of their own)."""
        _tag, call_id, jid, method, data = message
        if method == "collect":
            threading.Thread(target=self._answer, args=(worker, call_id, jid, method, data),
                             name=f"cloudsim-join-{jid}", daemon=True).start()
        else:
            self._answer(worker, call_id, jid, method, data)

    def _answer(self, worker: WorkerHandle, call_id: int, jid: Optional[int], method: str, data: bytes) -> None:
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
            reply = (protocol.REPLY, call_id, True, pickle.dumps(value, protocol.pickle.HIGHEST_PROTOCOL))
        except BaseException as exc:
            try:
                blob = pickle.dumps(exc, protocol.pickle.HIGHEST_PROTOCOL)
            except Exception:
                blob = pickle.dumps(CloudException(f"{type(exc).__name__}: {exc}"))
            reply = (protocol.REPLY, call_id, False, blob)
        try:
            worker.channel.send(reply)
        except protocol.ChannelClosed:
            pass

    def connection_info(self) -> dict:
        with self.lock:
            live = len(self.workers)
        info = {
            "opened": True,
            "connection_type": "simulation",
            "num_procs": self.cap,
            "workers": live,
            "server_pid": self.server.pid,
            "server_root": self.root,
            "session_dir": self.session_dir,
            "module_dir": self.module_dir,
        }
        info.update({f"setting.{k}": v for k, v in self.settings.as_dict().items()})
        return info

    def process_ids(self) -> List[int]:
        """The pids of the server and its workers (for leak checks and diagnostics)."""
        with self.lock:
            pids = [w.pid for w in self.workers.values()]
        if self.server.pid:
            pids.insert(0, self.server.pid)
        return pids


def _warm_up() -> None:
    """What the first call will need, imported while the server starts (the client waits anyway)."""
    from cloudsim.server import info  # noqa: F401
    from cloudsim.shipping import snapshot  # noqa: F401


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
