"""``cloud.files``: the simulated cloud's data store, where a job finds the data files it needs.

On PiCloud only code travelled with a job (pitfall ``non-code-files``); data
went through ``cloud.files``: the client ``put`` a file, the job ``get`` it (or
read it with ``getf``). cloudsim keeps that store on the simulated server, as
plain files under ``<server_root>/files/``, so the client and every job (same
machine, different interpreters) see the same store::

    client                          <server_root>/files/          job
    put / putf / sync_to_cloud ──►  words.txt, data/a.csv  ◄──  get / getf / sync_from_cloud
                                                                 list / exists / get_md5 / delete

Which ``server_root``: inside a job, the one of the simulator that runs the
job; in the client, the running simulator's, else ``cloudsim.config.server_root``
(so the store works before ``start_simulator()``, as PiCloud's did before the
first ``call``).

Rules, as the original (PiCloud client 2.8.5, ``cloud/files.py``) unless said:

- A name is a relative path with ``/`` separators (``"data/a.csv"``); empty
  names, absolute paths, ``.``/``..``/empty components, backslashes and NUL are
  a ``ValueError`` naming the rule (the original refused only ``"../.."``);
  a name that is a folder of other names (``"data"`` while ``"data/a.csv"``
  exists) cannot be a file as well.
- Writes are atomic: data goes to a temporary file beside the store
  (``<server_root>/files.tmp/``) and is renamed into place, so a reader sees
  the old or the new contents, never a part.
- ``putf`` reads ``f`` from its current position and closes it afterwards
  (the original did both); ``f`` may also be ``bytes`` or ``str`` (UTF-8).
  More than 5 GB is a ``ValueError``, as on PiCloud.
- ``start_byte``/``end_byte`` select bytes ``start_byte`` to ``end_byte``
  *inclusive* (the original sent them as an HTTP ``Range``); ``end_byte`` of
  ``None`` or past the end means the end of the file. (The original also read
  ``end_byte=0`` as "to the end", a Python 2 truthiness slip; here 0 is byte 0.)
- An unknown name in ``get``, ``getf``, ``get_md5`` and ``sync_from_cloud`` is a
  :class:`cloudsim.CloudException`; ``delete`` of an unknown name returns
  ``False`` (the original returned the server's ``deleted`` flag).
- ``sync_to_cloud``/``sync_from_cloud`` return ``True`` when they copied the
  file and ``False`` when the md5 already matched (the original returned None).

Not here: ``cloud.files.map`` (PiCloud's map-reduce over a stored file) and
``cloud.bucket``; PiCloud's own simulator refused every ``files`` call
(``RuntimeError('Cannot use this functionality in simulation')``), cloudsim
implements the store instead so the ``non-code-files`` fix can be tried locally.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import tempfile
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple, Union

from cloudsim.errors import CloudException

__all__ = [
    "CloudFile",
    "put",
    "putf",
    "get",
    "getf",
    "list",
    "exists",
    "delete",
    "get_md5",
    "sync_to_cloud",
    "sync_from_cloud",
    "store_dir",
]

MAX_FILE_SIZE = 5_000_000_000  # bytes; PiCloud's limit for one stored file
_CHUNK = 1 << 20
_SEE = "See: docs/pitfalls.md#non-code-files"


# ------------------------------------------------------------------ where
def _server_root() -> str:
    """The ``server_root`` of the cloud this interpreter talks to (see the module docstring)."""
    from cloudsim.job import context as _context

    ctx = _context.current()
    if ctx is not None:
        root = (getattr(ctx, "settings", None) or {}).get("server_root")
        if root:
            return str(root)
    from cloudsim import client as _client

    sim = _client._cloud
    if sim is not None:
        return str(sim.root)
    from cloudsim.config import config

    return str(config.server_root)


def store_dir() -> str:
    """The directory that holds the stored files: ``<server_root>/files``."""
    return os.path.join(os.path.abspath(_server_root()), "files")


def _tmp_dir() -> str:
    # beside the store, on the same filesystem, so os.replace is an atomic rename
    return os.path.join(os.path.abspath(_server_root()), "files.tmp")


# ------------------------------------------------------------------ names
def _check_name(name: Any, what: str = "name") -> str:
    """Return ``name`` if it is a valid store name, else raise ``TypeError``/``ValueError`` naming the rule."""
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not isinstance(name, str):
        raise TypeError(f"cloud.files {what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"cloud.files {what} must not be empty")
    if "\x00" in name:
        raise ValueError(f"cloud.files {what} {name!r} must not contain a NUL character")
    if "\\" in name:
        raise ValueError(f"cloud.files {what} {name!r} must not contain a backslash; separate folders with '/'")
    if name.startswith("/") or os.path.isabs(name):
        raise ValueError(f"cloud.files {what} {name!r} must be relative: absolute paths are not names in the store")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            shown = "an empty component ('//' or a trailing '/')" if part == "" else f"a {part!r} component"
            raise ValueError(
                f"cloud.files {what} {name!r} must not contain {shown}: a name may not point outside "
                "the store or at a folder"
            )
    return name


def _path_of(name: str) -> str:
    return os.path.join(store_dir(), *name.split("/"))


def _missing(name: str) -> CloudException:
    return CloudException(
        f"cloud.files: no file named {name!r} in the store ({store_dir()}). "
        "Store it first with cloud.files.put(path, name) or cloud.files.putf(f, name); "
        f"cloud.files.list() shows what is there.",
        status="error",
    )


def _existing(name: str) -> str:
    """The path of a stored file, or CloudException when there is none."""
    path = _path_of(_check_name(name))
    if not os.path.isfile(path):
        raise _missing(name)
    return path


# ------------------------------------------------------------------ writing
def _write_stream(read: Any, name: str) -> None:
    """Copy ``read(n)`` chunks into the store as ``name``, atomically (temp file + rename)."""
    target = _path_of(name)
    parent = os.path.dirname(target)
    store = store_dir()
    # a stored file on the way (``a`` for ``a/b``) or a folder at the target blocks the name
    probe = store
    for part in name.split("/")[:-1]:
        probe = os.path.join(probe, part)
        if os.path.isfile(probe):
            rel = os.path.relpath(probe, store).replace(os.sep, "/")
            raise ValueError(f"cloud.files name {name!r} cannot be stored: {rel!r} is a stored file, not a folder")
    if os.path.isdir(target):
        raise ValueError(
            f"cloud.files name {name!r} is a folder of other stored names; delete those first or choose another name"
        )
    os.makedirs(parent, exist_ok=True)
    tmp_dir = _tmp_dir()
    os.makedirs(tmp_dir, exist_ok=True)
    _copy_atomically(read, target, tmp_dir, "put-", limit=(MAX_FILE_SIZE, name), durable=True)


def _copy_atomically(read: Any, target: str, tmp_dir: str, prefix: str,
                     limit: Optional[Tuple[int, str]] = None, durable: bool = False) -> None:
    """Copy ``read(n)`` chunks to ``target`` through a temporary file in ``tmp_dir`` and a rename, so
    ``target`` is either the whole copy or untouched. ``limit``: (bytes, name) refused beyond that size."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=tmp_dir)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = read(_CHUNK)
                if not chunk:
                    break
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8")
                size += len(chunk)
                if limit is not None and size > limit[0]:
                    raise ValueError(f"Cannot store files larger than 5GB on cloud.files ({limit[1]!r})")
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def put(source: Union[str, "os.PathLike[str]"], name: Optional[str] = None) -> None:
    """Store the local file ``source`` in the cloud's data store as ``name`` (default: its basename).

    Example: ``cloud.files.put('data/names.txt')`` stores it as ``'names.txt'``;
    a job reads it back with ``cloud.files.get('names.txt')``.

    Raises:
        ValueError: a bad name (see the module docstring) or a file over 5 GB.
        OSError: ``source`` cannot be read.
    """
    source = os.fspath(source)
    if not name:
        name = os.path.basename(source)
    _check_name(name)
    putf(builtins.open(source, "rb"), name)


def putf(f: Union[BinaryIO, bytes, bytearray, str, Any], name: str) -> None:
    """Store the contents of ``f`` (read from its current position) as ``name``; ``f`` is closed after.

    ``f`` is a file-like object (binary, or text: encoded as UTF-8), or the data
    itself as ``bytes``/``str``.

    Raises:
        ValueError: a bad name or more than 5 GB of data.
        TypeError: ``f`` is neither data nor readable.
    """
    try:
        _check_name(name)
        if isinstance(f, (bytes, bytearray, memoryview, str)):
            data = f.encode("utf-8") if isinstance(f, str) else bytes(f)
            if len(data) > MAX_FILE_SIZE:
                raise ValueError(f"Cannot store files larger than 5GB on cloud.files ({name!r})")
            _write_stream(io.BytesIO(data).read, name)
            return
        read = getattr(f, "read", None)
        if not callable(read):
            raise TypeError(f"cloud.files.putf needs a readable file-like object, bytes or str, not {type(f).__name__}")
        try:
            size = os.fstat(f.fileno()).st_size  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            size = 0
        if size > MAX_FILE_SIZE:
            raise ValueError(f"Cannot store files larger than 5GB on cloud.files ({name!r})")
        _write_stream(read, name)
    finally:
        close = getattr(f, "close", None)
        if callable(close):
            close()


# ------------------------------------------------------------------ reading
def _check_range(start_byte: Any, end_byte: Any) -> None:
    if isinstance(start_byte, bool) or not isinstance(start_byte, int):
        raise TypeError("start_byte must be an integer")
    if end_byte is not None and (isinstance(end_byte, bool) or not isinstance(end_byte, int)):
        raise TypeError("end_byte must be an integer or None")
    if start_byte < 0:
        raise ValueError(f"start_byte must not be negative, got {start_byte}")
    if end_byte is not None and end_byte < start_byte:
        raise ValueError(f"end_byte ({end_byte}) must not be before start_byte ({start_byte}); end_byte is inclusive")


class _RangeRaw(io.RawIOBase):
    """Bytes ``start``..``stop`` (exclusive) of an open file, read with ``os.pread`` (no shared position)."""

    def __init__(self, fd: int, start: int, stop: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = start
        self._stop = stop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self._stop - self._pos))
        if n == 0:
            return 0
        data = os.pread(self._fd, n, self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


class CloudFile:
    """A stored file opened for reading, as PiCloud's ``CloudFile``: a read-only, unseekable stream of bytes.

    It reads the contents the file had when ``getf`` opened it, even if the
    name is replaced or deleted meanwhile. ``tell()`` counts from the start of
    the file (so it starts at ``start_byte``); iterating yields lines.
    """

    def __init__(self, name: str, path: str, start_byte: int = 0, end_byte: Optional[int] = None) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        stop = size if end_byte is None else min(end_byte + 1, size)
        start = min(start_byte, size)
        self.name = name
        self._fd = fd
        self._size = size
        self._start = start
        self._end = max(start, stop)
        self._pos = start
        self._md5: Optional[str] = None
        self._stream = io.BufferedReader(_RangeRaw(fd, start, self._end))

    # -- PiCloud's CloudFile
    @property
    def md5(self) -> str:
        """The md5 checksum (hex) of the whole stored file."""
        if self._md5 is None:
            digest = hashlib.md5()
            offset = 0
            while offset < self._size:
                chunk = os.pread(self._fd, _CHUNK, offset)
                if not chunk:
                    break
                digest.update(chunk)
                offset += len(chunk)
            self._md5 = digest.hexdigest()
        return self._md5

    def filesize(self) -> int:
        """The size of the whole stored file, in bytes."""
        return self._size

    def end(self) -> int:
        """The offset just past the last byte this CloudFile gives."""
        return self._end

    def tell(self) -> int:
        """The current position, counted from the start of the stored file."""
        return self._pos

    def read(self, size: int = -1) -> bytes:
        """Read at most ``size`` bytes (all that is left when negative or omitted)."""
        data = self._stream.read(None if size is None or size < 0 else size)
        self._pos += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        """Read the next line (with its newline); at most ``size`` bytes when given."""
        line = self._stream.readline(size if size is not None else -1)
        self._pos += len(line)
        return line

    def readlines(self, sizehint: int = -1) -> List[bytes]:
        """Read the remaining lines (about ``sizehint`` bytes of them when given)."""
        lines = self._stream.readlines(sizehint if sizehint and sizehint > 0 else -1)
        self._pos += sum(len(line) for line in lines)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    next = __next__  # PiCloud's (Python 2) name

    # -- a read-only file object
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        raise io.UnsupportedOperation(f"CloudFile {self.name!r} is read-only; store new contents with cloud.files.putf()")

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation(f"CloudFile {self.name!r} cannot seek; use getf(name, start_byte, end_byte)")

    @property
    def closed(self) -> bool:
        return self._stream.closed

    def close(self) -> None:
        """Close the stream (further reads raise ValueError)."""
        self._stream.close()

    def __enter__(self) -> "CloudFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"bytes {self._start}..{self._end - 1} of {self._size}"
        return f"<CloudFile {self.name!r} {state}>"


def getf(name: str, start_byte: int = 0, end_byte: Optional[int] = None) -> CloudFile:
    """Open the stored file ``name`` for reading: a read-only :class:`CloudFile`.

    Only bytes ``start_byte`` to ``end_byte`` (inclusive; ``None`` or past the
    end: to the end) can be read; ``tell()`` starts at ``start_byte``.

    Raises:
        CloudException: no file of that name is stored.
        ValueError, TypeError: a bad name or range.
    """
    _check_range(start_byte, end_byte)
    path = _existing(name)
    try:
        return CloudFile(name, path, start_byte, end_byte)
    except FileNotFoundError:  # deleted between the check and the open
        raise _missing(name) from None


def get(name: str, destination: Optional[Union[str, "os.PathLike[str]"]] = None, start_byte: int = 0,
        end_byte: Optional[int] = None) -> str:
    """Copy the stored file ``name`` (or bytes ``start_byte``..``end_byte`` of it) to ``destination``.

    ``destination`` defaults to ``name`` (relative to the working directory, as
    the original); an existing directory receives a file named after the
    name's last component. Missing parent directories are created. Returns the
    path written (the original returned None).

    Raises:
        CloudException: no file of that name is stored.
    """
    cloud_file = getf(name, start_byte, end_byte)
    with cloud_file:
        dest = os.fspath(destination) if destination else os.path.join(*name.split("/"))
        if os.path.isdir(dest):
            dest = os.path.join(dest, name.split("/")[-1])
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        _copy_atomically(cloud_file.read, dest, parent, ".cloudsim-get-")
    return dest


# ------------------------------------------------------------------ queries
def list() -> List[str]:  # noqa: A001 - PiCloud's name (the original warned: "list will not map to builtin list")
    """The names of every stored file, sorted."""
    store = store_dir()
    names = []
    for dirpath, _dirnames, filenames in os.walk(store):
        for filename in filenames:
            rel = os.path.relpath(os.path.join(dirpath, filename), store)
            names.append(rel.replace(os.sep, "/"))
    return sorted(names)


def exists(name: str) -> bool:
    """True when a file named ``name`` is stored."""
    return os.path.isfile(_path_of(_check_name(name)))


def _md5_of_path(path: str) -> str:
    digest = hashlib.md5()
    with builtins.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def get_md5(name: str) -> str:
    """The md5 checksum (hex) of the stored file ``name``.

    Raises:
        CloudException: no file of that name is stored.
    """
    path = _existing(name)
    try:
        return _md5_of_path(path)
    except FileNotFoundError:
        raise _missing(name) from None


def delete(name: str) -> bool:
    """Remove the stored file ``name``; True if it was there, False if there was no such file."""
    path = _path_of(_check_name(name))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return False
    # drop folders left empty by the deletion (never the store itself)
    store = store_dir()
    parent = os.path.dirname(path)
    while parent != store and parent.startswith(store + os.sep):
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = os.path.dirname(parent)
    return True


# ------------------------------------------------------------------ sync
def sync_to_cloud(source: Union[str, "os.PathLike[str]"], name: Optional[str] = None) -> bool:
    """``put(source, name)`` only if the stored file's md5 differs (or it is not stored); True if it uploaded."""
    source = os.fspath(source)
    if not name:
        name = os.path.basename(source)
    _check_name(name)
    local = _md5_of_path(source)
    try:
        remote = get_md5(name)
    except CloudException:
        remote = ""
    if remote == local:
        return False
    put(source, name)
    return True


def sync_from_cloud(name: str, destination: Optional[Union[str, "os.PathLike[str]"]] = None) -> bool:
    """``get(name, destination)`` only if the local file is missing or its md5 differs; True if it downloaded.

    Raises:
        CloudException: no file of that name is stored.
    """
    _check_name(name)
    dest = os.fspath(destination) if destination else os.path.join(*name.split("/"))
    if os.path.isdir(dest):
        dest = os.path.join(dest, name.split("/")[-1])
    remote = get_md5(name)
    if os.path.isfile(dest) and _md5_of_path(dest) == remote:
        return False
    get(name, dest)
    return True
