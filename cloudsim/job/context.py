"""The link from a running job back to the simulated cloud.

Inside a worker, ``cloudsim`` (or ``cloud``) talks to the same cloud as the
client: each API call becomes an ``("api", ...)`` request on the worker's
channel, answered by the client's manager. A job may call the API from several
threads at once, so requests carry an id and whichever thread is waiting reads
the channel for everyone (messages that are not replies go to the worker loop).

This module is imported by the worker, so it imports only the standard library.
"""

from __future__ import annotations

import itertools
import pickle
import threading
from typing import Any, Callable, Dict, Optional

from cloudsim.server import protocol

_current: Optional["JobContext"] = None


class JobContext:
    """The channel a worker shares with the client, for API calls from jobs."""

    def __init__(self, channel: protocol.Channel, on_other: Callable[[tuple], None]) -> None:
        self.channel = channel
        self.on_other = on_other
        self.jid: Optional[int] = None
        self.settings: dict = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        # call id -> (ok, payload), e.g. {3: (True, b"...")}
        self._replies: Dict[int, tuple] = {}
        self._reading = False

    def request(self, method: str, payload: Any) -> Any:
        """Send one API request to the client and wait for its answer."""
        call_id = next(self._ids)
        data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
        self.channel.send((protocol.API, call_id, self.jid, method, data))
        with self._cond:
            while call_id not in self._replies:
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
                self._cond.release()
                try:
                    message = self.channel.recv()
                finally:
                    self._cond.acquire()
                    self._reading = False
                if message[0] == protocol.REPLY:
                    self._replies[message[1]] = (message[2], message[3])
                else:
                    self.on_other(message)
                self._cond.notify_all()
            ok, answer = self._replies.pop(call_id)
        value = pickle.loads(answer)
        if not ok:
            raise value
        return value


def install(ctx: JobContext) -> None:
    global _current
    _current = ctx


def current() -> Optional[JobContext]:
    """The job context when running inside a worker, else None."""
    return _current
