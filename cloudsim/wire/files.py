"""File objects on the wire: PiCloud's rules for what may be sent (``file-objects``).

A real file open read-only travels *whole*: the job gets a readable file-like
object with the same name, mode, contents and position, built from the bytes
read at call time, so every call sends the file anew (no caching). The rules,
checked in this order, each with its own message:

- ``sys.stdout``/``sys.stderr`` become the job's own streams;
- standard input, closed files, terminals (ttys), files open for writing
  (``w``, ``a``, ``x`` and any ``+`` mode, so ``r+`` too), pipes, sockets,
  character devices and other streams are refused;
- virtual files (under ``/proc``, ``/sys`` or ``/dev``, or reporting a size of 0
  while holding data) are refused;
- a file larger than ``max_transmit_size`` is refused (``transmit-size``);
- a method of a file (``cloud.call(f.read)``) is refused.

Reading uses ``os.pread``, so the client's file position never moves.

Not for: files a job opens on the server (``cloudsim.job.datafiles``).
"""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
from typing import Any, Optional, Tuple

from cloudsim.errors import CloudPicklingError, TransmitSizeError
from cloudsim.wire.explain import LIMIT_FIX

__all__ = ["FILE_TYPES", "is_file_method", "reduce_file", "refuse_file_method", "rebuild_file"]

# The io classes that stand for an OS-level file or stream; StringIO and BytesIO are
# in-memory and pickle by themselves.
FILE_TYPES: Tuple[type, ...] = (
    io.TextIOWrapper,
    io.BufferedReader,
    io.BufferedWriter,
    io.BufferedRandom,
    io.BufferedRWPair,
    io.FileIO,
    socket.SocketIO,
)

_VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")
_SEE = "  See: docs/pitfalls.md#file-objects  [pitfall: file-objects]"
_FIX_READONLY = "open the file read-only (open(path) or open(path, 'rb')) and pass the file object"


def _refuse(name: str, rule: str, why: str, fix: str) -> CloudPicklingError:
    return CloudPicklingError(f"Cannot pickle file {name}: {rule}.\n  Why: {why}\n  Fix: {fix}\n{_SEE}")


def _display_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, (str, bytes)):
        return repr(os.fsdecode(name))
    if isinstance(name, int):
        return f"<file descriptor {name}>"
    return f"<{type(obj).__name__}>"


def is_file_method(obj: Any) -> bool:
    """True for a method bound to a file object, such as ``f.read``."""
    owner = getattr(obj, "__self__", None)
    return owner is not None and isinstance(owner, FILE_TYPES)


def refuse_file_method(obj: Any) -> CloudPicklingError:
    """The error for a file method (``f.read``) sent as the function or inside the data."""
    method = getattr(obj, "__name__", "method")
    name = _display_name(obj.__self__)
    return CloudPicklingError(
        f"Cannot pickle the method {method}() of file {name}: file methods cannot be sent "
        f"(cloud.call(f.{method}) is refused).\n"
        "  Why: PiCloud sends a file's contents, not a method bound to the client's open file.\n"
        f"  Fix: pass the file itself to a function that calls it, e.g. cloud.call(lambda f: f.{method}(), f).\n"
        f"{_SEE}"
    )


def _is_std(obj: Any, names: Tuple[str, ...]) -> bool:
    return any(obj is getattr(sys, n, None) for n in names)


def _fileno(obj: Any) -> Optional[int]:
    try:
        return obj.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def _read_all(fd: int, size: int) -> bytes:
    """Read the whole file from offset 0 without moving the file position."""
    chunks = []
    offset = 0
    want = max(size, 1 << 16)
    while True:
        chunk = os.pread(fd, want, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def reduce_file(obj: Any, limit: Optional[int]) -> Any:
    """The reduction of a file object, or raise CloudPicklingError saying which rule it breaks.

    Args:
        obj: an instance of one of :data:`FILE_TYPES`.
        limit: ``max_transmit_size`` in bytes (a larger file is refused), or None for no limit.
    """
    if _is_std(obj, ("stdout", "__stdout__")):
        return getattr, (sys, "stdout")
    if _is_std(obj, ("stderr", "__stderr__")):
        return getattr, (sys, "stderr")
    name = _display_name(obj)
    if _is_std(obj, ("stdin", "__stdin__")) or getattr(obj, "name", None) in (0, "<stdin>"):
        raise _refuse(name, "it is standard input",
                      "a job cannot read the client's standard input; only real files can be sent.",
                      "read the input in the client and pass the data, e.g. cloud.call(f, sys.stdin.read()).")
    if getattr(obj, "closed", False):
        raise _refuse(name, "the file is closed",
                      "a closed file has nothing to send.",
                      "pass the file while it is open, or pass its contents.")
    if isinstance(obj, socket.SocketIO):
        raise _refuse(name, "it is a network stream (a socket)",
                      "only real files can be sent, and a socket belongs to this process.",
                      "open the connection inside the job.")
    fd = _fileno(obj)
    if fd is None:
        raise _refuse(name, "it does not map to a real file",
                      "only files backed by a file on disk can be sent.",
                      "pass the data itself (e.g. f.read()).")
    try:
        tty = obj.isatty()
    except (OSError, ValueError):
        tty = False
    if tty:
        raise _refuse(name, "it is a terminal (tty)",
                      "a terminal is an interactive stream, not a file that can be read from beginning to end.",
                      "read the input in the client and pass the data.")
    try:
        writable = obj.writable()
        readable = obj.readable()
    except (OSError, ValueError):
        writable, readable = True, False
    mode = getattr(obj, "mode", "")
    if writable or not readable:
        shown = f"mode {mode!r}" if isinstance(mode, str) and mode else "write mode"
        raise _refuse(name, f"it is open for writing ({shown})",
                      "files cannot be open for writing: the job would write into a copy that never comes back "
                      "(r+, w, a, x and every '+' mode are refused).",
                      _FIX_READONLY + "; return what the job writes instead.")
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise _refuse(name, f"it cannot be stat'ed ({exc})", "only real files can be sent.", _FIX_READONLY) from None
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISFIFO(st.st_mode):
            kind = "a pipe"
        elif stat.S_ISSOCK(st.st_mode):
            kind = "a socket (network stream)"
        elif stat.S_ISCHR(st.st_mode):
            kind = "a character device"
        else:
            kind = "not a regular file"
        raise _refuse(name, f"it is {kind}",
                      "file handles must refer to a real file that can be read from the beginning to the end; "
                      "network streams, pipes and standard input cannot be.",
                      "read the data in the client and pass it (or store it with cloud.files).")
    path = getattr(obj, "name", None)
    real = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes)) else ""
    virtual = any(real == r or real.startswith(r + os.sep) for r in _VIRTUAL_ROOTS)
    if st.st_size == 0 and not virtual:
        virtual = bool(os.pread(fd, 1, 0))
    if virtual:
        raise _refuse(name, "it does not appear to map to a physical, real file",
                      "virtual files (such as those in /proc on Linux) are made up by the operating system "
                      "of this machine; they cannot be copied to the cloud.",
                      "read the data in the client and pass it.")
    if limit is not None and st.st_size > limit:
        raise TransmitSizeError(
            f"Cannot pickle file {name} as it exceeds max_transmit_size of {limit:,} bytes "
            f"(the file has {st.st_size:,} bytes).\n"
            "  Why: a file's contents travel whole with every call, and each piece is limited (pitfall: transmit-size).\n"
            f"  Fix: store the file with cloud.files and fetch it in the job, or {LIMIT_FIX}.\n"
            "  See: docs/pitfalls.md#transmit-size  [pitfall: transmit-size]"
        )
    try:
        position = obj.tell()
    except OSError as exc:
        raise _refuse(name, f"its position cannot be read ({exc})",
                      "the job gets the file at the same position, and a file being iterated "
                      "(for line in f) cannot tell it.",
                      "pass the file before or after the loop, or pass the remaining lines as a list.") from None
    data = _read_all(fd, st.st_size)
    text = isinstance(obj, io.TextIOWrapper)
    shown_name = os.fsdecode(path) if isinstance(path, (str, bytes)) else path
    return rebuild_file, (
        shown_name,
        mode if isinstance(mode, str) else ("r" if text else "rb"),
        data,
        position,
        getattr(obj, "encoding", None) if text else None,
        getattr(obj, "errors", None) if text else None,
    )


def rebuild_file(name: Any, mode: str, data: bytes, position: int,
                 encoding: Optional[str], errors: Optional[str]) -> Any:
    """Rebuild a sent file in the job: a read-only in-memory file with the same name, mode and position."""
    buffer = io.BytesIO(data)
    buffer.name = name  # type: ignore[attr-defined]
    if encoding is None:
        buffer.mode = mode  # type: ignore[attr-defined]
        buffer.seek(position)
        return buffer
    wrapper = io.TextIOWrapper(buffer, encoding=encoding, errors=errors)
    wrapper.mode = mode  # type: ignore[attr-defined]
    if position:
        wrapper.seek(position)  # a text position is an opaque cookie, valid for the same bytes and encoding
    return wrapper
