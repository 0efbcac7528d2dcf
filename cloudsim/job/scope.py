"""Which threads of the interpreter the job's sandbox and checks apply to.

In a simulated worker the interpreter belongs to the job: every thread is the
job's (``ALL``). A Dask worker shares its interpreter with Dask's own threads
(its event loop, comms, spilling), which must keep their loopback sockets
and files; there the network sandbox, the non-code-files check and the
thread-leak check apply to the job's thread and the threads it starts, which
``job_thread`` marks and ``cloudsim.job.hygiene`` passes on to new threads.

This module is imported by the worker, so it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

ALL = True  # False in a Dask worker: only marked threads are the job's

_MARK = "_cloudsim_job"


def applies() -> bool:
    """True when the current thread runs (or was started by) the job."""
    return ALL or getattr(threading.current_thread(), _MARK, False)


def mark(thread: threading.Thread) -> None:
    """``thread`` is the job's (called for threads a job thread starts)."""
    setattr(thread, _MARK, True)


@contextlib.contextmanager
def job_thread() -> Iterator[None]:
    """The current thread runs a job for the duration of the block."""
    thread = threading.current_thread()
    setattr(thread, _MARK, True)
    try:
        yield
    finally:
        setattr(thread, _MARK, False)


@contextlib.contextmanager
def exempt() -> Iterator[None]:
    """cloudsim's own work in a job thread (its link to the client) is not the job's."""
    thread = threading.current_thread()
    was = getattr(thread, _MARK, False)
    setattr(thread, _MARK, False)
    try:
        yield
    finally:
        setattr(thread, _MARK, was)
