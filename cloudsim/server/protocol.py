"""Every message that travels between the client, the server and the workers.

The simulated cloud has three kinds of process::

    client (user's interpreter)  ── control ──►  server (a clean interpreter that forks workers)
        ▲   manager thread                          │ fork
        └────────────── job channel ────────────────┘ worker (runs jobs)

A :class:`Channel` carries length-prefixed pickled tuples over a connected
stream socket. Nothing else in cloudsim knows the wire format: the tags below
are the whole vocabulary. Payloads that belong to the user (functions,
arguments, results) are already bytes when they get here; envelopes are plain
tuples of builtins, so the standard pickle handles them at full speed.

This module is imported by the worker, so it imports only the standard library.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import threading
from typing import Any, List, Optional, Tuple

__all__ = ["Channel", "ChannelClosed", "send_fd", "recv_fd", "describe_returncode"]

# client -> server (control)
SPAWN = "spawn"  # ("spawn", worker_id, worker_dir)
STOP = "stop"  # ("stop",)
# server -> client (control)
HELLO = "hello"  # ("hello", server_pid, info_dict)
SPAWNED = "spawned"  # ("spawned", worker_id, pid); the worker's socket follows on the fd socket
EXITED = "exited"  # ("exited", pid, returncode)  returncode < 0: killed by signal -returncode
SPAWN_FAILED = "spawn-failed"  # ("spawn-failed", worker_id, message)

# client -> worker
RUN = "run"  # ("run", [job_spec, ...])
CANCEL = "cancel"  # ("cancel", [jid, ...])  drop jobs sent ahead that have not started
REPLY = "reply"  # ("reply", call_id, ok, payload)
EXIT = "exit"  # ("exit",)
# worker -> client
READY = "ready"  # ("ready", pid)
RESULTS = "results"  # ("results", [outcome, ...])
API = "api"  # ("api", call_id, jid, method, payload_bytes)

_HEADER = struct.Struct("!Q")
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class ChannelClosed(EOFError):
    """The other end of a channel went away (its process exited or closed it)."""


class Channel:
    """A bidirectional message pipe over a connected stream socket.

    ``send`` is safe from several threads (a lock keeps frames whole); ``recv``
    and ``recv_available`` are for one reader at a time. Reads are buffered,
    so a burst of small messages costs one system call.
    """

    __slots__ = ("sock", "_send_lock", "_fd", "_buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        self._send_lock = threading.Lock()
        self._buf = bytearray()
        try:  # large job payloads (up to 16 MB) should not stall on a small buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass

    def fileno(self) -> int:
        return self._fd

    def send(self, message: Tuple[Any, ...]) -> None:
        data = pickle.dumps(message, _PROTOCOL)
        with self._send_lock:
            try:
                if len(data) < 65536:
                    self.sock.sendall(_HEADER.pack(len(data)) + data)
                else:
                    self.sock.sendall(_HEADER.pack(len(data)))
                    self.sock.sendall(data)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc

    def _fill(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not data:
            raise ChannelClosed("connection closed")
        self._buf += data

    def _parse(self) -> Optional[Tuple[Any, ...]]:
        buf = self._buf
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        end = _HEADER.size + size
        if len(buf) < end:
            return None
        message = pickle.loads(buf[_HEADER.size:end])
        del buf[:end]
        return message

    def recv(self) -> Tuple[Any, ...]:
        """Block until one message arrives; ChannelClosed at end of stream."""
        while True:
            message = self._parse()
            if message is not None:
                return message
            self._fill()

    def recv_available(self) -> List[Tuple[Any, ...]]:
        """Read what the socket has (blocking for at least one whole message) and return every complete message."""
        self._fill()
        messages = []
        while True:
            message = self._parse()
            if message is None:
                if messages:
                    return messages
                self._fill()
                continue
            messages.append(message)

    def poll(self, timeout: float = 0.0) -> bool:
        """True when a message (or end of stream) can be read without blocking."""
        if len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if len(self._buf) >= _HEADER.size + size:
                return True
        try:
            readable, _, _ = select.select([self._fd], [], [], timeout)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def send_fd(sock: socket.socket, fd: int) -> None:
    """Hand an open file descriptor to the process at the other end of ``sock``."""
    socket.send_fds(sock, [b"F"], [fd])


def recv_fd(sock: socket.socket) -> int:
    """Receive one file descriptor sent with :func:`send_fd`."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise ChannelClosed("no file descriptor received")
    return fds[0]


def describe_returncode(returncode: Optional[int]) -> str:
    """Say in words how a process ended, naming the signal when there was one."""
    import signal

    if returncode is None:
        return "the interpreter disappeared"
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        why = {
            "SIGSEGV": "segmentation fault: a crash in C code",
            "SIGKILL": "killed from outside, e.g. by the out-of-memory killer or kill -9",
            "SIGABRT": "abort() in C code, e.g. a failed assertion",
            "SIGBUS": "bus error: a crash in C code",
            "SIGFPE": "arithmetic fault in C code",
            "SIGTERM": "terminated from outside",
        }.get(name)
        return f"killed by {name}" + (f" ({why})" if why else "")
    return f"exited with status {returncode} (os._exit() or a C-level exit)"
