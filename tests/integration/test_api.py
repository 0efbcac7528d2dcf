"""The ``cloud`` API's rules, tested against a real simulator.

Each test drives the public functions (``call``, ``map``, ``result``, ...)
against real worker interpreters and checks what PiCloud's API promised:
argument types, unknown jids, return shapes, errors raised by the waiting
functions, statuses, ``info`` fields, kill/delete, callbacks, and that all of
it holds when many client threads use the API at once.

Jobs whose state a test must observe (``queued``, ``processing``) are held by
a gate file that the test creates, never by timing luck: a held job first
writes its "started" file, then waits for the gate to exist.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

import cloudsim
from cloudsim import CloudException, CloudTimeoutError, NotStartedError

WAIT = 30.0  # seconds; only a hang reaches it

# ------------------------------------------------------------------ job functions (shipped by reference)


def square(x: int) -> int:
    return x * x


def mult(a: int, b: int) -> int:
    return a * b


def pair(a: Any, b: Any) -> tuple:
    return (a, b)


def fail(message: str = "boom") -> None:
    raise ZeroDivisionError(message)


def fail_if(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad element {x}")
    return x


def held(gate: str, started: str = "", value: Any = "released") -> Any:
    """Write ``started`` (if given), then wait until ``gate`` exists; return ``value``."""
    if started:
        Path(started).touch()
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return value


def touch_and_return(path: str, value: Any) -> Any:
    Path(path).touch()
    return value


def chatty(seconds: float) -> str:
    """Print to both streams and sleep a little (so runtime and cputime are measurable)."""
    import sys

    print("hello on stdout")
    print("hello on stderr", file=sys.stderr)
    time.sleep(seconds)
    return "ok"


def triple_of(i: int) -> tuple:
    return (i, 3 * i)


# ------------------------------------------------------------------ client-side helpers


def wait_path(path: Path, what: str, timeout: float = WAIT) -> None:
    """Wait until a job created ``path``; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {path} did not appear within {timeout} s")
        time.sleep(0.01)


def wait_event(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"{what} did not happen within {WAIT} s"


class Gate:
    """A job held until the test opens the gate: ``started`` appears once it runs."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.gate = tmp_path / f"{name}.gate"
        self.started = tmp_path / f"{name}.started"

    def args(self, value: Any = "released") -> tuple:
        return (str(self.gate), str(self.started), value)

    def wait_started(self) -> None:
        wait_path(self.started, "the held job never started")

    def open(self) -> None:
        self.gate.touch()


# ------------------------------------------------------------------ before the simulator starts


@pytest.fixture
def no_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """No simulator runs and none starts on first use."""
    monkeypatch.delenv("CLOUDSIM_USE_SIMULATOR", raising=False)
    cloudsim.close()


@pytest.mark.parametrize(
    "use",
    [
        lambda: cloudsim.call(square, 2),
        lambda: cloudsim.map(square, [1, 2]),
        lambda: cloudsim.result(1),
        lambda: cloudsim.join(1),
        lambda: cloudsim.status(1),
        lambda: cloudsim.info(1),
        lambda: cloudsim.kill(1),
        lambda: cloudsim.kill(),
        lambda: cloudsim.delete(1),
    ],
    ids=["call", "map", "result", "join", "status", "info", "kill", "kill-all", "delete"],
)
def test_api_before_start_raises_not_started(no_simulator: None, use: Callable[[], Any]) -> None:
    """Before start_simulator() every API function raises NotStartedError (a CloudException) saying what to do."""
    assert cloudsim.is_simulated() is False
    with pytest.raises(NotStartedError) as info:
        use()
    assert isinstance(info.value, CloudException)
    assert "start_simulator()" in str(info.value)
    assert cloudsim.is_simulated() is False, "a failed call must not start a simulator"


def test_kill_of_empty_list_needs_no_simulator(no_simulator: None) -> None:
    """``kill([])`` returns without opening the cloud, as the original."""
    assert cloudsim.kill([]) is None
    assert cloudsim.is_simulated() is False


def test_use_simulator_starts_it_on_first_call(no_simulator: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With CLOUDSIM_USE_SIMULATOR=1 the first call starts the simulator, and the job runs."""
    monkeypatch.setenv("CLOUDSIM_USE_SIMULATOR", "1")
    monkeypatch.setenv("CLOUDSIM_SERVER_ROOT", str(tmp_path / "server"))
    try:
        assert cloudsim.is_simulated() is False
        jid = cloudsim.call(square, 6)
        assert cloudsim.is_simulated() is True
        assert cloudsim.result(jid) == 36
        assert cloudsim.connection_info()["connection_type"] == "simulation"
    finally:
        assert cloudsim.close() is True


def test_is_simulated_false_before_start_true_after(no_simulator: None, start: Callable[..., Any]) -> None:
    """``is_simulated()`` is False before start_simulator() and True after it; ``close()`` says whether it was open."""
    assert cloudsim.is_simulated() is False
    assert cloudsim.close() is False
    start()
    assert cloudsim.is_simulated() is True
    assert cloudsim.close() is True
    assert cloudsim.is_simulated() is False


# ------------------------------------------------------------------ jids and argument types


def test_jids_are_increasing_ints(cloud: Any) -> None:
    """call returns int jids that increase; map returns a list of consecutive ints after them."""
    jids = [cloud.call(square, i) for i in range(5)]
    assert all(type(j) is int for j in jids)
    assert jids == sorted(jids) and len(set(jids)) == 5
    mapped = cloud.map(square, range(4))
    assert all(type(j) is int for j in mapped)
    assert mapped == list(range(mapped[0], mapped[0] + 4))
    assert mapped[0] > jids[-1]
    assert cloud.result(jids + mapped) == [0, 1, 4, 9, 16, 0, 1, 4, 9]


_BAD_JIDS = {"str": "asdf", "bytes": b"1", "digit-str": "1", "float": 1.0, "None": None, "mixed-list": [1, "2"]}


@pytest.mark.parametrize(
    "name, bad",
    [
        pytest.param(name, bad, id=f"{name}-{label}")
        for name in ("result", "status", "join", "kill", "info", "delete", "finished", "iresult")
        for label, bad in _BAD_JIDS.items()
        if not (name == "kill" and bad is None)  # kill(None) means every unfinished job
    ],
)
def test_non_int_jid_is_type_error(cloud: Any, name: str, bad: Any) -> None:
    """A str, bytes, float, None or a list holding a str where a jid is expected is a TypeError."""
    jid = cloud.call(square, 3)
    cloud.join(jid)
    with pytest.raises(TypeError):
        getattr(cloud, name)(bad)


@pytest.mark.parametrize("name", ["result", "status", "info", "join", "kill", "delete", "finished", "iresult"])
def test_unknown_jid_is_cloud_exception(cloud: Any, name: str) -> None:
    """A jid the cloud never gave out is a CloudException (not a TypeError), alone or in a list."""
    known = cloud.call(square, 2)
    cloud.join(known)
    for jids in (10**9, [known, 10**9]):
        with pytest.raises(CloudException) as info:
            getattr(cloud, name)(jids)
        assert "Does not exist" in str(info.value)
    assert cloud.status(known) == "done", "a failed look-up must not touch the known job"


def test_call_of_non_callable_is_type_error(cloud: Any) -> None:
    """``call(3)`` and ``call('asdf')`` are TypeErrors saying the first argument is not callable; ``call()`` too."""
    with pytest.raises(TypeError, match=r"cloud\.call first argument \(3\) is not callable"):
        cloud.call(3)
    with pytest.raises(TypeError, match="is not callable"):
        cloud.call("asdf", "sadf")
    with pytest.raises(TypeError):
        cloud.call()


@pytest.mark.parametrize(
    "func, args, kwargs",
    [
        (lambda x: x, (), {}),
        (lambda: 1, (2,), {}),
        (lambda x: x, (1,), {"y": 2}),
        (square, (1, 2), {}),
    ],
    ids=["missing", "too-many", "unexpected-keyword", "module-function"],
)
def test_arity_error_raised_at_call_time(cloud: Any, func: Callable, args: tuple, kwargs: dict) -> None:
    """A call whose arguments do not fit the function is a TypeError in ``call``, and no job is created."""
    before = cloud.call(square, 1)
    with pytest.raises(TypeError):
        cloud.call(func, *args, **kwargs)
    after = cloud.call(square, 1)
    assert after == before + 1, "the refused call used up a jid: a job was created"


# ------------------------------------------------------------------ map


def test_map_needs_an_iterable(cloud: Any) -> None:
    """``map(f)`` is the original's ValueError."""
    with pytest.raises(ValueError) as info:
        cloud.map(square)
    assert str(info.value) == "cloud.map needs at least 2 arguments"


def test_map_rejects_non_iterables_and_strings(cloud: Any) -> None:
    """A non-iterable, or a str/bytes, is a TypeError naming its position counted from 1."""
    with pytest.raises(TypeError) as info:
        cloud.map(square, 3)
    assert str(info.value) == "map argument 1 (3) is not an iterable"
    with pytest.raises(TypeError, match=r"^map argument 1 \('abc'\) is not an iterable$"):
        cloud.map(square, "abc")
    with pytest.raises(TypeError, match=r"^map argument 2 \(b'ab'\) is not an iterable$"):
        cloud.map(pair, [1, 2], b"ab")
    with pytest.raises(TypeError, match="is not callable"):
        cloud.map(3, [1])


def test_map_limit_is_10000(cloud: Any) -> None:
    """More than 10,000 elements (sized or not) is a ValueError and submits nothing; 10,000 would be allowed."""
    before = cloud.call(square, 1)
    with pytest.raises(ValueError) as info:
        cloud.map(square, range(10001))
    assert str(info.value) == "No more than 10,000 arguments can be submitted in cloud.map"
    with pytest.raises(ValueError, match="No more than 10,000 arguments"):
        cloud.map(square, (i for i in range(10001)))
    with pytest.raises(ValueError, match="No more than 10,000 arguments"):
        cloud.map(pair, [1], range(10001))
    assert cloud.call(square, 1) == before + 1, "a refused map created jobs"


def test_map_of_empty_iterable_is_empty_list(cloud: Any) -> None:
    """``map(f, [])`` returns [] and creates no job."""
    before = cloud.call(square, 1)
    assert cloud.map(square, []) == []
    assert cloud.call(square, 1) == before + 1


def test_map_zips_iterables_and_pads_with_none(cloud: Any) -> None:
    """Two iterables are zipped (``[2, 12, 30]``); a shorter one is padded with None."""
    assert cloud.result(cloud.map(mult, [1, 3, 5], [2, 4, 6])) == [2, 12, 30]
    assert cloud.result(cloud.map(pair, [1], iter([4, 5]))) == [(1, 4), (None, 5)]


def test_map_rejects_user_keywords_and_callbacks(cloud: Any) -> None:
    """``map`` passes no keywords to the function and takes no callbacks."""
    for key in ("x", "_callback"):
        with pytest.raises(ValueError) as info:
            cloud.map(square, [1], **{key: print})
        assert str(info.value) == f"Cannot pass keyword arguments into cloud.map Unexpected keyword argument {key}"


# ------------------------------------------------------------------ result, join, iresult


def test_result_shape_follows_the_argument(cloud: Any) -> None:
    """A scalar jid gives the value; a list or range gives a list (even of one)."""
    jid = cloud.call(square, 4)
    assert cloud.result(jid) == 16
    assert cloud.result([jid]) == [16]
    assert cloud.result(range(jid, jid + 1)) == [16]
    jids = cloud.map(square, [1, 2, 3])
    assert cloud.result(jids) == [1, 4, 9]


def test_result_raises_failure_unless_ignored(cloud: Any) -> None:
    """A failed job raises CloudException from result; with ignore_errors its slot holds the exception."""
    jids = cloud.map(fail_if, [1, 2, 3], [2, 2, 2])
    with pytest.raises(CloudException) as info:
        cloud.result(jids)
    assert info.value.jid == jids[1] and info.value.status == "error"
    assert "ValueError: bad element 2" in str(info.value)
    values = cloud.result(jids, ignore_errors=True)
    assert values[0] == 1 and values[2] == 3
    assert isinstance(values[1], CloudException) and values[1].jid == jids[1]


def test_join_raises_failure_unless_ignored(cloud: Any) -> None:
    """join returns None when all succeed, raises the failure, and with ignore_errors returns None."""
    ok = cloud.call(square, 2)
    bad = cloud.call(fail, "join me")
    assert cloud.join(ok) is None
    with pytest.raises(CloudException) as info:
        cloud.join([ok, bad])
    assert info.value.jid == bad and "ZeroDivisionError: join me" in str(info.value)
    assert cloud.join([ok, bad], ignore_errors=True) is None


def test_result_timeout_leaves_the_job_running(cloud: Any, tmp_path: Path) -> None:
    """``result(jid, timeout=0.2)`` on a held job raises CloudTimeoutError; the job keeps running and finishes later."""
    gate = Gate(tmp_path, "slow")
    jid = cloud.call(held, *gate.args(42))
    gate.wait_started()
    with pytest.raises(CloudTimeoutError) as info:
        cloud.result(jid, timeout=0.2)
    assert info.value.parameter == "cloud.join timed out"
    assert info.value.jid == jid
    assert str(info.value) == f"Job {jid}: cloud.join timed out"
    with pytest.raises(CloudTimeoutError):
        cloud.join(jid, timeout=0)
    assert cloud.status(jid) == "processing"
    gate.open()
    assert cloud.result(jid, timeout=WAIT) == 42
    assert cloud.status(jid) == "done"


def test_iresult_yields_in_jid_order(cloud: Any, tmp_path: Path) -> None:
    """iresult yields in jid order, not completion order: the first job can only finish after the last one ran."""
    gate = Gate(tmp_path, "first")
    first = cloud.call(held, *gate.args("a"))
    gate.wait_started()  # it holds a worker of its own before the others are submitted
    second = cloud.call(square, 3)
    third = cloud.call(touch_and_return, str(gate.gate), "c")
    assert list(cloud.iresult([first, second, third], timeout=WAIT)) == ["a", 9, "c"]


def test_iresult_raises_failed_job_when_reached(cloud: Any) -> None:
    """iresult gives the results before a failed job, then raises its CloudException; ignore_errors yields it."""
    jids = cloud.map(fail_if, [1, 2, 3], [2, 2, 2])
    it = cloud.iresult(jids)
    assert next(it) == 1
    with pytest.raises(CloudException) as info:
        next(it)
    assert info.value.jid == jids[1]
    values = list(cloud.iresult(jids, ignore_errors=True))
    assert values[0] == 1 and values[2] == 3
    assert isinstance(values[1], CloudException) and values[1].jid == jids[1]


def test_iresult_continues_after_a_failure(cloud: Any) -> None:
    """After raising a failed job's error, the original's iresult iterator goes on with the next result."""
    jids = cloud.map(fail_if, [1, 2, 3], [2, 2, 2])
    it = cloud.iresult(jids)
    assert next(it) == 1
    with pytest.raises(CloudException):
        next(it)
    assert next(it) == 3


def test_iresult_validates_eagerly(cloud: Any) -> None:
    """A bad jid argument to iresult is a TypeError at once, not at the first next()."""
    with pytest.raises(TypeError):
        cloud.iresult("x")


# ------------------------------------------------------------------ status and finished


def test_status_scalar_or_list(cloud: Any) -> None:
    """status of an int is a str; of a list or range, a list."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    assert cloud.status(jid) == "done"
    assert cloud.status([jid, jid]) == ["done", "done"]
    assert cloud.status(range(jid, jid + 1)) == ["done"]


def test_statuses_through_a_job_cap_of_one(start: Callable[..., Any], tmp_path: Path) -> None:
    """With max_concurrent_jobs=1 a held job is 'processing', the next is 'queued', a dependent is 'waiting';
    once released they end 'done', and a failing job ends 'error'."""
    cloud = start(max_concurrent_jobs=1)
    gate = Gate(tmp_path, "cap")
    a = cloud.call(held, *gate.args())
    gate.wait_started()
    b = cloud.call(square, 5)
    c = cloud.call(fail)
    d = cloud.call(square, 6, _depends_on=b)
    assert cloud.status([a, b, c, d]) == ["processing", "queued", "queued", "waiting"]
    assert cloud.finished(a) is False
    assert cloud.finished([b]) is False
    gate.open()
    assert cloud.result([a, b, d], timeout=WAIT) == ["released", 25, 36]
    cloud.join(c, timeout=WAIT, ignore_errors=True)
    assert cloud.status([a, b, c, d]) == ["done", "done", "error", "done"]


def test_finished(cloud: Any) -> None:
    """finished is True once every job ended; a failed one raises unless ignore_errors."""
    ok = cloud.call(square, 2)
    bad = cloud.call(fail)
    cloud.join([ok, bad], ignore_errors=True)
    assert cloud.finished(ok) is True
    assert cloud.finished([ok]) is True
    with pytest.raises(CloudException) as info:
        cloud.finished([ok, bad])
    assert info.value.jid == bad
    assert cloud.finished([ok, bad], ignore_errors=True) is True


# ------------------------------------------------------------------ info


def test_info_default_fields(cloud: Any) -> None:
    """Without info_requested: stdout, stderr, status and runtime, for each jid asked."""
    jid = cloud.call(chatty, 0.0)
    cloud.join(jid)
    answer = cloud.info(jid)
    assert list(answer) == [jid]
    assert set(answer[jid]) == {"stdout", "stderr", "status", "runtime"}
    assert answer[jid]["status"] == "done"
    assert "hello on stdout" in answer[jid]["stdout"]
    assert isinstance(answer[jid]["runtime"], float)
    other = cloud.call(square, 2)
    cloud.join(other)
    both = cloud.info([jid, other])
    assert set(both) == {jid, other}
    assert all(set(v) == {"stdout", "stderr", "status", "runtime"} for v in both.values())


def test_info_single_field(cloud: Any) -> None:
    """A str names one field; only that field comes back."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    assert cloud.info(jid, "status") == {jid: {"status": "done"}}
    other = cloud.call(square, 3)
    cloud.join(other)
    assert cloud.info([jid, other], ["status"]) == {jid: {"status": "done"}, other: {"status": "done"}}


def test_info_fields_of_a_finished_job(cloud: Any) -> None:
    """Every field the issue lists has the documented type and value for a job that printed and slept."""
    before = datetime.datetime.now() - datetime.timedelta(seconds=5)
    jid = cloud.call(chatty, 0.05, _label="the-label", _priority=3)
    cloud.join(jid)
    fields = ["status", "created", "finished", "runtime", "memory.max_usage", "cputime.user", "cputime.system",
              "label", "priority", "stdout", "stderr", "exception", "pitfalls"]
    got = cloud.info(jid, fields)[jid]
    assert set(got) == set(fields)
    assert got["status"] == "done"
    assert isinstance(got["created"], datetime.datetime) and isinstance(got["finished"], datetime.datetime)
    assert before <= got["created"] <= got["finished"] <= datetime.datetime.now() + datetime.timedelta(seconds=5)
    assert isinstance(got["runtime"], float) and 0.04 <= got["runtime"] < 60
    assert type(got["memory.max_usage"]) is int and got["memory.max_usage"] > 0
    assert isinstance(got["cputime.user"], float) and isinstance(got["cputime.system"], float)
    assert got["cputime.user"] >= 0 and got["cputime.system"] >= 0
    assert got["label"] == "the-label"
    assert got["priority"] == 3
    assert "hello on stdout" in got["stdout"] and "hello on stderr" not in got["stdout"]
    assert "hello on stderr" in got["stderr"] and "hello on stdout" not in got["stderr"]
    assert got["exception"] is None
    assert isinstance(got["pitfalls"], list)


def test_info_exception_of_a_failed_job(cloud: Any) -> None:
    """A failed job's ``exception`` is the remote traceback text."""
    jid = cloud.call(fail, "info me")
    cloud.join(jid, ignore_errors=True)
    got = cloud.info(jid, ["status", "exception"])[jid]
    assert got["status"] == "error"
    assert got["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: info me" in got["exception"]
    assert "in fail" in got["exception"]


def test_info_groups_give_dotted_keys(cloud: Any) -> None:
    """``memory`` and ``cputime`` expand to their dotted fields."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    assert set(cloud.info(jid, "memory")[jid]) == {"memory.max_usage", "memory.failcnt"}
    assert set(cloud.info(jid, ["cputime"])[jid]) == {"cputime.user", "cputime.system"}
    assert set(cloud.info(jid, ["memory", "status"])[jid]) == {"memory.max_usage", "memory.failcnt", "status"}


def test_info_unknown_field_is_value_error(cloud: Any) -> None:
    """An unknown field name is a ValueError naming it."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    with pytest.raises(ValueError, match="no_such_field"):
        cloud.info(jid, ["status", "no_such_field"])


@pytest.mark.parametrize("bad", [3, [1], ["status", 2], b"status", {"status": 1}])
def test_info_bad_requested_type_is_type_error(cloud: Any, bad: Any) -> None:
    """info_requested must be a str or a list of str; anything else is the original's TypeError."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    with pytest.raises(TypeError) as info:
        cloud.info(jid, bad)
    assert str(info.value) == "info_requested must be a valid string value or list of strings"


# ------------------------------------------------------------------ kill and delete


def test_kill_processing_job(cloud: Any, tmp_path: Path) -> None:
    """Killing a processing job makes it 'killed', result raises for it, and the cloud goes on working."""
    gate = Gate(tmp_path, "kill")
    jid = cloud.call(held, *gate.args())
    gate.wait_started()
    assert cloud.kill(jid) is None
    assert cloud.status(jid) == "killed"
    with pytest.raises(CloudException) as info:
        cloud.result(jid, timeout=WAIT)
    assert info.value.jid == jid and info.value.status == "killed"
    assert cloud.result(cloud.call(square, 9), timeout=WAIT) == 81


def test_kill_without_argument_kills_every_unfinished_job(start: Callable[..., Any], tmp_path: Path) -> None:
    """``kill()`` kills processing and queued jobs and leaves finished ones alone."""
    cloud = start(max_concurrent_jobs=1)
    done = cloud.call(square, 2)
    cloud.join(done)
    gate = Gate(tmp_path, "killall")
    running = cloud.call(held, *gate.args())
    gate.wait_started()
    queued = cloud.call(square, 3)
    assert cloud.status(queued) == "queued"
    assert cloud.kill() is None
    assert cloud.status([done, running, queued]) == ["done", "killed", "killed"]
    assert cloud.result(done) == 4
    assert cloud.result(cloud.call(square, 4), timeout=WAIT) == 16


def test_kill_of_empty_list_is_a_no_op(cloud: Any, tmp_path: Path) -> None:
    """``kill([])`` kills nothing."""
    gate = Gate(tmp_path, "noop")
    jid = cloud.call(held, *gate.args())
    gate.wait_started()
    assert cloud.kill([]) is None
    assert cloud.status(jid) == "processing"
    gate.open()
    assert cloud.result(jid, timeout=WAIT) == "released"


def test_delete_forgets_the_job(cloud: Any, tmp_path: Path) -> None:
    """After delete, status, result and info of the job raise CloudException; an unfinished job is killed first."""
    jid = cloud.call(square, 2)
    cloud.join(jid)
    assert cloud.delete(jid) is None
    for look_up in (cloud.status, cloud.result, cloud.info):
        with pytest.raises(CloudException):
            look_up(jid)
    gate = Gate(tmp_path, "delete")
    running = cloud.call(held, *gate.args())
    gate.wait_started()
    cloud.delete([running])
    with pytest.raises(CloudException):
        cloud.status(running)
    assert cloud.result(cloud.call(square, 5), timeout=WAIT) == 25


def test_job_cap_of_two_runs_two_jobs_at_once(start: Callable[..., Any], tmp_path: Path) -> None:
    """With max_concurrent_jobs=2, two held jobs submitted together are both processing: the cap is reached.

    Regression: the server once handled one request per wake-up, so a second spawn request read together with
    the first waited in its buffer and only one worker ran (racy, hence several attempts)."""
    for attempt in range(5):
        cloud = start(max_concurrent_jobs=2)
        gates = [Gate(tmp_path, f"pair{attempt}-{i}") for i in range(2)]
        jids = cloud.map(held, [str(g.gate) for g in gates], [str(g.started) for g in gates])
        deadline = time.monotonic() + 20
        while not all(g.started.exists() for g in gates) and time.monotonic() < deadline:
            time.sleep(0.02)
        started = [g.started.exists() for g in gates]
        statuses = cloud.status(jids)
        for g in gates:
            g.open()
        assert all(started), f"attempt {attempt}: after 20 s only {started} started; statuses {statuses}"
        assert cloud.result(jids, timeout=WAIT) == ["released", "released"]
        cloud.close()


# ------------------------------------------------------------------ callbacks


def test_callback_gets_the_jid_on_done(cloud: Any) -> None:
    """``_callback`` is called with the jid when the job is done."""
    seen: List[int] = []
    event = threading.Event()

    def on_done(jid: int) -> None:
        seen.append(jid)
        event.set()

    jid = cloud.call(square, 3, _callback=on_done)
    wait_event(event, "the _callback")
    assert seen == [jid]


def test_callback_without_parameters_is_called_without_jid(cloud: Any) -> None:
    """A callback that takes no parameter is called without the jid."""
    event = threading.Event()
    cloud.call(square, 3, _callback=lambda: event.set())
    wait_event(event, "the parameterless _callback")


def test_callback_on_error_fires_on_error_only(cloud: Any) -> None:
    """``_callback_on_error`` fires for a failed job, and its ``_callback`` does not."""
    errors: List[int] = []
    dones: List[int] = []
    error_event = threading.Event()
    sentinel = threading.Event()

    def on_error(jid: int) -> None:
        errors.append(jid)
        error_event.set()

    jid = cloud.call(fail, _callback=dones.append, _callback_on_error=on_error)
    wait_event(error_event, "the _callback_on_error")
    assert errors == [jid]
    ok = cloud.call(square, 1, _callback_on_error=errors.append, _callback=lambda: sentinel.set())
    wait_event(sentinel, "the later job's _callback")  # callbacks run in order on one thread
    assert dones == [] and errors == [jid], f"wrong callbacks ran: done {dones}, error {errors} (ok job {ok})"


def test_non_callable_callback_is_cloud_exception(cloud: Any) -> None:
    """A non-callable callback is the original's CloudException."""
    with pytest.raises(CloudException, match="^All callbacks must be callable$"):
        cloud.call(square, 2, _callback=3)


# ------------------------------------------------------------------ connection and where code runs


def test_connection_info_says_simulation(cloud: Any) -> None:
    """``connection_info()`` reports an opened simulation."""
    info = cloud.connection_info()
    assert info["connection_type"] == "simulation"
    assert info["opened"] is True


def test_running_on_cloud_only_inside_jobs(cloud: Any) -> None:
    """``running_on_cloud()`` is False in the client and True inside a job (which imports cloudsim itself)."""
    assert cloudsim.running_on_cloud() is False
    assert cloud.result(cloud.call(cloudsim.running_on_cloud)) is True
    assert cloudsim.running_on_cloud() is False


# ------------------------------------------------------------------ thread safety


@pytest.mark.slow
def test_many_client_threads_each_submitting_1000_calls(cloud: Any) -> None:
    """10 client threads each submit 1,000 jobs with ``call`` and collect them: every result is right,
    and no jid is given out twice."""
    per_thread, threads_n = 1000, 10
    results: dict = {}
    jids_of: dict = {}
    errors: List[BaseException] = []
    go = threading.Barrier(threads_n)

    def client(k: int) -> None:
        try:
            go.wait(WAIT)
            jids = [cloudsim.call(triple_of, k * per_thread + n) for n in range(per_thread)]
            jids_of[k] = jids
            results[k] = cloudsim.result(jids, timeout=120)
        except BaseException as exc:  # reported below with the thread's number
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,), name=f"client-{k}", daemon=True) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"client threads still running after 180 s: {stuck}"
    assert not errors, f"client threads failed: {errors!r}"
    for k in range(threads_n):
        assert results[k] == [(k * per_thread + n, 3 * (k * per_thread + n)) for n in range(per_thread)], f"thread {k}"
    every = [j for k in range(threads_n) for j in jids_of[k]]
    assert len(set(every)) == per_thread * threads_n
    for k in range(threads_n):
        assert jids_of[k] == sorted(jids_of[k]), f"thread {k} got decreasing jids"
