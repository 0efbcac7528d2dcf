"""Exact detection of blocked jobs that can never finish (``recursion-deadlock``).

A job that is processing may call ``cloud.join``/``cloud.result`` from inside the
cloud and block there *while holding its job slot*. When every slot is held by
such a job and the jobs they wait for cannot start, the simulated cloud stops for
good, exactly as PiCloud did (the recursive ``fib`` of the pitfalls page). This
module decides, from one snapshot of the job table, which blocked jobs can never
finish in *any* future, so the scheduler can fail those joins with an
explanation instead of hanging::

    processing {1: {2, 3}, 2: None}    pending {3: set(), 4: {2}}
          │    jid -> None (runs freely)         jid -> unfinished _depends_on
          │           or the jids it joins       (empty: queued, ready to start)
          ▼
    _settle()         greedy fixpoint: every job that can finish, finishes
          │
          ├─► find_deadlocked()  the blocked processing jobs left over (hot path)
          └─► analyse()          a Deadlock: who waits for whom, which pending jobs
                                 never start, whether a cycle or the slots are to
                                 blame; Deadlock.describe() is the user's message

A jid found in neither mapping has finished (done, error, killed or unknown: a
join on it returns or raises, so it never blocks). A job that starts is assumed
to run freely and finish, since we cannot know it will block later; so a
deadlock reported here is certain, and one that needs a future join to happen is
reported when that join blocks.

It is not for: blocking, timeouts, raising ``CloudDeadlockError`` or knowing job
records. The scheduler calls it on every blocking call, with its own sets, and
raises the error with ``describe()`` as the message. It is pure logic: no I/O,
no threads, no processes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable, Mapping, Optional

__all__ = ["find_deadlocked", "analyse", "Deadlock"]

logger = logging.getLogger(__name__)

# How many jids a list shows before it is cut to "1, 2, 3, 4, 5, ... (40 in all)".
_MAX_LISTED = 6
# How many "Job N waits for ..." lines describe() prints before summing up the rest.
_MAX_JOB_LINES = 16
# How many cycles describe() spells out, and how many steps of each.
_MAX_CYCLES = 3
_MAX_CYCLE_STEPS = 6


def _settle(
    cap: Optional[int],
    processing: Mapping[int, Optional[AbstractSet[int]]],
    pending: Mapping[int, AbstractSet[int]],
) -> set[int]:
    """Return the jobs (of ``processing`` and ``pending``) that finish in some future.

    Greedy is exact because every move only frees resources. Run each job that can
    finish to its end: a free processing job finishes; a blocked one whose waits
    have all finished becomes free and finishes; a pending job whose dependencies
    have all finished, while fewer than ``cap`` processing jobs are left, starts and
    finishes (it gives its slot back, so the count of processing jobs never grows).
    Any schedule finishes a subset of these jobs: by induction, a job it finishes
    had its waits finished earlier, hence in the greedy set; and when it starts a
    pending job it has fewer than ``cap`` jobs processing, at least the original
    processing jobs the greedy run leaves unfinished, so the greedy run ends with a
    free slot and starts that job too. Each job and each wait edge is handled once:
    O(jobs + edges).

    Args:
        cap: the number of job slots, or None for unlimited slots.
        processing: jid -> None (runs freely) or the jids it is blocked on.
        pending: jid -> the jids it still depends on (empty: ready).

    Returns:
        The set of jids that finish (free processing jobs included).

    Raises:
        ValueError: if ``cap`` is negative or a jid is both processing and pending.
    """
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be >= 0, not {cap}")
    both = processing.keys() & pending.keys()
    if both:
        raise ValueError(f"jobs {_jid_list(both)} are both processing and pending")

    # jid -> unfinished jids it still waits for / depends on, e.g. {1: 2, 5: 1}
    left: dict[int, int] = {}
    # unfinished jid -> the jobs that wait for it or depend on it, e.g. {2: [1]}
    waiters: dict[int, list[int]] = {}
    # jobs that will finish as soon as they are reached: free processing jobs, or
    # pending jobs that have a slot to start in
    runnable: list[int] = []
    # pending jobs whose dependencies have all finished, waiting for a free slot
    ready: list[int] = []

    def count(jid: int, waits: Iterable[int]) -> int:
        n = 0
        for other in waits:
            if other in processing or other in pending:
                waiters.setdefault(other, []).append(jid)
                n += 1
        left[jid] = n
        return n

    for jid, waits in processing.items():
        if waits is None or not count(jid, waits):
            runnable.append(jid)
    for jid, deps in pending.items():
        if not count(jid, deps):
            ready.append(jid)

    live = len(processing)  # processing jobs not finished yet; it only goes down
    finished: set[int] = set()
    while True:
        while runnable:
            jid = runnable.pop()
            finished.add(jid)
            if jid in processing:
                live -= 1
            for waiter in waiters.get(jid, ()):
                left[waiter] -= 1
                if not left[waiter]:
                    (runnable if waiter in processing else ready).append(waiter)
        if ready and (cap is None or live < cap):
            # Once a slot is free it stays free: started pending jobs finish and
            # give it back, and ``live`` never grows. So the whole batch can go.
            runnable, ready = ready, runnable
            continue
        return finished


def find_deadlocked(
    cap: int,
    processing: Mapping[int, Optional[AbstractSet[int]]],
    pending: Mapping[int, AbstractSet[int]],
) -> frozenset[int]:
    """Return the processing jobs that are blocked and can never become free.

    Args:
        cap: the number of job slots (``max_concurrent_jobs``). ``len(processing)``
            may exceed it for a while (the limit was lowered); then no pending job
            starts until enough processing jobs finish.
        processing: jobs holding a slot: jid -> None if the job runs freely, or the
            set of jids it is blocked on (a join/result without timeout), e.g.
            ``{1: {2, 3}, 2: None}``.
        pending: jobs not started yet: jid -> the set of jids it still depends on
            (``_depends_on``; empty means queued, ready to start), e.g. ``{3: set()}``.
            A started job is assumed to run freely and finish.

    Returns:
        The deadlocked jids: blocked jobs that finish in no future. Jobs that only
        have to wait for a slot or for jobs ahead of them are not included. Jids
        found in neither mapping count as finished.

    Raises:
        ValueError: if ``cap`` is negative or a jid is both processing and pending.
    """
    finished = _settle(cap, processing, pending)
    return frozenset(jid for jid in processing if jid not in finished)


@dataclass(frozen=True)
class Deadlock:
    """A set of blocked jobs that can never finish, with what they wait for and why.

    Attributes:
        cap: the number of job slots (``max_concurrent_jobs``).
        blocked: each deadlocked job -> the jobs it waits for that can never finish
            (waits that will finish are left out), e.g. ``{1: frozenset({2, 3})}``.
        cannot_start: each pending job that can never start -> its dependencies
            that can never finish; an empty set means it only lacks a free slot
            (queued behind the blocked jobs), e.g. ``{5: frozenset(), 9: {1}}``.
        cyclic: the deadlocked jobs that would stay deadlocked with unlimited slots
            (a job waits, directly or not, for itself); empty when the slots alone
            are to blame.
        cycles: cycles of waits among the never-finishing jobs, each job waiting
            for (or, if pending, depending on) the next and the last on the first,
            e.g. ``((1, 4), (7,))`` for 1 and 4 waiting on each other and job 7
            joining itself; empty if ``cyclic`` is. Every ``cyclic`` job is on one
            of them or waits, directly or not, for a job on one.
    """

    cap: int
    blocked: dict[int, frozenset[int]]
    cannot_start: dict[int, frozenset[int]] = field(default_factory=dict)
    cyclic: frozenset[int] = frozenset()
    cycles: tuple[tuple[int, ...], ...] = ()

    @property
    def jids(self) -> frozenset[int]:
        """The deadlocked jobs (the keys of ``blocked``)."""
        return frozenset(self.blocked)

    @property
    def slots_to_blame(self) -> bool:
        """Whether some deadlocked job would finish if there were more job slots."""
        return len(self.cyclic) < len(self.blocked)

    def describe(self) -> str:
        """Return the user-facing explanation: what is stuck, why, and how to fix it."""
        lines = [self._headline()]
        for cycle in self.cycles[:_MAX_CYCLES]:
            lines.append(f"  Cycle: {self._cycle_text(cycle)}")
        if len(self.cycles) > _MAX_CYCLES:
            lines.append(f"  ... and {len(self.cycles) - _MAX_CYCLES} more cycles")
        jobs = sorted(self.blocked)
        for jid in jobs[:_MAX_JOB_LINES]:
            lines.append(f"  Job {jid} waits for {_jobs(self.blocked[jid], jid)}")
        if len(jobs) > _MAX_JOB_LINES:
            rest = len(jobs) - _MAX_JOB_LINES
            lines.append(f"  ... and {rest} more blocked jobs ({len(jobs)} in all)")
        queued = [jid for jid, deps in self.cannot_start.items() if not deps]
        waiting = [jid for jid, deps in self.cannot_start.items() if deps]
        if queued:
            lines.append(_cannot_start(queued, "queued behind the blocked jobs"))
        if waiting:
            their = "its" if len(waiting) == 1 else "their"
            lines.append(_cannot_start(waiting, f"{their} _depends_on jobs never finish"))
        lines.append(f"Why: {self._why()} (pitfall: recursion-deadlock).")
        lines.append(f"Fix: {self._fix()}.")
        return "\n".join(lines)

    # -- the parts of describe() -------------------------------------------------

    def _slots_clause(self) -> str:
        """Say that blocked jobs hold all the slots: "every one of the 4 job slots ..."."""
        cap, held = self.cap, len(self.blocked)
        setting = f"(max_concurrent_jobs={cap})"
        by = "blocked in cloud.join/cloud.result"
        if cap == 0:
            running = _count(held, "running job")
            return f"no job can start {setting}, and {running} {_is(held)} {by}"
        if held > cap:
            # The limit was lowered while they ran: more jobs than slots.
            slots = "the only job slot" if cap == 1 else f"all {cap} job slots"
            return f"{slots} {setting} {_is(cap)} taken, by {held} jobs {by}"
        if cap == 1:
            return f"the only job slot {setting} is held by a job {by}"
        return f"every one of the {cap} job slots {setting} is held by a job {by}"

    def _headline(self) -> str:
        """Return the first line: a slot deadlock, a cycle, or both."""
        if not self.cyclic:
            return f"Deadlock: {self._slots_clause()} on jobs that can never start."
        if self.slots_to_blame:
            return (
                f"Deadlock: {self._slots_clause()} on jobs that can never start or "
                "finish: some of them wait for each other in a cycle."
            )
        if len(self.cycles) == 1 and len(self.cycles[0]) == 1:
            (jid,) = self.cycles[0]
            if jid in self.blocked:
                many = len(self.blocked) > 1
                others = ", nor can the jobs waiting for it" if many else ""
                return (
                    f"Deadlock: job {jid} is blocked in cloud.join/cloud.result waiting "
                    f"for itself, so it can never finish{others}, however many job "
                    "slots there are."
                )
            return (
                f"Deadlock: job {jid} depends on itself (_depends_on), so it can never "
                "start, and the jobs blocked in cloud.join/cloud.result waiting for it "
                "can never finish, however many job slots there are."
            )
        return (
            "Deadlock: jobs blocked in cloud.join/cloud.result wait for each other in a "
            "cycle, so they can never finish, however many job slots there are."
        )

    def _cycle_text(self, cycle: tuple[int, ...]) -> str:
        """Spell out "job 1 waits for job 4; job 4 (not started) depends on job 1"."""
        if len(cycle) == 1 and cycle[0] in self.blocked:
            return f"job {cycle[0]} waits for itself"
        steps = []
        for i, jid in enumerate(cycle):
            nxt = cycle[(i + 1) % len(cycle)]
            target = "itself" if nxt == jid else f"job {nxt}"
            if jid in self.blocked:
                steps.append(f"job {jid} waits for {target}")
            else:
                steps.append(f"job {jid} (not started) depends on {target}")
        if len(steps) > _MAX_CYCLE_STEPS:
            shown = _MAX_CYCLE_STEPS - 1
            steps = steps[:shown] + [f"... ({len(cycle)} jobs in the cycle)"]
        return "; ".join(steps)

    def _why(self) -> str:
        """Return the reason, without the pitfall reference."""
        slots = (
            "a job blocked in join keeps its slot; the jobs it waits for need a free "
            "slot to start"
        )
        if not self.cyclic:
            return slots
        if self.slots_to_blame:
            return (
                f"{slots}; and a job that waits for itself, directly or through other "
                "jobs, never finishes"
            )
        return (
            "a job blocked in join finishes only after the jobs it waits for, so a job "
            "that waits for itself, directly or through other jobs, never finishes"
        )

    def _fix(self) -> str:
        """Return the advice, without the final full stop."""
        slots = (
            "don't block on jobs from inside a job; submit the follow-up work with "
            "_depends_on=<jids> so it starts only when they are done, or raise "
            "max_concurrent_jobs"
        )
        cycle = (
            "a job must never wait for itself or for a job that waits for it; break the "
            "cycle, and submit follow-up work with _depends_on=<jids> instead of "
            "blocking on jobs from inside a job"
        )
        if not self.cyclic:
            return slots
        if self.slots_to_blame:
            return (
                "break the cycle (a job must never wait for itself or for a job that "
                f"waits for it); {slots}"
            )
        return cycle


def analyse(
    cap: int,
    processing: Mapping[int, Optional[AbstractSet[int]]],
    pending: Mapping[int, AbstractSet[int]],
) -> Optional[Deadlock]:
    """Explain the deadlock, if any; the arguments are those of :func:`find_deadlocked`.

    Returns:
        None when no blocked job is deadlocked, else a :class:`Deadlock` naming the
        deadlocked jobs, the pending jobs that can never start, and whether a cycle
        of waits (which more slots would not break) or the slots are to blame.

    Raises:
        ValueError: if ``cap`` is negative or a jid is both processing and pending.
    """
    finished = _settle(cap, processing, pending)
    stuck = sorted(jid for jid in processing if jid not in finished)
    if not stuck:
        return None

    def never(jids: Iterable[int]) -> frozenset[int]:
        return frozenset(
            j for j in jids if (j in processing or j in pending) and j not in finished
        )

    blocked = {jid: never(processing[jid] or ()) for jid in stuck}
    cannot_start = {
        jid: never(deps) for jid, deps in sorted(pending.items()) if jid not in finished
    }
    unlimited = _settle(None, processing, pending)
    cyclic = frozenset(jid for jid in stuck if jid not in unlimited)
    cycles = _find_cycles(cyclic, processing, pending, unlimited)
    deadlock = Deadlock(cap, blocked, cannot_start, cyclic, cycles)
    logger.debug(
        "deadlock: jobs %s can never finish (%s)",
        _jid_list(stuck),
        "a cycle of waits" if cyclic else f"all {cap} slots held by blocked jobs",
    )
    return deadlock


def _find_cycles(
    start: AbstractSet[int],
    processing: Mapping[int, Optional[AbstractSet[int]]],
    pending: Mapping[int, AbstractSet[int]],
    finished: AbstractSet[int],
) -> tuple[tuple[int, ...], ...]:
    """Return the cycles of waits reached from ``start`` among jobs that never finish.

    Only jobs that do not finish even with unlimited slots are walked. Each has a
    wait (or dependency) that does not finish either, or it would finish; so
    following the smallest such wait from any of them comes back round. Each job
    is walked once: O(jobs + edges).

    Returns:
        The cycles, each starting at its smallest jid, in order, e.g. ``((1, 4), (7,))``.
    """

    def next_of(jid: int) -> int:
        waits = processing[jid] if jid in processing else pending[jid]
        return min(
            j
            for j in waits or ()
            if (j in processing or j in pending) and j not in finished
        )

    walked: set[int] = set()
    cycles = []
    for first in sorted(start):
        on_path: dict[int, int] = {}  # jid -> position on this walk, e.g. {1: 0, 4: 1}
        path: list[int] = []
        jid = first
        while jid not in walked:
            walked.add(jid)
            on_path[jid] = len(path)
            path.append(jid)
            jid = next_of(jid)
        if jid in on_path:  # came back onto this walk: a new cycle
            cycle = path[on_path[jid]:]
            low = cycle.index(min(cycle))
            cycles.append(tuple(cycle[low:] + cycle[:low]))
    return tuple(sorted(cycles))


# -- text helpers ------------------------------------------------------------------


def _jid_list(jids: Iterable[int], itself: Optional[int] = None, note: str = "") -> str:
    """Return sorted jids, shortened when long, with an optional note.

    E.g. "5, 6, 7, 8, 9, ... (40 in all)", or with a note "6, 7 (queued)" and
    "5, 6, 7, 8, 9, ... (40 in all, queued)".
    """
    ordered = sorted(jids)
    shown = ordered if len(ordered) <= _MAX_LISTED else ordered[: _MAX_LISTED - 1]
    text = ", ".join(f"{j} (itself)" if j == itself else str(j) for j in shown)
    if len(shown) < len(ordered):
        return text + f", ... ({len(ordered)} in all{', ' + note if note else ''})"
    return text + (f" ({note})" if note else "")


def _jobs(jids: AbstractSet[int], itself: Optional[int] = None) -> str:
    """Return "job 2", "jobs 2, 3" or "itself" for a wait set."""
    if itself is not None and set(jids) == {itself}:
        return "itself"
    word = "job" if len(jids) == 1 else "jobs"
    return f"{word} {_jid_list(jids, itself)}"


def _cannot_start(jids: list[int], why: str) -> str:
    """Return the line "  Jobs that cannot start: 5, 6 (<why>)" ("Job that" for one)."""
    word = "Job" if len(jids) == 1 else "Jobs"
    return f"  {word} that cannot start: {_jid_list(jids, note=why)}"


def _count(n: int, noun: str) -> str:
    """Return "1 running job" or "3 running jobs"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _is(n: int) -> str:
    """Return "is" or "are" to agree with ``n``."""
    return "is" if n == 1 else "are"
