"""The wire, one layer at a time and in this process: rules, culprit paths, sizes, logs, files, hooks.

Everything here is real pickling (cloudsim's picklers, real files, pipes,
sockets, sqlite connections); the job hooks (``passbyvalue``, ``datafiles``)
are exercised through their functions, without installing the audit hook in
the test runner. The same rules are checked through real jobs in
``tests/integration/test_wire.py`` (this file is not named test_wire.py: tests/unit and
tests/integration have no ``__init__.py``, so two test_wire modules would collide).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import pickle
import pty
import re
import socket
import sqlite3
import sys
import threading
import timeit
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from cloudsim import CloudException, CloudPicklingError, TransmitSizeError
from cloudsim.job import datafiles, passbyvalue
from cloudsim.job.worker import JobRun
from cloudsim.wire import diagnose, explain, log as wire_log, pickler as wire, tree as wire_tree

LIMIT = 1_000_000
ARGS = "cloud.call(foo): the positional arguments"
KWARGS = "cloud.call(foo): the keyword arguments"


@pytest.fixture(autouse=True)
def _logs_under_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Serialization logs of these tests go to a server root of their own (no simulator runs here)."""
    root = tmp_path / "server-root"
    monkeypatch.setenv("CLOUDSIM_SERVER_ROOT", str(root))
    yield root


def send(obj: Any, what: str = ARGS, limit: int = LIMIT) -> Any:
    """Serialize as call() does and rebuild here: what a job would get."""
    return pickle.loads(wire.serialize(obj, what, limit))


def refused(obj: Any, what: str = ARGS, limit: int = LIMIT) -> CloudPicklingError:
    with pytest.raises(CloudPicklingError) as info:
        wire.serialize(obj, what, limit)
    exc = info.value
    assert isinstance(exc, pickle.PicklingError) and isinstance(exc, CloudException)
    return exc


def log_paths(message: str) -> List[str]:
    match = re.search(r"Serialization log: (\S+\.txt) \(JSON: (\S+\.json)\)", message)
    assert match, f"no serialization log named in:\n{message}"
    return [match.group(1), match.group(2)]


# ------------------------------------------------------------------ objects used by the cases
class Store:
    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:")
        self.name = "store"


class Holder:
    def __init__(self, db: Any) -> None:
        self.db = db


class Manager:
    """The seed's example: a management object caching loaded images."""

    def __init__(self) -> None:
        self.cache = {f"img{i}": bytes(30_000) for i in range(100)}
        self.name = "manager"


MANAGER = Manager()
LOCK = threading.Lock()


def in_main(source: str, **names: Any) -> Any:
    """A function as a script defines it in ``__main__``: it travels by value, with the globals it uses.

    (Functions of this test module travel by reference: the module is shipped.)
    """
    namespace = {"__name__": "__main__", **names}
    exec(source, namespace)
    return namespace[re.match(r"def (\w+)", source).group(1)]


uses_manager = in_main("def uses_manager(x):\n    return MANAGER.name + x\n", MANAGER=MANAGER)
uses_lock = in_main("def uses_lock():\n    return LOCK.locked()\n", LOCK=LOCK)


def numbers() -> Iterator[int]:
    yield 1


class WithCache:
    __transient__ = ("cache",)

    def __init__(self) -> None:
        self.value = 42
        self.cache = {"big": "x" * 100}


class SubWithCache(WithCache):
    """__transient__ is inherited from the class."""


class OwnState:
    """Pickles its own way: __transient__ does not apply."""

    __transient__ = ("cache",)

    def __init__(self) -> None:
        self.value = 1
        self.cache = "kept"

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class OwnReduce:
    __transient__ = ("cache",)

    def __init__(self, cache: str = "kept") -> None:
        self.cache = cache

    def __reduce__(self) -> tuple:
        return (OwnReduce, (self.cache,))


class Slotted:
    __slots__ = ("a", "b")
    __transient__ = {"b"}

    def __init__(self) -> None:
        self.a = 1
        self.b = 2


class BadTransient:
    __transient__ = "cache"  # a str, not a list of names

    def __init__(self) -> None:
        self.cache = 1


CONSTRUCTED = []


def _make_counted() -> "Counted":
    CONSTRUCTED.append(1)
    return Counted()


class Counted:
    """Counts how often it is unpickled and pickled."""

    reduced = 0

    def __reduce__(self) -> tuple:
        Counted.reduced += 1
        return (_make_counted, ())


# ------------------------------------------------------------------ unpicklable: the path to the culprit
def _generator_method() -> Any:
    return numbers().send


UNPICKLABLE = [
    pytest.param(lambda: numbers(), "generator", id="generator"),
    pytest.param(_generator_method, "generator", id="generator-method"),  # the path ends in .__self__
    pytest.param(lambda: itertools.count(), "itertools.count", id="itertools.count"),
    pytest.param(lambda: itertools.chain([1], [2]), "itertools.chain", id="itertools.chain"),
    pytest.param(lambda: itertools.islice(range(5), 2), "itertools.islice", id="itertools.islice"),
    pytest.param(lambda: itertools.tee([1, 2])[0], "itertools._tee", id="itertools.tee"),
    pytest.param(lambda: re.search("a", "cat"), "re.Match", id="re.Match"),
    pytest.param(lambda: threading.Lock(), "_thread.lock", id="lock"),
    pytest.param(lambda: threading.RLock(), "_thread.RLock", id="rlock"),
    pytest.param(lambda: socket.socket(), "socket.socket", id="socket"),
    pytest.param(lambda: sqlite3.connect(":memory:"), "sqlite3.Connection", id="sqlite"),
    pytest.param(lambda: hashlib.sha256(), "_hashlib.HASH", id="extension-object"),
]


@pytest.mark.parametrize("make, type_name", UNPICKLABLE)
def test_unpicklable_object_is_refused_with_its_path(make: Any, type_name: str) -> None:
    """Each unpicklable kind, nested in an attribute, is refused with the path and the type of the culprit."""
    obj = make()
    try:
        exc = refused((Holder(obj),))
    finally:
        if hasattr(obj, "close"):
            obj.close()
    text = str(exc)
    suffix = ".__self__" if make is _generator_method else ""
    assert f"Culprit: args[0].db{suffix} -> {type_name}" in text, text
    assert "[pitfall: " in text
    assert "__transient__ = ['db'] on class Holder" in text, "an attribute culprit must suggest __transient__"
    for path in log_paths(text):
        assert os.path.isfile(path), path


def test_sqlite_culprit_names_sqlite_and_a_socket_based_database() -> None:
    """The seed's example path, args[0].db._conn -> sqlite3.Connection, with the sqlite explanation."""
    store = Store()
    try:
        text = str(refused((Holder(store),)))
    finally:
        store._conn.close()
    assert "Culprit: args[0].db._conn -> sqlite3.Connection" in text, text
    assert "sqlite" in text and "socket-based database" in text, text
    assert "[pitfall: sqlite]" in text
    assert "__transient__ = ['_conn'] on class Store" in text


@pytest.mark.parametrize("piece, what, expected", [
    pytest.param({"opts": {"lock": threading.Lock()}}, KWARGS, "kwargs['opts']['lock'] -> _thread.lock", id="kwargs"),
    pytest.param(([1, 2, [3, threading.Lock()]],), ARGS, "args[0][2][1] -> _thread.lock", id="nested-list"),
    pytest.param(uses_lock, "cloud.call(uses_lock): the function",
                 "uses_lock.__globals__['LOCK'] -> _thread.lock", id="global"),
])
def test_path_names_items_keys_and_globals(piece: Any, what: str, expected: str) -> None:
    """Paths go through dict keys, list indexes and the globals a function refers to."""
    text = str(refused(piece, what))
    assert f"Culprit: {expected}" in text, text
    assert "__transient__" not in text, "an item or a global is no attribute: no __transient__ advice"


def test_path_names_closures_defaults_methods_and_partials() -> None:
    """A closure variable, a default value, a bound method's instance and a partial's argument are named."""
    lock = threading.Lock()

    def closure() -> Any:
        return lock

    def with_default(x: Any = lock) -> Any:
        return x

    holder = Holder(lock)
    cases = [
        (closure, "closure.<closure>.lock"),
        (with_default, "with_default.__defaults__[0]"),
        (functools.partial(print, lock), "func.args[0]"),
        (holder.__init__, "__init__.__self__.db"),
    ]
    for func, path in cases:
        text = str(refused(func, "cloud.call(f): the function"))
        assert f"Culprit: {path} -> _thread.lock" in text, text


def test_global_culprit_says_it_travels_with_the_function() -> None:
    text = str(refused(uses_lock, "cloud.call(uses_lock): the function"))
    assert "global 'LOCK'" in text and "uses_lock()" in text, text


def test_serialization_log_records_the_tree_and_marks_the_failed_node() -> None:
    """The log is text plus JSON: every node with its type and size, the failed node marked."""
    store = Store()
    try:
        exc = refused((Holder(store), [1, 2, 3], "x" * 500))
    finally:
        store._conn.close()
    txt, js = log_paths(str(exc))
    text = Path(txt).read_text()
    assert "args[0].db._conn  (sqlite3.Connection, cannot be pickled)   <-- FAILED HERE" in text, text
    assert re.search(r"args\[1\]  \(list, \d+ bytes\)", text), text
    data = json.loads(Path(js).read_text())
    assert data["reason"] == "unpicklable" and data["culprit"] == "args[0].db._conn"
    nodes = {}

    def visit(node: dict) -> None:
        nodes[node["path"]] = node
        for child in node["children"]:
            visit(child)

    visit(data["tree"])
    assert nodes["args[0].db._conn"]["culprit"] is True
    assert nodes["args[0].db._conn"]["type"] == "sqlite3.Connection"
    assert nodes["args[1]"]["size"] > 0 and "failed" not in nodes["args[1]"]
    assert nodes["args[2]"]["type"] == "str"


def test_log_lives_under_the_server_root(_logs_under_tmp: Path) -> None:
    """The log is under <server_root>/logs/serialization/<date>/ (discoverable with log_directory)."""
    txt, _ = log_paths(str(refused((numbers(),))))
    assert os.path.dirname(txt) == wire_log.log_directory(str(_logs_under_tmp))


def test_nested_too_deeply_is_a_clear_pickling_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    text = str(refused((deep,)))
    assert "nested too deeply" in text and "RecursionError" in text


def test_a_reduce_that_raises_is_the_culprit_with_its_own_error() -> None:
    class Refuses:
        def __reduce__(self) -> tuple:
            raise RuntimeError("Refuses refuses to be pickled")

    text = str(refused(({"k": Refuses()},)))
    assert "RuntimeError: Refuses refuses to be pickled" in text
    assert "Culprit: args[0]['k'] ->" in text and "Refuses" in text


def test_a_broken_walk_never_hides_the_pickling_error() -> None:
    """If finding the culprit fails, the original error still comes out, in the usual layout."""

    class BrokenPickler(wire._WirePickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("walker broke")

    exc = diagnose.unpicklable((numbers(),), ARGS, None, TypeError("cannot pickle 'generator' object"),
                               BrokenPickler, LIMIT)
    assert isinstance(exc, CloudPicklingError)
    text = str(exc)
    assert text.startswith(f"{ARGS} cannot be pickled: TypeError: cannot pickle 'generator' object"), text
    assert "could not find the culprit: RuntimeError: walker broke" in text
    big = diagnose.too_big((b"x",), 2_000_000, ARGS, None, BrokenPickler, LIMIT)
    assert isinstance(big, TransmitSizeError) and "would send 2,000,000 bytes" in str(big)


# ------------------------------------------------------------------ transmit size
def test_too_big_names_size_limit_piece_and_the_global_that_holds_the_data() -> None:
    """The seed's example: a global manager caching images, which the function never reads."""
    with pytest.raises(TransmitSizeError) as info:
        wire.serialize(uses_manager, "cloud.call(uses_manager): the function", LIMIT)
    exc = info.value
    assert isinstance(exc, pickle.PicklingError) and isinstance(exc, CloudPicklingError)
    text = str(exc)
    first = text.splitlines()[0]
    assert re.match(r"cloud\.call\(uses_manager\): the function would send 3,0\d\d,\d{3} bytes \(3\.0 MB\); "
                    r"the limit max_transmit_size is 1,000,000 bytes \(1\.0 MB\)\.$", first), first
    assert re.search(r"uses_manager\.__globals__\['MANAGER'\]: 3\.0 MB \(\S*Manager\)", text), text
    assert "uses_manager.__globals__['MANAGER'].cache: 3.0 MB (dict)" in text, text
    assert "global 'MANAGER'" in text
    assert "__transient__ = ['cache'] on class Manager" in text
    assert "max_transmit_size=N" in text and "16,000,000" in text
    txt, js = log_paths(text)
    data = json.loads(Path(js).read_text())
    assert data["reason"] == "transmit-size" and data["size"] > LIMIT and data["limit"] == LIMIT
    assert "uses_manager.__globals__['MANAGER'].cache['img0']  (bytes, 30.0 KB)" in Path(txt).read_text()


def test_too_big_arguments_list_their_largest_parts() -> None:
    big = {"small": list(range(10)), "large": b"z" * 1_200_000}
    with pytest.raises(TransmitSizeError) as info:
        wire.serialize((1, big), ARGS, LIMIT)
    text = str(info.value)
    assert "args[1]['large']: 1.2 MB (bytes)" in text, text
    assert "args[1]['small']" not in text.split("Fix:")[0], "a small part is no large contributor"


def test_the_limit_is_per_piece_and_exact() -> None:
    """A piece of exactly the limit passes, one byte more is refused; pieces are never summed."""
    payload = (b"p" * 50_000,)
    size = len(pickle.dumps(payload, wire.PROTOCOL))
    assert wire.serialize(payload, ARGS, size) == pickle.dumps(payload, wire.PROTOCOL)
    with pytest.raises(TransmitSizeError):
        wire.serialize(payload, ARGS, size - 1)
    # two pieces each under the limit, together over it: both pass
    wire.serialize(payload, ARGS, size)
    wire.serialize({"other": payload[0]}, KWARGS, size + 100)


def test_contributors_are_computed_only_on_failure() -> None:
    """The fast path pickles once; only a failure walks the object (pickling parts again)."""
    Counted.reduced = 0
    wire.serialize(([Counted()],), ARGS, LIMIT)
    assert Counted.reduced == 1, "a successful call must pickle each object once"
    Counted.reduced = 0
    with pytest.raises(TransmitSizeError):
        wire.serialize(([Counted()], b"b" * 2000), ARGS, 1000)
    assert Counted.reduced > 1, "the failure path walks the piece"


# ------------------------------------------------------------------ transient
def test_transient_attributes_arrive_missing() -> None:
    obj = WithCache()
    got = send((obj,))[0]
    assert got.value == 42 and not hasattr(got, "cache")
    assert obj.cache == {"big": "x" * 100}, "the client's object keeps its attribute"
    assert not hasattr(send((SubWithCache(),))[0], "cache"), "a class's __transient__ is inherited"


def test_transient_on_the_instance_and_in_slots() -> None:
    obj = Holder("db value")
    obj.__transient__ = ["db"]
    assert not hasattr(send((obj,))[0], "db")
    slotted = send((Slotted(),))[0]
    assert slotted.a == 1 and not hasattr(slotted, "b")


def test_objects_with_their_own_state_decide_for_themselves() -> None:
    assert send((OwnState(),))[0].cache == "kept"
    assert send((OwnReduce(),))[0].cache == "kept"


def test_transient_must_be_a_collection_of_names() -> None:
    text = str(refused((BadTransient(),)))
    assert "__transient__ of BadTransient must be a list, tuple or set" in text, text


def test_transient_drops_the_unpicklable_part() -> None:
    """An unpicklable attribute marked transient no longer stops the call (the fix the message suggests)."""

    class Service:
        __transient__ = ("lock",)

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.name = "svc"

    got = send((Service(),))[0]
    assert got.name == "svc" and not hasattr(got, "lock")


# ------------------------------------------------------------------ special types
def test_special_types_round_trip() -> None:
    """Functions, lambdas, closures, bound methods, partials and ranges survive the trip (in this process)."""
    n = 10

    def closure(x: int) -> int:
        return x + n

    holder = Holder(3)
    got = send((lambda x: x * 3, closure, functools.partial(pow, 2), range(3, 30, 3), holder.__init__))
    assert got[0](5) == 15 and got[1](5) == 15 and got[2](10) == 1024
    assert got[3] == range(3, 30, 3) and type(got[3]) is range
    assert got[4].__self__.db == 3


# ------------------------------------------------------------------ files
def _data_file(tmp_path: Path, text: str = "header\nfirst\nsecond\n") -> Path:
    path = tmp_path / "data.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["r", "rb"])
def test_read_only_file_arrives_with_name_mode_contents_and_position(tmp_path: Path, mode: str) -> None:
    path = _data_file(tmp_path, "héader\nfirst\nsecond\n")
    with open(path, mode) as f:
        f.readline()
        position = f.tell()
        got = send((f,))[0]
        assert f.tell() == position, "sending must not move the client's position"
        assert got.name == str(path) and got.mode == mode
        assert got.tell() == position
        rest = got.read()
        assert rest == ("first\nsecond\n" if mode == "r" else b"first\nsecond\n")
        path.write_text("héader\nchanged\n", encoding="utf-8")
        assert send((f,))[0].read() == ("changed\n" if mode == "r" else b"changed\n"), \
            "a file is sent anew on every call (no caching)"


@pytest.mark.parametrize("mode", ["w", "a", "x", "r+", "w+", "a+", "rb+", "wb"])
def test_file_open_for_writing_is_refused(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("new.txt" if "x" in mode else "data.txt")
    if "x" not in mode:
        path.write_text("contents\n")
    with open(path, mode) as f:
        text = str(refused((f,)))
    assert "it is open for writing" in text and repr(mode) in text, text
    assert "Culprit: args[0] ->" in text and "[pitfall: file-objects]" in text


def test_streams_devices_and_virtual_files_are_refused() -> None:
    """Pipes, sockets, ttys, character devices and /proc files are refused, each with its own reason."""
    r, w = os.pipe()
    a, b = socket.socketpair()
    master, slave = pty.openpty()
    files = {
        "pipe": (os.fdopen(r, "r"), "it is a pipe"),
        "socket": (a.makefile("r"), "network stream"),
        "tty": (os.fdopen(slave, "r"), "it is a terminal (tty)"),
        "device": (open(os.devnull), "it is a character device"),
    }
    if os.path.exists("/proc/self/status"):
        files["proc"] = (open("/proc/self/status"), "does not appear to map to a physical, real file")
    try:
        for name, (f, reason) in files.items():
            text = str(refused((f,)))
            assert reason in text, f"{name}: {text}"
            assert "[pitfall: file-objects]" in text
    finally:
        for f, _ in files.values():
            f.close()
        for fd in (w, master):
            os.close(fd)
        a.close()
        b.close()


def test_standard_input_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = os.fdopen(os.dup(0), "r")
    try:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert "it is standard input" in str(refused((stdin,)))
    finally:
        stdin.close()


def test_closed_and_oversized_files_are_refused(tmp_path: Path) -> None:
    path = _data_file(tmp_path, "x" * 5000)
    f = open(path)
    f.close()
    assert "the file is closed" in str(refused((f,)))
    with open(path) as f:
        with pytest.raises(TransmitSizeError) as info:
            wire.serialize({"data": f}, KWARGS, 1000)
    text = str(info.value)
    assert "exceeds max_transmit_size of 1,000 bytes (the file has 5,000 bytes)" in text, text
    assert "Culprit: kwargs['data']" in text


def test_file_method_is_refused_as_the_function_and_as_data(tmp_path: Path) -> None:
    with open(_data_file(tmp_path)) as f:
        text = str(refused(f.read, "cloud.call(read): the function"))
        assert "Cannot pickle the method read() of file" in text and "cloud.call(f.read) is refused" in text, text
        assert "Culprit: args[0] -> builtin_function_or_method" in str(refused((f.readline,)))


def test_a_file_being_iterated_is_refused_with_a_reason(tmp_path: Path) -> None:
    with open(_data_file(tmp_path)) as f:
        next(iter(f))
        assert "its position cannot be read" in str(refused((f,)))


def test_stdout_becomes_the_jobs_own() -> None:
    assert pickle.loads(wire.serialize((sys.stdout,), ARGS, LIMIT))[0] is sys.stdout


# ------------------------------------------------------------------ results (worker side)
def test_result_errors_keep_the_worker_message_and_add_the_path() -> None:
    with pytest.raises(wire.ResultError) as info:
        wire.serialize_result({"rows": numbers()}, "job", LIMIT)
    assert info.value.exc_type == "PicklingError"
    text = info.value.text
    assert text.startswith("The return value of job() could not be pickled to travel back to the client: "
                           "TypeError: cannot pickle 'generator' object"), text
    assert "Culprit: result['rows'] -> generator" in text and "[pitfall: unpicklable]" in text
    with pytest.raises(wire.ResultError) as info:
        wire.serialize_result([b"r" * 2000], "job", 1000)
    assert info.value.exc_type == "TransmitSizeError"
    assert "result[0]: 2.0 KB (bytes)" in info.value.text and "return less data" in info.value.text


def test_result_keeps_transient_rules_and_plain_values_fast_path() -> None:
    assert not hasattr(pickle.loads(wire.serialize_result(WithCache(), "job", LIMIT)), "cache")
    assert wire.serialize_result((1, "a"), "job", LIMIT) == pickle.dumps((1, "a"), wire.PROTOCOL)


# ------------------------------------------------------------------ the walk itself
def test_walker_sizes_parts_and_bounds_the_walk() -> None:
    obj = {"a": b"x" * 5000, "b": [b"y" * 2000, b"z" * 1000]}
    walker = diagnose._walker(wire._WirePickler, None, 1000)
    root = walker.walk(obj, "obj")
    paths = {n.path: n for n in root.iter()}
    assert paths["obj['a']"].size > 5000 and paths["obj['b']"].size > 3000
    assert paths["obj['b'][1]"].size > 1000
    assert paths["obj['b'][0]"].type == "bytes"
    assert not root.culprits()
    assert wire_tree.format_size(3_100_000) == "3.1 MB" and wire_tree.format_size(312) == "312 bytes"
    parts = explain.largest_parts(root, paths["obj"].size or 0)
    assert [p.path for p in parts] == ["obj['a']", "obj['b']"]


# ------------------------------------------------------------------ pass-by-value hook
def mutate_first(list_param: list) -> str:
    list_param[0] += 1
    return "done"


def mutate_rest(first: int, *items: list) -> None:
    items[1].append(1)


def mutate_keyword(*, options: dict) -> None:
    options["x"] = 1


def _job(func: Any, args: tuple, kwargs: dict | None = None, mutate: Any = None) -> JobRun:
    """A JobRun as the worker leaves it: args received as bytes, rebuilt, then (maybe) changed by the job."""
    job = JobRun(7, {}, {})
    job.func, job.func_name = func, getattr(func, "__qualname__", "f")
    job.args_bytes = wire.serialize(args, ARGS, LIMIT)
    job.kwargs_bytes = wire.serialize(kwargs, KWARGS, LIMIT) if kwargs else None
    job.args = pickle.loads(job.args_bytes)
    job.kwargs = pickle.loads(job.kwargs_bytes) if kwargs else {}
    if mutate is not None:
        mutate(job.args, job.kwargs)
    return job


def test_pass_by_value_pitfall_names_the_parameter() -> None:
    job = _job(mutate_first, ([1, 2],), mutate=lambda a, k: mutate_first(*a))
    passbyvalue.after(job)
    assert [p["id"] for p in job.pitfalls] == ["pass-by-value"]
    record = job.pitfalls[0]
    assert record["argument"] == "list_param" and record["function"] == "mutate_first"
    assert record["what"] == "Job 7 changed its argument list_param of mutate_first(); the change stays on the cloud."
    assert "return the new value" in record["message"]


def test_pass_by_value_names_varargs_keywords_and_unknown_signatures() -> None:
    job = _job(mutate_rest, (1, [1], [2]), mutate=lambda a, k: a[2].append(1))
    passbyvalue.after(job)
    assert [p["argument"] for p in job.pitfalls] == ["items[1]"]
    job = _job(mutate_keyword, (), {"options": {}}, mutate=lambda a, k: k["options"].update(x=1))
    passbyvalue.after(job)
    assert [p["argument"] for p in job.pitfalls] == ["options"]
    job = _job(max, ([1],), mutate=lambda a, k: a[0].append(2))  # a builtin without a signature
    passbyvalue.after(job)
    assert [p["argument"] for p in job.pitfalls] == ["args[0]"]


def test_pass_by_value_sees_changed_attributes_and_ignores_unchanged_and_files(tmp_path: Path) -> None:
    job = _job(mutate_first, (Holder([1]),), mutate=lambda a, k: setattr(a[0], "db", [2]))
    passbyvalue.after(job)
    assert [p["argument"] for p in job.pitfalls] == ["list_param"]
    for args in ((1, "x", (2, 3.0)), ([1, 2], {"a": [1]}), (Holder([1]),)):
        job = _job(mutate_first, args)
        passbyvalue.after(job)
        assert job.pitfalls == [], f"unchanged {args!r} reported"
    with open(_data_file(tmp_path)) as f:
        job = _job(mutate_first, (f,), mutate=lambda a, k: a[0].read())
    passbyvalue.after(job)
    assert job.pitfalls == [], "reading a sent file is no mutation"


def test_pass_by_value_fast_paths_do_not_unpickle_again() -> None:
    """Immutable arguments are decided by type and unchanged ones by one pickle.dumps: no second unpickling."""
    job = JobRun(1, {}, {})
    job.func, job.args, job.kwargs = mutate_first, (1, "a", (2.0, None)), {}
    job.args_bytes = b"not a pickle at all"  # would raise if the hook unpickled it
    passbyvalue.after(job)
    job = _job(mutate_first, ([Counted()],))
    CONSTRUCTED.clear()
    passbyvalue.after(job)
    assert CONSTRUCTED == [] and job.pitfalls == []


def test_pass_by_value_skips_jobs_whose_data_never_arrived() -> None:
    job = JobRun(1, {}, {})
    job.args_bytes = b"garbage"
    passbyvalue.after(job)  # job.func is None: could-not-depickle
    assert job.pitfalls == []


def test_pass_by_value_cost_per_job(capsys: pytest.CaptureFixture) -> None:
    """Measures the hook on 2,000 tiny jobs (int args, a small list); the bound only catches a hang."""
    results = {}
    for label, args in (("int args", (1, 2)), ("small list", ([1, 2, 3, "x"],))):
        jobs = [_job(mutate_first, args) for _ in range(2000)]
        it = iter(jobs)
        seconds = min(timeit.repeat(lambda: passbyvalue.after(next(it)), number=400, repeat=5))
        results[label] = seconds / 400 * 1e6
        assert all(not j.pitfalls for j in jobs)
    with capsys.disabled():
        print("\npass-by-value hook per job: " + ", ".join(f"{k} {v:.2f} us" for k, v in results.items()))
    assert all(v < 5_000 for v in results.values()), results


# ------------------------------------------------------------------ non-code-files: the decision
@pytest.fixture
def decision_table(tmp_path: Path) -> Iterator[Path]:
    saved = datafiles.roots()
    project = tmp_path / "project"
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / "server").mkdir()
    datafiles.configure([str(project)], [str(project / ".venv"), str(project / "server"), str(tmp_path)])
    yield project
    datafiles._roots = saved


def test_project_paths_are_refused_and_the_longest_root_wins(decision_table: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    project = decision_table
    assert datafiles.decide(str(project / "data.csv"))
    assert datafiles.decide(str(project / "sub" / "deeper" / "x.txt"))
    assert datafiles.decide(str(project))
    assert not datafiles.decide(str(project / ".venv" / "lib" / "mod.py")), "a virtualenv inside the project"
    assert not datafiles.decide(str(project / "server" / "job.txt")), "the server root inside the project"
    assert not datafiles.decide(str(tmp_path / "elsewhere.txt")), "the temp dir holding the project"
    assert not datafiles.decide(str(project) + "-sibling/data.csv"), "a prefix of the name is no parent"
    assert not datafiles.decide("/etc/hostname")
    monkeypatch.chdir(project)
    assert datafiles.decide("relative.txt"), "relative paths resolve against the current directory"
    assert datafiles.decide(str(project / "sub" / ".." / "data.csv"))


def test_symlinked_directories_into_the_project_are_resolved(decision_table: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(decision_table, target_is_directory=True)
    assert datafiles.decide(str(link / "data.csv"))


def test_sqlite_paths_and_write_modes_are_read_correctly() -> None:
    assert datafiles._sqlite_path(":memory:") is None
    assert datafiles._sqlite_path("") is None
    assert datafiles._sqlite_path("file:/work/x.db?mode=ro") == "/work/x.db"
    assert datafiles._sqlite_path("file::memory:?cache=shared") is None
    assert datafiles._sqlite_path(b"/tmp/a.db") == "/tmp/a.db"
    assert datafiles._writing("r", None) is False and datafiles._writing("rb+", None) is True
    assert datafiles._writing(None, os.O_RDONLY) is False and datafiles._writing(None, os.O_WRONLY | os.O_CREAT)
