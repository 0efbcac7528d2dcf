"""E. Scheduling: the job cap, dependencies, runtime limits, kills, recursion and output.

Each case proves one quirk of QUIRKS.md section E through the public API of
the backend (``cloud``). Jobs that must stay running wait for a *gate* file
the case creates when it is done looking, so no case depends on how fast the
machine is; every wait has a bound that only a hang reaches.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, List

import psutil
import pytest

# --------------------------------------------------------------------------- jobs


def wait_for_gate(gate, started_dir):
    """Say "started" (a file named after this interpreter's pid), then wait until ``gate`` exists."""
    import os
    import time
    import uuid

    open(os.path.join(started_dir, f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
    deadline = time.monotonic() + 300
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {gate} never opened")
        time.sleep(0.02)
    return os.getpid()


def record_run(ran_dir):
    import os

    open(os.path.join(ran_dir, f"ran-{os.getpid()}"), "w").close()
    return "ran"


def identity(value):
    return value


def fail():
    raise ValueError("this dependency fails")


def sleep_for(seconds):
    import time

    time.sleep(seconds)
    return "woke up"


def fib(n, cloud):
    """The seed's recursive Fibonacci: each job blocks on the two jobs it started.

    ``cloud`` is the API module, passed along (a module travels by reference: the job gets the cloud's own).
    """
    if n <= 1:
        return 1
    jid1 = cloud.call(fib, n - 1, cloud)
    jid2 = cloud.call(fib, n - 2, cloud)
    return cloud.result(jid1) + cloud.result(jid2)


def add_results(a, b, cloud):
    """Both dependencies are finished when this job starts, so result() does not block."""
    return cloud.result(a) + cloud.result(b)


def chatty(token):
    import os
    import subprocess
    import sys

    print("print-" + token)
    sys.stderr.write("stderr-" + token + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, ("fd1-" + token + "\n").encode())
    os.write(2, ("fd2-" + token + "\n").encode())
    subprocess.run([sys.executable, "-c", f"print('child-{token}')"], check=True)
    return "said it"


# ----------------------------------------------------------------------- helpers
def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds (only a hang waits that long)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.02)


class Gate:
    """A gate file jobs wait for, and the directory where they say they started."""

    def __init__(self, root: Path) -> None:
        self.path = root / f"gate-{uuid.uuid4().hex[:8]}"
        self.started = root / f"started-{uuid.uuid4().hex[:8]}"
        self.started.mkdir()

    @property
    def args(self):
        return str(self.path), str(self.started)

    def started_pids(self) -> List[int]:
        return [int(name.split("-")[0]) for name in os.listdir(self.started)]

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path: Path):
    g = Gate(tmp_path)
    try:
        yield g
    finally:
        g.open()  # never leave a job waiting


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ------------------------------------------------------------------------- cases
class TestScheduling:
    """Section E of the catalogue."""

    @pytest.mark.quirk("job-cap", max_concurrent_jobs=2)
    def test_job_cap(self, cloud, gate):
        """QUIRKS job-cap: "At most max_concurrent_jobs jobs run at once (default 16, a setting); others are
        queued."
        """
        jids = cloud.map(wait_for_gate, *[[a] * 5 for a in gate.args])
        wait_until(lambda: len(gate.started_pids()) >= 2, "two jobs started")
        time.sleep(1.0)  # room for a third job to start if the cap were not enforced
        statuses = cloud.status(jids)
        started = gate.started_pids()
        gate.open()
        assert len(started) == 2, f"{len(started)} jobs ran at once under max_concurrent_jobs=2"
        assert sorted(statuses) == ["processing"] * 2 + ["queued"] * 3, statuses
        assert len(cloud.result(jids, timeout=60)) == 5
        assert cloud.status(jids) == ["done"] * 5

    @pytest.mark.quirk("job-cap")
    def test_job_cap_default_is_16(self, cloud, gate):
        """QUIRKS job-cap: the default max_concurrent_jobs is 16."""
        jids = cloud.map(wait_for_gate, *[[a] * 18 for a in gate.args])
        wait_until(lambda: len(gate.started_pids()) >= 16, "sixteen jobs started", timeout=120)
        time.sleep(1.0)
        statuses = cloud.status(jids)
        started = gate.started_pids()
        gate.open()
        assert len(started) == 16, f"{len(started)} jobs ran at once by default"
        assert statuses.count("processing") == 16 and statuses.count("queued") == 2, statuses
        cloud.join(jids, timeout=120)

    @pytest.mark.quirk("dependencies")
    def test_dependencies(self, cloud, gate):
        """QUIRKS dependencies: "_depends_on jobs wait (waiting) until their dependencies finish; on a failed
        dependency _depends_on_errors='abort' makes them stalled, 'ignore' runs them anyway."
        """
        first = cloud.call(wait_for_gate, *gate.args)
        second = cloud.call(identity, "second ran", _depends_on=first)
        wait_until(lambda: gate.started_pids(), "the dependency started")
        assert cloud.status(second) == "waiting"
        gate.open()
        assert cloud.result(second, timeout=60) == "second ran"
        assert cloud.status(first) == "done"

        failing = cloud.call(fail)
        aborted = cloud.call(identity, "must not run", _depends_on=failing)
        ignored = cloud.call(identity, "ran anyway", _depends_on=failing, _depends_on_errors="ignore")
        assert cloud.result(ignored, timeout=60) == "ran anyway"
        with pytest.raises(cloud.CloudException):
            cloud.result(aborted, timeout=60)
        assert cloud.status(aborted) == "stalled"
        assert cloud.status(failing) == "error"
        late = cloud.call(identity, "must not run", _depends_on=[first, failing])
        with pytest.raises(cloud.CloudException):
            cloud.result(late, timeout=60)
        assert cloud.status(late) == "stalled"

    @pytest.mark.quirk("max-runtime")
    def test_max_runtime(self, cloud):
        """QUIRKS max-runtime: "_max_runtime (minutes) kills a job that runs longer; status killed."""
        jid = cloud.call(sleep_for, 600, _max_runtime=0.02)  # 1.2 seconds
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert type(info.value) is not cloud.CloudTimeoutError, "the job was not killed at its _max_runtime"
        assert cloud.status(jid) == "killed"
        quick = cloud.call(identity, "in time", _max_runtime=1)
        assert cloud.result(quick, timeout=60) == "in time"
        assert cloud.status(quick) == "done"

    @pytest.mark.quirk("job-kill", max_concurrent_jobs=1)
    def test_job_kill(self, cloud, gate, tmp_path):
        """QUIRKS job-kill: "cloud.kill cancels queued jobs and kills running ones (their interpreter is
        replaced)." API.md: kill() with no argument kills every unfinished job.
        """
        ran = tmp_path / "ran"
        ran.mkdir()
        running = cloud.call(wait_for_gate, *gate.args)
        queued = cloud.call(record_run, str(ran))
        wait_until(lambda: gate.started_pids(), "the first job started")
        (worker_pid,) = gate.started_pids()
        assert cloud.status(queued) == "queued"

        cloud.kill(queued)
        cloud.join(queued, timeout=60, ignore_errors=True)
        assert cloud.status(queued) == "killed"
        with pytest.raises(cloud.CloudException):
            cloud.result(queued, timeout=60)

        cloud.kill(running)
        cloud.join(running, timeout=60, ignore_errors=True)
        assert cloud.status(running) == "killed"
        with pytest.raises(cloud.CloudException):
            cloud.result(running, timeout=60)
        wait_until(lambda: not _alive(worker_pid), "the killed job's interpreter is gone")
        assert cloud.result(cloud.call(os.getpid), timeout=60) != worker_pid

        a = cloud.call(sleep_for, 600)
        b = cloud.call(record_run, str(ran))
        cloud.kill()
        cloud.join([a, b], timeout=60, ignore_errors=True)
        assert cloud.status([a, b]) == ["killed", "killed"]
        assert os.listdir(ran) == [], "a killed queued job ran"

    @pytest.mark.quirk("recursion-deadlock", max_concurrent_jobs=4)
    def test_recursion_deadlock(self, cloud):
        """QUIRKS recursion-deadlock: "Jobs may call cloud.call and block on cloud.join/result from inside the
        cloud. When every running job waits on jobs that cannot start, no work can be done: that deadlock
        really happens." Explain: "It is detected exactly ... and the blocked join raises a deadlock error
        ... that names the cycle and suggests _depends_on."
        """
        jid = cloud.call(fib, 5, cloud)
        with pytest.raises(cloud.CloudException) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deadlock is also recorded as a pitfall of the blocked jobs
            cloud.result(jid, timeout=60)
        assert type(info.value) is not cloud.CloudTimeoutError, "the deadlock hung instead of being detected"
        text = str(info.value)
        assert "deadlock" in text.lower(), text
        assert "_depends_on" in text, text
        assert cloud.status(jid) == "error"

    @pytest.mark.quirk("recursion-deadlock", max_concurrent_jobs=4)
    def test_recursion_deadlock_avoided_with_depends_on(self, cloud):
        """QUIRKS recursion-deadlock / docs: the same Fibonacci built with _depends_on, where no job blocks,
        finishes under the same cap.
        """

        def build(n):
            if n <= 1:
                return cloud.call(identity, 1)
            a, b = build(n - 1), build(n - 2)
            return cloud.call(add_results, a, b, cloud, _depends_on=[a, b])

        assert cloud.result(build(5), timeout=60) == 8

    @pytest.mark.quirk("recursion-deadlock", max_concurrent_jobs=16)
    def test_recursion_deadlock_not_with_enough_slots(self, cloud):
        """QUIRKS recursion-deadlock: jobs may call and block on jobs from inside the cloud; with enough slots
        the recursion finishes.
        """
        assert cloud.result(cloud.call(fib, 4, cloud), timeout=60) == 5

    @pytest.mark.quirk("job-output", max_concurrent_jobs=1)
    def test_job_output(self, cloud, capfd):
        """QUIRKS job-output: "A job's stdout and stderr are captured and available through cloud.info"
        (docs: "do not appear in your terminal"), including what C code and child processes write to the
        file descriptors.
        """
        token = uuid.uuid4().hex
        other = uuid.uuid4().hex
        jid = cloud.call(chatty, token)
        assert cloud.result(jid, timeout=60) == "said it"
        then = cloud.call(chatty, other)
        assert cloud.result(then, timeout=60) == "said it"
        out = cloud.info(jid, ["stdout", "stderr"])[jid]
        for piece in ("print-", "fd1-", "child-"):
            assert piece + token in out["stdout"], (piece, out)
        for piece in ("stderr-", "fd2-"):
            assert piece + token in out["stderr"], (piece, out)
        later = cloud.info(then, ["stdout", "stderr"])[then]
        assert "print-" + other in later["stdout"]
        assert token not in later["stdout"] + later["stderr"], "one job's output leaked into the next job's"
        client = capfd.readouterr()
        assert token not in client.out + client.err, "the job's output reached the client's terminal"
