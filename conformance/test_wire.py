"""A. What crosses the wire: pass-by-value, sizes, what can and cannot be sent.

Each case proves one quirk of QUIRKS.md section A through the public API of
the backend (``cloud``), never through cloudsim's internals.
"""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import re
import sqlite3
import sys
import threading

import pytest

# --------------------------------------------------------------------------- jobs
# This module is user code: the cloud gets it shipped and imports it as written, so
# the jobs below rely on nothing of the client but their arguments.

SETTINGS = {"mode": "as at call time"}


def append_job(items):
    items.append("added by the job")
    return items


def identity(value):
    return value


def describe_arg(value):
    return type(value).__name__, value


def numbers():
    yield 1
    yield 2


def return_generator():
    return (i for i in range(3))


def make_adder(n):
    def add(x):
        return x + n

    return add


class Counter:
    def __init__(self, start):
        self.start = start

    def add(self, n):
        return self.start + n


class WithCache:
    __transient__ = ("cache",)

    def __init__(self):
        self.value = 42
        self.cache = {"big": "x" * 100}


def transient_view(obj):
    return hasattr(obj, "cache"), obj.value


class Holder:
    def __init__(self, inner):
        self.db = inner


def read_rest(f):
    return f.read()


def read_path(path):
    with open(path) as f:
        return f.read()


def mutate_argument(list_param):
    list_param[0] += 1
    return "done"


def no_arguments():
    return "ran"


# ----------------------------------------------------------------------- helpers
def _next_jid_after_failure(cloud, failing):
    """Submit a job, run ``failing`` (which must raise at call time), submit again: both jids."""
    before = cloud.call(no_arguments)
    with pytest.raises(Exception) as info:
        failing()
    after = cloud.call(no_arguments)
    assert cloud.result([before, after], timeout=60) == ["ran", "ran"]
    return before, after, info.value


# ------------------------------------------------------------------------- cases
class TestWhatCrossesTheWire:
    """Section A of the catalogue."""

    @pytest.mark.quirk("pass-by-value")
    def test_pass_by_value(self, cloud):
        """QUIRKS pass-by-value: "Function, arguments, keyword arguments and the globals a function
        refers to are serialized with cloudpickle at call time and deserialized in the job's
        interpreter. Mutations in the job never reach the client; client mutations after call()
        never reach the job."
        """
        a_list = [1, 2]
        jid = cloud.call(append_job, a_list)
        a_list.append("added by the client after call")
        # A lambda travels by value, with the globals it refers to (a module-level function of a
        # shipped module travels by reference: the server imports the module, see runtime-patches).
        reader = lambda: SETTINGS["mode"]  # noqa: E731
        try:
            SETTINGS["mode"] = "changed by the client before call"
            jid_changed = cloud.call(reader)
            SETTINGS["mode"] = "changed by the client after call"
        finally:
            SETTINGS["mode"] = "as at call time"
        got = cloud.result(jid, timeout=60)
        assert got == [1, 2, "added by the job"], "the job saw the client's later mutation"
        assert a_list == [1, 2, "added by the client after call"], "the job's mutation reached the client"
        assert cloud.result(jid_changed, timeout=60) == "changed by the client before call", (
            "a global the function refers to must be copied at call time"
        )

    @pytest.mark.quirk("pass-by-value")
    def test_pass_by_value_keyword_arguments_are_copies(self, cloud):
        """QUIRKS pass-by-value: keyword arguments are serialized at call time too."""
        options = {"items": [1]}
        jid = cloud.call(identity, value=options)
        options["items"].append("client")
        assert cloud.result(jid, timeout=60) == {"items": [1]}
        assert options == {"items": [1, "client"]}

    @pytest.mark.quirk("pass-by-value")
    def test_pass_by_value_mutation_pitfall(self, cloud):
        """QUIRKS pass-by-value, explain: "Pitfall when a job mutates one of its arguments (or a global
        it captured), naming the argument: the change is lost, return the value instead."
        """
        jid = cloud.call(mutate_argument, [1, 2])
        assert cloud.result(jid, timeout=60) == "done"
        pits = cloud.info(jid, ["pitfalls"])[jid]["pitfalls"]
        found = [p for p in pits if p["id"] == "pass-by-value"]
        assert found, f"no pass-by-value pitfall on the job, got {pits!r}"
        assert "list_param" in found[0]["message"]

    @pytest.mark.quirk("transmit-size")
    def test_transmit_size(self, cloud):
        """QUIRKS transmit-size: "Each serialized piece of a job is checked on its own against
        max_transmit_size (default 1,000,000 bytes ...). Checked in call/map before anything runs."
        Explain: "A PicklingError subclass naming the size, the limit, what was too large".
        """
        big = b"x" * 1_000_001
        before, after, exc = _next_jid_after_failure(cloud, lambda: cloud.call(len, big))
        assert isinstance(exc, cloud.CloudException), type(exc).__mro__
        assert isinstance(exc, pickle.PicklingError), type(exc).__mro__
        assert after == before + 1, f"a job was created for the refused call (jids {before} then {after})"
        text = str(exc)
        assert re.search(r"1,?000,?000", text), f"the limit is not named: {text}"
        assert "max_transmit_size" in text

    @pytest.mark.quirk("transmit-size")
    def test_transmit_size_pieces_are_checked_separately(self, cloud):
        """QUIRKS transmit-size: "Each serialized piece ... is checked on its own": the positional
        arguments (one piece) may not exceed the limit, but arguments and keyword arguments are
        never summed.
        """
        one, other = b"y" * 600_000, b"w" * 600_000  # two objects: pickle would send one object once
        with pytest.raises(pickle.PicklingError):
            cloud.call(describe_arg, (one, other))  # one piece of 1.2 MB
        jid = cloud.call(lambda a, b=None: len(a) + len(b), one, b=other)  # two pieces of 0.6 MB
        assert cloud.result(jid, timeout=60) == 1_200_000

    @pytest.mark.quirk("transmit-size", max_transmit_size=3_000_000)
    def test_transmit_size_limit_is_a_setting(self, cloud):
        """QUIRKS transmit-size: the limit is the setting max_transmit_size (at most 16,000,000)."""
        jid = cloud.call(len, b"z" * 2_000_000)
        assert cloud.result(jid, timeout=60) == 2_000_000
        with pytest.raises(pickle.PicklingError):
            cloud.call(len, b"z" * 3_000_001)

    @pytest.mark.quirk("transmit-size")
    def test_transmit_size_of_the_return_value(self, cloud):
        """QUIRKS transmit-size: "a too-large return value makes the job error"."""
        jid = cloud.call(lambda: b"r" * 1_500_000)
        with pytest.raises(cloud.CloudException):
            cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "error"

    @pytest.mark.quirk("unpicklable")
    def test_unpicklable(self, cloud):
        """QUIRKS unpicklable: "Generators, generator methods, itertools iterators, re.Match, locks,
        sockets, sqlite connections ... cannot be sent. Failure can happen in call/map (function or
        argument)". Explain: a PicklingError.
        """
        before, after, exc = _next_jid_after_failure(cloud, lambda: cloud.call(list, numbers()))
        assert isinstance(exc, pickle.PicklingError), type(exc).__mro__
        assert after == before + 1, "a job was created for an argument that cannot be sent"

    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda: itertools.count(), id="itertools.count"),
            pytest.param(lambda: re.search("a", "cat"), id="re.Match"),
            pytest.param(lambda: threading.Lock(), id="threading.Lock"),
        ],
    )
    @pytest.mark.quirk("unpicklable")
    def test_unpicklable_other_objects(self, cloud, make):
        """QUIRKS unpicklable: itertools iterators, re.Match objects and locks cannot be sent either."""
        with pytest.raises(pickle.PicklingError):
            cloud.call(identity, make())

    @pytest.mark.quirk("unpicklable")
    def test_unpicklable_return_value(self, cloud):
        """QUIRKS unpicklable: failure can happen "in result (return value)": a return value that
        cannot be pickled makes the job error.
        """
        jid = cloud.call(return_generator)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "error"
        assert "generator" in str(info.value)

    @pytest.mark.quirk("unpicklable")
    def test_unpicklable_message_gives_the_path(self, cloud):
        """QUIRKS unpicklable, explain: "PicklingError whose message gives the path to the offending
        object (args[0].db._conn -> sqlite3.Connection) and a serialization log written to disk".
        """
        with pytest.raises(pickle.PicklingError) as info:
            cloud.call(identity, Holder(numbers()))
        text = str(info.value)
        assert "args[0].db" in text, text
        assert "log" in text.lower(), text

    @pytest.mark.quirk("transient")
    def test_transient(self, cloud):
        """QUIRKS transient: "an object (or its class) with __transient__, a list/tuple/set of attribute
        names, is sent without those attributes; they arrive missing."
        """
        obj = WithCache()
        assert cloud.result(cloud.call(transient_view, obj), timeout=60) == (False, 42)
        assert obj.cache, "the client's object must keep its transient attribute"

    @pytest.mark.quirk("special-types")
    def test_special_types(self, cloud):
        """QUIRKS special-types: "Functions, lambdas, closures, bound methods, functools.partial, range,
        read-only files and PIL images can be sent."
        """
        jids = [
            cloud.call(lambda x: x * 3, 5),
            cloud.call(make_adder(10), 5),
            cloud.call(Counter(100).add, 5),
            cloud.call(functools.partial(pow, 2), 10),
            cloud.call(identity, range(3, 30, 3)),
            cloud.call(lambda f: f(4), lambda y: y + 0.5),
        ]
        got = cloud.result(jids, timeout=60)
        assert got[:4] == [15, 15, 105, 1024]
        assert got[4] == range(3, 30, 3) and type(got[4]) is range
        assert got[5] == 4.5

    @pytest.mark.quirk("special-types")
    def test_special_types_pil_image(self, cloud):
        """QUIRKS special-types: PIL images can be sent (only where PIL is installed)."""
        Image = pytest.importorskip("PIL.Image")
        image = Image.new("RGB", (4, 3), (10, 20, 30))
        jid = cloud.call(lambda im: (im.size, im.getpixel((1, 1))), image)
        assert cloud.result(jid, timeout=60) == ((4, 3), (10, 20, 30))

    @pytest.mark.parametrize(
        "mode",
        ["r", "rb"],
    )
    @pytest.mark.quirk("file-objects")
    def test_file_objects(self, cloud, tmp_path, mode):
        """QUIRKS file-objects: "A real file opened read-only can be passed; the job gets a readable
        file with the same contents and position, sent anew every call (no caching)."
        """
        path = tmp_path / "data.txt"
        path.write_text("header\nfirst contents\n")
        with open(path, mode) as f:
            f.readline()
            first = cloud.call(read_rest, f)
            path.write_text("header\nsecond contents\n")
            f.seek(0)
            f.readline()
            second = cloud.call(read_rest, f)
            assert f.tell() == len("header\n"), "sending a file must not move the client's position"
        got = cloud.result([first, second], timeout=60)
        if mode == "rb":
            got = [g.decode() for g in got]
        assert got == ["first contents\n", "second contents\n"]

    @pytest.mark.parametrize(
        "case",
        [
            "w",
            "r+",
            "w+",
            "a",
            "proc",
            "file-method",
            "pipe",
            "closed",
        ],
    )
    @pytest.mark.quirk("file-objects")
    def test_file_objects_refused(self, cloud, tmp_path, case):
        """QUIRKS file-objects: "Files open for writing, stdin, sockets/pipes/network streams and virtual
        files (e.g. under /proc) are refused, and so is a file method (f.read) passed as the function."
        Explain: "A clear error at call time saying which rule was broken" (API.md: a PicklingError).
        """
        path = tmp_path / "data.txt"
        path.write_text("contents\n")
        to_close = []
        try:
            if case in ("w", "r+", "w+", "a"):
                f = open(path, case)
                to_close.append(f)
                submit = lambda: cloud.call(read_rest, f)  # noqa: E731
            elif case == "proc":
                if not os.path.exists("/proc/self/status"):
                    pytest.skip("no /proc on this platform")
                f = open("/proc/self/status")
                to_close.append(f)
                submit = lambda: cloud.call(read_rest, f)  # noqa: E731
            elif case == "file-method":
                f = open(path)
                to_close.append(f)
                submit = lambda: cloud.call(f.read)  # noqa: E731
            elif case == "pipe":
                r, w = os.pipe()
                os.write(w, b"streamed\n")
                f = os.fdopen(r, "r")
                to_close.extend([os.fdopen(w, "w"), f])  # the writer first, so a reader gets EOF
                submit = lambda: cloud.call(read_rest, f)  # noqa: E731
            else:
                f = open(path)
                f.close()
                submit = lambda: cloud.call(read_rest, f)  # noqa: E731
            with pytest.raises(pickle.PicklingError) as info:
                submit()
        finally:
            for f in to_close:
                f.close()
        rule = {"proc": "virtual", "file-method": "method", "pipe": "pipe", "closed": "closed"}.get(case, "writing")
        assert rule in str(info.value).lower(), f"the error does not say which rule ({rule!r}): {info.value}"

    @pytest.mark.quirk("file-objects")
    def test_file_objects_stdin_refused(self, cloud, monkeypatch):
        """QUIRKS file-objects: standard input cannot be sent."""
        if sys.__stdin__ is None:
            pytest.skip("this process has no standard input")
        monkeypatch.setattr(sys, "stdin", sys.__stdin__)  # the real one, as a script sees it (not pytest's)
        with pytest.raises(pickle.PicklingError) as info:
            cloud.call(read_rest, sys.stdin)
        assert "standard input" in str(info.value).lower(), str(info.value)

    @pytest.mark.quirk("non-code-files")
    def test_non_code_files(self, cloud):
        """QUIRKS non-code-files: "Only code is shipped. A job runs in its own working directory on the
        'server'; data files of the client's project are not there: opening a path of the client's
        project tree that is not a shipped module fails with FileNotFoundError."
        Explain: the error text "says data files are not sent and points to cloud.files".
        """
        data_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
        assert os.path.isfile(data_file)
        jid = cloud.call(read_path, data_file)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert info.value.exc_type == "FileNotFoundError", info.value.exc_type
        assert "cloud.files" in str(info.value)

    @pytest.mark.quirk("non-code-files")
    def test_non_code_files_job_has_its_own_working_directory(self, cloud):
        """QUIRKS non-code-files: "A job runs in its own working directory on the 'server'"."""
        assert cloud.result(cloud.call(os.getcwd), timeout=60) != os.getcwd()

    @pytest.mark.quirk("sqlite")
    def test_sqlite(self, cloud):
        """QUIRKS sqlite: "A sqlite database (file based) cannot be reached from the cloud: its connection
        cannot be pickled". Explain: "Message that names sqlite and says a socket-based database is needed."
        """
        conn = sqlite3.connect(":memory:")
        try:
            with pytest.raises(pickle.PicklingError) as info:
                cloud.call(identity, conn)
        finally:
            conn.close()
        text = str(info.value).lower()
        assert "sqlite" in text and "socket" in text, str(info.value)
