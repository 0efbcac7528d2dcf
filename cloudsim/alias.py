"""``import cloud`` for PiCloud-era code: the name ``cloud`` resolved to cloudsim.

cloudsim does not install a top-level ``cloud`` package. Where the user asks
for it (``install_cloud_alias()``, ``cloudsim run``, ``pytest --cloudsim``)
and always inside jobs (the server's own cloud package, as on PiCloud), a
finder on ``sys.meta_path`` makes ``import cloud`` and ``import cloud.<sub>``
give the cloudsim module and its submodules.
"""

from __future__ import annotations

import importlib
import importlib.util
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence


class _AliasLoader:
    """Gives the already imported cloudsim module (or submodule) for a ``cloud`` name."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed; nothing to do."""


class CloudAliasFinder:
    """Resolves ``cloud`` and ``cloud.*`` to ``cloudsim`` and ``cloudsim.*``."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None):
        if fullname != "cloud" and not fullname.startswith("cloud."):
            return None
        real = "cloudsim" + fullname[len("cloud"):]
        try:
            importlib.util.find_spec(real)
        except (ImportError, ValueError):
            return None
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=(fullname == "cloud"))


def install_cloud_alias() -> None:
    """Make ``import cloud`` (and ``import cloud.<sub>``) give cloudsim in this interpreter; idempotent."""
    if not any(isinstance(f, CloudAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, CloudAliasFinder())


def remove_cloud_alias() -> None:
    """Undo :func:`install_cloud_alias` (modules already imported as ``cloud`` stay imported)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, CloudAliasFinder)]
    for name in [n for n in sys.modules if n == "cloud" or n.startswith("cloud.")]:
        if getattr(sys.modules[name], "__name__", "").startswith("cloudsim"):
            del sys.modules[name]
