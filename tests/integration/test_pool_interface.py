"""``cloud.pool_interface``: multiprocessing.Pool's functions over real cloud jobs.

Each test drives ``apply``/``apply_async``/``map``/``map_async``/``imap``/
``imap_unordered`` and ``AsyncResult`` against a running simulator. Jobs whose
state a test must observe are held by a gate file the test creates (never by
timing luck), so the timeouts (which work here, unlike the original's) are
tested against jobs that certainly are not done.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import cloudsim
from cloudsim import CloudException, CloudTimeoutError
from cloudsim import pool_interface as pool

WAIT = 60.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ job functions (shipped by reference)
def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ZeroDivisionError(f"element {x}")
    return x


def fail_on_three(x: int) -> int:
    return fail_on(x, 3)


def held(gate: str, value: Any = "released") -> Any:
    """Wait until ``gate`` exists, then return ``value``."""
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return value


def held_square(arg: tuple) -> int:
    gate, x = arg
    if gate:
        held(gate)
    return x * x


def pool_inside_a_job(values: List[int]) -> tuple:
    """Runs in a job: pool_interface over the same cloud, from inside it."""
    from cloudsim import pool_interface

    async_result = pool_interface.apply_async(square, (7,))
    return pool_interface.map(square, values), async_result.get(timeout=60), list(pool_interface.imap(square, values, 2))


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A gate file path; opened (created) at the end of the test whatever happens, so no job stays held."""
    path = tmp_path / "gate"
    yield path
    path.touch()


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------ apply
def test_apply_runs_one_job(cloud: Any) -> None:
    """apply(func, args) returns func(*args), computed in a job."""
    assert pool.apply(add, (2, 3)) == 5
    assert pool.apply(square, [9]) == 81
    assert pool.apply(os.getpid) != os.getpid()


def test_apply_argument_rules(cloud: Any) -> None:
    """args must be a sequence (a str is refused); func must be callable."""
    with pytest.raises(TypeError, match="args"):
        pool.apply(square, "3")
    with pytest.raises(TypeError, match="args"):
        pool.apply(square, 3)
    with pytest.raises(TypeError, match="not callable"):
        pool.apply(42, ())


def test_apply_of_a_failing_job_raises_its_cloud_exception(cloud: Any) -> None:
    """A job's exception comes back as CloudException with the remote type and traceback."""
    with pytest.raises(CloudException) as info:
        pool.apply(fail_on, (3,))
    assert info.value.exc_type == "ZeroDivisionError"
    assert "element 3" in str(info.value)


# ------------------------------------------------------------------ AsyncResult
def test_apply_async_returns_at_once(cloud: Any, gate: Path) -> None:
    """apply_async returns before the job finishes; jid is the job's; ready()/successful() follow the job."""
    result = pool.apply_async(held, (str(gate), 11))
    assert isinstance(result.jid, int)
    assert cloudsim.status(result.jid) in ("queued", "processing")
    assert result.ready() is False
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    gate.touch()
    assert result.get(timeout=WAIT) == 11
    assert result.ready() is True
    assert result.successful() is True


def test_get_timeout_works(cloud: Any, gate: Path) -> None:
    """get(timeout=0.1) on an unfinished job raises CloudTimeoutError quickly; a later get() still collects it."""
    result = pool.apply_async(held, (str(gate), "late"))
    started = time.monotonic()
    with pytest.raises(CloudTimeoutError) as info:
        result.get(timeout=0.1)
    assert time.monotonic() - started < WAIT / 2, "the timeout was not honoured"
    assert not isinstance(info.value, multiprocessing.TimeoutError)
    assert cloudsim.status(result.jid) in ("queued", "processing"), "a timeout must not kill the job"
    gate.touch()
    assert result.get(timeout=WAIT) == "late"


def test_wait_timeout_returns_without_raising(cloud: Any, gate: Path) -> None:
    """wait(timeout) returns None after the timeout on an unfinished job; wait() returns once it is done."""
    result = pool.apply_async(held, (str(gate),))
    started = time.monotonic()
    assert result.wait(timeout=0.1) is None
    assert time.monotonic() - started < WAIT / 2
    assert not result.ready()
    gate.touch()
    assert result.wait() is None
    assert result.ready()


def test_failed_async_result(cloud: Any) -> None:
    """A failed job: wait() does not raise, ready() is True, successful() False, get() raises CloudException."""
    result = pool.apply_async(fail_on, (3,))
    result.wait(timeout=WAIT)
    assert result.ready() and result.successful() is False
    with pytest.raises(CloudException) as info:
        result.get(timeout=WAIT)
    assert info.value.exc_type == "ZeroDivisionError"


def test_get_keeps_the_value(cloud: Any) -> None:
    """Once collected, get() returns the value without asking the cloud again (even after the job is deleted)."""
    result = pool.apply_async(square, (6,))
    assert result.get(timeout=WAIT) == 36
    cloudsim.delete(result.jid)
    with pytest.raises(CloudException):
        cloudsim.result(result.jid)
    assert result.get() == 36


def test_apply_async_callback_receives_the_value(cloud: Any) -> None:
    """The callback gets the result value (as multiprocessing.Pool's), in another thread, without a get()."""
    got: List[Any] = []
    done = threading.Event()

    def callback(value: Any) -> None:
        got.append((value, threading.current_thread() is not threading.main_thread()))
        done.set()

    result = pool.apply_async(square, (12,), callback=callback)
    assert done.wait(WAIT), "the callback was never called"
    assert got == [(144, True)]
    thread = result._callback_thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive(), "the callback thread must end after the callback"


def test_callback_is_not_called_for_a_failed_job(cloud: Any) -> None:
    """As multiprocessing: no callback when the job fails; its thread still ends."""
    called: List[Any] = []
    result = pool.apply_async(fail_on, (3,), callback=called.append)
    result.wait(timeout=WAIT)
    assert result._callback_thread is not None
    result._callback_thread.join(WAIT)
    assert not result._callback_thread.is_alive()
    assert called == []


def test_non_callable_callback_is_refused_before_submitting(cloud: Any) -> None:
    """A callback that is not callable is a TypeError, and no job was created for it."""
    probe = cloudsim.call(square, 1)
    with pytest.raises(TypeError, match="callback"):
        pool.apply_async(square, (2,), callback="nope")
    with pytest.raises(TypeError, match="callback"):
        pool.map_async(square, [1], callback=3)
    assert cloudsim.call(square, 1) == probe + 1, "a job was submitted despite the bad callback"


# ------------------------------------------------------------------ map
def test_map_in_order(cloud: Any) -> None:
    """map returns [func(x) for x in iterable], one job per element, in order; a generator works."""
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert pool.map(square, (x for x in [3, 1, 2])) == [9, 1, 4]
    assert pool.map(square, []) == []


def test_map_one_job_per_element_by_default(cloud: Any) -> None:
    """Without chunksize every element is its own job (as the original)."""
    result = pool.map_async(square, range(5))
    assert len(result.jid) == 5
    assert result.get(timeout=WAIT) == [0, 1, 4, 9, 16]


def test_map_with_chunksize(cloud: Any) -> None:
    """chunksize=n sends n elements per job: ceil(len/n) jobs, the values flattened in order."""
    result = pool.map_async(square, range(10), chunksize=3)
    assert len(result.jid) == math.ceil(10 / 3)
    assert result.get(timeout=WAIT) == [x * x for x in range(10)]
    assert pool.map(square, range(7), chunksize=100) == [x * x for x in range(7)]


@pytest.mark.parametrize("chunksize,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                             (True, TypeError)])
def test_bad_chunksize(cloud: Any, chunksize: Any, error: type) -> None:
    """chunksize must be a positive int or None."""
    with pytest.raises(error, match="chunksize"):
        pool.map(square, [1, 2], chunksize)
    with pytest.raises(error, match="chunksize"):
        pool.imap(square, [1, 2], chunksize)


def test_map_with_a_failing_element(cloud: Any) -> None:
    """map raises the failed element's CloudException; map_async's successful() is False."""
    with pytest.raises(CloudException) as info:
        pool.map(fail_on_three, range(5))
    assert info.value.exc_type == "ZeroDivisionError"
    result = pool.map_async(fail_on_three, range(5))
    result.wait(timeout=WAIT)
    assert result.ready() and not result.successful()


def test_map_async_timeout_and_callback(cloud: Any, gate: Path) -> None:
    """map_async: get(timeout) raises while one element is held; the callback gets the whole list once all are done."""
    got: List[Any] = []
    done = threading.Event()
    args = [("", 1), (str(gate), 2), ("", 3)]
    result = pool.map_async(held_square, args, callback=lambda v: (got.append(v), done.set()))
    with pytest.raises(CloudTimeoutError):
        result.get(timeout=0.2)
    assert got == []
    gate.touch()
    assert result.get(timeout=WAIT) == [1, 4, 9]
    assert done.wait(WAIT)
    assert got == [[1, 4, 9]]


def test_empty_map_async(cloud: Any) -> None:
    """map_async over nothing is ready at once, successful, and gives []."""
    result = pool.map_async(square, [])
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == []
    assert result.wait(0) is None


# ------------------------------------------------------------------ imap
def test_imap_in_order(cloud: Any) -> None:
    """imap yields func(x) in order, with or without chunks; len() is the number of jobs."""
    it = pool.imap(square, range(6))
    assert len(it) == 6
    assert list(it) == [0, 1, 4, 9, 16, 25]
    chunked = pool.imap(square, range(7), chunksize=3)
    assert len(chunked) == 3
    assert list(chunked) == [x * x for x in range(7)]


def test_imap_next_timeout(cloud: Any, gate: Path) -> None:
    """imap's next(timeout) raises CloudTimeoutError while the next job is held, and iteration resumes after."""
    it = pool.imap(held_square, [("", 2), (str(gate), 3), ("", 4)])
    assert it.next(timeout=WAIT) == 4
    with pytest.raises(CloudTimeoutError, match="timed out"):
        it.next(timeout=0.1)
    gate.touch()
    assert list(it) == [9, 16]


def test_imap_failure_raises_in_place_and_iteration_goes_on(cloud: Any) -> None:
    """A failed element raises its CloudException at its place; the elements after it still come."""
    it = pool.imap(fail_on_three, range(5))
    assert [next(it), next(it), next(it)] == [0, 1, 2]
    with pytest.raises(CloudException):
        next(it)
    assert list(it) == [4]


def test_imap_unordered_yields_in_completion_order(cloud: Any, gate: Path) -> None:
    """imap_unordered gives a finished job's value before an earlier, still-held one."""
    it = pool.imap_unordered(held_square, [(str(gate), 5), ("", 6)])
    assert it.next(timeout=WAIT) == 36
    with pytest.raises(CloudTimeoutError):
        it.next(timeout=0.1)
    gate.touch()
    assert list(it) == [25]


def test_imap_unordered_gives_every_value(cloud: Any) -> None:
    """imap_unordered yields every value exactly once (chunked too)."""
    assert sorted(pool.imap_unordered(square, range(12))) == [x * x for x in range(12)]
    assert sorted(pool.imap_unordered(square, range(12), chunksize=5)) == [x * x for x in range(12)]


# ------------------------------------------------------------------ from a job, and as cloud.pool_interface
def test_pool_interface_inside_a_job(cloud: Any) -> None:
    """A job can use pool_interface (its jobs run on the same cloud)."""
    jid = cloudsim.call(pool_inside_a_job, [1, 2, 3])
    assert cloudsim.result(jid, timeout=WAIT) == ([1, 4, 9], 49, [1, 4, 9])


def test_import_cloud_pool_interface() -> None:
    """With the cloud alias, `import cloud.pool_interface` is this module (PiCloud's explicit import)."""
    from cloudsim.alias import install_cloud_alias, remove_cloud_alias

    install_cloud_alias()
    try:
        import cloud.pool_interface as legacy  # type: ignore[import-not-found]

        assert legacy is pool
    finally:
        remove_cloud_alias()
