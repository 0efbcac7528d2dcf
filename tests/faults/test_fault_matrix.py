"""Fault matrix: what a job's crash at each stage does to the job, the client and the simulator.

Each case is a *stage* (where the fault happens) crossed with a *fault* (what
happens there), mapped to the job's final status and a regex its
``CloudException`` text must match, in the style of loky's ``crash_cases``
(``tests/test_reusable_executor.py``). The stages follow a job's trip::

    client pickles the call ─► worker unpickles it ─► job runs ─►
        worker pickles the result ─► client unpickles the result

Faults on the client's pickling side must fail ``call``/``map`` at once with a
``pickle.PicklingError`` subclass and create no job; every other fault must
end the job in ``error`` with a message that names what happened (a
``sys.exit`` says a job must return, a dead interpreter names its exit
status or signal), and must leave the simulator working: a job running at
the same time still returns its value, a later job runs, the dead worker is
reaped, and nothing outlives ``close()``.

Each crash case gets a simulator of its own (starting one costs a fraction
of a second): whether a second job gets a worker while one runs depends on
how many workers earlier tests left behind (see
``test_crash_while_another_job_runs``). The cases that need no concurrency
share one simulator for the module, restarted if a test replaced it.

The fault helpers are small picklable classes named for their fault
(``ExitAtUnpickle``, ``CrashAtPickle``, ...). They live in this module, which
is user code to cloudsim, so they travel to the workers by value.

Not for: timeouts, kills and ``_max_runtime`` (scheduling tests) or the
content of pitfall records.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import psutil
import pytest

import cloudsim
from cloudsim import CloudException, CloudPicklingError, CloudTimeoutError

from conftest import describe, wait_no_children

WAIT = 60.0  # seconds; only a hang reaches it

# --------------------------------------------------------------------------- faults in the job


def _no_core_dump() -> None:
    """A deliberate crash must not leave a core file in the worker's directory."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _segfault() -> None:
    _no_core_dump()
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def identity(x: Any) -> Any:
    return x


def add(a: int, b: int) -> int:
    return a + b


def return_instance(cls: type, *args: Any) -> Any:
    """Build the object in the job, so its pickling happens in the worker (the result stage)."""
    return cls(*args)


class RaiseInJob:
    """The job raises an ordinary exception."""

    def __call__(self) -> None:
        raise ValueError("boom from RaiseInJob")

    def __repr__(self) -> str:
        return "RaiseInJob()"


class KeyboardInterruptInJob:
    """The job raises a BaseException that is not an Exception."""

    def __call__(self) -> None:
        raise KeyboardInterrupt("interrupt from KeyboardInterruptInJob")

    def __repr__(self) -> str:
        return "KeyboardInterruptInJob()"


class SysExitInJob:
    """The job calls ``sys.exit(code)`` instead of returning."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __call__(self) -> None:
        sys.exit(self.code)

    def __repr__(self) -> str:
        return f"SysExitInJob({self.code})"


class OsExitInJob:
    """The job ends its interpreter with ``os._exit(code)``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __call__(self) -> None:
        os._exit(self.code)

    def __repr__(self) -> str:
        return f"OsExitInJob({self.code})"


class SegfaultInJob:
    """The job crashes in C code (SIGSEGV)."""

    def __call__(self) -> None:
        _segfault()

    def __repr__(self) -> str:
        return "SegfaultInJob()"


class SigkillSelf:
    """The job's interpreter is SIGKILLed (as by the out-of-memory killer)."""

    def __call__(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(WAIT)  # never reached; SIGKILL is not delivered lazily

    def __repr__(self) -> str:
        return "SigkillSelf()"


class UnpicklableResult:
    """The job returns something that cannot be pickled: a lock or a generator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self) -> Any:
        if self.kind == "lock":
            return threading.Lock()
        return (i for i in range(3))

    def __repr__(self) -> str:
        return f"UnpicklableResult({self.kind!r})"


# ----------------------------------------------------------------- faults while (un)pickling


class RaiseAtUnpickle:
    """An argument whose unpickling raises ImportError in the worker (its module is not there)."""

    def __reduce__(self) -> tuple:
        return (importlib.import_module, ("cloudsim_fault_no_such_module",))


class SysExitAtUnpickle:
    """An argument whose unpickling raises SystemExit in the worker."""

    def __reduce__(self) -> tuple:
        return (sys.exit, (4,))


class ExitAtUnpickle:
    """An argument whose unpickling calls ``os._exit`` in the worker."""

    def __init__(self, code: int = 5) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (os._exit, (self.code,))


class SegfaultAtUnpickle:
    """An argument whose unpickling crashes the worker with SIGSEGV."""

    def __reduce__(self) -> tuple:
        return (_segfault, ())


class CrashAtPickle:
    """An object whose ``__reduce__`` raises: it cannot be pickled where it is sent from."""

    def __init__(self, *args: Any) -> None:
        pass

    def __reduce__(self) -> tuple:
        raise RuntimeError("CrashAtPickle refuses to be pickled")


class SysExitAtPickle:
    """A result whose pickling in the worker raises SystemExit."""

    def __reduce__(self) -> tuple:
        raise SystemExit(12)


class ExitAtPickle:
    """A result whose pickling in the worker calls ``os._exit``."""

    def __reduce__(self) -> tuple:
        os._exit(11)


class SegfaultAtPickle:
    """A result whose pickling in the worker crashes it with SIGSEGV."""

    def __reduce__(self) -> tuple:
        _segfault()
        return (int, ())  # never reached


class ResultFailsToUnpickleOnClient:
    """A result the worker pickles fine but the client cannot rebuild (its module exists only on the server)."""

    def __reduce__(self) -> tuple:
        return (importlib.import_module, ("cloudsim_fault_server_only_module",))


# ---------------------------------------------------------------------------- the matrix

_DIED = r"The job's interpreter died while running it: "
_REPLACED = r".*The simulator replaced the interpreter; other jobs are not affected\."
_DEPICKLE = r"Could not depickle job: "
_RESULT_PICKLE = r"The return value of .*could not be pickled to travel back to the client: "

# (stage, job function, its arguments, final status, regex for the text after "Job N: ")
crash_cases = [
    # the job's function or arguments cannot be rebuilt in the worker
    pytest.param("unpickle-job", identity, (RaiseAtUnpickle(),), "error",
                 _DEPICKLE + r"ModuleNotFoundError: No module named 'cloudsim_fault_no_such_module'"
                 r".*pitfall: could-not-depickle", id="unpickle-job-ImportError"),
    pytest.param("unpickle-job", identity, (SysExitAtUnpickle(),), "error",
                 _DEPICKLE + r"SystemExit: 4", id="unpickle-job-SystemExit"),
    pytest.param("unpickle-job", identity, (ExitAtUnpickle(5),), "error",
                 _DIED + r"exited with status 5" + _REPLACED, id="unpickle-job-os._exit"),
    pytest.param("unpickle-job", identity, (SegfaultAtUnpickle(),), "error",
                 _DIED + r"killed by SIGSEGV" + _REPLACED, id="unpickle-job-SIGSEGV"),
    # the job itself fails
    pytest.param("run", RaiseInJob(), (), "error",
                 r"Traceback \(most recent call last\):.*ValueError: boom from RaiseInJob",
                 id="run-raise"),
    pytest.param("run", KeyboardInterruptInJob(), (), "error",
                 r"Traceback \(most recent call last\):.*KeyboardInterrupt: interrupt from KeyboardInterruptInJob",
                 id="run-KeyboardInterrupt"),
    pytest.param("run", SysExitInJob(3), (), "error",
                 r"Job called sys\.exit\(3\) in .*: a job must return its result, never exit\..*pitfall: sys-exit",
                 id="run-sys.exit"),
    pytest.param("run", OsExitInJob(7), (), "error",
                 _DIED + r"exited with status 7" + _REPLACED, id="run-os._exit"),
    pytest.param("run", SegfaultInJob(), (), "error",
                 _DIED + r"killed by SIGSEGV \(segmentation fault" + _REPLACED, id="run-SIGSEGV"),
    pytest.param("run", SigkillSelf(), (), "error",
                 _DIED + r"killed by SIGKILL" + _REPLACED, id="run-SIGKILL"),
    # the result cannot be pickled in the worker
    pytest.param("pickle-result", UnpicklableResult("lock"), (), "error",
                 _RESULT_PICKLE + r"TypeError: cannot pickle '_thread\.lock' object.*pitfall: unpicklable",
                 id="pickle-result-lock"),
    pytest.param("pickle-result", UnpicklableResult("generator"), (), "error",
                 _RESULT_PICKLE + r"TypeError: cannot pickle 'generator' object.*pitfall: unpicklable",
                 id="pickle-result-generator"),
    pytest.param("pickle-result", return_instance, (CrashAtPickle,), "error",
                 _RESULT_PICKLE + r"RuntimeError: CrashAtPickle refuses to be pickled", id="pickle-result-raise"),
    pytest.param("pickle-result", return_instance, (SysExitAtPickle,), "error",
                 _RESULT_PICKLE + r"SystemExit: 12", id="pickle-result-SystemExit"),
    pytest.param("pickle-result", return_instance, (ExitAtPickle,), "error",
                 _DIED + r"exited with status 11" + _REPLACED, id="pickle-result-os._exit"),
    pytest.param("pickle-result", return_instance, (SegfaultAtPickle,), "error",
                 _DIED + r"killed by SIGSEGV" + _REPLACED, id="pickle-result-SIGSEGV"),
    # the client cannot rebuild the result
    pytest.param("unpickle-result", return_instance, (ResultFailsToUnpickleOnClient,), "error",
                 r"The result of job \d+ could not be unpickled on the client: ModuleNotFoundError: "
                 r"No module named 'cloudsim_fault_server_only_module'", id="unpickle-result-ImportError"),
]

# Faults while the client pickles the call: (how to submit, regex of the PicklingError text)
pickle_cases = [
    pytest.param(lambda c: c.call(identity, CrashAtPickle()), r"CrashAtPickle refuses to be pickled",
                 id="call-arg-raises"),
    pytest.param(lambda c: c.call(identity, x=CrashAtPickle()), r"CrashAtPickle refuses to be pickled",
                 id="call-kwarg-raises"),
    pytest.param(lambda c: c.call(identity, threading.Lock()), r"lock", id="call-arg-lock"),
    pytest.param(lambda c: c.map(identity, [1, 2, CrashAtPickle()]), r"CrashAtPickle refuses to be pickled",
                 id="map-third-element-raises"),
]


# ---------------------------------------------------------------------------- fixtures


class _Shared:
    """The module's simulator; restarted if another fixture replaced it in between."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.sim: Any = None

    def get(self) -> Any:
        if self.sim is None or cloudsim.client._cloud is not self.sim:
            cloudsim.start_simulator(force_restart=True, server_root=self.root, max_concurrent_jobs=4)
            self.sim = cloudsim.client._cloud
        return cloudsim


@pytest.fixture(scope="module")
def _shared_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Shared]:
    shared = _Shared(str(tmp_path_factory.getbasetemp() / "server"))
    yield shared
    cloudsim.close()
    left = wait_no_children()
    for p in left:  # end what the simulator left, then fail loudly
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, "processes outlived the fault matrix's simulator:\n" + describe(left)


@pytest.fixture
def sim(_shared_simulator: _Shared) -> Any:
    """The cloudsim module, with the module's simulator (cap 4) running."""
    return _shared_simulator.get()


# ---------------------------------------------------------------------------- helpers


def wait_for_file(path: str, value: Any) -> Any:
    """A bystander job: runs until ``path`` exists, then returns ``value``."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return value


def _wait_status(cloud: Any, jid: int, wanted: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while cloud.status(jid) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"job {jid} never reached {wanted!r}; it is {cloud.status(jid)!r}; "
                        f"simulator processes:\n{describe([psutil.Process(p) for p in cloud.client._simulator_pids()])}")
        time.sleep(0.02)


def _dead_processes(timeout: float = 10.0) -> List[str]:
    """Poll until every process the simulator lists is alive and the server has no zombie child."""
    deadline = time.monotonic() + timeout
    while True:
        problems = []
        pids = cloudsim.client._simulator_pids()
        for pid in pids:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    problems.append(f"pid {pid} is a zombie")
            except psutil.NoSuchProcess:
                problems.append(f"pid {pid} is listed but gone")
        if pids:
            try:
                for child in psutil.Process(pids[0]).children():
                    if child.status() == psutil.STATUS_ZOMBIE:
                        problems.append(f"server child {child.pid} is an unreaped zombie")
            except psutil.NoSuchProcess:
                problems.append("the server is gone")
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.05)


def _collect_failure(cloud: Any, jid: int) -> Tuple[CloudException, float]:
    t0 = time.monotonic()
    with pytest.raises(CloudException) as info:
        cloud.result(jid, timeout=WAIT)
    return info.value, time.monotonic() - t0


def hold(path: Optional[str], value: Any) -> Any:
    """Return ``value`` at once, or (with a ``path``) once that file exists: the bystander job."""
    if path is not None:
        wait_for_file(path, None)
    return value


def _start_bystander(cloud: Any, go: str, value: Any) -> int:
    """Start a job that runs until ``go`` exists, and leave one more worker idle beside it.

    Both are submitted in one ``map`` so the simulator starts two workers
    even though its scheduler only adds workers for jobs it sees ready at
    once (see ``test_crash_while_another_job_runs``).
    """
    bystander, warm = cloud.map(hold, [go, None], [value, "warm"])
    assert cloud.result(warm, timeout=WAIT) == "warm"
    _wait_status(cloud, bystander, "processing")
    return bystander


@pytest.fixture
def fresh(start: Callable, no_leaked_processes: None) -> Any:
    """A simulator (cap 4) of this test's own; after it is closed no child process may be left."""
    return start(max_concurrent_jobs=4)


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("stage, func, args, expected_status, pattern", crash_cases)
def test_crash_matrix(fresh: Any, tmp_path: Any, stage: str, func: Callable, args: tuple,
                      expected_status: str, pattern: str) -> None:
    """A fault at ``stage`` ends that job with ``expected_status`` and a message matching ``pattern``.

    And nothing else is hurt: a job running at the same time (the bystander)
    is still processing after the crash and returns its value, the next job
    runs, the simulator lists only live processes and the server reaps the
    dead worker; after close no process is left (``fresh``'s teardown).
    """
    cloud = fresh
    go = str(tmp_path / "go")
    bystander = _start_bystander(cloud, go, ("bystander", stage))

    jid = cloud.call(func, *args)
    exc, elapsed = _collect_failure(cloud, jid)
    assert not isinstance(exc, CloudTimeoutError), f"the failed job hung the client for {elapsed:.1f} s: {exc}"
    text = str(exc)
    assert text.startswith(f"Job {jid}: "), text
    assert re.match(pattern, text[len(f"Job {jid}: "):], re.DOTALL), f"{text!r}\n does not match\n{pattern!r}"
    assert exc.jid == jid
    assert exc.status == expected_status
    assert cloud.status(jid) == expected_status
    # asking again gives the same failure: the record is settled, not recomputed
    with pytest.raises(CloudException) as again:
        cloud.result(jid, timeout=WAIT)
    assert str(again.value) == text

    assert cloud.status(bystander) == "processing", "the crash disturbed a job running at the same time"
    open(go, "w").close()
    assert cloud.result(bystander, timeout=WAIT) == ("bystander", stage)
    assert cloud.result(cloud.call(add, 2, 3), timeout=WAIT) == 5
    problems = _dead_processes()
    assert not problems, "\n".join(problems)


def test_crash_while_another_job_runs(fresh: Any, tmp_path: Any) -> None:
    """The plain scenario: a slow job runs, another job is submitted and crashes, the slow one still returns.

    The crashing job must start (and fail) while the slow one is still
    running: the cap is 4, so nothing should make it wait.
    """
    cloud = fresh
    go = str(tmp_path / "go")
    slow = cloud.call(hold, go, "slow value")
    _wait_status(cloud, slow, "processing")
    jid = cloud.call(OsExitInJob(8))
    try:
        with pytest.raises(CloudException) as info:
            cloud.result(jid, timeout=WAIT / 2)
        assert not isinstance(info.value, CloudTimeoutError), (
            f"job {jid} is {cloud.status(jid)!r} while job {slow} is {cloud.status(slow)!r}")
        assert "exited with status 8" in str(info.value)
        assert cloud.status(slow) == "processing"
    finally:
        open(go, "w").close()
    assert cloud.result(slow, timeout=WAIT) == "slow value"


@pytest.mark.parametrize("submit, pattern", pickle_cases)
def test_pickle_fault_at_call_creates_no_job(sim: Any, submit: Callable, pattern: str) -> None:
    """A call whose data cannot be pickled fails at once with a PicklingError subclass and creates no job.

    No job: the jid handed out next is the one right after the jid handed
    out before the failed call.
    """
    cloud = sim
    before = cloud.call(add, 1, 1)
    with pytest.raises(pickle.PicklingError) as info:
        submit(cloud)
    assert isinstance(info.value, CloudPicklingError)
    assert isinstance(info.value, CloudException)
    assert re.search(pattern, str(info.value)), str(info.value)
    after = cloud.call(add, 2, 2)
    assert after == before + 1, f"the failed call used jids {before + 1}..{after - 1}"
    assert cloud.result([before, after], timeout=WAIT) == [2, 4]


def bare_raise_system_exit() -> None:
    raise SystemExit


def builtin_exit() -> None:
    exit("bye")  # noqa: F821 - site's exit(), which PiCloud's workers had


def sys_exit_zero() -> None:
    sys.exit(0)


@pytest.mark.parametrize("func, shown", [
    pytest.param(bare_raise_system_exit, "None", id="raise-SystemExit"),
    pytest.param(sys_exit_zero, "0", id="sys.exit(0)"),
    pytest.param(builtin_exit, "'bye'", id="exit()"),
])
def test_sys_exit_variants_all_say_return_not_exit(sim: Any, func: Callable, shown: str) -> None:
    """``raise SystemExit``, ``sys.exit(0)`` (even a 'successful' exit) and ``exit()`` each end the job in
    error with the sys-exit message, and the interpreter carries on."""
    jid = sim.call(func)
    exc, _ = _collect_failure(sim, jid)
    assert re.match(rf"Job {jid}: Job called sys\.exit\({re.escape(shown)}\) in .*{func.__name__}\(\): "
                    r"a job must return its result, never exit\.", str(exc)), str(exc)
    assert exc.exc_type == "SystemExit"
    assert sim.status(jid) == "error"
    assert sim.result(sim.call(add, 20, 22), timeout=WAIT) == 42


def test_crashed_job_never_hangs_the_client(sim: Any) -> None:
    """``result(jid, timeout=60)`` on a crashed job raises the crash well before the timeout, with no timeout error."""
    for fault in (OsExitInJob(9), SegfaultInJob(), SigkillSelf()):
        jid = sim.call(fault)
        exc, elapsed = _collect_failure(sim, jid)
        assert type(exc) is CloudException, f"{fault!r}: {type(exc).__name__}: {exc}"
        assert elapsed < WAIT / 2, f"{fault!r}: result() took {elapsed:.1f} s"


def write_pid_then_sleep(pid_file: str) -> None:
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)  # the reader never sees a half-written file
    time.sleep(WAIT)


def test_worker_killed_from_outside_names_the_signal(sim: Any, tmp_path: Any) -> None:
    """A worker SIGKILLed by someone else while its job runs: the job is ``error`` naming SIGKILL; the next job runs."""
    pid_file = str(tmp_path / "worker.pid")
    jid = sim.call(write_pid_then_sleep, pid_file)
    wait_for_file(pid_file, None)
    pid = int(open(pid_file).read())
    assert pid in sim.client._simulator_pids()
    os.kill(pid, signal.SIGKILL)  # the simulator's own worker, started for this test
    exc, _ = _collect_failure(sim, jid)
    assert re.match(rf"Job {jid}: {_DIED}killed by SIGKILL", str(exc)), str(exc)
    assert sim.status(jid) == "error"
    assert sim.result(sim.call(add, 1, 2), timeout=WAIT) == 3
    assert pid not in sim.client._simulator_pids()


# ------------------------------------------------------------- tests with their own simulator


def crash_at(i: int, bad: int, fault: Callable[[], None]) -> int:
    if i == bad:
        fault()
    return i * i


@pytest.mark.parametrize("fault, pattern", [
    pytest.param(OsExitInJob(6), r"exited with status 6", id="os._exit"),
    pytest.param(SegfaultInJob(), r"killed by SIGSEGV", id="SIGSEGV"),
    pytest.param(SigkillSelf(), r"killed by SIGKILL", id="SIGKILL"),
])
def test_crash_inside_a_batch_fails_only_that_job(start: Callable, no_leaked_processes: None,
                                                 fault: Callable, pattern: str) -> None:
    """A worker that dies with jobs queued behind it (a large backlog is handed out in batches) fails
    only the job it was running; the queued ones run elsewhere and every other result is right."""
    cloud = start(max_concurrent_jobs=2)
    n, bad = 40, 5
    jids = cloud.map(crash_at, range(n), [bad] * n, [fault] * n)
    t0 = time.monotonic()
    values = cloud.result(jids, timeout=WAIT, ignore_errors=True)
    assert time.monotonic() - t0 < WAIT
    for i, value in enumerate(values):
        if i == bad:
            assert isinstance(value, CloudException), value
            assert re.search(pattern, str(value)), str(value)
        else:
            assert value == i * i, (i, value)
    statuses = cloud.status(jids)
    assert statuses.count("error") == 1 and statuses[bad] == "error"
    assert statuses.count("done") == n - 1


class SpawnThenOsExit:
    """The job starts a long-running child process, writes its pid down, and ends its interpreter."""

    def __init__(self, pid_file: str) -> None:
        self.pid_file = pid_file

    def __call__(self) -> None:
        child = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        with open(self.pid_file, "w") as f:
            f.write(str(child.pid))
        os._exit(3)


def _still_running(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_crashed_jobs_children_do_not_outlive_close(start: Callable, tmp_path: Any) -> None:
    """A job that starts a subprocess and then dies: the subprocess dies with its interpreter.

    (The job's children share its interpreter's process group, which the server
    kills when it reaps the dead interpreter; nothing is left for ``close()``.)
    """
    cloud = start()
    pid_file = str(tmp_path / "child.pid")
    jid = cloud.call(SpawnThenOsExit(pid_file))
    exc, _ = _collect_failure(cloud, jid)
    assert "exited with status 3" in str(exc)
    child = int(open(pid_file).read())
    try:
        assert not _still_running(child, 10.0), f"the crashed job's child {child} outlived its interpreter"
    finally:
        try:  # end what the job started, if it is still that process
            proc = psutil.Process(child)
            if proc.is_running() and proc.cmdline() == ["sleep", "600"]:
                proc.kill()
        except psutil.Error:
            pass
