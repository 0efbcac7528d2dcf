"""``cloud.pool_interface``: ``multiprocessing.Pool``'s methods, each job a cloud job.

PiCloud offered this so code written for ``multiprocessing.Pool`` could move
to the cloud by changing one import::

    import cloud.pool_interface as pool       # instead of pool = multiprocessing.Pool()
    squares = pool.map(square, range(10))     # one cloud job per element

Every function here is a thin layer over the ``cloud`` API of whatever
interpreter it runs in (the client's simulator, or, inside a job, the same
cloud), so the job cap, pass-by-value and every other pitfall apply as they
do to ``cloud.call``/``cloud.map``. As in the original there are no keyword
arguments for the function (``apply(func, args)`` only).

Where this differs from PiCloud's module (client 2.8.5), on purpose:

- **Timeouts work.** The original's ``AsyncResult.get(timeout)`` and
  ``wait(timeout)`` ignored the timeout, and ``imap`` passed its ``chunksize``
  on as the timeout. Here ``get(timeout)`` raises
  :class:`cloudsim.CloudTimeoutError` when the jobs are not done in time (it is
  *not* a ``multiprocessing.TimeoutError``: code ported from multiprocessing
  that catches that must catch ``cloud.CloudTimeoutError`` instead; the jobs go
  on running and a later ``get`` can still collect them); ``wait(timeout)``
  returns after at most ``timeout`` seconds, raising nothing, as
  multiprocessing's does.
- **Callbacks receive the result.** ``apply_async(..., callback=cb)`` calls
  ``cb(value)`` and ``map_async`` calls ``cb(list_of_values)``, as
  ``multiprocessing.Pool`` does, not ``cb(jid)`` as the original did (its
  callback was ``cloud.call``'s ``_callback``, which gets the jid). This
  module exists to run Pool code unchanged, and Pool code's callbacks expect
  the value; code that wants the jid has it as ``AsyncResult.jid``. The
  callback runs in a daemon thread of the calling interpreter once every job
  is done, and is not called when a job fails (as multiprocessing). Inside a
  job, ``get()`` before returning: a callback thread still waiting when the
  job returns is a leaked thread (pitfall ``leaked-threads``).
- **chunksize is honoured.** ``map``/``imap`` with ``chunksize=n`` send ``n``
  elements per job (fewer, bigger jobs, useful over ``cloud.map``'s 10,000-job
  limit); ``None`` (the default) is one job per element, as the original.
- ``imap_unordered`` really yields in completion order (the original was
  ``imap``); ``imap``'s iterator has ``next(timeout)`` like multiprocessing's.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, List, Optional, Sequence

from cloudsim.errors import CloudDeadlockError, CloudException, CloudTimeoutError

__all__ = ["apply", "apply_async", "map", "map_async", "imap", "imap_unordered", "AsyncResult", "IMapIterator"]

_FINISHED = frozenset(("done", "error", "stalled", "killed"))
_POLL_MIN, _POLL_MAX = 0.005, 0.1  # seconds between status polls of imap_unordered


def _cloud() -> Any:
    """The cloud API module (looked up at call time: ``start_simulator`` re-binds its functions)."""
    import cloudsim

    return cloudsim


def _run_chunk(func: Callable[[Any], Any], chunk: Sequence[Any]) -> List[Any]:
    """Runs on the cloud: ``func`` over one chunk of elements (``chunksize`` > 1)."""
    return [func(x) for x in chunk]


def _check_chunksize(chunksize: Any) -> Optional[int]:
    if chunksize is None:
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be a positive integer or None, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be a positive integer or None, got {chunksize}")
    return chunksize


def _check_args(args: Any) -> tuple:
    if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
        raise TypeError(f"args must be a tuple (or another sequence) of arguments, not {type(args).__name__}")
    return tuple(args)


def _submit_map(func: Callable, iterable: Iterable, chunksize: Optional[int]) -> tuple:
    """Submit the jobs of a map; returns (jids, chunked)."""
    if not callable(func):
        raise TypeError(f"pool_interface first argument ({func!r}) is not callable")
    chunksize = _check_chunksize(chunksize)
    cloud = _cloud()
    items = list(iterable)
    if chunksize is None or chunksize == 1:
        return (cloud.map(func, items) if items else []), False
    chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
    if not chunks:
        return [], True
    return cloud.map(_run_chunk, [func] * len(chunks), chunks), True


def _flatten(values: List[Any]) -> List[Any]:
    return [v for chunk in values for v in chunk]


# ------------------------------------------------------------------ AsyncResult
class AsyncResult:
    """The pending result of ``apply_async``/``map_async``, as ``multiprocessing.pool.AsyncResult``.

    Attributes:
        jid: the job's jid (``apply_async``) or the list of jids (``map_async``).
    """

    def __init__(self, jids: List[int], single: bool, chunked: bool = False,
                 callback: Optional[Callable[[Any], Any]] = None) -> None:
        self._jids = list(jids)
        self._single = single
        self._chunked = chunked
        self.jid: Any = self._jids[0] if single else list(self._jids)
        self._lock = threading.Lock()
        self._value: Any = None
        self._have_value = False
        self._callback_thread: Optional[threading.Thread] = None
        if callback is not None:
            if not callable(callback):
                raise TypeError(f"callback must be callable, not {type(callback).__name__}")
            self._callback_thread = threading.Thread(
                target=self._deliver, args=(callback,), daemon=True,
                name=f"cloudsim-pool-callback-{self.jid}",
            )
            self._callback_thread.start()

    def _deliver(self, callback: Callable[[Any], Any]) -> None:
        """Wait for every job, then call ``callback(value)``; nothing when a job failed."""
        try:
            value = self.get()
        except CloudException:
            return
        callback(value)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The value (a list for ``map_async``), waiting at most ``timeout`` seconds.

        Raises:
            CloudTimeoutError: the jobs did not finish within ``timeout``.
            CloudException: a job failed (its remote traceback in the message).
        """
        with self._lock:
            if self._have_value:
                return self._value
        cloud = _cloud()
        if not self._jids:
            value: Any = []
        else:
            values = cloud.result(self._jids, timeout=timeout)
            if self._single:
                value = values[0]
            else:
                value = _flatten(values) if self._chunked else list(values)
        with self._lock:
            self._value, self._have_value = value, True
        return value

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until every job has finished, or for at most ``timeout`` seconds; raises nothing for either."""
        if not self._jids:
            return
        try:
            _cloud().join(self._jids, timeout=timeout, ignore_errors=True)
        except CloudDeadlockError:
            raise  # a deadlock is not a timeout: waiting longer cannot help
        except CloudTimeoutError:
            return

    def ready(self) -> bool:
        """True when every job has finished (done or failed)."""
        if not self._jids:
            return True
        return all(s in _FINISHED for s in _cloud().status(self._jids))

    def successful(self) -> bool:
        """True when every job finished ``done``.

        Raises:
            ValueError: the jobs have not all finished yet (as multiprocessing).
        """
        if not self._jids:
            return True
        statuses = _cloud().status(self._jids)
        if not all(s in _FINISHED for s in statuses):
            raise ValueError(f"{self!r} not ready")
        return all(s == "done" for s in statuses)

    def __repr__(self) -> str:
        return f"<cloudsim.pool_interface.AsyncResult jid={self.jid!r}>"


# ------------------------------------------------------------------ imap
class IMapIterator:
    """The iterator of ``imap``/``imap_unordered``; ``next(timeout)`` as multiprocessing's.

    A failed job raises its ``CloudException`` at its place in the sequence
    (for a chunk: once, for the whole chunk); iteration can go on after it.
    """

    def __init__(self, jids: List[int], chunked: bool, ordered: bool) -> None:
        self.jids = list(jids)
        self._chunked = chunked
        self._ordered = ordered
        self._pending = list(self.jids)  # jobs not yet collected, in submission order
        self._buffer: List[Any] = []  # values of a collected chunk still to hand out

    def __iter__(self) -> "IMapIterator":
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next value, waiting at most ``timeout`` seconds (``CloudTimeoutError`` after that)."""
        if self._buffer:
            return self._buffer.pop(0)
        if not self._pending:
            raise StopIteration
        jid = self._pending[0] if self._ordered else self._first_finished(timeout)
        cloud = _cloud()
        try:
            value = cloud.result(jid, timeout=timeout)
        except CloudTimeoutError as exc:
            if isinstance(exc, CloudDeadlockError):
                raise
            raise CloudTimeoutError("pool_interface imap iterator timed out", jid=jid) from None
        except CloudException:
            self._pending.remove(jid)
            raise
        self._pending.remove(jid)
        if not self._chunked:
            return value
        self._buffer = list(value)
        return self.next(timeout)

    def _first_finished(self, timeout: Optional[float]) -> int:
        """The first pending job to have finished, polling their statuses until ``timeout``."""
        cloud = _cloud()
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_MIN
        while True:
            for jid, status in zip(self._pending, cloud.status(self._pending)):
                if status in _FINISHED:
                    return jid
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CloudTimeoutError("pool_interface imap_unordered iterator timed out", jid=list(self._pending))
                time.sleep(min(delay, left))
            else:
                time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def __len__(self) -> int:
        return len(self.jids)


# ------------------------------------------------------------------ the functions
def apply(func: Callable, args: Sequence[Any] = ()) -> Any:
    """Run ``func(*args)`` as one cloud job and return its value (blocks)."""
    return apply_async(func, args).get()


def apply_async(func: Callable, args: Sequence[Any] = (), callback: Optional[Callable[[Any], Any]] = None) -> AsyncResult:
    """Run ``func(*args)`` as one cloud job; returns an :class:`AsyncResult` at once.

    ``callback(value)`` is called in a daemon thread when the job is done (see
    the module docstring for why the value and not the jid).
    """
    args = _check_args(args)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    jid = _cloud().call(func, *args)
    return AsyncResult([jid], single=True, callback=callback)


def map(func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None) -> List[Any]:  # noqa: A001
    """``[func(x) for x in iterable]`` with one cloud job per element (per ``chunksize`` elements); blocks."""
    return map_async(func, iterable, chunksize).get()


def map_async(func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None,
              callback: Optional[Callable[[List[Any]], Any]] = None) -> AsyncResult:
    """As :func:`map`, returning an :class:`AsyncResult` at once; ``callback(list_of_values)`` when all are done."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    jids, chunked = _submit_map(func, iterable, chunksize)
    return AsyncResult(jids, single=False, chunked=chunked, callback=callback)


def imap(func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None) -> IMapIterator:
    """Submit every job now; iterate the values in order, each as soon as its job is done."""
    jids, chunked = _submit_map(func, iterable, chunksize)
    return IMapIterator(jids, chunked, ordered=True)


def imap_unordered(func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: Optional[int] = None) -> IMapIterator:
    """As :func:`imap`, but values come in the order their jobs finish."""
    jids, chunked = _submit_map(func, iterable, chunksize)
    return IMapIterator(jids, chunked, ordered=False)
