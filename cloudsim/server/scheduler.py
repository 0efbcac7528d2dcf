"""The job table and PiCloud's job state machine, as pure logic.

No processes, no sockets, no threads, no clock of its own: the manager feeds
it events (a job was submitted, started, finished, killed; a job blocked in
``join``) and it answers with what changed. That keeps the rules of
``reference/picloud-api.md`` §4 in one place that unit tests can drive::

    waiting ──► queued ──► processing ──► done | error | killed
       │           │
       └─► stalled └─► killed            (finished statuses are terminal)

Differences from the original simulator, on purpose: a kill of a waiting or
queued job takes effect at once; an unknown ``_depends_on`` jid is refused
before any job is created; a failed dependency anywhere in the list stalls
the job; ``_priority`` and ``_depends_on_errors='ignore'`` are honoured.
"""

from __future__ import annotations

import heapq
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from cloudsim.errors import CloudException
from cloudsim.server import deadlock as _deadlock

WAITING, QUEUED, PROCESSING = "waiting", "queued", "processing"
DONE, ERROR, STALLED, KILLED = "done", "error", "stalled", "killed"
FINISHED = frozenset((DONE, ERROR, STALLED, KILLED))
FAILED = frozenset((ERROR, STALLED, KILLED))
STATUSES = (WAITING, QUEUED, PROCESSING, DONE, ERROR, STALLED, KILLED)


class Job:
    """Everything the cloud knows about one job."""

    __slots__ = (
        "jid", "status", "priority", "depends_on", "depends_on_errors", "remaining",
        "spec", "opts", "created", "started", "finished_at", "worker",
        "result", "exc_type", "exception", "traceback", "hint",
        "stdout", "stderr", "runtime", "cpu_user", "cpu_system", "max_rss",
        "pitfalls", "pitfalls_emitted", "echoed", "assigned", "label", "parent",
    )

    def __init__(self, jid: int, spec: Any = None, opts: Optional[dict] = None, priority: int = 5,
                 label: Optional[str] = None, parent: Optional[int] = None) -> None:
        self.jid = jid
        self.status = QUEUED
        self.priority = priority
        self.depends_on: Tuple[int, ...] = ()
        self.depends_on_errors = "abort"
        self.remaining: Set[int] = set()
        self.spec = spec  # what the worker needs to run it; dropped once finished
        self.opts = opts or {}
        self.created = time.time()
        self.started: Optional[float] = None
        self.finished_at: Optional[float] = None
        self.worker: Optional[int] = None
        self.result: Optional[bytes] = None
        self.exc_type: Optional[str] = None
        self.exception: Optional[str] = None
        self.traceback: Optional[str] = None
        self.hint: Optional[str] = None
        self.stdout: Optional[str] = None
        self.stderr: Optional[str] = None
        self.runtime = 0.0
        self.cpu_user: Optional[float] = None
        self.cpu_system: Optional[float] = None
        self.max_rss: Optional[int] = None
        self.pitfalls: List[dict] = []
        self.pitfalls_emitted = 0  # how many of .pitfalls were reported to the user already
        self.echoed = False
        self.assigned = False  # handed to a worker ahead of time, not started yet
        self.label = label
        self.parent = parent

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def __repr__(self) -> str:
        return f"<Job {self.jid} {self.status}>"


class Scheduler:
    """The job table: statuses, dependencies, priorities, the cap, and who waits for whom."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        # jid -> Job, e.g. {7: <Job 7 queued>}
        self.jobs: Dict[int, Job] = {}
        # ready jobs not handed out yet, as (priority, jid); killed ones are skipped lazily
        self._ready: List[Tuple[int, int]] = []
        # jid -> the waiting jobs that depend on it, e.g. {3: {5, 6}}
        self._dependents: Dict[int, Set[int]] = {}
        # jid of a processing job -> the jobs it is blocked on in join/result
        self.blocked: Dict[int, frozenset] = {}
        self.processing: Set[int] = set()

    # ---- submission -----------------------------------------------------
    def check_dependencies(self, depends_on: Iterable[int]) -> None:
        """Raise CloudException for an unknown dependency, before anything is created."""
        for dep in depends_on:
            if dep not in self.jobs:
                raise CloudException(
                    f"This dependency does not exist: job {dep} is unknown (never created, or deleted). "
                    "Fix: pass jids returned by cloud.call/cloud.map to _depends_on.",
                )

    def add(self, job: Job, depends_on: Tuple[int, ...] = (), depends_on_errors: str = "abort") -> List[Job]:
        """Enter a new job; returns the jobs that finished because of it (itself, if stalled)."""
        self.check_dependencies(depends_on)
        self.jobs[job.jid] = job
        job.depends_on = depends_on
        job.depends_on_errors = depends_on_errors
        remaining = set()
        for dep in depends_on:
            other = self.jobs[dep]
            if other.status in FAILED and depends_on_errors == "abort":
                job.status = STALLED
                return self._finish(job, STALLED, f"Could not start due to dependency erroring: job {dep} is {other.status}")
            if not other.is_finished:
                remaining.add(dep)
        if remaining:
            job.status = WAITING
            job.remaining = remaining
            for dep in remaining:
                self._dependents.setdefault(dep, set()).add(job.jid)
        else:
            job.status = QUEUED
            heapq.heappush(self._ready, (job.priority, job.jid))
        return []

    # ---- dispatch -------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.cap - len(self.processing)

    def has_ready(self) -> bool:
        while self._ready:
            _prio, jid = self._ready[0]
            job = self.jobs.get(jid)
            if job is not None and job.status == QUEUED and not job.assigned:
                return True
            heapq.heappop(self._ready)
        return False

    def ready_count(self) -> int:
        return len(self._ready)

    def take_ready(self, n: int) -> List[Job]:
        """Hand out up to ``n`` queued jobs, best priority first (FIFO within a priority)."""
        out: List[Job] = []
        while self._ready and len(out) < n:
            _prio, jid = heapq.heappop(self._ready)
            job = self.jobs.get(jid)
            if job is None or job.status != QUEUED or job.assigned:
                continue
            job.assigned = True
            out.append(job)
        return out

    def requeue(self, jobs: Iterable[Job]) -> None:
        """Take back jobs that were handed out but never started."""
        for job in jobs:
            if job.status == QUEUED and job.assigned:
                job.assigned = False
                job.worker = None
                heapq.heappush(self._ready, (job.priority, job.jid))

    def start(self, job: Job, now: Optional[float] = None) -> None:
        job.status = PROCESSING
        job.assigned = False
        job.started = time.time() if now is None else now
        self.processing.add(job.jid)

    # ---- completion -----------------------------------------------------
    def finish(self, job: Job, status: str, exception: Optional[str] = None) -> List[Job]:
        """Record that a job ended; returns every job that finished (dependents that stalled too)."""
        if job.is_finished:
            return []
        return self._finish(job, status, exception)

    def _finish(self, job: Job, status: str, exception: Optional[str]) -> List[Job]:
        finished = []
        stack = [(job, status, exception)]
        while stack:
            current, st, exc = stack.pop()
            if current.is_finished and current is not job:
                continue
            current.status = st
            current.assigned = False
            current.finished_at = time.time()
            if exc is not None and current.exception is None:
                current.exception = exc
            current.spec = None
            self.processing.discard(current.jid)
            self.blocked.pop(current.jid, None)
            for dep in current.remaining:
                self._dependents.get(dep, set()).discard(current.jid)
            current.remaining = set()
            finished.append(current)
            for jid in sorted(self._dependents.pop(current.jid, ())):
                dependent = self.jobs.get(jid)
                if dependent is None or dependent.status != WAITING:
                    continue
                if st in FAILED and dependent.depends_on_errors == "abort":
                    stack.append((dependent, STALLED, f"Could not start due to dependency erroring: job {current.jid} is {st}"))
                    continue
                dependent.remaining.discard(current.jid)
                if not dependent.remaining:
                    dependent.status = QUEUED
                    heapq.heappush(self._ready, (dependent.priority, dependent.jid))
        return finished

    def cancel(self, job: Job, message: str = "Killed") -> List[Job]:
        """Kill a job that has not started (waiting or queued): takes effect at once."""
        if job.status not in (WAITING, QUEUED):
            return []
        return self._finish(job, KILLED, message)

    def forget(self, jid: int) -> None:
        self.jobs.pop(jid, None)

    # ---- waiting and deadlock ------------------------------------------
    def block(self, waiter: int, jids: Iterable[int]) -> None:
        self.blocked[waiter] = frozenset(jids)

    def unblock(self, waiter: int) -> None:
        self.blocked.pop(waiter, None)

    def find_deadlock(self) -> "Optional[_deadlock.Deadlock]":
        """The deadlock the current blocked waits are in, if any (exact, see deadlock.py)."""
        if not self.blocked:
            return None
        processing = {jid: self.blocked.get(jid) for jid in self.processing}
        pending = {}
        for jid, job in self.jobs.items():
            if job.status == QUEUED:
                pending[jid] = frozenset()
            elif job.status == WAITING:
                pending[jid] = frozenset(job.remaining)
        return _deadlock.analyse(self.cap, processing, pending)
