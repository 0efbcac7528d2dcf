"""Unit tests of ``cloudsim.server.scheduler``: the job table and PiCloud's state machine.

The scheduler is pure logic, so these tests drive it by feeding it events the
way the manager does (submit, hand out, start, finish, cancel, block) and read
the statuses back; no process is started. The rules are those of
``reference/picloud-api.md`` §4 with the simulator's documented differences
(kills of unstarted jobs take effect at once, unknown dependencies create no
job, a failed dependency anywhere in the list stalls, ``_priority`` and
``_depends_on_errors='ignore'`` are honoured). A hypothesis state machine
checks that random event sequences never break the table's invariants.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloudsim.errors import CloudException
from cloudsim.server.deadlock import Deadlock
from cloudsim.server.scheduler import (
    DONE, ERROR, FAILED, FINISHED, KILLED, PROCESSING, QUEUED, STALLED, STATUSES, WAITING, Job, Scheduler,
)

# The transitions PiCloud allows (§4), plus staying put.
ALLOWED = {
    WAITING: {WAITING, QUEUED, STALLED, KILLED},
    QUEUED: {QUEUED, PROCESSING, KILLED},
    PROCESSING: {PROCESSING, DONE, ERROR, KILLED},
    DONE: {DONE},
    ERROR: {ERROR},
    STALLED: {STALLED},
    KILLED: {KILLED},
}


def add(s: Scheduler, jid: int, deps: Iterable[int] = (), errors: str = "abort", priority: int = 5) -> Job:
    """Submit job ``jid`` as the manager does and return it."""
    job = Job(jid, spec=("f", "a", None), priority=priority)
    s.add(job, tuple(deps), errors)
    return job


def run(s: Scheduler, *jids: int) -> None:
    """Start the given queued jobs (hand them out, then start them)."""
    for jid in jids:
        job = s.jobs[jid]
        assert job.status == QUEUED, job
        s.start(job, now=100.0)


def finish(s: Scheduler, jid: int, status: str = DONE, exc: Optional[str] = None) -> List[int]:
    """Finish job ``jid``; return the jids that finished because of it, in order."""
    return [j.jid for j in s.finish(s.jobs[jid], status, exc)]


def statuses(s: Scheduler) -> Dict[int, str]:
    return {jid: job.status for jid, job in sorted(s.jobs.items())}


# -- submission -------------------------------------------------------------------------


def test_job_without_dependencies_is_queued_and_ready() -> None:
    """A job with no _depends_on enters as 'queued' and can be handed out."""
    s = Scheduler(2)
    job = add(s, 1)
    assert job.status == QUEUED
    assert s.has_ready()
    assert s.ready_count() == 1
    assert job.remaining == set()


def test_job_with_pending_dependencies_is_waiting_and_not_ready() -> None:
    """A job whose dependencies have not finished is 'waiting', remembers which, and is not handed out."""
    s = Scheduler(4)
    add(s, 1)
    add(s, 2)
    job = add(s, 3, deps=(1, 2))
    assert job.status == WAITING
    assert job.remaining == {1, 2}
    assert job.depends_on == (1, 2)
    assert [j.jid for j in s.take_ready(10)] == [1, 2]
    assert not s.has_ready()


def test_job_depending_on_finished_jobs_is_queued_at_once() -> None:
    """Dependencies that are already 'done' are satisfied at submit time: the job is 'queued'."""
    s = Scheduler(2)
    add(s, 1)
    run(s, 1)
    finish(s, 1)
    job = add(s, 2, deps=[1])
    assert job.status == QUEUED
    assert [j.jid for j in s.take_ready(1)] == [2]


def test_dependent_is_queued_only_when_every_dependency_is_done() -> None:
    """A waiting job stays 'waiting' until its last dependency finishes, then becomes 'queued'."""
    s = Scheduler(4)
    add(s, 1)
    add(s, 2)
    dep = add(s, 3, deps=(1, 2))
    run(s, 1, 2)
    assert finish(s, 1) == [1]
    assert dep.status == WAITING
    assert dep.remaining == {2}
    assert finish(s, 2) == [2]
    assert dep.status == QUEUED
    assert dep.remaining == set()
    assert [j.jid for j in s.take_ready(5)] == [3]


def test_unknown_dependency_raises_and_creates_no_job() -> None:
    """An unknown _depends_on jid is a CloudException naming it, and the job table is unchanged."""
    s = Scheduler(2)
    add(s, 1)
    before = statuses(s)
    with pytest.raises(CloudException, match="does not exist.*job 99"):
        add(s, 2, deps=(1, 99))
    assert 2 not in s.jobs
    assert statuses(s) == before
    # no half-registered dependency: job 1 finishing releases nobody
    run(s, 1)
    assert finish(s, 1) == [1]
    assert s.take_ready(5) == []


def test_check_dependencies_alone_refuses_unknown_and_accepts_known() -> None:
    """check_dependencies is the up-front check the manager makes before creating jobs."""
    s = Scheduler(1)
    add(s, 1)
    s.check_dependencies([1])
    s.check_dependencies([])
    with pytest.raises(CloudException, match="job 7 is unknown"):
        s.check_dependencies([1, 7])


def test_forgotten_job_is_an_unknown_dependency() -> None:
    """After forget() (cloud.delete), depending on the job is refused like any unknown jid."""
    s = Scheduler(1)
    add(s, 1)
    run(s, 1)
    finish(s, 1)
    s.forget(1)
    assert 1 not in s.jobs
    with pytest.raises(CloudException):
        add(s, 2, deps=[1])
    assert 2 not in s.jobs


# -- dispatch ---------------------------------------------------------------------------


def test_take_ready_lower_priority_first_fifo_within_a_priority() -> None:
    """take_ready hands out the lowest _priority first and, within a priority, the earliest job."""
    s = Scheduler(1)
    for jid, prio in ((1, 9), (2, 1), (3, 5), (4, 1), (5, 5), (6, 0)):
        add(s, jid, priority=prio)
    order = [j.jid for j in s.take_ready(100)]
    assert order == [6, 2, 4, 3, 5, 1]


def test_take_ready_hands_out_at_most_n_and_never_twice() -> None:
    """take_ready(n) gives at most n jobs; handed-out jobs stay 'queued' but are not given again."""
    s = Scheduler(3)
    for jid in range(1, 6):
        add(s, jid)
    first = s.take_ready(2)
    assert [j.jid for j in first] == [1, 2]
    assert all(j.status == QUEUED and j.assigned for j in first)
    assert [j.jid for j in s.take_ready(2)] == [3, 4]
    assert [j.jid for j in s.take_ready(2)] == [5]
    assert s.take_ready(2) == []
    assert not s.has_ready()


def test_take_ready_zero_takes_nothing() -> None:
    """take_ready(0) (no free slot) hands out nothing and leaves the jobs ready."""
    s = Scheduler(1)
    add(s, 1)
    assert s.take_ready(0) == []
    assert s.has_ready()


def test_requeue_puts_handed_out_jobs_back_in_priority_order() -> None:
    """Jobs handed out but never started go back to the ready set and come out again by priority."""
    s = Scheduler(2)
    add(s, 1, priority=5)
    add(s, 2, priority=3)
    add(s, 3, priority=3)
    taken = s.take_ready(3)
    assert [j.jid for j in taken] == [2, 3, 1]
    assert not s.has_ready()
    taken[0].worker = 4
    s.requeue(taken)
    assert all(not j.assigned for j in taken)
    assert taken[0].worker is None
    assert [j.jid for j in s.take_ready(3)] == [2, 3, 1]


def test_requeue_ignores_started_and_finished_jobs() -> None:
    """requeue only takes back jobs that are still 'queued' and handed out (no duplicates)."""
    s = Scheduler(2)
    add(s, 1)
    add(s, 2)
    add(s, 3)
    a, b = s.take_ready(2)
    s.start(a)
    s.cancel(b)
    s.requeue([a, b])
    assert a.status == PROCESSING
    assert b.status == KILLED
    # a queued job that was never handed out is already in the ready set: no duplicate
    assert s.ready_count() == 1
    s.requeue([s.jobs[3]])
    assert s.ready_count() == 1
    assert [j.jid for j in s.take_ready(5)] == [3]


def test_start_and_finish_track_processing_and_free_slots() -> None:
    """start() makes a job 'processing' and takes a slot; finishing it gives the slot back."""
    s = Scheduler(2)
    assert s.free_slots == 2
    add(s, 1)
    add(s, 2)
    (a,) = s.take_ready(1)
    s.start(a, now=42.0)
    assert a.status == PROCESSING
    assert a.started == 42.0
    assert not a.assigned
    assert s.processing == {1}
    assert s.free_slots == 1
    run(s, 2)
    assert s.free_slots == 0
    assert finish(s, 1, ERROR, "boom") == [1]
    assert s.jobs[1].status == ERROR
    assert s.jobs[1].exception == "boom"
    assert s.jobs[1].spec is None
    assert s.jobs[1].finished_at is not None
    assert s.free_slots == 1
    assert s.processing == {2}


# -- failed dependencies ----------------------------------------------------------------


def test_failed_dependency_stalls_abort_dependents_through_a_chain() -> None:
    """A failed job stalls its waiting dependents, and theirs, all the way down a chain."""
    s = Scheduler(2)
    add(s, 1)
    for jid in range(2, 6):
        add(s, jid, deps=[jid - 1])
    add(s, 6)  # unrelated
    run(s, 1)
    out = finish(s, 1, ERROR, "Traceback ... ZeroDivisionError")
    assert sorted(out) == [1, 2, 3, 4, 5]
    assert out[0] == 1
    assert statuses(s) == {1: ERROR, 2: STALLED, 3: STALLED, 4: STALLED, 5: STALLED, 6: QUEUED}
    assert "dependency" in s.jobs[2].exception and "job 1 is error" in s.jobs[2].exception
    assert "job 2 is stalled" in s.jobs[3].exception
    assert [j.jid for j in s.take_ready(10)] == [6]


@pytest.mark.parametrize("failure", [ERROR, KILLED])
def test_every_failed_status_stalls_dependents(failure: str) -> None:
    """'error' and 'killed' (like 'stalled') are failures that stall 'abort' dependents."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2, deps=[1])
    run(s, 1)
    finish(s, 1, failure)
    assert s.jobs[2].status == STALLED


def test_ignore_dependent_runs_when_its_dependency_failed() -> None:
    """_depends_on_errors='ignore' counts a failed dependency as satisfied: the job is 'queued'."""
    s = Scheduler(2)
    add(s, 1)
    ign = add(s, 2, deps=[1], errors="ignore")
    abort = add(s, 3, deps=[2])  # depends on the ignoring job: waits for it to run
    run(s, 1)
    assert finish(s, 1, ERROR) == [1]
    assert ign.status == QUEUED
    assert abort.status == WAITING
    assert [j.jid for j in s.take_ready(5)] == [2]


def test_ignore_dependent_still_waits_for_its_other_dependencies() -> None:
    """With 'ignore', a failed dependency is crossed off but the job waits for the rest."""
    s = Scheduler(2)
    add(s, 1)
    add(s, 2)
    ign = add(s, 3, deps=[1, 2], errors="ignore")
    run(s, 1, 2)
    finish(s, 1, KILLED)
    assert ign.status == WAITING
    assert ign.remaining == {2}
    finish(s, 2, ERROR)
    assert ign.status == QUEUED


def test_mixed_dependents_of_one_failed_job() -> None:
    """One failure: its 'abort' dependents stall, its 'ignore' dependents are queued."""
    s = Scheduler(2)
    add(s, 1)
    add(s, 2, deps=[1])
    add(s, 3, deps=[1], errors="ignore")
    add(s, 4, deps=[1])
    run(s, 1)
    assert sorted(finish(s, 1, ERROR)) == [1, 2, 4]
    assert statuses(s) == {1: ERROR, 2: STALLED, 3: QUEUED, 4: STALLED}


@pytest.mark.parametrize("failure", [ERROR, KILLED, STALLED])
def test_already_failed_dependency_at_submit(failure: str) -> None:
    """A dependency that already failed: 'abort' starts the job 'stalled', 'ignore' starts it 'queued'."""
    s = Scheduler(2)
    add(s, 1)
    run(s, 1)
    finish(s, 1, failure)
    job = Job(2)
    finished = s.add(job, (1,), "abort")
    assert job.status == STALLED
    assert finished == [job]
    assert "job 1" in job.exception and "dependency" in job.exception
    assert job.finished_at is not None
    assert not s.has_ready()
    ign = add(s, 3, deps=[1], errors="ignore")
    assert ign.status == QUEUED
    assert [j.jid for j in s.take_ready(5)] == [3]


def test_failed_dependency_anywhere_in_the_list_stalls() -> None:
    """First dependency pending, second already failed: the job is 'stalled' and never runs.

    (The original simulator showed 'stalled' but still ran such a job.)
    """
    s = Scheduler(2)
    add(s, 1)  # pending
    add(s, 2)
    run(s, 2)
    finish(s, 2, ERROR)
    job = add(s, 3, deps=[1, 2])
    assert job.status == STALLED
    assert "job 2 is error" in job.exception
    # job 1 finishing later must not revive it
    run(s, 1)
    assert finish(s, 1) == [1]
    assert job.status == STALLED
    assert [j.jid for j in s.take_ready(5)] == []


def test_stalled_job_started_stalled_stalls_its_own_dependents() -> None:
    """A job that starts 'stalled' at submit is a failed dependency for later jobs."""
    s = Scheduler(1)
    add(s, 1)
    run(s, 1)
    finish(s, 1, ERROR)
    add(s, 2, deps=[1])
    assert add(s, 3, deps=[2]).status == STALLED


# -- cancel and terminal statuses -------------------------------------------------------


def test_cancel_of_queued_and_waiting_takes_effect_at_once() -> None:
    """cancel() makes a queued or waiting job 'killed' immediately; it is never handed out."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2)
    add(s, 3, deps=[1])
    run(s, 1)
    assert [j.jid for j in s.cancel(s.jobs[2])] == [2]
    assert [j.jid for j in s.cancel(s.jobs[3], "Killed by test")] == [3]
    assert s.jobs[2].status == KILLED and s.jobs[3].status == KILLED
    assert s.jobs[3].exception == "Killed by test"
    assert s.take_ready(5) == []
    # its dependency finishing does not revive the killed waiting job
    assert finish(s, 1) == [1]
    assert s.jobs[3].status == KILLED


def test_cancel_of_an_assigned_job_is_not_handed_out_after_requeue() -> None:
    """A job handed to a worker ahead of time and then cancelled stays killed."""
    s = Scheduler(1)
    add(s, 1)
    (job,) = s.take_ready(1)
    s.cancel(job)
    s.requeue([job])
    assert job.status == KILLED and not job.assigned
    assert s.take_ready(1) == []


def test_cancel_stalls_abort_dependents_and_queues_ignore_dependents() -> None:
    """Cancelling a job is a failure for its dependents: 'abort' ones stall (cascading), 'ignore' ones run."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2, deps=[1])
    add(s, 3, deps=[2])
    add(s, 4, deps=[1], errors="ignore")
    assert sorted(j.jid for j in s.cancel(s.jobs[1])) == [1, 2, 3]
    assert statuses(s) == {1: KILLED, 2: STALLED, 3: STALLED, 4: QUEUED}


@pytest.mark.parametrize("status", [PROCESSING, DONE, ERROR, KILLED, STALLED])
def test_cancel_leaves_started_and_finished_jobs_alone(status: str) -> None:
    """cancel() only acts on jobs that have not started; others keep their status."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2, deps=[1])
    if status == STALLED:
        run(s, 1)
        finish(s, 1, ERROR)
        target = s.jobs[2]
    else:
        run(s, 1)
        if status != PROCESSING:
            finish(s, 1, status)
        target = s.jobs[1]
    before = statuses(s)
    assert s.cancel(target) == []
    assert statuses(s) == before


@pytest.mark.parametrize("first", [DONE, ERROR, KILLED])
@pytest.mark.parametrize("second", [DONE, ERROR, KILLED])
def test_finished_statuses_are_terminal(first: str, second: str) -> None:
    """Finishing a finished job is a no-op: the first status, message and dependents stay."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2, deps=[1], errors="ignore")
    run(s, 1)
    finish(s, 1, first, "first")
    after_first = statuses(s)
    stamp = s.jobs[1].finished_at
    assert finish(s, 1, second, "second") == []
    assert statuses(s) == after_first
    assert s.jobs[1].exception == "first"
    assert s.jobs[1].finished_at == stamp


def test_finish_of_a_stalled_job_is_a_no_op() -> None:
    """A stalled job cannot be finished again (e.g. killed by close())."""
    s = Scheduler(1)
    add(s, 1)
    add(s, 2, deps=[1])
    run(s, 1)
    finish(s, 1, ERROR)
    assert finish(s, 2, KILLED) == []
    assert s.jobs[2].status == STALLED


def test_finish_unblocks_a_processing_job() -> None:
    """A job that ends while blocked in join is no longer counted as blocked."""
    s = Scheduler(2)
    add(s, 1)
    add(s, 2)
    run(s, 1)
    s.block(1, [2])
    assert s.blocked == {1: frozenset({2})}
    finish(s, 1, KILLED)
    assert s.blocked == {}


# -- deadlock ----------------------------------------------------------------------------


def _fib_shape(cap: int) -> Scheduler:
    """fib(3) under ``cap`` slots: every slot holds a parent blocked in join on queued children."""
    s = Scheduler(cap)
    add(s, 1)  # fib(3)
    run(s, 1)
    add(s, 2)  # fib(2)
    add(s, 3)  # fib(1)
    s.block(1, [2, 3])
    if cap >= 2:
        run(s, 2)
        add(s, 4)  # fib(1)
        add(s, 5)  # fib(0)
        s.block(2, [4, 5])
    return s


def test_find_deadlock_in_fib_shape_under_a_cap_of_one() -> None:
    """The only slot is held by a parent blocked on children that cannot start: a Deadlock."""
    s = _fib_shape(1)
    found = s.find_deadlock()
    assert isinstance(found, Deadlock)
    assert found.jids == {1}
    assert found.blocked[1] == {2, 3}
    assert set(found.cannot_start) == {2, 3}
    assert "max_concurrent_jobs=1" in found.describe()


def test_find_deadlock_in_fib_shape_under_a_cap_of_two() -> None:
    """Two parents blocked on queued children hold both slots: both are in the Deadlock."""
    s = _fib_shape(2)
    assert s.free_slots == 0
    found = s.find_deadlock()
    assert isinstance(found, Deadlock)
    assert found.jids == {1, 2}
    assert set(found.cannot_start) == {3, 4, 5}
    assert not found.cyclic


def test_no_deadlock_when_a_slot_is_free() -> None:
    """With a free slot the children can start, so nothing is deadlocked."""
    s = Scheduler(3)
    add(s, 1)
    run(s, 1)
    add(s, 2)
    add(s, 3)
    s.block(1, [2, 3])
    assert s.free_slots == 2
    assert s.find_deadlock() is None


def test_no_deadlock_without_blocked_jobs_or_after_unblock() -> None:
    """No blocked job means no deadlock, and unblock() clears a found one."""
    s = _fib_shape(1)
    assert s.find_deadlock() is not None
    s.unblock(1)
    assert s.find_deadlock() is None
    full = Scheduler(1)
    add(full, 1)
    add(full, 2)
    run(full, 1)
    assert full.find_deadlock() is None


def test_deadlock_through_a_waiting_job() -> None:
    """A blocked job waiting on a 'waiting' job whose dependency cannot start is deadlocked too."""
    s = Scheduler(1)
    add(s, 1)
    run(s, 1)
    add(s, 2)
    add(s, 3, deps=[2])
    s.block(1, [3])
    found = s.find_deadlock()
    assert found is not None and found.jids == {1}
    assert found.cannot_start[3] == {2}


def test_block_on_a_running_job_is_no_deadlock() -> None:
    """A job blocked on another processing job (which runs freely) is not deadlocked."""
    s = Scheduler(2)
    add(s, 1)
    add(s, 2)
    run(s, 1, 2)
    s.block(1, [2])
    assert s.find_deadlock() is None


def test_free_slots_follows_the_cap() -> None:
    """free_slots is the cap minus the processing jobs, whatever is queued or waiting."""
    s = Scheduler(3)
    for jid in range(1, 5):
        add(s, jid)
    add(s, 5, deps=[4])
    assert s.free_slots == 3
    run(s, 1, 2)
    assert s.free_slots == 1
    s.cancel(s.jobs[3])
    assert s.free_slots == 1
    finish(s, 2, ERROR)
    assert s.free_slots == 2


# -- property: random event sequences ----------------------------------------------------

FINISH_STATUSES = (DONE, ERROR, KILLED)


class SchedulerMachine(RuleBasedStateMachine):
    """Feeds random submit/hand-out/start/requeue/finish/cancel events and checks the invariants.

    Jobs are started only through ``take_ready(free_slots)``, as the manager does,
    so the cap must hold. Every status change must be one of PiCloud's transitions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cap = 3
        self.s = Scheduler(self.cap)
        self.next_jid = 1
        self.handed: List[Job] = []  # taken, not yet started or requeued
        self.seen: Dict[int, str] = {}  # jid -> last status observed

    def _job(self, index: int, statuses: Tuple[str, ...]) -> Optional[Job]:
        jobs = [j for _, j in sorted(self.s.jobs.items()) if j.status in statuses]
        return jobs[index % len(jobs)] if jobs else None

    @rule(
        picks=st.lists(st.integers(0, 1000), max_size=3),
        errors=st.sampled_from(["abort", "ignore"]),
        priority=st.integers(0, 3),
        unknown=st.booleans(),
    )
    def submit(self, picks: List[int], errors: str, priority: int, unknown: bool) -> None:
        known = sorted(self.s.jobs)
        deps = [known[p % len(known)] for p in picks] if known else []
        if unknown:
            deps.append(10_000 + len(deps))
            before = statuses(self.s)
            with pytest.raises(CloudException):
                add(self.s, self.next_jid, deps, errors, priority)
            assert statuses(self.s) == before
            assert self.next_jid not in self.s.jobs
            return
        job = add(self.s, self.next_jid, deps, errors, priority)
        self.next_jid += 1
        failed = [d for d in deps if self.s.jobs[d].status in FAILED]
        pending = [d for d in deps if not self.s.jobs[d].is_finished]
        if failed and errors == "abort":
            assert job.status == STALLED
        elif pending:
            assert job.status == WAITING
        else:
            assert job.status == QUEUED

    @rule(n=st.integers(0, 4))
    def take(self, n: int) -> None:
        room = self.s.free_slots - len(self.handed)
        n = max(0, min(n, room))
        ready = sorted((j.priority, j.jid) for j in self.s.jobs.values() if j.status == QUEUED and not j.assigned)
        got = self.s.take_ready(n)
        assert [(j.priority, j.jid) for j in got] == ready[: len(got)]
        assert len(got) == min(n, len(ready))
        self.handed.extend(got)

    @precondition(lambda self: self.handed)
    @rule(data=st.data())
    def start_or_requeue(self, data: st.DataObject) -> None:
        job = self.handed.pop(data.draw(st.integers(0, len(self.handed) - 1)))
        if data.draw(st.booleans()):
            if job.status == QUEUED:
                self.s.start(job)
        else:
            self.s.requeue([job])

    @rule(index=st.integers(0, 100), status=st.sampled_from(FINISH_STATUSES))
    def finish_processing(self, index: int, status: str) -> None:
        job = self._job(index, (PROCESSING,))
        if job is not None:
            out = self.s.finish(job, status)
            assert out and out[0] is job and job.status == status

    @rule(index=st.integers(0, 100))
    def cancel_any(self, index: int) -> None:
        job = self._job(index, STATUSES)
        if job is None:
            return
        was = job.status
        out = self.s.cancel(job)
        if was in (WAITING, QUEUED):
            assert job.status == KILLED and out[0] is job
        else:
            assert out == [] and job.status == was

    @rule(index=st.integers(0, 100), status=st.sampled_from(FINISH_STATUSES))
    def finish_finished_is_a_no_op(self, index: int, status: str) -> None:
        job = self._job(index, tuple(FINISHED))
        if job is not None:
            was = job.status
            assert self.s.finish(job, status) == []
            assert job.status == was

    @invariant()
    def transitions_are_picloud_s(self) -> None:
        for jid, job in self.s.jobs.items():
            before = self.seen.get(jid)
            if before is not None:
                assert job.status in ALLOWED[before], f"job {jid}: {before} -> {job.status}"
            self.seen[jid] = job.status

    @invariant()
    def one_status_each_and_processing_set_agrees(self) -> None:
        for job in self.s.jobs.values():
            assert job.status in STATUSES
            assert (job.status == PROCESSING) == (job.jid in self.s.processing)
            if job.is_finished:
                assert not job.assigned and job.remaining == set()
        assert self.s.processing <= set(self.s.jobs)

    @invariant()
    def cap_holds(self) -> None:
        assert len(self.s.processing) <= self.cap
        assert self.s.free_slots >= 0

    @invariant()
    def waiting_jobs_wait_exactly_for_their_unfinished_dependencies(self) -> None:
        jobs = self.s.jobs
        for job in jobs.values():
            if job.status == WAITING:
                unfinished = {d for d in job.depends_on if not jobs[d].is_finished}
                assert job.remaining and job.remaining == unfinished
                if job.depends_on_errors == "abort":
                    assert not any(jobs[d].status in FAILED for d in job.depends_on)
            elif job.status in (QUEUED, PROCESSING):
                assert all(jobs[d].is_finished for d in job.depends_on)
                if job.depends_on_errors == "abort":
                    assert not any(jobs[d].status in FAILED for d in job.depends_on)
            elif job.status == STALLED:
                assert job.depends_on_errors == "abort"
                assert any(jobs[d].status in FAILED for d in job.depends_on)

    @invariant()
    def every_unhanded_queued_job_can_be_handed_out(self) -> None:
        queued = [j for j in self.s.jobs.values() if j.status == QUEUED and not j.assigned]
        assert self.s.has_ready() == bool(queued)


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
