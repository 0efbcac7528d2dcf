"""The job's network, as on the cloud: a 30 s default socket timeout (``network-timeout``).

Installed once per worker, before its first job. The client's own default
socket timeout is never changed; only jobs get this one.
"""

from __future__ import annotations

import socket


def install(settings: dict) -> None:
    """Give jobs the cloud's default socket timeout (a job may set it back to None)."""
    socket.setdefaulttimeout(settings.get("network_timeout"))
