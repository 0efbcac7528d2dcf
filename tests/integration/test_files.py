"""``cloud.files``: the simulated data store, from the client and from real jobs.

The store is plain files under ``<server_root>/files/``. These tests use it
with no simulator running (the store then lives under
``cloudsim.config.server_root``, here set per test through
``CLOUDSIM_SERVER_ROOT``) and with one running (the simulator's root, seen
by the client and by jobs in their own interpreters). Every function of the
original's signature is exercised, with the rules on names, byte ranges,
unknown names, md5 syncing and atomic writes.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import cloudsim
from cloudsim import CloudException
from cloudsim import files

WAIT = 60.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ job functions (shipped by reference)
def job_read(name: str) -> bytes:
    import cloudsim.files

    with cloudsim.files.getf(name) as f:
        return f.read()


def job_get(name: str) -> bytes:
    """Download with get() into the job's working directory and read it back."""
    import cloudsim.files

    path = cloudsim.files.get(name)
    with open(path, "rb") as f:
        return f.read()


def job_put(name: str, data: bytes) -> List[str]:
    import cloudsim.files

    cloudsim.files.putf(data, name)
    return cloudsim.files.list()


def job_queries(name: str) -> tuple:
    import cloudsim.files

    return (cloudsim.files.exists(name), cloudsim.files.get_md5(name), cloudsim.files.store_dir(),
            cloudsim.files.delete(name), cloudsim.files.exists(name))


def job_put_fill(name: str, byte: int, size: int) -> None:
    import cloudsim.files

    cloudsim.files.putf(bytes([byte]) * size, name)


def job_bad_name(name: str) -> None:
    import cloudsim.files

    cloudsim.files.putf(b"x", name)


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No simulator; the store under a per-test server_root (CLOUDSIM_SERVER_ROOT). Yields the store dir."""
    cloudsim.close()
    root = tmp_path / "root"
    monkeypatch.setenv("CLOUDSIM_SERVER_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    yield root / "files"


@pytest.fixture
def sim(start: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A simulator with its own server_root (not the config's); yields that root."""
    monkeypatch.setenv("CLOUDSIM_SERVER_ROOT", str(tmp_path / "config-root"))
    root = tmp_path / "sim-root"
    start(server_root=str(root))
    yield root


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ without a simulator
def test_put_and_get_round_trip_without_a_simulator(store: Path, tmp_path: Path) -> None:
    """put() stores under <config.server_root>/files with the basename as name; get() copies it back."""
    assert not cloudsim.is_simulated()
    src = write(tmp_path / "data" / "names.txt", b"alice\nbob\n")
    assert files.put(str(src)) is None
    assert (store / "names.txt").read_bytes() == b"alice\nbob\n"
    assert files.store_dir() == str(store)
    out = files.get("names.txt", str(tmp_path / "out" / "copy.txt"))
    assert out == str(tmp_path / "out" / "copy.txt")
    assert Path(out).read_bytes() == b"alice\nbob\n"


def test_put_with_a_name_and_pathlike(store: Path, tmp_path: Path) -> None:
    """put(source, name) stores under the given name (folders allowed); source may be a Path."""
    src = write(tmp_path / "x.bin", b"\x00\x01\x02")
    files.put(src, "deep/folder/x.bin")
    assert (store / "deep" / "folder" / "x.bin").read_bytes() == b"\x00\x01\x02"
    assert files.list() == ["deep/folder/x.bin"]


def test_put_missing_source_is_an_os_error(store: Path, tmp_path: Path) -> None:
    """A source that does not exist fails with FileNotFoundError and stores nothing."""
    with pytest.raises(FileNotFoundError):
        files.put(str(tmp_path / "nope.txt"))
    assert files.list() == []


def test_get_default_destination_is_the_name(store: Path, tmp_path: Path) -> None:
    """get(name) without destination writes to `name` relative to the working directory, as the original."""
    files.putf(b"payload", "sub/file.dat")
    out = files.get("sub/file.dat")
    assert Path(out) == Path("sub") / "file.dat"
    assert (tmp_path / "sub" / "file.dat").read_bytes() == b"payload"


def test_get_into_a_directory(store: Path, tmp_path: Path) -> None:
    """get(name, existing_dir) writes a file named after the name's last component inside it."""
    files.putf(b"abc", "a/b/c.txt")
    target = tmp_path / "dest"
    target.mkdir()
    out = files.get("a/b/c.txt", str(target))
    assert Path(out) == target / "c.txt"
    assert (target / "c.txt").read_bytes() == b"abc"


def test_get_a_byte_range_is_inclusive(store: Path, tmp_path: Path) -> None:
    """get(start_byte, end_byte) copies bytes start..end inclusive; end past the end means to the end."""
    files.putf(b"0123456789", "digits")
    assert Path(files.get("digits", str(tmp_path / "r1"), 2, 5)).read_bytes() == b"2345"
    assert Path(files.get("digits", str(tmp_path / "r2"), 7)).read_bytes() == b"789"
    assert Path(files.get("digits", str(tmp_path / "r3"), 8, 1000)).read_bytes() == b"89"
    assert Path(files.get("digits", str(tmp_path / "r4"), 0, 0)).read_bytes() == b"0"


def test_putf_reads_from_the_current_position_and_closes(store: Path, tmp_path: Path) -> None:
    """putf(f, name) stores what is left of f and closes f, as the original did."""
    f = open(write(tmp_path / "src", b"header|body"), "rb")
    f.read(7)
    files.putf(f, "body")
    assert f.closed
    assert (store / "body").read_bytes() == b"body"


def test_putf_accepts_data_and_text_files(store: Path, tmp_path: Path) -> None:
    """putf takes bytes, str (UTF-8), an in-memory stream and a text-mode file."""
    files.putf(b"raw", "bytes")
    files.putf("h\u00e9llo", "text")
    stream = io.BytesIO(b"from memory")
    files.putf(stream, "memory")
    assert stream.closed
    with open(write(tmp_path / "t.txt", "caf\u00e9\n".encode("utf-8")), "r", encoding="utf-8") as f:
        files.putf(f, "textfile")
    assert (store / "bytes").read_bytes() == b"raw"
    assert (store / "text").read_bytes() == "h\u00e9llo".encode("utf-8")
    assert (store / "memory").read_bytes() == b"from memory"
    assert (store / "textfile").read_bytes() == "caf\u00e9\n".encode("utf-8")


def test_putf_refuses_non_readable(store: Path) -> None:
    """putf with something that is neither data nor readable is a TypeError naming the type."""
    with pytest.raises(TypeError, match="int"):
        files.putf(42, "n")
    assert files.list() == []


def test_files_over_5_gb_are_refused(store: Path, tmp_path: Path) -> None:
    """More than 5 GB (PiCloud's limit) is a ValueError before anything is read (a sparse file, no real data)."""
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as f:
        f.truncate(files.MAX_FILE_SIZE + 1)
    with pytest.raises(ValueError, match="5GB"):
        files.put(str(big), "big")
    with pytest.raises(ValueError, match="5GB"):
        files.putf(open(big, "rb"), "big")
    assert files.list() == []


def test_getf_is_a_read_only_stream(store: Path) -> None:
    """getf gives a CloudFile: read/readline/readlines/iteration, tell from start_byte, md5, size; no write or seek."""
    data = b"line one\nline two\nline three\n"
    files.putf(data, "lines.txt")
    f = files.getf("lines.txt")
    assert f.readable() and not f.writable() and not f.seekable()
    assert f.filesize() == len(data)
    assert f.md5 == hashlib.md5(data).hexdigest()
    assert f.readline() == b"line one\n"
    assert f.tell() == 9
    assert list(f) == [b"line two\n", b"line three\n"]
    assert f.read() == b""
    with pytest.raises(io.UnsupportedOperation, match="read-only"):
        f.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        f.seek(0)
    f.close()
    assert f.closed
    with pytest.raises(ValueError):
        f.read()


def test_getf_range_and_tell(store: Path) -> None:
    """getf(name, start, end): only bytes start..end (inclusive) are readable; tell() starts at start_byte."""
    files.putf(b"abcdefghij", "letters")
    with files.getf("letters", 3, 6) as f:
        assert f.tell() == 3
        assert f.read(2) == b"de"
        assert f.tell() == 5
        assert f.readlines() == [b"fg"]
        assert f.tell() == 7
        assert f.end() == 7
    with files.getf("letters", 20) as f:
        assert f.read() == b""


def test_getf_keeps_the_contents_it_opened(store: Path) -> None:
    """A CloudFile reads the contents it opened even when the name is replaced or deleted meanwhile."""
    files.putf(b"old contents", "doc")
    f = files.getf("doc")
    files.putf(b"new!", "doc")
    assert f.read() == b"old contents"
    f.close()
    g = files.getf("doc")
    assert files.delete("doc") is True
    assert g.read() == b"new!"
    g.close()


@pytest.mark.parametrize("start,end,error", [(-1, None, ValueError), (5, 2, ValueError), (1.5, None, TypeError),
                                             (0, "9", TypeError), (True, None, TypeError)])
def test_bad_byte_ranges(store: Path, start: Any, end: Any, error: type) -> None:
    """Negative starts, ends before starts and non-integers are refused, in get and getf."""
    files.putf(b"0123456789", "digits")
    with pytest.raises(error):
        files.getf("digits", start, end)
    with pytest.raises(error):
        files.get("digits", "out", start, end)


def test_list_exists_delete(store: Path) -> None:
    """list() is sorted and recursive; exists() is True only for stored files; delete() says whether it removed one."""
    for name in ("b.txt", "a/z.txt", "a/b/c.txt"):
        files.putf(name.encode(), name)
    assert files.list() == ["a/b/c.txt", "a/z.txt", "b.txt"]
    assert files.exists("a/z.txt") and not files.exists("a") and not files.exists("missing")
    assert files.delete("a/b/c.txt") is True
    assert not (store / "a" / "b").exists(), "a folder emptied by delete is removed"
    assert files.delete("a/b/c.txt") is False
    assert files.delete("a") is False, "a folder is not a stored file"
    assert files.list() == ["a/z.txt", "b.txt"]


def test_list_of_an_empty_store(store: Path) -> None:
    """An empty (even not yet created) store lists nothing."""
    assert not store.exists()
    assert files.list() == []


def test_get_md5(store: Path) -> None:
    """get_md5 is the hex md5 of the stored contents."""
    files.putf(b"hash me", "h")
    assert files.get_md5("h") == hashlib.md5(b"hash me").hexdigest()


@pytest.mark.parametrize("call", [
    lambda: files.get("nope", "out"),
    lambda: files.getf("nope"),
    lambda: files.get_md5("nope"),
    lambda: files.sync_from_cloud("nope", "out"),
], ids=["get", "getf", "get_md5", "sync_from_cloud"])
def test_unknown_names_are_cloud_exceptions(store: Path, call: Any) -> None:
    """Reading a name that is not stored is a CloudException naming it and how to store it."""
    with pytest.raises(CloudException, match=r"no file named 'nope'.*cloud\.files\.put"):
        call()


BAD_NAMES = [
    ("", "empty"),
    ("/etc/passwd", "relative"),
    ("..", r"'\.\.' component"),
    ("a/../../b", r"'\.\.' component"),
    ("./a", r"'\.' component"),
    ("a//b", "empty component"),
    ("a/", "empty component"),
    ("a\x00b", "NUL"),
    ("a\\b", "backslash"),
]


@pytest.mark.parametrize("name,rule", BAD_NAMES, ids=[repr(n) for n, _ in BAD_NAMES])
def test_bad_names_are_refused_with_the_rule(store: Path, tmp_path: Path, name: str, rule: str) -> None:
    """Names with '..', absolute paths, empty names or components, NUL and backslashes are a ValueError naming the rule."""
    src = write(tmp_path / "src.txt", b"x")
    for call in (lambda: files.put(str(src), name) if name else files.putf(b"x", name),
                 lambda: files.putf(b"x", name), lambda: files.get(name, "out"), lambda: files.getf(name),
                 lambda: files.exists(name), lambda: files.delete(name), lambda: files.get_md5(name),
                 lambda: files.sync_to_cloud(str(src), name) if name else files.putf(b"x", name),
                 lambda: files.sync_from_cloud(name, "out")):
        with pytest.raises(ValueError, match=rule):
            call()
    assert not (tmp_path / "root").exists() or files.list() == []
    assert not (tmp_path / "etc").exists()


def test_names_must_be_strings(store: Path) -> None:
    """A name that is not a str is a TypeError."""
    with pytest.raises(TypeError, match="str"):
        files.putf(b"x", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        files.exists(None)  # type: ignore[arg-type]


def test_file_and_folder_names_cannot_clash(store: Path) -> None:
    """'a' cannot be stored while 'a/b' exists (a folder), nor 'a/b' while 'a' is a stored file."""
    files.putf(b"1", "a/b")
    with pytest.raises(ValueError, match="folder"):
        files.putf(b"2", "a")
    files.putf(b"3", "c")
    with pytest.raises(ValueError, match="not a folder"):
        files.putf(b"4", "c/d")
    assert files.list() == ["a/b", "c"]


class _FailingReader:
    """A stream that gives one chunk, then fails: the write must leave nothing half-done."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def read(self, n: int) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise OSError("disk on fire")
        return b"partial"

    def close(self) -> None:
        self.closed = True


def test_writes_are_atomic_on_failure(store: Path) -> None:
    """A put that fails midway keeps the old contents and leaves no temporary file behind."""
    files.putf(b"the original", "doc")
    reader = _FailingReader()
    with pytest.raises(OSError, match="disk on fire"):
        files.putf(reader, "doc")
    assert reader.closed
    assert files.getf("doc").read() == b"the original"
    assert os.listdir(store.parent / "files.tmp") == []
    assert files.list() == ["doc"]


def test_sync_to_cloud_uploads_only_when_the_md5_differs(store: Path, tmp_path: Path) -> None:
    """sync_to_cloud uploads a new or changed file and leaves an identical one alone (same inode)."""
    src = write(tmp_path / "model.bin", b"v1")
    assert files.sync_to_cloud(str(src)) is True
    inode = os.stat(store / "model.bin").st_ino
    assert files.sync_to_cloud(str(src)) is False
    assert os.stat(store / "model.bin").st_ino == inode, "an unchanged file must not be uploaded again"
    write(src, b"v2")
    assert files.sync_to_cloud(str(src), "model.bin") is True
    assert (store / "model.bin").read_bytes() == b"v2"


def test_sync_from_cloud_downloads_only_when_the_md5_differs(store: Path, tmp_path: Path) -> None:
    """sync_from_cloud downloads a missing or different local copy, and leaves an identical one alone."""
    files.putf(b"remote v1", "cfg")
    dest = tmp_path / "local" / "cfg"
    assert files.sync_from_cloud("cfg", str(dest)) is True
    assert dest.read_bytes() == b"remote v1"
    inode = os.stat(dest).st_ino
    assert files.sync_from_cloud("cfg", str(dest)) is False
    assert os.stat(dest).st_ino == inode
    files.putf(b"remote v2", "cfg")
    assert files.sync_from_cloud("cfg", str(dest)) is True
    assert dest.read_bytes() == b"remote v2"
    assert files.sync_from_cloud("cfg") is True  # default destination: the name, in the working directory
    assert (tmp_path / "cfg").read_bytes() == b"remote v2"


# ------------------------------------------------------------------ with a simulator and real jobs
def test_the_running_simulator_root_wins(sim: Path, tmp_path: Path) -> None:
    """With a simulator running, the store is under its server_root, not cloudsim.config.server_root."""
    files.putf(b"x", "where")
    assert files.store_dir() == str(sim / "files")
    assert (sim / "files" / "where").read_bytes() == b"x"
    assert not (tmp_path / "config-root").exists()


def test_a_job_reads_what_the_client_put(sim: Path, tmp_path: Path) -> None:
    """A file put by the client is read by a job in another interpreter, with getf and with get."""
    src = write(tmp_path / "words.txt", b"the quick brown fox")
    files.put(str(src))
    assert cloudsim.result(cloudsim.call(job_read, "words.txt"), timeout=WAIT) == b"the quick brown fox"
    assert cloudsim.result(cloudsim.call(job_get, "words.txt"), timeout=WAIT) == b"the quick brown fox"


def test_the_client_reads_what_a_job_put(sim: Path) -> None:
    """A job stores a file; the client sees it in list() and reads it."""
    listed = cloudsim.result(cloudsim.call(job_put, "results/out.bin", b"\x01\x02"), timeout=WAIT)
    assert listed == ["results/out.bin"]
    assert files.getf("results/out.bin").read() == b"\x01\x02"


def test_queries_from_a_job(sim: Path) -> None:
    """exists, get_md5, store_dir and delete work inside a job, on the simulator's store."""
    files.putf(b"abc", "q")
    found = cloudsim.result(cloudsim.call(job_queries, "q"), timeout=WAIT)
    assert found == (True, hashlib.md5(b"abc").hexdigest(), str(sim / "files"), True, False)
    assert not files.exists("q")


def test_unknown_name_in_a_job_fails_the_job_with_cloud_exception(sim: Path) -> None:
    """A job's get of a name that is not stored fails with CloudException (its type reaches the client)."""
    jid = cloudsim.call(job_read, "never-stored")
    with pytest.raises(CloudException) as info:
        cloudsim.result(jid, timeout=WAIT)
    assert info.value.exc_type == "CloudException"
    assert "never-stored" in str(info.value)
    assert cloudsim.status(jid) == "error"


def test_bad_name_in_a_job_is_a_value_error(sim: Path) -> None:
    """The name rules hold inside jobs too: '..' escapes are refused there."""
    with pytest.raises(CloudException) as info:
        cloudsim.result(cloudsim.call(job_bad_name, "../escape"), timeout=WAIT)
    assert info.value.exc_type == "ValueError"
    assert not (sim / "escape").exists()


def test_concurrent_writers_and_a_reader_never_see_a_partial_file(sim: Path) -> None:
    """Jobs in several interpreters overwrite one name while the client reads it: every read is one whole version."""
    size = 256 * 1024
    files.putf(b"\x00" * size, "shared")
    stop = threading.Event()
    bad: List[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            with files.getf("shared") as f:
                data = f.read()
            reads[0] += 1
            if len(data) != size or len(set(data)) != 1:
                bad.append(f"read {len(data)} bytes of {sorted(set(data))[:5]}")

    thread = threading.Thread(target=reader, name="files-reader")
    thread.start()
    try:
        jids = [cloudsim.call(job_put_fill, "shared", byte, size) for byte in range(1, 13)]
        cloudsim.join(jids, timeout=WAIT)
    finally:
        stop.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert not bad, bad[:3]
    assert reads[0] > 0
    final = files.getf("shared").read()
    assert len(final) == size and len(set(final)) == 1 and final[0] in range(1, 13)
    assert os.listdir(sim / "files.tmp") == []
