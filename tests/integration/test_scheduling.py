"""Scheduling against real simulators: the job cap, priorities, dependencies, kills, runtime limits, recursion.

Every test starts its own simulator (``start(max_concurrent_jobs=N)``) and runs
real jobs in real worker interpreters. Jobs whose state a test must observe
are held by a gate: a held job waits until a file the test creates appears
(with a 60 s safety limit inside the job), so what is 'processing' or
'queued' never depends on timing luck. Waits are bounded by ``WAIT``, a bound
only a hang reaches; no test asserts how fast anything happened.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import psutil
import pytest

import cloudsim
from cloudsim import CloudException, CloudTimeoutError
from conftest import wait_until
from gated_jobs import append, held, held_then_fail, pid_then_hold

WAIT = 30.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ job functions (shipped by reference)


def getpid() -> int:
    return os.getpid()


def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def square(x: int) -> int:
    return x * x


def parent_sum_of_squares(n: int) -> int:
    """Submit n jobs from inside a job and collect their results."""
    import cloudsim as cloud

    jids = cloud.map(square, range(n))
    return sum(cloud.result(jids))


def parent_submits_held(gate: str, n: int) -> List[int]:
    """Submit n held jobs from inside a job and return their jids without waiting for them."""
    import cloudsim as cloud

    return [cloud.call(held, gate, i) for i in range(n)]


def parent_submits_held_then_holds(child_gate: str, n: int, jidfile: str, gate: str) -> List[int]:
    """Submit n held jobs, write their jids to ``jidfile``, then wait for ``gate`` while holding a slot."""
    import cloudsim as cloud

    jids = [cloud.call(held, child_gate, i) for i in range(n)]
    tmp = jidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(map(str, jids)))
    os.replace(tmp, jidfile)
    held(gate)
    return jids


def parent_joins_with_timeout() -> tuple:
    """Submit a child and join it with a short timeout; report what the join raised."""
    import cloudsim as cloud

    child = cloud.call(square, 3)
    try:
        cloud.join(child, timeout=0.5)
    except Exception as exc:  # report it to the test instead of failing the job
        return (child, type(exc).__name__, isinstance(exc, cloud.CloudTimeoutError),
                isinstance(exc, cloud.CloudDeadlockError), str(exc), cloud.status(child))
    return (child, None, False, False, "", cloud.status(child))


# ------------------------------------------------------------------ helpers


def count(statuses: Sequence[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


def read_lines(path: Path) -> List[str]:
    return path.read_text().split() if path.exists() else []


def wait_status(cloud: Any, jid: int, status: str) -> None:
    wait_until(lambda: cloud.status(jid) == status, f"job {jid} to be {status!r}",
               on_fail=lambda: f"it is {cloud.status(jid)!r}")


# ------------------------------------------------------------------ the job cap


def test_job_cap_runs_exactly_cap_jobs_and_queues_the_rest(start, tmp_path: Path) -> None:
    """With max_concurrent_jobs=2 and 5 held jobs, 2 are processing and 3 queued; never more than 2 run."""
    cloud = start(max_concurrent_jobs=2)
    gate = str(tmp_path / "gate")
    jids = [cloud.call(held, gate, i) for i in range(5)]
    seen_max = 0

    def two_processing() -> bool:
        nonlocal seen_max
        n = count(cloud.status(jids)).get("processing", 0)
        seen_max = max(seen_max, n)
        return n == 2

    wait_until(two_processing, "2 jobs processing", on_fail=lambda: str(cloud.status(jids)))
    # held jobs cannot finish: the picture stays put while we watch it
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert count(cloud.status(jids)) == {"processing": 2, "queued": 3}
        time.sleep(0.05)
    Path(gate).touch()
    while True:
        sts = cloud.status(jids)
        seen_max = max(seen_max, count(sts).get("processing", 0))
        assert count(sts).get("processing", 0) <= 2, sts
        if all(s == "done" for s in sts):
            break
        assert all(s in ("queued", "processing", "done") for s in sts), sts
        time.sleep(0.01)
    assert seen_max == 2
    assert cloud.result(jids, timeout=WAIT) == [0, 1, 2, 3, 4]


def test_job_cap_of_one_runs_jobs_one_at_a_time(start, tmp_path: Path) -> None:
    """Under a cap of 1, no two jobs overlap: each job's start/end lines never interleave."""
    cloud = start(max_concurrent_jobs=1)
    log = tmp_path / "log"

    def both(i: int) -> int:
        append(str(log), f"start{i}")
        time.sleep(0.05)
        append(str(log), f"end{i}")
        return i

    jids = [cloud.call(both, i) for i in range(4)]
    assert cloud.result(jids, timeout=WAIT) == [0, 1, 2, 3]
    lines = read_lines(log)
    assert len(lines) == 8
    for k in range(0, 8, 2):
        assert lines[k].startswith("start") and lines[k + 1] == "end" + lines[k][5:], lines


# ------------------------------------------------------------------ priorities


def test_priority_lower_first_fifo_within_a_priority(start, tmp_path: Path) -> None:
    """Cap 1 behind a blocker: jobs with _priority 9, 1, 5, 1 run as 1, 1, 5, 9 (first 1 first)."""
    cloud = start(max_concurrent_jobs=1)
    gate, log = str(tmp_path / "gate"), str(tmp_path / "order")
    blocker = cloud.call(held, gate, "blocker", log)
    wait_status(cloud, blocker, "processing")
    jids = [cloud.call(append, log, tag, _priority=prio)
            for tag, prio in (("p9", 9), ("p1a", 1), ("p5", 5), ("p1b", 1))]
    assert cloud.status(jids) == ["queued"] * 4
    Path(gate).touch()
    cloud.join(jids + [blocker], timeout=WAIT)
    assert read_lines(tmp_path / "order") == ["blocker", "p1a", "p1b", "p5", "p9"]


def test_default_priority_is_five(start, tmp_path: Path) -> None:
    """A job without _priority runs after _priority=4 and before _priority=6 (the default is 5)."""
    cloud = start(max_concurrent_jobs=1)
    gate, log = str(tmp_path / "gate"), str(tmp_path / "order")
    blocker = cloud.call(held, gate)
    wait_status(cloud, blocker, "processing")
    jids = [cloud.call(append, log, "six", _priority=6), cloud.call(append, log, "default"),
            cloud.call(append, log, "four", _priority=4)]
    Path(gate).touch()
    cloud.join(jids, timeout=WAIT)
    assert read_lines(tmp_path / "order") == ["four", "default", "six"]


# ------------------------------------------------------------------ dependencies


@pytest.mark.parametrize("shape", ["int", "list", "range"])
def test_dependent_waits_until_its_dependencies_finish(start, tmp_path: Path, shape: str) -> None:
    """_depends_on as an int, a list or a range: the job is 'waiting' until they finish, then runs after them."""
    cloud = start(max_concurrent_jobs=4)
    log = str(tmp_path / "order")
    gates = [str(tmp_path / f"gate{i}") for i in range(2)]
    if shape == "int":
        deps = [cloud.call(held, gates[0], "dep0", log)]
        depends_on: Any = deps[0]
    else:
        deps = cloud.map(held, gates, ["dep0", "dep1"], [log, log])
        assert deps == [deps[0], deps[0] + 1]
        depends_on = list(deps) if shape == "list" else range(deps[0], deps[-1] + 1)
    job = cloud.call(append, log, "dependent", _depends_on=depends_on)
    assert cloud.status(job) == "waiting"
    # there are free slots, yet the job waits while its dependencies are held
    wait_until(lambda: all(s == "processing" for s in cloud.status(deps)), "the dependencies to run")
    time.sleep(0.3)
    assert cloud.status(job) == "waiting"
    Path(gates[0]).touch()
    wait_status(cloud, deps[0], "done")
    if len(deps) > 1:
        time.sleep(0.3)
        assert cloud.status(job) == "waiting", "one dependency of two is still running"
        Path(gates[1]).touch()
    assert cloud.result(job, timeout=WAIT) == "dependent"
    lines = read_lines(tmp_path / "order")
    assert lines[-1] == "dependent"
    assert sorted(lines[:-1]) == [f"dep{i}" for i in range(len(deps))]


def test_map_with_depends_on_waits_for_the_dependency(start, tmp_path: Path) -> None:
    """_depends_on given to cloud.map applies to every job of the map."""
    cloud = start(max_concurrent_jobs=3)
    gate = str(tmp_path / "gate")
    dep = cloud.call(held, gate)
    jids = cloud.map(square, [1, 2, 3], _depends_on=dep)
    assert cloud.status(jids) == ["waiting"] * 3
    Path(gate).touch()
    assert cloud.result(jids, timeout=WAIT) == [1, 4, 9]


def test_failed_dependency_stalls_dependents_down_the_chain(start, tmp_path: Path) -> None:
    """A failing dependency with the default 'abort': its dependent and the dependent's dependent are 'stalled'."""
    cloud = start(max_concurrent_jobs=2)
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    bad = cloud.call(held_then_fail, gate)
    child = cloud.call(append, log, "child", _depends_on=bad)
    grandchild = cloud.call(append, log, "grandchild", _depends_on=[child])
    assert cloud.status([child, grandchild]) == ["waiting", "waiting"]
    Path(gate).touch()
    with pytest.raises(CloudException):
        cloud.join(bad, timeout=WAIT)
    assert cloud.status([bad, child, grandchild]) == ["error", "stalled", "stalled"]
    with pytest.raises(CloudException) as info:
        cloud.result(child, timeout=WAIT)
    assert info.value.status == "stalled"
    assert info.value.jid == child
    text = str(info.value)
    assert "dependency" in text and f"job {bad}" in text, text
    with pytest.raises(CloudException, match="dependency"):
        cloud.result(grandchild, timeout=WAIT)
    assert read_lines(tmp_path / "log") == [], "a stalled job must never run"


def test_dependency_that_already_failed_stalls_at_submit(start) -> None:
    """Depending on a job that already failed: 'abort' gives 'stalled' at once, 'ignore' runs the job."""
    cloud = start(max_concurrent_jobs=2)
    bad = cloud.call(held_then_fail, os.devnull)  # the gate exists: fails at once
    with pytest.raises(CloudException):
        cloud.join(bad, timeout=WAIT)
    late = cloud.call(square, 2, _depends_on=bad)
    assert cloud.status(late) == "stalled"
    with pytest.raises(CloudException, match="dependency"):
        cloud.result(late)
    assert cloud.result(cloud.call(square, 3, _depends_on=bad, _depends_on_errors="ignore"), timeout=WAIT) == 9


def test_depends_on_errors_ignore_runs_after_a_failed_dependency(start, tmp_path: Path) -> None:
    """_depends_on_errors='ignore': the dependent waits for the failing job, then runs anyway."""
    cloud = start(max_concurrent_jobs=2)
    gate = str(tmp_path / "gate")
    bad = cloud.call(held_then_fail, gate)
    job = cloud.call(square, 5, _depends_on=bad, _depends_on_errors="ignore")
    assert cloud.status(job) == "waiting"
    Path(gate).touch()
    assert cloud.result(job, timeout=WAIT) == 25
    assert cloud.status([bad, job]) == ["error", "done"]


def test_failed_dependency_anywhere_in_the_list_stalls(start, tmp_path: Path) -> None:
    """First dependency still running, second already failed: the job is 'stalled' and never runs."""
    cloud = start(max_concurrent_jobs=2)
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    pending = cloud.call(held, gate)
    bad = cloud.call(held_then_fail, os.devnull)
    with pytest.raises(CloudException):
        cloud.join(bad, timeout=WAIT)
    job = cloud.call(append, log, "ran", _depends_on=[pending, bad])
    assert cloud.status(job) == "stalled"
    Path(gate).touch()
    cloud.join(pending, timeout=WAIT)
    time.sleep(0.3)
    assert cloud.status(job) == "stalled"
    assert read_lines(tmp_path / "log") == []


def test_unknown_dependency_raises_and_creates_no_job(start) -> None:
    """An unknown _depends_on jid is a CloudException at call time and no job is created."""
    cloud = start(max_concurrent_jobs=2)
    known = cloud.call(square, 1)
    cloud.join(known, timeout=WAIT)
    unknown = known + 1_000_000
    with pytest.raises(CloudException, match=str(unknown)):
        cloud.call(square, 2, _depends_on=unknown)
    with pytest.raises(CloudException):
        cloud.call(square, 2, _depends_on=[known, unknown])
    with pytest.raises(CloudException):
        cloud.map(square, [1, 2, 3], _depends_on=range(known, known + 2))  # known + 1 does not exist
    # had any of them created a job, it would have taken jid known + 1
    with pytest.raises(CloudException, match="Does not exist"):
        cloud.status(known + 1)
    nxt = cloud.call(square, 4)
    assert nxt == known + 1
    assert cloud.result(nxt, timeout=WAIT) == 16


# ------------------------------------------------------------------ kill


def test_kill_of_a_queued_job_takes_effect_at_once(start, tmp_path: Path, no_leaked_processes) -> None:
    """cap 1, a held blocker: kill() of a queued job makes it 'killed' at once, and it never runs."""
    cloud = start(max_concurrent_jobs=1)
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    blocker = cloud.call(held, gate)
    wait_status(cloud, blocker, "processing")
    victim = cloud.call(append, log, "victim")
    after = cloud.call(append, log, "after")
    assert cloud.status(victim) == "queued"
    cloud.kill(victim)
    assert cloud.status([blocker, victim, after]) == ["processing", "killed", "queued"]
    with pytest.raises(CloudException) as info:
        cloud.result(victim)
    assert info.value.status == "killed"
    Path(gate).touch()
    assert cloud.result(after, timeout=WAIT) == "after"
    assert read_lines(tmp_path / "log") == ["after"]
    assert cloud.status(victim) == "killed"


def test_kill_of_a_processing_job_replaces_its_interpreter(start, tmp_path: Path, no_leaked_processes) -> None:
    """kill() of a processing job: 'killed', result raises, its interpreter dies and the next job runs in another."""
    cloud = start(max_concurrent_jobs=1)
    pidfile, gate = tmp_path / "pid", str(tmp_path / "gate")
    job = cloud.call(pid_then_hold, str(pidfile), gate)
    wait_until(pidfile.exists, "the job to write its pid")
    pid = int(pidfile.read_text())
    assert cloud.status(job) == "processing"
    cloud.kill(job)
    assert cloud.status(job) == "killed"
    with pytest.raises(CloudException) as info:
        cloud.result(job, timeout=WAIT)
    assert info.value.status == "killed"
    assert "Killed" in str(info.value)
    assert not isinstance(info.value, CloudTimeoutError)

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, f"the killed job's interpreter (pid {pid}) to end")
    new_pid = cloud.result(cloud.call(getpid), timeout=WAIT)
    assert new_pid != pid
    assert cloud.status(job) == "killed"


def test_kill_a_list_of_jobs(start, tmp_path: Path) -> None:
    """kill([a, b]) kills the processing a and the queued b; the job after them still runs."""
    cloud = start(max_concurrent_jobs=1)
    gate = str(tmp_path / "gate")
    a = cloud.call(held, gate)
    wait_status(cloud, a, "processing")
    b = cloud.call(held, gate)
    c = cloud.call(square, 6)
    cloud.kill([a, b])
    assert cloud.status([a, b]) == ["killed", "killed"]
    assert cloud.result(c, timeout=WAIT) == 36
    assert cloud.status([a, b, c]) == ["killed", "killed", "done"]


def test_kill_without_argument_kills_every_unfinished_job(start, tmp_path: Path, no_leaked_processes) -> None:
    """kill() finishes every unfinished job (processing, queued, waiting) and leaves done jobs 'done'."""
    cloud = start(max_concurrent_jobs=1)
    gate = str(tmp_path / "gate")
    done = cloud.call(square, 7)
    assert cloud.result(done, timeout=WAIT) == 49
    running = cloud.call(held, gate)
    wait_status(cloud, running, "processing")
    queued = cloud.call(held, gate)
    waiting = cloud.call(square, 1, _depends_on=running)
    assert cloud.status([queued, waiting]) == ["queued", "waiting"]
    cloud.kill()
    sts = cloud.status([done, running, queued, waiting])
    assert sts[:3] == ["done", "killed", "killed"]
    # the waiting job is killed, or stalled because its dependency was killed first
    assert sts[3] in ("killed", "stalled")
    assert cloud.result(done) == 49
    assert cloud.result(cloud.call(square, 2), timeout=WAIT) == 4


def test_killing_a_finished_job_leaves_it_done(start) -> None:
    """kill() of a job that finished changes nothing: it stays 'done' with its result."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(square, 8)
    assert cloud.result(jid, timeout=WAIT) == 64
    cloud.kill(jid)
    cloud.kill([jid])
    assert cloud.status(jid) == "done"
    assert cloud.result(jid) == 64


# ------------------------------------------------------------------ _max_runtime


def test_max_runtime_kills_a_job_that_runs_too_long(start, no_leaked_processes) -> None:
    """_max_runtime=0.02 minutes (1.2 s) on a 30 s job: 'killed', and the error names _max_runtime."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(sleeper, 30, _max_runtime=0.02)
    with pytest.raises(CloudException) as info:
        cloud.result(jid, timeout=25)  # the job itself would take 30 s
    assert not isinstance(info.value, CloudTimeoutError), "the job was not stopped by _max_runtime"
    assert cloud.status(jid) == "killed"
    assert info.value.status == "killed"
    assert "_max_runtime" in str(info.value)
    # the slot and a fresh interpreter are available again
    assert cloud.result(cloud.call(square, 9), timeout=WAIT) == 81


def test_job_within_its_max_runtime_is_unaffected(start) -> None:
    """A job that ends well inside its _max_runtime finishes 'done' with its result."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(sleeper, 0.2, _max_runtime=0.5)
    assert cloud.result(jid, timeout=WAIT) == "slept"
    assert cloud.status(jid) == "done"
    time.sleep(0.3)
    assert cloud.status(jid) == "done"


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_max_runtime_is_refused_at_call_time(cloud, value: Any, error: type) -> None:
    """_max_runtime must be a positive number of minutes: 0 or less is ValueError, a non-number TypeError."""
    with pytest.raises(error, match="_max_runtime"):
        cloud.call(square, 1, _max_runtime=value)


# ------------------------------------------------------------------ recursion


def test_job_submits_jobs_and_collects_their_results(start) -> None:
    """A job may call cloud.map and cloud.result from inside the cloud (free slots for its children)."""
    cloud = start(max_concurrent_jobs=3)
    assert cloud.result(cloud.call(parent_sum_of_squares, 5), timeout=60) == 0 + 1 + 4 + 9 + 16


def test_jobs_submitted_from_a_job_count_against_the_same_cap(start, tmp_path: Path) -> None:
    """cap 2: three held children submitted by a job never run more than 2 at once; after release all are done."""
    cloud = start(max_concurrent_jobs=2)
    gate = str(tmp_path / "gate")
    parent = cloud.call(parent_submits_held, gate, 3)
    children = cloud.result(parent, timeout=WAIT)
    assert len(children) == 3 and all(isinstance(j, int) for j in children)
    wait_until(lambda: count(cloud.status(children)).get("processing", 0) == 2, "2 children processing",
               on_fail=lambda: str(cloud.status(children)))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert count(cloud.status(children)) == {"processing": 2, "queued": 1}
        time.sleep(0.05)
    Path(gate).touch()
    while True:
        sts = cloud.status(children)
        assert count(sts).get("processing", 0) <= 2, sts
        if all(s == "done" for s in sts):
            break
        time.sleep(0.01)
    assert cloud.result(children, timeout=WAIT) == [0, 1, 2]


def test_a_running_parent_and_its_children_share_the_cap(start, tmp_path: Path) -> None:
    """cap 2: while the parent still runs, only 1 of its 3 children can; when it ends, 2 of them do."""
    cloud = start(max_concurrent_jobs=2)
    child_gate, gate, jidfile = str(tmp_path / "children"), str(tmp_path / "parent"), tmp_path / "jids"
    parent = cloud.call(parent_submits_held_then_holds, child_gate, 3, str(jidfile), gate)
    wait_until(jidfile.exists, "the parent to submit its children")
    children = [int(j) for j in jidfile.read_text().split()]
    assert len(children) == 3
    wait_until(lambda: count(cloud.status(children)).get("processing", 0) == 1, "1 child processing",
               on_fail=lambda: str(cloud.status(children)))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert cloud.status(parent) == "processing"
        assert count(cloud.status(children)) == {"processing": 1, "queued": 2}
        time.sleep(0.05)
    Path(gate).touch()
    assert cloud.result(parent, timeout=WAIT) == children
    wait_until(lambda: count(cloud.status(children)).get("processing", 0) == 2, "2 children processing",
               on_fail=lambda: str(cloud.status(children)))
    assert count(cloud.status(children)) == {"processing": 2, "queued": 1}
    Path(child_gate).touch()
    assert cloud.result(children, timeout=WAIT) == [0, 1, 2]


def test_join_with_timeout_on_a_child_that_cannot_start_times_out(start) -> None:
    """cap 1: a job joining its child with timeout=0.5 gets CloudTimeoutError, not a deadlock error."""
    cloud = start(max_concurrent_jobs=1)
    parent = cloud.call(parent_joins_with_timeout)
    child, name, is_timeout, is_deadlock, text, child_status = cloud.result(parent, timeout=WAIT)
    assert name == "CloudTimeoutError", (name, text)
    assert is_timeout and not is_deadlock
    assert "timed out" in text
    assert str(child) in text
    assert child_status == "queued"
    # once the parent gives its slot back, the child runs
    assert cloud.result(child, timeout=WAIT) == 9
