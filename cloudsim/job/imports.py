"""How a job's shipped modules are imported on the server.

* ``import-order``: the modules a job's function and arguments refer to are
  imported before it runs, in an order drawn from a seed (``import_order_seed``
  setting, else a fresh one per job, shown in ``info``), so code that only works
  in one import order fails here first.
* ``dynamic-import`` / ``c-extensions``: importing a module of the user's
  that was not shipped raises ``ModuleNotFoundError`` saying why.
* New modules shipped while the worker runs become importable (import caches
  are refreshed when the client says it shipped more).
"""

from __future__ import annotations

import importlib
import random
import sys
from typing import Dict

_unshipped: Dict[str, str] = {}
_version = 0


class _UnshippedFinder:
    """Last on sys.meta_path: explains why a module of the user's is missing on the cloud."""

    def find_spec(self, fullname: str, path=None, target=None):
        reason = _unshipped.get(fullname)
        if reason is not None:
            raise ModuleNotFoundError(f"No module named '{fullname}' on the cloud: {reason}", name=fullname)
        return None


def install(settings: dict) -> None:
    sys.meta_path.append(_UnshippedFinder())


def before(job) -> None:
    global _version, _unshipped
    opts = job.opts
    version = opts.get("modver", 0)
    if version != _version:
        _version = version
        importlib.invalidate_caches()
    _unshipped = opts.get("unshipped") or {}
    seeds = opts.get("seeds")
    if seeds:
        missing = [name for name in seeds if name not in sys.modules]
        if len(missing) > 1:
            random.Random(opts.get("import_seed")).shuffle(missing)
        for name in missing:
            try:
                importlib.import_module(name)
            except BaseException:  # the job's own unpickling reports the failure properly
                pass


def after(job) -> None:
    global _unshipped
    _unshipped = {}
