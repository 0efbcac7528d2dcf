"""Job functions that wait for a gate file, shared by the integration tests of both backends.

A test holds a job in ``processing`` (or the jobs queued behind it) by
making it wait for a file the test creates, never by timing luck. The
functions are shipped to the jobs by reference, as a user's module is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def held(gate: str, tag: Any = None, log: str = "", started: str = "") -> Any:
    """Touch ``started`` (if given), wait until ``gate`` exists (60 s at most), append ``tag`` to ``log``."""
    if started:
        Path(started).touch()
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.02)
    if log:
        append(log, tag)
    return tag


def held_then_fail(gate: str) -> None:
    """Wait for ``gate``, then raise."""
    held(gate)
    raise ValueError("the dependency failed on purpose")


def append(log: str, tag: Any) -> Any:
    """Append ``tag`` to the file ``log`` (one line) and return it."""
    with open(log, "a") as f:
        f.write(f"{tag}\n")
    return tag


def write_pid(pidfile: str) -> int:
    """Write this interpreter's pid to ``pidfile`` (atomically) and return it."""
    tmp = f"{pidfile}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pidfile)
    return os.getpid()


def pid_then_hold(pidfile: str, gate: str) -> int:
    """Write this interpreter's pid to ``pidfile``, then wait for ``gate``."""
    write_pid(pidfile)
    held(gate)
    return os.getpid()
