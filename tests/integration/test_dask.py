"""The ``cloud`` API on the Dask backend (``cloud.start_dask``), tested against real Dask clusters.

One Dask cluster (4 one-thread worker processes, launched as
``cloud.start_dask`` launches its own: ``LocalDaskCluster`` in a clean
interpreter) serves the whole module. cloudsim has one cloud at a time, so a
backend started by one test is closed by the next ``start_dask``; each test
therefore starts its own backend on that cluster by address (fast), and
closing it must leave the cluster running. Starting and closing without an
address (cloudsim's own local cluster) is tested once, with the check that no
process is left.

Jobs whose state a test must observe (``queued``, ``processing``) are held by
a gate file the test creates, never by timing luck. Waits are bounded by
``WAIT``, a bound only a hang reaches; no test asserts how fast anything ran.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set

import psutil
import pytest

# the test extra installs distributed; in CI its absence is a failure, elsewhere these tests are skipped
if os.environ.get("CI"):
    import distributed
else:
    distributed = pytest.importorskip("distributed")

import cloudsim  # noqa: E402
from cloudsim import CloudException, CloudTimeoutError  # noqa: E402
from conftest import describe, wait_no_children, wait_until  # noqa: E402
from gated_jobs import append, held, held_then_fail, pid_then_hold, write_pid  # noqa: E402

WAIT = 60.0  # seconds; only a hang reaches it
N_WORKERS = 4


# ------------------------------------------------------------------ job functions (shipped by reference)


def square(x: int) -> int:
    return x * x


def fail(message: str = "boom") -> None:
    raise ValueError(message)


def getpid(_: Any = None) -> int:
    return os.getpid()


def chatty() -> str:
    """Write to both streams through Python's objects and through the file descriptors themselves."""
    print("printed to stdout")
    os.write(1, b"written to fd 1\n")
    print("printed to stderr", file=sys.stderr)
    os.write(2, b"written to fd 2\n")
    return "ok"


def interval(log_dir: str, i: int, cap: int) -> int:
    """Record when this job ran, as ``start end`` in ``log_dir/i.interval``.

    Each job first waits (10 s at most) until ``cap`` jobs have started, so
    ``cap`` jobs surely overlap once; a breached cap shows as more than
    ``cap`` overlapping intervals.
    """
    start = time.time()
    Path(log_dir, f"{i}.started").touch()
    deadline = time.monotonic() + 10
    while len(list(Path(log_dir).glob("*.started"))) < cap and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    end = time.time()
    Path(log_dir, f"{i}.interval").write_text(f"{start} {end}")
    return i


def fib(n: int) -> int:
    """The seed's recursive Fibonacci: every job blocks on two more."""
    import cloudsim as cloud

    if n <= 1:
        return 1
    jid1 = cloud.call(fib, n - 1)
    jid2 = cloud.call(fib, n - 2)
    return cloud.result(jid1) + cloud.result(jid2)


def leak_a_thread(pidfile: str, log: str = "") -> int:
    """Return with a thread still running (pitfall: leaked-threads); append a line to ``log`` per run."""
    threading.Thread(target=time.sleep, args=(60,), name="dask-leaked-poller", daemon=True).start()
    if log:
        append(log, os.getpid())
    return write_pid(pidfile)


def listen_tcp() -> None:
    """Listen on a loopback TCP port (the firewall refuses it in a job)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen()
    finally:
        s.close()


def listen_tcp_ok() -> bool:
    """Listen on a loopback TCP port and say whether that worked (run outside jobs)."""
    listen_tcp()
    return True


def default_timeout(_: Any = None) -> Any:
    return socket.getdefaulttimeout()


def set_default_timeout(seconds: float) -> Any:
    socket.setdefaulttimeout(seconds)
    return socket.getdefaulttimeout()


def exit_hard(pidfile: str) -> None:
    """End the interpreter without returning (pitfall: sys-exit)."""
    write_pid(pidfile)
    os._exit(3)


def return_generator() -> Any:
    return (i for i in range(3))


def seen_from_inside() -> tuple:
    import cloudsim as cloud

    return cloud.running_on_cloud(), cloud.is_simulated(), cloud.connection_info()["connection_type"]


def uses_cloud_module() -> tuple:
    """PiCloud code says ``import cloud``; inside a job that must work."""
    import cloud

    return cloud.running_on_cloud(), cloud.call is not None


# ------------------------------------------------------------------ helpers


def wait_path(path: Path, what: str) -> None:
    wait_until(path.exists, f"{what} ({path})")


def wait_status(cloud: Any, jid: int, status: str) -> None:
    wait_until(lambda: cloud.status(jid) == status, f"job {jid} to be {status!r}",
               on_fail=lambda: f"it is {cloud.status(jid)!r}")


def alive(pid: int) -> bool:
    """True while the process ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_pid(path: Path) -> int:
    wait_path(path, "the job's pid file")
    return int(path.read_text())


def failure(cloud: Any, jid: int) -> CloudException:
    """The CloudException ``result`` raises for a job that fails."""
    with pytest.raises(CloudException) as info:
        cloud.result(jid, timeout=WAIT)
    assert not isinstance(info.value, CloudTimeoutError), f"job {jid} did not finish: {info.value}"
    return info.value


def load_module(name: str) -> Any:
    """Import the module ``name`` from ``sys.path``, as ``import name`` would (and without a dynamic-import site)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pids_of_all_workers(cloud: Any, tmp_path: Path) -> Set[int]:
    """Run one held job per worker (cap = worker count) and return their pids: every worker must serve one."""
    gate = tmp_path / f"all-{uuid.uuid4().hex[:6]}.gate"
    pidfiles = [tmp_path / f"all-{uuid.uuid4().hex[:6]}.pid" for _ in range(N_WORKERS)]
    jids = [cloud.call(pid_then_hold, str(p), str(gate)) for p in pidfiles]
    try:
        pids = {read_pid(p) for p in pidfiles}
    finally:
        gate.touch()
    assert sorted(cloud.result(jids, timeout=WAIT)) == sorted(pids)
    return pids


class ExternalCluster:
    """A Dask cluster this module started itself, which cloudsim only reaches by address."""

    def __init__(self, launcher: Any, address: str, client: Any) -> None:
        self.launcher = launcher
        self.address = address
        self.client = client  # a plain distributed.Client, no cloudsim in between

    def pids(self) -> List[int]:
        """The launcher, scheduler, nannies and workers."""
        return self.launcher.pids()

    def worker_pids(self) -> Dict[str, int]:
        """Worker address -> pid, asked of each worker."""
        return self.client.run(os.getpid)

    def settle(self) -> None:
        """Wait until all workers are up and answer (a test may have had one replaced)."""
        def ready() -> bool:
            try:
                pids = self.client.run(os.getpid, on_error="return")
            except Exception:
                return False
            return len(pids) == N_WORKERS and all(isinstance(p, int) and alive(p) for p in pids.values())

        wait_until(ready, f"{N_WORKERS} Dask workers to be up")

    def assert_usable(self) -> None:
        """The cluster still runs plain Dask work."""
        assert self.launcher.proc is not None and self.launcher.proc.poll() is None, "the cluster's launcher exited"
        assert self.client.submit(sum, [1, 2, 3], pure=False).result(timeout=WAIT) == 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    """The module's Dask cluster (4 one-thread workers), stopped at the end of the module."""
    from cloudsim.dask.cluster import LocalDaskCluster

    root = tmp_path_factory.mktemp("dask-cluster")
    launcher = LocalDaskCluster(N_WORKERS, str(root / "cluster.log"))
    address = launcher.start(120.0)
    client = None
    try:
        client = distributed.Client(address, set_as_default=False, timeout=WAIT)
        client.wait_for_workers(N_WORKERS, timeout=WAIT)
        yield ExternalCluster(launcher, address, client)
    finally:
        cloudsim.close()
        if client is not None:
            client.close()
        launcher.close()


@pytest.fixture
def start(cluster: ExternalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """start(**settings): cloudsim on the module's cluster (by address) for this test; closed after it.

    Closing must leave the cluster running: checked after every test.
    """
    root = str(tmp_path_factory.getbasetemp() / "dask-server")

    def _start(restart_workers: bool = False, **settings: Any) -> Any:
        settings.setdefault("server_root", root)
        settings.setdefault("max_concurrent_jobs", N_WORKERS)
        cluster.settle()
        cloudsim.start_dask(address=cluster.address, restart_workers=restart_workers, **settings)
        return cloudsim

    try:
        yield _start
    finally:
        cloudsim.close()
        cluster.assert_usable()


# ------------------------------------------------------------------ basics


def test_call_result_map_and_jids(start: Callable) -> None:
    """call/result and map work; jids are ints from one counter, increasing."""
    cloud = start()
    jid = cloud.call(square, 7)
    assert type(jid) is int
    assert cloud.result(jid, timeout=WAIT) == 49
    jids = cloud.map(square, range(10))
    assert all(type(j) is int for j in jids)
    assert jids == sorted(jids) and len(set(jids)) == 10 and jids[0] > jid
    assert cloud.result(jids, timeout=WAIT) == [x * x for x in range(10)]
    assert cloud.call(square, 1) > jids[-1]


def test_iresult_yields_in_jid_order_not_finishing_order(start: Callable, tmp_path: Path) -> None:
    """iresult waits for the first job even when later ones finished first."""
    cloud = start()
    gate = tmp_path / "gate"
    first = cloud.call(held, str(gate), "first")
    rest = cloud.map(square, [2, 3])
    cloud.join(rest, timeout=WAIT)
    assert cloud.status(first) == "processing"
    it = cloud.iresult([first] + rest, timeout=0.3)
    with pytest.raises(CloudTimeoutError):
        next(it)  # the later jobs are done, but the first is not: nothing may come out yet
    gate.touch()
    assert list(cloud.iresult([first] + rest, timeout=WAIT)) == ["first", 4, 9]


def test_join_with_timeout_raises_cloud_timeout_error(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    gate = tmp_path / "gate"
    jid = cloud.call(held, str(gate), "late")
    with pytest.raises(CloudTimeoutError):
        cloud.join(jid, timeout=0.3)
    assert cloud.status(jid) == "processing", "a join that timed out does not touch the job"
    gate.touch()
    cloud.join(jid, timeout=WAIT)
    assert cloud.result(jid) == "late"


def test_every_status_and_finished(start: Callable, tmp_path: Path) -> None:
    """queued, waiting, processing, done, error, killed and stalled, under a cap of 1."""
    cloud = start(max_concurrent_jobs=1)
    failed = cloud.call(fail)
    assert "boom" in str(failure(cloud, failed))
    stalled = cloud.call(square, 2, _depends_on=failed)
    done = cloud.call(square, 3)
    assert cloud.result(done, timeout=WAIT) == 9
    gate, started, never = tmp_path / "gate", tmp_path / "started", tmp_path / "never-ran"
    processing = cloud.call(held, str(gate), "held", started=str(started))
    wait_path(started, "the held job never started")
    killed = cloud.call(append, str(never), "ran")
    queued = cloud.call(square, 4)
    waiting = cloud.call(square, 5, _depends_on=[processing])
    cloud.kill(killed)
    expected = {failed: "error", stalled: "stalled", done: "done", processing: "processing",
                killed: "killed", queued: "queued", waiting: "waiting"}
    assert dict(zip(expected, cloud.status(list(expected)))) == expected
    assert cloud.finished(done) is True
    assert cloud.finished(processing) is False
    assert cloud.finished([failed, stalled, killed], ignore_errors=True) is True
    with pytest.raises(CloudException):
        cloud.finished(failed)
    gate.touch()
    assert cloud.result([processing, queued, waiting], timeout=WAIT) == ["held", 16, 25]
    # the killed job sat ahead of `queued` in a queue of one slot: had it run, it would have run first
    assert not never.exists(), "a job killed while queued must never run"
    assert cloud.status(killed) == "killed"


def test_info_captures_output_runtime_and_pitfalls(start: Callable) -> None:
    """stdout/stderr hold what the job printed and what it wrote to fds 1 and 2."""
    cloud = start()
    jid = cloud.call(chatty)
    assert cloud.result(jid, timeout=WAIT) == "ok"
    info = cloud.info(jid, ["stdout", "stderr", "runtime", "pitfalls", "status"])[jid]
    assert "printed to stdout" in info["stdout"] and "written to fd 1" in info["stdout"]
    assert "printed to stderr" in info["stderr"] and "written to fd 2" in info["stderr"]
    assert "stderr" not in info["stdout"] and "stdout" not in info["stderr"]
    assert isinstance(info["runtime"], float) and info["runtime"] > 0
    assert info["pitfalls"] == []
    assert info["status"] == "done"
    # the next job's output is its own
    other = cloud.call(square, 2)
    cloud.join(other, timeout=WAIT)
    assert "printed" not in cloud.info(other, ["stdout"])[other]["stdout"]


def test_delete_then_lookup_raises(start: Callable) -> None:
    cloud = start()
    jid = cloud.call(square, 5)
    assert cloud.result(jid, timeout=WAIT) == 25
    cloud.delete(jid)
    for lookup in (cloud.status, cloud.result, cloud.info):
        with pytest.raises(CloudException) as info:
            lookup(jid)
        assert "Does not exist" in str(info.value)


# ------------------------------------------------------------------ dependencies, priority, the cap


def test_depends_on_waits_then_runs_after(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    gate, log = tmp_path / "gate", tmp_path / "log"
    first = cloud.call(held, str(gate), "first", str(log))
    second = cloud.call(append, str(log), "second", _depends_on=first)
    wait_status(cloud, second, "waiting")
    wait_status(cloud, first, "processing")
    assert cloud.status(second) == "waiting"
    gate.touch()
    assert cloud.result(second, timeout=WAIT) == "second"
    assert cloud.status([first, second]) == ["done", "done"]
    assert log.read_text().split() == ["first", "second"]


def test_depends_on_errors_abort_stalls_and_ignore_runs(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    gate = tmp_path / "gate"
    parent = cloud.call(held_then_fail, str(gate))
    aborted = cloud.call(square, 3, _depends_on=parent)  # 'abort' is the default
    ignored = cloud.call(square, 4, _depends_on=parent, _depends_on_errors="ignore")
    assert cloud.status([aborted, ignored]) == ["waiting", "waiting"]
    gate.touch()
    assert cloud.result(ignored, timeout=WAIT) == 16
    assert cloud.status(parent) == "error"
    assert cloud.status(aborted) == "stalled"
    assert "dependency" in str(failure(cloud, aborted))


def test_priority_orders_the_queue(start: Callable, tmp_path: Path) -> None:
    """Under a cap of 1, queued jobs run best (lowest) _priority first, first come first within one."""
    cloud = start(max_concurrent_jobs=1)
    gate, started, log = tmp_path / "gate", tmp_path / "started", tmp_path / "log"
    blocker = cloud.call(held, str(gate), started=str(started))
    wait_path(started, "the blocker never started")
    priorities = [5, 1, 9, 3, 1, 7]
    jids = [cloud.call(append, str(log), f"p{p}-{i}", _priority=p) for i, p in enumerate(priorities)]
    assert set(cloud.status(jids)) == {"queued"}
    gate.touch()
    cloud.join([blocker] + jids, timeout=WAIT)
    order = sorted(range(len(priorities)), key=lambda i: (priorities[i], i))
    assert log.read_text().split() == [f"p{priorities[i]}-{i}" for i in order]


def test_max_concurrent_jobs_is_never_exceeded(start: Callable, tmp_path: Path) -> None:
    """With 4 Dask workers and max_concurrent_jobs=2, at most 2 jobs ever run at once (and 2 do)."""
    cloud = start(max_concurrent_jobs=2)
    assert cloud.connection_info()["num_procs"] == 2
    jids = [cloud.call(interval, str(tmp_path), i, 2) for i in range(8)]
    assert cloud.result(jids, timeout=WAIT) == list(range(8))
    spans = [tuple(map(float, p.read_text().split())) for p in tmp_path.glob("*.interval")]
    assert len(spans) == 8
    most = max(sum(1 for s, e in spans if s <= start_ < e) for start_, _ in spans)
    assert most == 2, f"{most} jobs overlapped: {sorted(spans)}"


def test_the_cap_holds_when_the_cluster_gains_a_worker(start: Callable, cluster: ExternalCluster,
                                                       tmp_path: Path) -> None:
    """Jobs wait in Dask's queue while the cluster's threads equal the cap. A worker that joins while every
    slot is taken picks one of them up: it must not start (a fifth job at once); it goes back to cloudsim's
    queue, and from then on Dask gets no more jobs than there are free slots."""
    cloud = start()  # max_concurrent_jobs = N_WORKERS = the cluster's threads
    assert cloud.connection_info()["dask_queue_ahead"] > 0
    gate, log = tmp_path / "gate", tmp_path / "log"
    starts = [tmp_path / f"started-{i}" for i in range(N_WORKERS)]
    busy = [cloud.call(held, str(gate), i, str(log), started=str(p)) for i, p in enumerate(starts)]
    extra = None
    try:
        for p in starts:
            wait_path(p, "a job holding a slot")
        queued = [cloud.call(append, str(log), f"queued-{i}") for i in range(N_WORKERS)]
        extra = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.address,
                                  "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: cloud.connection_info()["dask_queue_ahead"] == 0,
                   "the joining worker to be refused a job (the cap is full)")
        assert cloud.status(queued) == ["queued"] * N_WORKERS
        assert not log.exists(), "a job ran while max_concurrent_jobs jobs were running"
    finally:
        gate.touch()
        if extra is not None:
            extra.terminate()
            extra.wait(WAIT)
    assert cloud.result(busy + queued, timeout=WAIT) == list(range(N_WORKERS)) + [f"queued-{i}" for i in range(N_WORKERS)]
    wait_until(lambda: len(cluster.client.scheduler_info(n_workers=-1)["workers"]) == N_WORKERS,
               "the extra worker to leave")


def test_effective_cap_is_the_smaller_of_setting_and_worker_threads(start: Callable) -> None:
    cloud = start(max_concurrent_jobs=16)
    info = cloud.connection_info()
    assert info["dask_slots"] == N_WORKERS
    assert info["num_procs"] == N_WORKERS


# ------------------------------------------------------------------ kill, _max_runtime

STOPPED = 10.0  # seconds for a stopped job's worker process to end; only a job left running reaches it


def test_a_job_queued_in_dask_is_queued_and_once_killed_never_runs(start: Callable, tmp_path: Path) -> None:
    """With every worker busy, the next job waits in Dask's queue: 'queued' (no slot), and kill means it never runs."""
    cloud = start()
    gate, log = tmp_path / "gate", tmp_path / "log"
    starts = [tmp_path / f"started-{i}" for i in range(N_WORKERS)]
    busy = [cloud.call(held, str(gate), started=str(p)) for p in starts]
    try:
        for p in starts:
            wait_path(p, "a job holding a worker")
        queued = cloud.call(append, str(log), "ran")
        later = cloud.call(append, str(log), "later")
        assert cloud.status([queued, later]) == ["queued", "queued"]
        cloud.kill(queued)
        assert cloud.status(queued) == "killed"
    finally:
        gate.touch()
    assert cloud.result(later, timeout=WAIT) == "later"
    cloud.join(busy, timeout=WAIT)
    assert log.read_text().split() == ["later"], "the job killed while queued ran anyway"


def test_kill_of_a_processing_job_finishes_it_as_killed(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile, gate = tmp_path / "job.pid", tmp_path / "gate"
    jid = cloud.call(pid_then_hold, str(pidfile), str(gate))
    try:
        read_pid(pidfile)
        cloud.kill(jid)
        assert cloud.status(jid) == "killed"
        assert "Killed by cloud.kill() while processing" in str(failure(cloud, jid))
        assert cloud.result(cloud.call(square, 5), timeout=WAIT) == 25
    finally:
        gate.touch()  # let the job end if its worker was not
    assert cloud.status(jid) == "killed", "a killed job stays killed"


def test_kill_of_a_processing_job_replaces_its_worker(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile, gate = tmp_path / "job.pid", tmp_path / "gate"
    jid = cloud.call(pid_then_hold, str(pidfile), str(gate))
    try:
        old = read_pid(pidfile)
        cloud.kill(jid)
        wait_until(lambda: not alive(old), f"the killed job's worker (pid {old}) to end", timeout=STOPPED)
        pids = pids_of_all_workers(cloud, tmp_path)  # the replacement serves jobs too
        assert len(pids) == N_WORKERS and old not in pids
    finally:
        gate.touch()


def test_max_runtime_kills_a_job_that_runs_too_long(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile, gate = tmp_path / "job.pid", tmp_path / "gate"
    jid = cloud.call(pid_then_hold, str(pidfile), str(gate), _max_runtime=0.01)
    try:
        read_pid(pidfile)
        text = str(failure(cloud, jid))
        assert cloud.status(jid) == "killed"
        assert "_max_runtime" in text and "(pitfall: max-runtime)" in text
        assert cloud.result(cloud.call(square, 6), timeout=WAIT) == 36
    finally:
        gate.touch()


def test_max_runtime_ends_the_worker_of_the_job(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile, gate = tmp_path / "job.pid", tmp_path / "gate"
    jid = cloud.call(pid_then_hold, str(pidfile), str(gate), _max_runtime=0.01)
    try:
        old = read_pid(pidfile)
        failure(cloud, jid)
        wait_until(lambda: not alive(old), f"the worker of the job past its runtime (pid {old}) to end",
                   timeout=STOPPED)
    finally:
        gate.touch()


# ------------------------------------------------------------------ recursion


def test_recursive_fib_finishes_with_enough_slots(start: Callable) -> None:
    """fib(3) blocks at most 2 jobs at once: with 4 slots the third always makes progress."""
    cloud = start()
    assert cloud.result(cloud.call(fib, 3), timeout=WAIT) == 3


def test_recursive_fib_deadlocks_under_a_small_cap_and_says_so(start: Callable) -> None:
    cloud = start(max_concurrent_jobs=2)
    jid = cloud.call(fib, 5)
    error = failure(cloud, jid)  # a detected deadlock, not our timeout
    text = str(error)
    assert "CloudDeadlockError" in text
    assert "max_concurrent_jobs=2" in text
    assert "_depends_on" in text
    assert cloud.status(jid) == "error"


# ------------------------------------------------------------------ the job's interpreter


def test_leaked_thread_is_a_pitfall_and_the_worker_is_replaced(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile, runs = tmp_path / "job.pid", tmp_path / "runs.log"
    jid = cloud.call(leak_a_thread, str(pidfile), str(runs))
    with pytest.warns(cloudsim.LeakedThreadsWarning, match="dask-leaked-poller"):
        old = cloud.result(jid, timeout=WAIT)
    assert cloud.status(jid) == "done", "the result is delivered: the leak is the job's pitfall, not its error"
    info = cloud.info(jid, ["pitfalls", "stderr"])[jid]
    assert [p["id"] for p in info["pitfalls"]] == ["leaked-threads"]
    assert "dask-leaked-poller" in info["stderr"]
    wait_until(lambda: not alive(old), f"the leaking job's worker (pid {old}) to end")
    pids = pids_of_all_workers(cloud, tmp_path)
    assert len(pids) == N_WORKERS and old not in pids
    assert runs.read_text().split() == [str(old)], "the job ran once: its lost result is not computed again"


def test_listen_is_refused_and_dask_keeps_working(start: Callable, cluster: ExternalCluster) -> None:
    """no-listen applies to the job; the workers' own code (and plain Dask work) may still listen."""
    cloud = start()
    error = failure(cloud, cloud.call(listen_tcp))
    assert error.exc_type == "PermissionError"
    assert "firewall" in str(error)
    assert "(pitfall: no-listen)" in str(error)
    assert set(cluster.client.run(listen_tcp_ok).values()) == {True}, "Dask's own side is not firewalled"
    assert cloud.result(cloud.map(square, range(8)), timeout=WAIT) == [x * x for x in range(8)]
    cluster.assert_usable()


def test_network_timeout_is_30_s_in_every_job(start: Callable, cluster: ExternalCluster) -> None:
    """A job sees 30 s; one that changes it does not change it for the next job; Dask keeps working."""
    cloud = start()
    assert cloud.result(cloud.call(default_timeout), timeout=WAIT) == 30.0
    assert cloud.result(cloud.map(set_default_timeout, [2.5] * N_WORKERS), timeout=WAIT) == [2.5] * N_WORKERS
    assert cloud.result(cloud.map(default_timeout, range(2 * N_WORKERS)), timeout=WAIT) == [30.0] * (2 * N_WORKERS)
    cluster.assert_usable()
    assert socket.getdefaulttimeout() is None, "the client's default is not touched"


def test_network_timeout_outside_jobs_is_what_it_was(start: Callable, cluster: ExternalCluster) -> None:
    """Outside jobs (plain Dask work on the same workers) the default socket timeout stays the worker's own."""
    cloud = start(restart_workers=True)
    before = cluster.client.run(socket.getdefaulttimeout)
    assert cloud.result(cloud.map(default_timeout, range(2 * N_WORKERS)), timeout=WAIT) == [30.0] * (2 * N_WORKERS)
    assert cluster.client.run(socket.getdefaulttimeout) == before


def test_os_exit_is_an_error_and_the_next_job_works(start: Callable, tmp_path: Path) -> None:
    cloud = start()
    pidfile = tmp_path / "job.pid"
    jid = cloud.call(exit_hard, str(pidfile))
    old = read_pid(pidfile)
    text = str(failure(cloud, jid))
    assert cloud.status(jid) == "error"
    assert "interpreter died" in text
    assert "sys-exit" in text
    wait_until(lambda: not alive(old), f"the exited worker (pid {old}) to be gone")
    pids = cloud.result(cloud.map(getpid, range(2 * N_WORKERS)), timeout=WAIT)
    assert old not in pids


def test_unpicklable_result_is_an_error_that_explains(start: Callable) -> None:
    cloud = start()
    jid = cloud.call(return_generator)
    error = failure(cloud, jid)
    assert cloud.status(jid) == "error"
    assert error.exc_type == "PicklingError"
    assert "could not be pickled" in str(error) and "generator" in str(error)
    assert cloud.result(cloud.call(square, 3), timeout=WAIT) == 9


def test_connection_info_and_what_a_job_sees(start: Callable, cluster: ExternalCluster) -> None:
    cloud = start()
    info = cloud.connection_info()
    assert info["connection_type"] == "dask"
    assert info["scheduler_address"] == cluster.address
    assert info["local_cluster"] is False
    assert cloud.is_simulated() is False
    assert cloud.running_on_cloud() is False
    assert cloud.result(cloud.call(seen_from_inside), timeout=WAIT) == (True, False, "dask")
    assert cloud.result(cloud.call(cloudsim.running_on_cloud), timeout=WAIT) is True


def test_import_cloud_works_inside_a_job(start: Callable) -> None:
    cloud = start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client cannot import 'cloud' itself; the job can
        jid = cloud.call(uses_cloud_module)
    assert cloud.result(jid, timeout=WAIT) == (True, True)


# ------------------------------------------------------------------ shipping


def test_user_module_is_shipped_once_and_never_again(start: Callable, tmp_path: Path) -> None:
    """A module of the client's project reaches every worker; after an edit, jobs still run what was sent first."""
    cloud = start()
    name = f"dask_shipped_{uuid.uuid4().hex[:8]}"
    helper = f"{name}_helper"
    project = tmp_path / "project"
    project.mkdir()
    (project / f"{helper}.py").write_text("FACTOR = 10\n")
    (project / f"{name}.py").write_text(textwrap.dedent(f"""
        import {helper}

        def version(_=None):
            return 1 * {helper}.FACTOR
    """))
    sys.path.insert(0, str(project))
    try:
        mod = load_module(name)
        assert cloud.result(cloud.map(mod.version, range(2 * N_WORKERS)), timeout=WAIT) == [10] * (2 * N_WORKERS)
        (project / f"{name}.py").write_text(textwrap.dedent(f"""
            import {helper}

            def version(_=None):
                return 2 * {helper}.FACTOR
        """))
        later = time.time() + 5
        os.utime(project / f"{name}.py", (later, later))
        importlib.reload(mod)
        assert mod.version() == 20
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = cloud.result(cloud.map(mod.version, range(2 * N_WORKERS)), timeout=WAIT)
        assert got == [10] * (2 * N_WORKERS), "every worker must keep running the version sent first"
        snapshot_warnings = [w for w in caught if issubclass(w.category, cloudsim.ModuleSnapshotWarning)]
        assert snapshot_warnings and name in str(snapshot_warnings[0].message)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop(name, None)
        sys.modules.pop(helper, None)


# ------------------------------------------------------------------ starting and closing


def test_close_leaves_a_cluster_given_by_address_running(start: Callable, cluster: ExternalCluster) -> None:
    cloud = start()
    before = sorted(cluster.pids())
    workers = cluster.worker_pids()
    assert cloud.result(cloud.call(square, 4), timeout=WAIT) == 16
    cloud.close()
    assert sorted(cluster.pids()) == before
    assert all(alive(p) for p in before)
    assert cluster.worker_pids() == workers, "closing must not restart the workers either"
    cluster.assert_usable()


def test_close_stops_jobs_running_on_a_cluster_given_by_address(start: Callable, tmp_path: Path,
                                                                cluster: ExternalCluster) -> None:
    """A job still running at close() must not run on: its worker is replaced; the cluster stays."""
    cloud = start()
    pidfile, gate = tmp_path / "job.pid", tmp_path / "gate"
    cloud.call(pid_then_hold, str(pidfile), str(gate))
    try:
        old = read_pid(pidfile)
        cloud.close()
        wait_until(lambda: not alive(old), f"the worker of the job running at close (pid {old}) to end",
                   timeout=STOPPED)
        cluster.settle()
        assert old not in cluster.worker_pids().values()
        cluster.assert_usable()
    finally:
        gate.touch()


def test_restart_workers_gives_fresh_interpreters(start: Callable, cluster: ExternalCluster) -> None:
    before = set(cluster.worker_pids().values())
    cloud = start(restart_workers=True)
    after = set(cluster.worker_pids().values())
    assert len(after) == N_WORKERS and not before & after
    assert set(cloud.result(cloud.map(getpid, range(2 * N_WORKERS)), timeout=WAIT)) <= after


def test_bad_n_workers_is_refused_and_leaves_the_running_cloud(start: Callable) -> None:
    cloud = start()
    for bad in (0, -1, "x", 2.5, True):
        with pytest.raises(ValueError, match="n_workers"):
            cloudsim.start_dask(n_workers=bad)
    assert cloud.connection_info()["connection_type"] == "dask"
    assert cloud.result(cloud.call(square, 8), timeout=WAIT) == 64


def test_local_cluster_starts_and_close_leaves_no_process(cluster: ExternalCluster, tmp_path: Path) -> None:
    """Without an address start_dask starts its own cluster (n_workers = max_concurrent_jobs); close() ends it all."""
    cluster.settle()
    keep = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ValueError, match="n_workers"):
        cloudsim.start_dask(n_workers=0, server_root=str(tmp_path / "server"))
    cloudsim.start_dask(max_concurrent_jobs=2, server_root=str(tmp_path / "server"))
    try:
        info = cloudsim.connection_info()
        assert info["connection_type"] == "dask" and info["local_cluster"] is True
        assert info["dask_slots"] == 2 and info["num_procs"] == 2
        assert info["scheduler_address"] != cluster.address
        assert os.path.isfile(info["cluster_log"])
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
        assert started, "the local cluster runs in processes of its own"
        assert cloudsim.result(cloudsim.map(square, range(4)), timeout=WAIT) == [0, 1, 4, 9]
        job_pids = set(cloudsim.result(cloudsim.map(getpid, range(4)), timeout=WAIT))
        assert job_pids <= {p.pid for p in started}
    finally:
        cloudsim.close()
    left = wait_no_children(keep=tuple(keep | set(cluster.pids())))
    assert not left, "processes left behind by close():\n" + describe(left)
    cluster.assert_usable()


def test_missing_distributed_says_how_to_install_it(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["distributed"] = None  # as if it were not installed
        import cloudsim
        try:
            cloudsim.start_dask(server_root={str(tmp_path / "server")!r})
        except cloudsim.CloudException as exc:
            print("ERROR", type(exc).__name__, exc)
        else:
            print("STARTED")
        print("OPEN", cloudsim.connection_info()["opened"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR CloudException" in proc.stdout, proc.stdout + proc.stderr
    assert "pip install" in proc.stdout and "dask" in proc.stdout
    assert "OPEN False" in proc.stdout
