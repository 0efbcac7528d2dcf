"""cloudsim: PiCloud's ``cloud`` API on your own machine, with every quirk of the service reproduced and explained.

Use it as the ``cloud`` module::

    import cloudsim as cloud
    cloud.start_simulator()
    jid = cloud.call(lambda: 3 * 3)
    assert cloud.result(jid) == 9

Jobs run in separate, fresh, persistent interpreters; what bites on the real
service (pass-by-value, the transmit limit, leaked threads, recursion that
deadlocks under the job cap, ...) happens here too, and each such *pitfall*
is reported with what happened, why, and how to fix it.
"""

from __future__ import annotations

from cloudsim.client import (
    c1,
    c2,
    call,
    close,
    connection_info,
    delete,
    finished,
    finished_statuses,
    info,
    iresult,
    is_simulated,
    join,
    kill,
    m1,
    map,
    result,
    running_on_cloud,
    setkey,
    start_simulator,
    status,
)
from cloudsim.alias import install_cloud_alias
from cloudsim.check import check
from cloudsim.config import config
from cloudsim.errors import (
    CloudDeadlockError,
    CloudException,
    CloudPicklingError,
    CloudTimeoutError,
    ConfigError,
    NotStartedError,
    PitfallError,
    TransmitSizeError,
)
from cloudsim.pitfalls import *  # noqa: F401,F403 - the warning categories, for -W error::cloudsim.<Category>
from cloudsim import pitfalls as _pitfalls_module

from cloudsim import client as _client
from cloudsim import files  # PiCloud imported cloud.files with cloud

_client.bind_api(__import__("sys").modules[__name__])  # see client.REBOUND (pitfall: cloud-import-from)

__version__ = "0.1.0"

__all__ = [
    "start_simulator", "setkey", "close", "files", "is_simulated", "running_on_cloud", "connection_info",
    "call", "map", "result", "iresult", "join", "status", "finished", "info", "kill", "delete",
    "finished_statuses", "c1", "c2", "m1", "config", "install_cloud_alias", "check",
    "CloudException", "CloudTimeoutError", "CloudDeadlockError", "TransmitSizeError",
    "CloudPicklingError", "ConfigError", "PitfallError", "NotStartedError",
] + list(_pitfalls_module.__all__)
