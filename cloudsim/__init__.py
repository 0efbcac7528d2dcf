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

import sys as _sys
from typing import Any as _Any

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

__version__ = "0.1.0"

__all__ = [
    "start_simulator", "start_dask", "setkey", "close", "files", "is_simulated", "running_on_cloud", "connection_info",
    "call", "map", "result", "iresult", "join", "status", "finished", "info", "kill", "delete",
    "finished_statuses", "c1", "c2", "m1", "config", "install_cloud_alias", "check",
    "CloudException", "CloudTimeoutError", "CloudDeadlockError", "TransmitSizeError",
    "CloudPicklingError", "ConfigError", "PitfallError", "NotStartedError",
] + list(_pitfalls_module.__all__)

# The API and the client side are loaded on first use, not on `import cloudsim`: the simulated
# server imports this package too (its job runtime lives in it), and must start fast.
_PLAIN = ("c1", "c2", "m1", "finished_statuses", "setkey", "start_simulator", "start_dask")
_SUBMODULES = ("client", "config", "check", "files", "alias", "keywords", "pool_interface", "cli", "shipping",
               "server", "job", "wire", "backend", "dask")
_loaded = False


def _load() -> None:
    """Import the client side and put the API on this module (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from cloudsim import client as _client
    from cloudsim.config import config as _config

    module = _sys.modules[__name__]
    for name in _PLAIN:
        setattr(module, name, getattr(_client, name))
    module.config = _config  # the settings object, not the cloudsim.config module
    _client.bind_api(module)  # see client.REBOUND (pitfall: cloud-import-from)


# names served on first use by importing where they live: (module, attribute or None for the module)
_ON_DEMAND = {
    "files": ("cloudsim.files", None),  # PiCloud imported cloud.files with cloud
    "check": ("cloudsim.check", "check"),
    "install_cloud_alias": ("cloudsim.alias", "install_cloud_alias"),
}


def __getattr__(name: str) -> _Any:
    import importlib

    if name in _ON_DEMAND:
        where, attr = _ON_DEMAND[name]
        value = importlib.import_module(where)
        value = value if attr is None else getattr(value, attr)
        globals()[name] = value
        return value
    if not _loaded and (name in __all__ or name in _SUBMODULES):
        _load()
        if name in globals():
            return globals()[name]
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
