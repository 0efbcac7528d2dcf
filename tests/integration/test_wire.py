"""What crosses the wire, through real jobs: copies, limits, culprits, transient, special types, files, data files.

Every case runs jobs in the simulator's worker interpreters (real pickling,
real processes) and checks what the job received or what the client was
told. Job functions are module level (this module is shipped to the server
and imported there), except where a case needs a function that travels by
value (lambdas, closures).
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import psutil
import pytest

import cloudsim
from cloudsim import CloudException, CloudPicklingError, TransmitSizeError
from cloudsim.pitfalls import NonCodeFilesWarning, PassByValueWarning, SqliteWarning

from conftest import describe, wait_no_children

WAIT = 60.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ job functions (shipped by reference)
def identity(value: Any) -> Any:
    return value


def append_job(items: list) -> list:
    items.append("added by the job")
    return items


def mutate_first(list_param: list) -> str:
    list_param[0] += 1
    return "done"


def mutate_options(*, options: dict) -> str:
    options["seen"] = True
    return "done"


def wait_then_copy(go: str, items: Any) -> Any:
    """Returns its argument as it is once the client has changed its own object (``go`` exists)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError("the client never said go")
        time.sleep(0.01)
    return items


def keywords(**kwargs: Any) -> Any:
    return kwargs


def sizes(a: bytes, b: bytes = b"") -> int:
    return len(a) + len(b)


def return_bytes_list(n: int) -> list:
    return [b"r" * n]


def numbers() -> Iterator[int]:
    yield 1


def return_holder_with_generator() -> Any:
    return Holder(numbers())


def transient_view(obj: Any) -> tuple:
    return hasattr(obj, "cache"), obj.value


def make_with_cache() -> "WithCache":
    return WithCache()


def call_with(func: Any, *args: Any) -> Any:
    return func(*args)


def file_facts(f: Any) -> tuple:
    return f.name, f.mode, f.tell(), f.read()


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_pathlib(path: str) -> bytes:
    return Path(path).read_bytes()


def read_os_open(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    return fd


def write_text(path: str) -> str:
    with open(path, "w") as f:
        f.write("written by the job")
    return "written"


def open_and_catch(path: str) -> str:
    try:
        open(path).close()
    except FileNotFoundError as exc:
        return str(exc)
    return "opened"


def own_files() -> tuple:
    with open("own.txt", "w") as f:
        f.write("mine")
    import tempfile

    with tempfile.NamedTemporaryFile("w+", suffix=".txt") as tmp:
        tmp.write("temp")
        tmp.flush()
        tmp.seek(0)
        temp = tmp.read()
    with open("own.txt") as f:
        return os.getcwd(), f.read(), temp


def connect_sqlite(path: str) -> list:
    conn = sqlite3.connect(path)
    try:
        conn.execute("create table if not exists t (x)")
        conn.execute("insert into t values (1)")
        return conn.execute("select x from t").fetchall()
    finally:
        conn.close()


def image_facts(image: Any) -> tuple:
    return image.size, image.getpixel((1, 1))


class Holder:
    def __init__(self, db: Any) -> None:
        self.db = db


class WithCache:
    __transient__ = ("cache",)

    def __init__(self) -> None:
        self.value = 42
        self.cache = {"big": "x" * 100}


class OwnState:
    __transient__ = ("cache",)

    def __init__(self) -> None:
        self.value = 1
        self.cache = "kept"

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def add(self, n: int) -> int:
        return self.start + n


def make_adder(n: int) -> Any:
    def add(x: int) -> int:
        return x + n

    return add


# ------------------------------------------------------------------ fixtures and helpers
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
def _shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Shared]:
    shared = _Shared(str(tmp_path_factory.mktemp("wire") / "server"))
    yield shared
    cloudsim.close()
    left = wait_no_children()
    for p in left:  # end what the simulator left (by pid), then fail loudly
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, "processes outlived the module's simulator:\n" + describe(left)


@pytest.fixture
def sim(_shared: _Shared) -> Any:
    """The cloudsim module with the module's simulator (cap 4, default settings) running."""
    return _shared.get()


def refused_at_call(cloud: Any, submit: Any, exc_type: type = CloudPicklingError) -> str:
    """Run ``submit`` (which must raise ``exc_type``) between two jobs; no job may be created for it."""
    before = cloud.call(identity, "before")
    with pytest.raises(exc_type) as info:
        submit()
    after = cloud.call(identity, "after")
    assert after == before + 1, f"the refused call created jobs {before + 1}..{after - 1}"
    assert cloud.result([before, after], timeout=WAIT) == ["before", "after"]
    assert isinstance(info.value, pickle.PicklingError) and isinstance(info.value, CloudException)
    return str(info.value)


def failure(cloud: Any, jid: int) -> CloudException:
    with pytest.raises(CloudException) as info:
        cloud.result(jid, timeout=WAIT)
    assert cloud.status(jid) == "error"
    return info.value


def pitfalls(cloud: Any, jid: int, pid: str) -> List[dict]:
    return [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == pid]


def log_paths(text: str) -> List[str]:
    match = re.search(r"Serialization log: (\S+\.txt) \(JSON: (\S+\.json)\)", text)
    assert match, f"no serialization log in:\n{text}"
    return [match.group(1), match.group(2)]


# ------------------------------------------------------------------ pass-by-value
def test_job_mutations_never_reach_the_client(sim: Any) -> None:
    """The job appends to its copy; the client's list is unchanged (the seed's foo(list_param) example)."""
    a_list = [1, 2]
    with pytest.warns(PassByValueWarning):
        got = sim.result(sim.call(append_job, a_list), timeout=WAIT)
    assert got == [1, 2, "added by the job"]
    assert a_list == [1, 2]


def test_client_mutations_after_call_never_reach_the_job(sim: Any, tmp_path: Path) -> None:
    """Arguments, keyword arguments and map elements are copied at call time."""
    go = str(tmp_path / "go")
    items, options, rows = [1], {"k": [1]}, [[1], [2]]
    jid = sim.call(wait_then_copy, go, items)
    kw_jid = sim.call(wait_then_copy, go=go, items=options)
    map_jids = sim.map(wait_then_copy, [go, go], rows)
    items.append("client")
    options["k"].append("client")
    rows[0].append("client")
    open(go, "w").close()
    assert sim.result(jid, timeout=WAIT) == [1]
    assert sim.result(kw_jid, timeout=WAIT) == {"k": [1]}
    assert sim.result(map_jids, timeout=WAIT) == [[1], [2]]


def test_mutation_pitfall_names_the_argument(sim: Any) -> None:
    """A job that changes an argument gets a pass-by-value pitfall naming it; a job that does not, none."""
    with pytest.warns(PassByValueWarning, match=r"changed its argument list_param of mutate_first\(\)"):
        jid = sim.call(mutate_first, [1, 2])
        assert sim.result(jid, timeout=WAIT) == "done"
    found = pitfalls(sim, jid, "pass-by-value")
    assert len(found) == 1 and found[0]["argument"] == "list_param"
    assert "return the new value" in found[0]["message"]
    with pytest.warns(PassByValueWarning, match="options"):
        kw = sim.call(mutate_options, options={})
        sim.result(kw, timeout=WAIT)
    clean = sim.call(identity, [1, 2])
    assert sim.result(clean, timeout=WAIT) == [1, 2]
    assert pitfalls(sim, clean, "pass-by-value") == []


# ------------------------------------------------------------------ transmit-size
def test_too_big_arguments_are_refused_before_any_job(sim: Any) -> None:
    big = b"x" * 1_200_000
    text = refused_at_call(sim, lambda: sim.call(identity, big), TransmitSizeError)
    assert re.search(r"cloud\.call\(identity\): the positional arguments would send 1,2\d\d,\d{3} bytes", text), text
    assert "the limit max_transmit_size is 1,000,000 bytes" in text
    assert "args[0]: 1.2 MB (bytes)" in text
    assert "max_transmit_size=N" in text
    text = refused_at_call(sim, lambda: sim.call(keywords, data=big), TransmitSizeError)
    assert "the keyword arguments" in text and "kwargs['data']: 1.2 MB (bytes)" in text
    text = refused_at_call(sim, lambda: sim.map(identity, [1, 2, big]), TransmitSizeError)
    assert "the arguments of job 2" in text and "args[0]: 1.2 MB (bytes)" in text
    blob = b"c" * 1_100_000
    text = refused_at_call(sim, lambda: sim.call(lambda: len(blob)), TransmitSizeError)
    assert "the function would send" in text and "func.<closure>.blob: 1.1 MB (bytes)" in text, text
    for path in log_paths(text):
        assert os.path.isfile(path)


def test_pieces_are_checked_on_their_own(sim: Any) -> None:
    """0.6 MB of positional and 0.6 MB of keyword arguments pass: sizes are never summed."""
    one, other = b"a" * 600_000, b"b" * 600_000
    assert sim.result(sim.call(sizes, one, b=other), timeout=WAIT) == 1_200_000


def test_too_big_return_value_makes_the_job_error(sim: Any) -> None:
    exc = failure(sim, sim.call(return_bytes_list, 1_500_000))
    assert exc.exc_type == "TransmitSizeError"
    text = str(exc)
    assert re.search(r"The return value of return_bytes_list\(\) is 1,5\d\d,\d{3} bytes", text), text
    assert "result[0]: 1.5 MB (bytes)" in text and "[pitfall: transmit-size]" in text
    assert all(os.path.isfile(p) for p in log_paths(text)), "the worker writes the log under server_root"


def test_the_limit_is_a_setting_with_picloud_alias(start: Any) -> None:
    cloud = start(max_transmit_data=3_000_000)
    assert cloud.result(cloud.call(len, b"z" * 2_000_000), timeout=WAIT) == 2_000_000
    text = refused_at_call(cloud, lambda: cloud.call(len, b"z" * 3_000_001), TransmitSizeError)
    assert "the limit max_transmit_size is 3,000,000 bytes" in text


# ------------------------------------------------------------------ unpicklable
def test_unpicklable_argument_names_the_path_and_writes_a_log(sim: Any) -> None:
    text = refused_at_call(sim, lambda: sim.call(identity, Holder(numbers())))
    assert "Culprit: args[0].db -> generator" in text, text
    assert "__transient__ = ['db'] on class Holder" in text
    txt, js = log_paths(text)
    root = sim.connection_info()["server_root"]
    assert txt.startswith(os.path.join(root, "logs", "serialization") + os.sep), (txt, root)
    assert "args[0].db  (generator, cannot be pickled)   <-- FAILED HERE" in Path(txt).read_text()
    assert os.path.isfile(js)


@pytest.mark.parametrize("make, culprit", [
    pytest.param(lambda: iter_count(), "itertools.count", id="itertools"),
    pytest.param(lambda: re.search("a", "cat"), "re.Match", id="re.Match"),
    pytest.param(lambda: socket.socket(), "socket.socket", id="socket"),
])
def test_unpicklable_kinds_are_refused_at_call(sim: Any, make: Any, culprit: str) -> None:
    obj = make()
    try:
        text = refused_at_call(sim, lambda: sim.map(identity, [1, obj]))
    finally:
        if hasattr(obj, "close"):
            obj.close()
    assert f"Culprit: args[0] -> {culprit}" in text, text
    assert "the arguments of job 1" in text


def iter_count() -> Any:
    import itertools

    return itertools.count()


def test_unpicklable_return_value_makes_the_job_error_with_the_path(sim: Any) -> None:
    exc = failure(sim, sim.call(return_holder_with_generator))
    assert exc.exc_type == "PicklingError"
    text = str(exc)
    assert "could not be pickled to travel back to the client: TypeError: cannot pickle 'generator' object" in text
    assert "Culprit: result.db -> generator" in text, text
    txt, js = log_paths(text)
    root = sim.connection_info()["server_root"]
    assert txt.startswith(os.path.join(root, "logs", "serialization") + os.sep), "the worker logs under server_root"
    assert "result.db  (generator, cannot be pickled)   <-- FAILED HERE" in Path(txt).read_text()
    assert os.path.isfile(js)


# ------------------------------------------------------------------ transient
def test_transient_attributes_arrive_missing_both_ways(sim: Any) -> None:
    obj = WithCache()
    assert sim.result(sim.call(transient_view, obj), timeout=WAIT) == (False, 42)
    assert obj.cache == {"big": "x" * 100}, "the client's object keeps its attribute"
    back = sim.result(sim.call(make_with_cache), timeout=WAIT)
    assert back.value == 42 and not hasattr(back, "cache"), "a returned object drops them too"
    assert sim.result(sim.call(transient_view, OwnState()), timeout=WAIT) == (True, 1), \
        "an object with its own __getstate__ decides for itself"


# ------------------------------------------------------------------ special types
SPECIAL_TYPES = [
    pytest.param(lambda: (call_with, identity, 7), 7, id="function"),
    pytest.param(lambda: (call_with, lambda x: x * 3, 5), 15, id="lambda"),
    pytest.param(lambda: (call_with, make_adder(10), 5), 15, id="closure"),
    pytest.param(lambda: (call_with, Counter(100).add, 5), 105, id="bound-method"),
    pytest.param(lambda: (call_with, functools.partial(pow, 2), 10), 1024, id="partial"),
    pytest.param(lambda: (identity, range(3, 30, 3)), range(3, 30, 3), id="range"),
]


@pytest.mark.parametrize("make, expected", SPECIAL_TYPES)
def test_special_types_round_trip(sim: Any, make: Any, expected: Any) -> None:
    """Each specially supported type can be sent to a job (and, where it is a value, back)."""
    func, *args = make()
    got = sim.result(sim.call(func, *args), timeout=WAIT)
    assert got == expected and type(got) is type(expected)


def test_special_types_as_the_function_itself(sim: Any) -> None:
    jids = [sim.call(lambda: 9), sim.call(make_adder(1), 1), sim.call(Counter(1).add, 1),
            sim.call(functools.partial(pow, 3), 2)]
    assert sim.result(jids, timeout=WAIT) == [9, 2, 2, 9]


def test_pil_image_round_trip(sim: Any) -> None:
    Image = pytest.importorskip("PIL.Image")
    image = Image.new("RGB", (4, 3), (10, 20, 30))
    assert sim.result(sim.call(image_facts, image), timeout=WAIT) == ((4, 3), (10, 20, 30))


# ------------------------------------------------------------------ file objects
@pytest.mark.parametrize("mode", ["r", "rb"])
def test_read_only_file_travels_whole_and_anew(sim: Any, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data.txt"
    path.write_text("header\nfirst\n")
    with open(path, mode) as f:
        f.readline()
        first = sim.call(file_facts, f)
        path.write_text("header\nsecond\n")
        second = sim.call(file_facts, f)
        assert f.tell() == len("header\n"), "sending must not move the client's position"
    got = sim.result([first, second], timeout=WAIT)
    rest = ["first\n", "second\n"] if mode == "r" else [b"first\n", b"second\n"]
    assert got == [(str(path), mode, 7, rest[0]), (str(path), mode, 7, rest[1])]


def test_refused_files_say_which_rule(sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.txt"
    path.write_text("contents\n" * 10)
    r, w = os.pipe()
    a, b = socket.socketpair()
    opened = {
        "it is open for writing (mode 'r+')": open(path, "r+"),
        "it is open for writing (mode 'a')": open(path, "a"),
        "it is a pipe": os.fdopen(r, "r"),
        "network stream": a.makefile("r"),
        "it is standard input": os.fdopen(os.dup(0), "r"),
    }
    if os.path.exists("/proc/self/status"):
        opened["does not appear to map to a physical, real file"] = open("/proc/self/status")
    monkeypatch.setattr(sys, "stdin", opened["it is standard input"])
    try:
        for reason, f in opened.items():
            text = refused_at_call(sim, lambda: sim.call(file_facts, f))
            assert reason in text and "[pitfall: file-objects]" in text, text
        f = open(path)
        opened["method"] = f
        text = refused_at_call(sim, lambda: sim.call(f.read))
        assert "Cannot pickle the method read() of file" in text
    finally:
        for f in opened.values():
            f.close()
        os.close(w)
        a.close()
        b.close()


def test_file_larger_than_the_limit_is_refused(start: Any, tmp_path: Path) -> None:
    cloud = start(max_transmit_size=10_000)
    path = tmp_path / "big.bin"
    path.write_bytes(b"b" * 20_000)
    with open(path, "rb") as f:
        text = refused_at_call(cloud, lambda: cloud.call(file_facts, f), TransmitSizeError)
    assert "exceeds max_transmit_size of 10,000 bytes (the file has 20,000 bytes)" in text


# ------------------------------------------------------------------ non-code files
@pytest.fixture
def project(sim: Any) -> str:
    """The client's project directory as the workers know it (skip when the simulator does not tell them)."""
    dirs = (cloudsim.client._cloud.server.settings or {}).get("project_dirs")
    if not dirs:
        pytest.skip("the workers' settings have no project_dirs: non-code-files cannot be checked")
    assert os.path.realpath(os.getcwd()) in dirs
    return os.path.realpath(os.getcwd())


def test_project_data_files_are_not_on_the_cloud(sim: Any, project: str) -> None:
    data_file = os.path.join(project, "pyproject.toml")
    assert os.path.isfile(data_file)
    for func in (read_text, read_pathlib, read_os_open):
        with pytest.warns(NonCodeFilesWarning):
            exc = failure(sim, sim.call(func, data_file))
        assert exc.exc_type == "FileNotFoundError", (func, exc.exc_type)
        text = str(exc)
        assert "data files of your project are not sent" in text and "cloud.files" in text, text
    jid = sim.call(open_and_catch, data_file)
    with pytest.warns(NonCodeFilesWarning, match=re.escape(data_file)):
        assert "cloud.files" in sim.result(jid, timeout=WAIT)
    found = pitfalls(sim, jid, "non-code-files")
    assert found and found[0]["path"] == data_file and found[0]["mode"] == "read"


def test_a_job_cannot_write_into_the_project(sim: Any, project: str) -> None:
    target = os.path.join(project, "tests", "written-by-a-cloudsim-job.txt")
    try:
        with pytest.warns(NonCodeFilesWarning):
            exc = failure(sim, sim.call(write_text, target))
        assert exc.exc_type == "FileNotFoundError" and "cannot write into them" in str(exc)
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):  # only when the rule is broken: leave the repository clean
            os.remove(target)


def test_files_outside_the_project_work(sim: Any, project: str, tmp_path: Path) -> None:
    """System files, installed packages, temp files and the job's own directory are reachable."""
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    jids = [sim.call(read_text, str(outside)), sim.call(read_text, pytest.__file__),
            sim.call(read_text, os.__file__), sim.call(own_files)]
    got = sim.result(jids, timeout=WAIT)
    assert got[0] == "outside" and "pytest" in got[1] and "import" in got[2]
    cwd, own, temp = got[3]
    assert (own, temp) == ("mine", "temp")
    assert cwd != os.getcwd() and not cwd.startswith(project + os.sep)


# ------------------------------------------------------------------ sqlite
def test_sqlite_connection_cannot_be_sent(sim: Any) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        text = refused_at_call(sim, lambda: sim.call(identity, Holder(conn)))
    finally:
        conn.close()
    assert "Culprit: args[0].db -> sqlite3.Connection" in text
    assert "sqlite" in text and "socket-based database" in text


def test_sqlite_file_of_the_project_is_not_on_the_cloud(sim: Any, project: str, tmp_path: Path) -> None:
    db = os.path.join(project, "tests", "cloudsim-wire-test.db")
    try:
        with pytest.warns(SqliteWarning):
            exc = failure(sim, sim.call(connect_sqlite, db))
        assert exc.exc_type == "OperationalError"
        assert "sqlite" in str(exc) and "socket-based database" in str(exc)
        assert not os.path.exists(db), "the job must not create the database in the client's project"
    finally:
        if os.path.exists(db):  # only when the rule is broken: leave the repository clean
            os.remove(db)
    outside = str(tmp_path / "scratch.db")
    assert sim.result([sim.call(connect_sqlite, ":memory:"), sim.call(connect_sqlite, outside)],
                      timeout=WAIT) == [[(1,)], [(1,)]]
