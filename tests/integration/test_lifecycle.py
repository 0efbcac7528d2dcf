"""The simulator's life: start, close, start again, and what is left when the client goes away.

``close()`` must stop everything the simulator started (the server, its
workers, the processes jobs started) and return PiCloud's ``True``/``False``;
a closed simulator can be started again and jids keep counting up. When the
client interpreter ends without ``close()``, or is SIGKILLed, nothing it
started may survive it: those cases run a separate client interpreter
(``subprocess``), read the pids it reports, end it, and check with psutil
that every one of them is gone. A test that finds survivors ends them (by
pid; they are processes this test caused) and fails.

Not for: how jobs end (``tests/faults``) or scheduling.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable, Dict, List

import psutil
import pytest

import cloudsim
from cloudsim import CloudException

from conftest import describe

WAIT = 60.0  # seconds; only a hang reaches it
GONE = 10.0  # seconds the simulator's processes get to disappear


def square(x: int) -> int:
    return x * x


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _survivors(pids: List[int], timeout: float = GONE) -> List[int]:
    """Poll until none of ``pids`` runs (zombies count as gone); return those still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def _end(pids: List[int]) -> str:
    """SIGKILL processes this test caused that outlived their simulator; describe them first."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    text = describe(procs)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return text


def _wait_status(cloud: Any, jid: int, wanted: str) -> None:
    deadline = time.monotonic() + WAIT
    while cloud.status(jid) != wanted:
        assert time.monotonic() < deadline, f"job {jid} never reached {wanted!r}: {cloud.status(jid)!r}"
        time.sleep(0.02)


# --------------------------------------------------------------- in this client


def test_close_returns_true_then_false(start: Callable) -> None:
    """``close()`` is True when a simulator was open, False the second time; then the API says to start one."""
    cloud = start()
    assert cloud.result(cloud.call(square, 3), timeout=WAIT) == 9
    assert cloud.close() is True
    assert cloud.close() is False
    assert cloud.is_simulated() is False
    if not cloudsim.config.use_simulator:  # otherwise the call would start a new simulator, as it should
        with pytest.raises(CloudException, match="start_simulator"):
            cloud.call(square, 2)


def test_close_leaves_no_server_or_worker(start: Callable, no_leaked_processes: None) -> None:
    """Every pid the simulator reported (server and workers) is gone after ``close()``."""
    cloud = start(max_concurrent_jobs=4)
    assert cloud.result(cloud.map(square, range(8)), timeout=WAIT) == [i * i for i in range(8)]
    pids = cloudsim.client._simulator_pids()
    assert len(pids) >= 2, f"expected a server and at least one worker, got {pids}"
    assert all(_alive(p) for p in pids)
    assert cloud.close() is True
    left = _survivors(pids)
    assert not left, "still running after close():\n" + _end(left)
    assert cloudsim.client._simulator_pids() == []


def test_simulator_starts_again_after_close_and_jids_keep_increasing(start: Callable) -> None:
    """A closed simulator can be started again; its jids continue after the old ones."""
    cloud = start()
    old = cloud.map(square, range(3))
    assert cloud.result(old, timeout=WAIT) == [0, 1, 4]
    old_pids = cloudsim.client._simulator_pids()
    assert cloud.close() is True

    cloud = start()
    new = cloud.call(square, 5)
    assert new > max(old)
    assert cloud.result(new, timeout=WAIT) == 25
    assert not set(cloudsim.client._simulator_pids()) & set(old_pids)


def test_close_does_not_wait_for_a_sleeping_job(start: Callable, no_leaked_processes: None) -> None:
    """A job blocked in ``time.sleep(600)`` does not keep ``close()`` from returning (bound: 30 s)."""
    cloud = start()
    jid = cloud.call(time.sleep, 600)
    _wait_status(cloud, jid, "processing")
    pids = cloudsim.client._simulator_pids()
    t0 = time.monotonic()
    assert cloud.close() is True
    elapsed = time.monotonic() - t0
    assert elapsed < 30, f"close() took {elapsed:.1f} s with a sleeping job"
    left = _survivors(pids)
    assert not left, "still running after close():\n" + _end(left)


# ---------------------------------------------------------- in a separate client

_CLIENT = textwrap.dedent("""\
    import json, os, subprocess, sys, time
    import cloudsim as cloud

    root, marker, how = sys.argv[1], sys.argv[2], sys.argv[3]

    def square(x):
        return x * x

    def sleeper(path):
        child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        with open(path + ".tmp", "w") as f:
            f.write(str(child.pid))
        os.rename(path + ".tmp", path)
        time.sleep(60)

    cloud.start_simulator(server_root=root, max_concurrent_jobs=4)
    slow = cloud.call(sleeper, marker)
    assert cloud.result(cloud.map(square, range(8)), timeout=60) == [i * i for i in range(8)]
    deadline = time.monotonic() + 60
    while not os.path.exists(marker):
        assert time.monotonic() < deadline, "the sleeping job never started"
        time.sleep(0.02)
    assert cloud.status(slow) == "processing"
    report = {
        "client": os.getpid(),
        "server": cloud.connection_info()["server_pid"],
        "simulator": cloud.client._simulator_pids(),
        "job_child": int(open(marker).read()),
    }
    print(json.dumps(report), flush=True)
    if how == "sleep":
        time.sleep(600)
    # how == "end": the interpreter just ends, without cloud.close()
""")


def _run_client(tmp_path: Any, how: str) -> subprocess.Popen:
    # The client runs in a project directory of its own; the job's marker file lies outside it,
    # since a job may not touch the client's project tree (non-code-files).
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(tmp_path / "server"), str(tmp_path / "child.pid"), how],
        cwd=str(project), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _read_report(proc: subprocess.Popen) -> Dict[str, Any]:
    """The client's JSON line, or fail (after ending the client) with what it wrote."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + WAIT
    line = b""
    try:
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
    finally:
        sel.close()
    if not line.endswith(b"\n"):
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
        pytest.fail(f"the client did not report its pids (exit status {proc.returncode}):\n"
                    f"{line.decode(errors='replace')}\n{err.decode(errors='replace')[-4000:]}")
    return json.loads(line)


def _all_pids(report: Dict[str, Any]) -> List[int]:
    pids = list(report["simulator"]) + [report["job_child"]]
    assert report["server"] in pids
    return pids


def test_sigkilled_client_leaves_nothing_behind(tmp_path: Any) -> None:
    """SIGKILL the client while jobs run: the server, every worker and a job's own child exit within 10 s."""
    proc = _run_client(tmp_path, "sleep")
    try:
        report = _read_report(proc)
        pids = _all_pids(report)
        assert len(report["simulator"]) >= 3, f"expected a server and several workers: {report}"
        assert all(_alive(p) for p in pids), report
        assert psutil.Process(report["server"]).ppid() == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        left = _survivors(pids)
        assert not left, "outlived their SIGKILLed client:\n" + _end(left)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_client_that_ends_without_close_leaves_nothing_behind(tmp_path: Any) -> None:
    """A client script that just ends (no ``close()``), with a job still sleeping, exits promptly and cleanly."""
    proc = _run_client(tmp_path, "end")
    try:
        report = _read_report(proc)
        pids = _all_pids(report)
        try:
            _, err = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=WAIT)
            pytest.fail(f"the client did not exit within {WAIT:g} s of its last line:\n{err.decode(errors='replace')}")
        assert proc.returncode == 0, err.decode(errors="replace")
        left = _survivors(pids)
        assert not left, "outlived their client:\n" + _end(left)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_leak_check_helpers_see_a_live_process(tmp_path: Any) -> None:
    """The checker itself: ``_survivors`` reports a process that is running and forgets it once it is gone."""
    sleeper = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
    try:
        assert _survivors([sleeper.pid], timeout=0.2) == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait(WAIT)
    assert _survivors([sleeper.pid], timeout=1.0) == []
