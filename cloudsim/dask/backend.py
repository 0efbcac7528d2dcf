"""The Dask backend in the client: PiCloud's job table on top of a ``distributed`` cluster.

::

    call/map ─► JobTable (waiting/queued, cap, deps) ─► _dispatch ─► Client.map(run_job, ...)
                                                                          │ Dask's queue, then a worker:
                                            ApiServer: "start"? ◄─────────┤ the job wrapper
    result/join ◄── _completed ◄── manager thread: gather outcomes ◄──────┘
                                      │ timers (_max_runtime), stops (kill), worker restarts
    job calls the API ─► ApiServer (a socket in the client) ─► answer_api ─► the same JobTable

A job reaches Dask once the :class:`~cloudsim.server.scheduler.Scheduler`
has it ready: its dependencies finished. That is how ``_depends_on`` and
``_depends_on_errors`` keep PiCloud's meaning (``waiting``, ``stalled``).
Up to the free slots, plus ``_ahead`` more when the cluster's threads are
exactly the cap, wait in Dask's queue (in ``_priority`` order, passed on
as Dask's priority) and stay ``queued`` here: a job starts, and takes one
of the ``max_concurrent_jobs`` slots, when its worker asks the client
(``start``) and the job is still wanted. So the cap holds cluster-wide, a
job blocked in ``join`` keeps its slot and the recursion deadlock happens,
and is found, as on PiCloud, and a job killed while queued never runs. The
cap is never more than the cluster's worker threads; with fewer slots than
one-thread workers, jobs go to ``cap`` chosen workers (``_pool``).

A running job cannot be cancelled in Dask, so ``kill`` and ``_max_runtime``
end the worker process that runs it (its nanny starts a fresh one), as the
simulator does. A job that leaked threads or processes has its worker
restarted the same way once its result is in.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import pickle
import queue
import re
import secrets
import socket
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Set, Tuple

from cloudsim.backend import JobTable, job_settings
from cloudsim.dask import LATER, NOT_STARTED, require
from cloudsim.errors import CloudException
from cloudsim.server import protocol
from cloudsim.server.scheduler import ERROR, PROCESSING, QUEUED, Job

log = logging.getLogger(__name__)

_GATHER_BATCH = 256


class ApiServer:
    """A socket in the client where jobs call the cloud API (``cloudsim.dask.task.ClientLink``).

    Every connection must first send the session's token; requests are then
    answered by the backend as the simulator answers its workers.
    """

    def __init__(self, backend: "DaskBackend", host: str) -> None:
        self.backend = backend
        self.token = secrets.token_hex(16)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.address: Tuple[str, int] = self.sock.getsockname()[:2]
        self._channels: List[protocol.Channel] = []
        self._closed = False
        self.thread = threading.Thread(target=self._accept, name="cloudsim-dask-api", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="cloudsim-dask-api-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        channel = protocol.Channel(conn)
        try:
            hello = channel.recv()
            if not (isinstance(hello, tuple) and len(hello) == 2 and hello[0] == "hello"
                    and secrets.compare_digest(str(hello[1]), self.token)):
                channel.close()
                return
            self._channels.append(channel)
            while True:
                _tag, call_id, jid, method, data = channel.recv()

                def reply(ok: bool, blob: bytes, call_id: int = call_id) -> None:
                    try:
                        channel.send((protocol.REPLY, call_id, ok, blob))
                    except protocol.ChannelClosed:
                        pass

                self.backend.answer_api(jid, method, data, reply)
        except (protocol.ChannelClosed, OSError, ValueError):
            channel.close()

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        for channel in self._channels:
            channel.close()


class DaskBackend(JobTable):
    """The ``cloud`` API's backend on a Dask cluster (see the module docstring)."""

    kind = "Dask backend"
    simulated = False

    def __init__(self, settings: Any, address: Optional[str] = None, n_workers: Optional[int] = None,
                 dashboard_address: Optional[str] = None, restart_workers: bool = False) -> None:
        super().__init__(settings, settings.max_concurrent_jobs)
        if n_workers is not None and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1):
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a scheduler address such as 'tcp://host:8786', not {address!r}")
        self.address = address
        self.n_workers = n_workers or settings.max_concurrent_jobs
        self.dashboard_address = dashboard_address
        self.restart_workers = restart_workers
        self.session = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = os.path.abspath(settings.server_root)
        self.session_dir = os.path.join(self.root, "dask", self.session)
        self.module_dir = ""  # set once the scheduler's address is known: one flat directory per cluster
        self.cluster: Any = None
        self.client: Any = None
        self.api: Optional[ApiServer] = None
        self.slots = 0
        self.worker_settings: Dict[str, Any] = {}
        # Dask key -> jid of the jobs handed to Dask and not collected yet
        self._keys: Dict[str, int] = {}
        self._futures: Dict[int, Any] = {}
        self._events: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._timers: List[tuple] = []
        self._timer_seq = itertools.count()
        self._store: Any = None
        self._server_path: List[str] = []
        self._shipped_version = -1
        self._plugin = f"cloudsim-modules-{self.session}"
        # with fewer slots than workers, jobs go to `cap` chosen workers, so the interpreters are as few and
        # as reused as on the simulator; None: any worker
        self._pool: Optional[List[str]] = None
        # how many jobs beyond the free slots may wait in Dask's queue: Dask starts the next one the
        # moment a worker's thread is free
        self._ahead = 0
        # processing jobs whose worker has already asked to start its next job: they have returned
        self._returned: Set[int] = set()
        # a job handed out again (it found no free slot) gets a new Dask key: a key is never reused
        self._handouts = itertools.count()
        self.thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        distributed = require()
        from cloudsim.dask.cluster import LocalDaskCluster

        os.makedirs(self.session_dir, exist_ok=True)
        try:
            if self.address is None:
                self.cluster = LocalDaskCluster(self.n_workers, os.path.join(self.session_dir, "cluster.log"),
                                                self.dashboard_address)
                self.address = self.cluster.start(max(self.settings.startup_timeout, 60.0))
            self.client = distributed.Client(self.address, set_as_default=False,
                                             timeout=max(self.settings.startup_timeout, 30.0))
            if self.restart_workers:
                self.client.restart(wait_for_workers=True)
            if self.cluster is not None:
                self.client.wait_for_workers(self.n_workers, timeout=max(self.settings.startup_timeout, 60.0))
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            self.slots = sum(int(w.get("nthreads", 1)) for w in workers.values())
            if not self.slots:
                raise CloudException(f"The Dask cluster at {self.address} has no workers; start some, then retry.")
            self.cap = min(self.settings.max_concurrent_jobs, self.slots)
            self.sched.cap = self.cap
            if self.cap < len(workers) and all(int(w.get("nthreads", 1)) == 1 for w in workers.values()):
                self._pool = sorted(workers)[: self.cap]
            elif self.cap == self.slots:  # the cluster's threads hold the cap themselves: Dask may queue jobs
                self._ahead = max(64, 8 * self.cap)
            self.module_dir = os.path.join(self.root, "dask", "modules-" + _slug(self.address))
            self.api = ApiServer(self, _reachable_host(self.address))
            self.worker_settings = job_settings(self.settings, self.session, self.root)
            self.worker_settings.update({
                "api_address": list(self.api.address),
                "api_token": self.api.token,
                "simulated": False,
            })
        except BaseException:
            self._release()
            raise
        self.thread = threading.Thread(target=self._loop, name="cloudsim-dask-manager", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop running jobs (their workers restart), then release what this backend started."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            running = [self._futures[job.jid] for job in self.sched.jobs.values()
                       if job.status == PROCESSING and job.jid in self._futures]
            self._kill_unfinished("Killed: the Dask backend was closed")
        self._events.put(None)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(10)
        if running and self.client is not None and self.cluster is None:
            self._stop(running)  # on a cluster we do not own, jobs must not run on after close()
        self._stop_callbacks()
        self._release()

    def _release(self) -> None:
        if self.api is not None:
            self.api.close()
        if self._store is not None:
            try:
                self._store.release(self.session)  # this client's modules are no longer live on the cluster
            except OSError:
                log.debug("could not release session %s in %s", self.session, self.module_dir, exc_info=True)
        client, self.client = self.client, None
        if client is not None:
            try:
                if self._shipped_version >= 0:
                    client.unregister_worker_plugin(self._plugin)
            except Exception:
                log.debug("could not unregister %s", self._plugin, exc_info=True)
            try:
                client.close(timeout=10)
            except Exception:
                log.debug("closing the Dask client failed", exc_info=True)
        if self.cluster is not None:
            self.cluster.close()

    # -------------------------------------------------------------- shipping
    def ship(self, seeds: Set[str]) -> Any:
        """Ship user modules with the simulator's snapshot rules, then put them on every worker, flat."""
        from cloudsim.shipping import snapshot

        if self._store is None:
            from cloudsim.shipping.store import FlatStore

            self._store = FlatStore(self.module_dir)
            self._server_path = self.client.submit(_sys_path, pure=False).result()
        shipment = snapshot.prepare(sorted(seeds), self._store, self.session, self._server_path)
        if shipment.version != self._shipped_version:
            from cloudsim.dask.task import ModulesPlugin

            files = self._store.adopt(self.session, snapshot.shipped_sources(self._store))
            self.client.register_plugin(ModulesPlugin(files), name=self._plugin)
            self._shipped_version = shipment.version
        return shipment

    # -------------------------------------------------------------- dispatch
    def _dispatch(self) -> None:
        """Hand Dask the jobs that may start now, and up to ``_ahead`` more to queue (lock held).

        A handed job stays ``queued`` (assigned) until its worker asks to
        start it (:meth:`_start_job`): only then does it hold a slot.
        """
        if self._closed:
            return
        # every job with a future has been handed to Dask: those not processing wait in Dask's queue
        queued_in_dask = len(self._futures) - len(self.sched.processing)
        free = self._free_slots() + self._ahead - queued_in_dask
        if free <= 0 or not self.sched.has_ready():
            return
        from cloudsim.dask.task import run_job

        by_priority: Dict[int, List[Job]] = {}
        for job in self.sched.take_ready(free):
            by_priority.setdefault(int(job.opts.get("priority", 5)), []).append(job)
        for priority, jobs in by_priority.items():  # one message to the scheduler per priority
            specs = [(job.jid, *job.spec, job.opts.get("worker")) for job in jobs]
            keys = [f"cloudsim-{self.session}-{job.jid}-{next(self._handouts)}" for job in jobs]
            futures = self.client.map(run_job, [self.worker_settings] * len(jobs), specs, key=keys, pure=False,
                                      priority=-priority, workers=self._pool,
                                      allow_other_workers=self._pool is not None)
            for job, key, future in zip(jobs, keys, futures):
                self._keys[key] = job.jid
                self._futures[job.jid] = future
                future.add_done_callback(self._on_done)

    def _free_slots(self) -> int:
        """Slots under the cap not held by a running job; a job that has returned on its worker holds none,
        though its outcome may still be on the way (lock held)."""
        return self.sched.free_slots + len(self._returned & self.sched.processing)

    def answer_api(self, jid: Optional[int], method: str, data: bytes, reply: Any) -> None:
        if method == "start":
            reply(True, _PICKLED[self._start_job(jid, pickle.loads(data))])
        else:
            super().answer_api(jid, method, data, reply)

    def _start_job(self, jid: Optional[int], last: Optional[int]) -> Optional[bool]:
        """A worker thread is about to run job ``jid``: True, it starts now; False, it was killed while
        queued; None, not now: every slot is taken (the cluster gained threads), so it goes back to the queue.

        ``last`` is the job that thread ran before: it has returned, so its
        slot counts as free even while its outcome is still on the way here.
        """
        with self.lock:
            job = self.sched.jobs.get(jid) if jid is not None else None
            if self._closed or job is None or job.status != QUEUED or not job.assigned:
                return False
            if last is not None and last in self.sched.processing:
                self._returned.add(last)
            if self._free_slots() <= 0:
                self._ahead = 0  # from now on Dask gets no more jobs than there are free slots
                return None
            self.sched.start(job)
            max_runtime = job.opts.get("max_runtime")
            if max_runtime:
                self._add_timer(time.monotonic() + max_runtime, ("runtime", job.jid))
            return True

    def _unassign(self, job: Job) -> None:
        """A job handed to Dask is killed before it started: Dask must not run it (lock held)."""
        future = self._futures.pop(job.jid, None)
        if future is not None:
            self._keys.pop(future.key, None)
            self._events.put(("forget", [future]))

    def _on_done(self, future: Any) -> None:
        self._events.put(("done", future))

    def _add_timer(self, deadline: float, what: tuple) -> None:
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), what))
        self._events.put(("wake",))

    # ---------------------------------------------------------- manager loop
    def _loop(self) -> None:
        try:
            while True:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                try:
                    event = self._events.get(timeout=timeout)
                except queue.Empty:
                    event = ("wake",)
                batch = [event]
                while len(batch) < _GATHER_BATCH:
                    try:
                        batch.append(self._events.get_nowait())
                    except queue.Empty:
                        break
                if any(e is None for e in batch):
                    return
                self._handle([e[1] for e in batch if e[0] == "done"])
                for e in batch:
                    if e[0] == "stop":
                        self._stop(e[1])
                    elif e[0] == "forget":
                        self._forget(e[1], wait=False)
                    elif e[0] == "retire":
                        self._retire(e[1])
                self._fire_timers()
        except Exception:  # pragma: no cover - a bug here must not hang clients silently
            log.exception("cloudsim's Dask manager thread crashed")
            with self.lock:
                self._fail_all("cloudsim's Dask manager thread crashed; see the log.")

    def _handle(self, futures: List[Any]) -> None:
        """Collect what finished Dask tasks report, and finish their jobs."""
        if not futures:
            return
        finished = [f for f in futures if f.status == "finished"]
        values: List[Any] = []
        if finished:
            try:
                values = self.client.gather(finished, errors="skip")
            except Exception:
                values = []
            if len(values) != len(finished):  # some result was lost on the way: gather one by one
                values = [self._gather_one(f) for f in finished]
        results = {f.key: v for f, v in zip(finished, values)}
        retire: List[str] = []
        retired: List[Any] = []
        with self.lock:
            for future in futures:
                jid = self._keys.pop(future.key, None)
                if jid is None:
                    continue
                self._futures.pop(jid, None)
                self._returned.discard(jid)
                job = self.sched.jobs.get(jid)
                value = results.get(future.key)
                if isinstance(value, tuple) and value[1]:
                    retire.append(value[1])
                    retired.append(future)
                if job is None or job.is_finished:
                    continue
                if not isinstance(value, tuple):
                    self._lost(job, future)
                elif value[0] == LATER and job.status == QUEUED:
                    self.sched.requeue([job])
                elif value[0] == NOT_STARTED:  # its worker could not ask the client (a broken link)
                    job.exc_type = "WorkerDied"
                    for f in self.sched.finish(job, ERROR, "The job's Dask worker could not reach the client to "
                                                           "start it; see the Dask cluster's log."):
                        self._completed(f)
                elif job.status == PROCESSING:
                    self._apply_outcome(job, value[0])
            self._dispatch()
        forgotten = {f.key for f in retired}
        for future in futures:
            if future.key not in forgotten:
                future.release()  # the outcome is in; the worker need not keep it
        if retire:
            # the scheduler must forget these results first: a result lost with its worker is computed
            # again while a future still refers to it, and a job must never run twice
            self._forget(retired)
            for address in retire:
                self._retire(address)

    def _gather_one(self, future: Any) -> Any:
        try:
            return future.result(timeout=30)
        except Exception:
            return None

    def _lost(self, job: Job, future: Any) -> None:
        """A job's Dask task failed without an outcome: its worker died (lock held)."""
        try:
            exc = future.exception(timeout=5)
        except Exception as e:  # cancelled, or the scheduler went away
            exc = e
        job.exc_type = "WorkerDied"
        text = (
            f"The job's interpreter died while running it ({type(exc).__name__}: {exc}).\n"
            "Dask restarts the worker process; other jobs are not affected.\n"
            "If the job called os._exit() or exit()-like C code, make it return instead (pitfall: sys-exit)."
        )
        job.traceback = text
        for f in self.sched.finish(job, ERROR, text):
            self._completed(f)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _deadline, _seq, (kind, jid) = heapq.heappop(self._timers)
            with self.lock:
                job = self.sched.jobs.get(jid)
                if kind == "runtime" and job is not None and job.status == PROCESSING:
                    self._runtime_exceeded(job)
                self._dispatch()

    # ----------------------------------------------------------------- kill
    def _kill_processing(self, job: Job, message: str) -> None:
        job.exc_type = "Killed"
        self._returned.discard(job.jid)
        for f in self.sched.finish(job, "killed", message):
            self._completed(f)
        future = self._futures.pop(job.jid, None)
        if future is not None:
            self._keys.pop(future.key, None)
            self._events.put(("stop", [future]))

    def _stop(self, futures: List[Any]) -> None:
        """End the worker processes running these tasks (their nannies start fresh ones), and forget the tasks."""
        from cloudsim.dask.task import running_on

        if self.client is None:
            return
        try:
            where = self.client.run_on_scheduler(running_on, [f.key for f in futures])
        except Exception:
            where = {}
        self._forget(futures)  # first: on a cluster that retries tasks, a job must not start again elsewhere
        for address in set(a for a in where.values() if a):
            self._retire(address)

    def _forget(self, futures: List[Any], timeout: float = 5.0, wait: bool = True) -> None:
        """Cancel these tasks and wait (``timeout`` s at most) until the scheduler has forgotten them.

        The cancel travels on the client's batched stream and a worker's end
        on another connection, so without the wait the scheduler could see
        the worker go first, and compute again a task that a future still
        wants (a job must never run twice).
        """
        from cloudsim.dask.task import known_keys

        keys = [f.key for f in futures]
        try:
            self.client.cancel(futures, force=True)
            if not wait:
                return
            deadline = time.monotonic() + timeout
            while self.client.run_on_scheduler(known_keys, keys) and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:
            log.debug("could not cancel %s", keys, exc_info=True)

    def _retire(self, address: str) -> None:
        """Replace a worker's interpreter: end its process, its nanny starts a fresh one."""
        from cloudsim.dask.task import exit_worker

        try:
            self.client.run(exit_worker, workers=[address], wait=False, on_error="ignore")
        except Exception:
            log.debug("could not restart the worker %s", address, exc_info=True)
        if self._pool is not None and address in self._pool:
            self._replace_in_pool(address)

    def _replace_in_pool(self, address: str) -> None:
        """A chosen worker is being replaced: choose another (not the one going away)."""
        try:
            live = self.client.run_on_scheduler(_worker_addresses)
        except Exception:
            live = []
        with self.lock:
            pool = [a for a in (self._pool or []) if a != address]
            spare = [a for a in sorted(live) if a not in pool and a != address]
            if spare:
                pool.append(spare[0])
            self._pool = pool

    # ------------------------------------------------------------- querying
    def connection_info(self) -> dict:
        info = {
            "opened": True,
            "connection_type": "dask",
            "scheduler_address": self.address,
            "local_cluster": self.cluster is not None,
            "num_procs": self.cap,
            "dask_slots": self.slots,
            "dask_queue_ahead": self._ahead,  # jobs beyond the free slots that may wait in Dask's queue
            "server_root": self.root,
            "session_dir": self.session_dir,
            "module_dir": self.module_dir,
        }
        if self.cluster is not None:
            info["cluster_log"] = self.cluster.log_path
        info.update({f"setting.{k}": v for k, v in self.settings.as_dict().items()})
        return info

    def process_ids(self) -> List[int]:
        return self.cluster.pids() if self.cluster is not None else []


_PICKLED = {answer: pickle.dumps(answer, pickle.HIGHEST_PROTOCOL) for answer in (True, False, None)}


def _slug(address: str) -> str:
    """A directory name for a scheduler address: 'tcp://127.0.0.1:8786' -> 'tcp-127.0.0.1-8786'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", address).strip("-")


def _worker_addresses(dask_scheduler: Any) -> List[str]:
    return list(dask_scheduler.workers)


def _sys_path() -> List[str]:
    import sys

    return list(sys.path)


def _reachable_host(address: str) -> str:
    """The address of this machine that the cluster's workers reach it on (loopback for a local cluster)."""
    hostport = address.split("://", 1)[-1]
    host = hostport.rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1", ""):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "0.0.0.0"
