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
import selectors
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Set

from cloudsim.backend import JobTable, job_settings
from cloudsim.server import protocol
from cloudsim.server.pool import ServerProcess, WorkerHandle, kill_worker_tree
from cloudsim.server.scheduler import ERROR, KILLED, PROCESSING, QUEUED, Job

log = logging.getLogger(__name__)

_MAX_BATCH = 64  # jobs handed to one worker ahead of time when the backlog is large
_LOST_GRACE = 2.0  # seconds to wait for a dead worker's exit status before reporting without it


class Simulator(JobTable):
    """The simulated cloud: the backend behind the ``cloud`` API in the client."""

    kind = "simulator"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings, settings.max_concurrent_jobs)
        self.session = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = os.path.abspath(settings.server_root)
        self.session_dir = os.path.join(self.root, "sessions", self.session)
        self.module_dir = os.path.join(self.root, "modules")
        worker_settings = job_settings(settings, self.session, self.root)
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
        # (deadline, seq, kind, key) for _max_runtime kills and lost-worker grace
        self._timers: List[tuple] = []
        self._timer_seq = itertools.count()
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._running = False
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
            self._kill_unfinished("Killed: the simulator was closed")
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
        self._stop_callbacks()
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
    def ship(self, seeds: Set[str]) -> Any:
        """Ship the user modules ``seeds`` need to the flat module directory (see cloudsim.shipping)."""
        from cloudsim.shipping import snapshot

        if self._store is None:
            from cloudsim.shipping.store import FlatStore

            self._store = FlatStore(self.module_dir)
            path = self.server.info.get("sys_path", [])
            self._server_path = [p for p in path if os.path.realpath(p) != os.path.realpath(self.module_dir)]
        return snapshot.prepare(sorted(seeds), self._store, self.session, self._server_path)

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
                self._fail_all("The simulator's manager thread crashed; see the log.")

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
                    self._fail_all(f"The simulated server died; its log: {self.server.log_path}")
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
        jid, retire = outcome[0], outcome[-1]
        job = None
        while worker.outstanding:
            head = worker.outstanding.popleft()
            if head.jid == jid:
                job = head
                break
        if job is not None and job.status == PROCESSING:
            self._apply_outcome(job, outcome)
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
                        self._runtime_exceeded(job)
                elif kind == "lost":
                    worker = self._lost.pop(key, None)
                    if worker is not None:
                        self._fail_lost(worker, self._exit_codes.pop(key, None))
                self._dispatch()

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

    def _unassign(self, job: Job) -> None:
        worker = self.workers.get(job.worker) if job.worker is not None else None
        if worker is not None and job in worker.outstanding:
            worker.outstanding.remove(job)
            try:
                worker.channel.send((protocol.CANCEL, [job.jid]))
            except protocol.ChannelClosed:
                pass

    def _take_back(self, job: Job) -> None:
        worker = self.workers.get(job.worker) if job.worker is not None else None
        if worker is None or len(worker.outstanding) <= 1:
            return
        ahead = [j for j in list(worker.outstanding)[1:] if j.status == QUEUED]
        for j in ahead:
            worker.outstanding.remove(j)
        try:
            worker.channel.send((protocol.CANCEL, [j.jid for j in ahead]))
        except protocol.ChannelClosed:
            pass
        self.sched.requeue(ahead)
        self._dispatch()

    # -------------------------------------------------------------- the API
    def _on_api(self, worker: WorkerHandle, message: tuple) -> None:
        """A job called the cloud API: answer it on the job's channel."""
        _tag, call_id, jid, method, data = message

        def reply(ok: bool, blob: bytes) -> None:
            try:
                worker.channel.send((protocol.REPLY, call_id, ok, blob))
            except protocol.ChannelClosed:
                pass

        self.answer_api(jid, method, data, reply)

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
