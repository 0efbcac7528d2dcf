"""The exceptions cloudsim raises, shaped as PiCloud's.

``CloudException`` keeps the original's constructor and ``str()`` rules
(``Job <jid>: <value>`` plus ``TIP: <hint>``), so code that parses PiCloud
errors keeps working. Everything the simulator adds (deadlocks, transmit size,
unpicklable data, configuration) subclasses the exception a user already
catches.
"""

from __future__ import annotations

import pickle
from typing import Any, Optional

__all__ = [
    "CloudException",
    "CloudTimeoutError",
    "CloudDeadlockError",
    "TransmitSizeError",
    "CloudPicklingError",
    "ConfigError",
    "PitfallError",
    "NotStartedError",
    "StaleFunctionError",
]


class CloudException(Exception):
    """An error reported by the (simulated) cloud, optionally about one job.

    Attributes:
        parameter: the message, as PiCloud named it.
        jid: the job (or list of jobs) the error is about, or None.
        status: the job's status when the error was raised, or None.
        hint: a tip on how to fix it, shown after ``TIP:``.
        exc_type: for a failed job, the class name of the remote exception.
        traceback: for a failed job, the remote traceback text.
    """

    def __init__(
        self,
        value: Any = "",
        jid: Any = None,
        status: Optional[str] = None,
        retry: bool = False,
        hint: Optional[str] = None,
        exc_type: Optional[str] = None,
        traceback: Optional[str] = None,
    ) -> None:
        super().__init__(jid, status, value, jid)
        self.parameter = value
        self.jid = jid
        self.status = status
        self.retry = retry
        self.hint = hint
        self.exc_type = exc_type
        self.traceback = traceback

    def __str__(self) -> str:
        if self.jid is not None:
            text = f"Job {self.jid}: {self.parameter}"
            if self.hint:
                text += f"\nTIP: {self.hint}"
            return text
        if self.status is not None:
            return f"Error {self.status}: {self.parameter}"
        return str(self.parameter)

    def __reduce__(self):  # keep every attribute across processes
        return (_rebuild_exception, (type(self), self.__dict__.copy()))


def _rebuild_exception(cls: type, state: dict) -> BaseException:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("jid"), state.get("status"), state.get("parameter"), state.get("jid"))
    exc.__dict__.update(state)
    return exc


class CloudTimeoutError(CloudException):
    """A ``timeout`` given to join, result or iresult ran out."""

    def __init__(self, value: Any = "Timed out", jid: Any = None, **kwargs: Any) -> None:
        super().__init__(value, jid=jid, **kwargs)


class CloudDeadlockError(CloudTimeoutError):
    """A blocking join or result inside a job can never finish (``recursion-deadlock``)."""


class CloudPicklingError(CloudException, pickle.PicklingError):
    """Something could not be serialized to cross the wire (``unpicklable``, ``file-objects``)."""


class TransmitSizeError(CloudPicklingError):
    """A serialized piece of a job is larger than ``max_transmit_size`` (``transmit-size``)."""


class ConfigError(CloudException, ValueError):
    """A setting has a bad value; the message names where the value came from."""


class PitfallError(CloudException):
    """A pitfall was found while the ``pitfalls`` setting says ``error`` for its id.

    Attributes:
        pitfalls: the pitfall records (dicts with ``id`` and ``message``).
    """

    def __init__(self, value: Any = "", pitfalls: Optional[list] = None, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self.pitfalls = list(pitfalls or [])


class NotStartedError(CloudException):
    """The cloud API was used before ``start_simulator()``."""


class StaleFunctionError(CloudException):
    """A function imported with ``from cloud import ...`` before ``start_simulator()`` was called."""
