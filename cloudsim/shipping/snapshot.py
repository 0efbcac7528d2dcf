"""Module snapshots: ship each user module once, and notice when it changes afterwards.

At the first ``call``/``map`` that needs a module, the client copies it to the
flat module directory. In the life of the client interpreter it is never sent
again, even if it changes on disk or is reloaded, so jobs keep running the
old code (``module-snapshot``); the next call after such a change reports it.
What cannot be shipped is reported at call time too: dynamic imports
(``dynamic-import``), compiled extensions (``c-extensions``), and modules the
server's own installed packages shadow (``preinstalled-conflict``).
"""

from __future__ import annotations

import importlib.machinery
import os
import threading
import time
from typing import Dict, Iterable, List, Optional, Set, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.shipping.analysis import ANALYZER, Closure, ModuleInfo
from cloudsim.shipping.store import FlatStore

_lock = threading.Lock()
# module dir -> {module name: (path, mtime_ns, size)} as shipped by this process
_shipped: Dict[str, Dict[str, Tuple[str, int, int]]] = {}
# (module name, mtime_ns, size) changes already reported
_reported: set = set()
# module dir -> number of modules shipped there by this process (workers refresh import caches when it moves)
_versions: Dict[str, int] = {}
_installed_path_cache: Dict[str, Optional[str]] = {}
# module name -> when its file was last looked at for changes
_checked: Dict[str, float] = {}
_RECHECK = 1.0  # seconds between looks at a module the job does not refer to directly


class Shipment:
    """What one call needs: the modules to pre-import, what cannot be imported, pitfalls found."""

    __slots__ = ("modules", "seeds", "unshipped", "pitfalls", "version", "project_dirs")

    def __init__(self) -> None:
        self.project_dirs: List[str] = []
        self.modules: List[str] = []
        self.seeds: List[str] = []
        self.unshipped: Dict[str, str] = {}
        self.pitfalls: List[dict] = []
        self.version = 0


def _installed_shadow(name: str, server_path: Iterable[str]) -> Optional[str]:
    """Where the server's installed packages provide a top-level module of this name, if they do."""
    top = name.split(".")[0]
    if top in _installed_path_cache:
        return _installed_path_cache[top]
    spec = importlib.machinery.PathFinder.find_spec(top, list(server_path))
    where = spec.origin if spec is not None and spec.origin else (
        list(spec.submodule_search_locations)[0] if spec is not None and spec.submodule_search_locations else None)
    _installed_path_cache[top] = where
    return where


def shipped_sources(store: FlatStore) -> Set[str]:
    """The source files this client process has shipped into ``store`` (once each, whatever the session)."""
    with _lock:
        return {path for path, _mtime, _size in _shipped.get(store.dir, {}).values()}


def prepare(seeds: List[str], store: FlatStore, session: str, server_path: List[str]) -> Shipment:
    """Ship what the seeds need (once per module in this process) and report what will not work."""
    closure: Closure = ANALYZER.closure(seeds)
    out = Shipment()
    if not closure.modules and not closure.extensions and not closure.dynamic:
        out.version = _versions.get(store.dir, 0)
        return out
    with _lock:
        shipped = _shipped.setdefault(store.dir, {})
        fresh: List[ModuleInfo] = []
        now = time.monotonic()
        direct = set(seeds)
        for info in closure.modules:
            have = shipped.get(info.name)
            if have is not None and info.name not in direct:
                # the modules the job refers to are looked at on every call ("the next call after a
                # change" is told); those it only reaches through imports, once a second at most
                if now - _checked.get(info.name, 0.0) < _RECHECK:
                    continue
            _checked[info.name] = now
            try:
                st = os.stat(info.path)
            except OSError:
                continue
            if have is None:
                fresh.append(info)
                continue
            if (st.st_mtime_ns, st.st_size) != (have[1], have[2]):
                key = (info.name, st.st_mtime_ns, st.st_size)
                if key not in _reported:
                    _reported.add(key)
                    out.pitfalls.append(_pitfalls.record(
                        "module-snapshot",
                        f"Module '{info.name}' ({info.path}) changed since it was sent to the cloud; "
                        "jobs still run the version sent first.",
                        "a module is shipped once per client interpreter and never sent again, even if it is "
                        "edited or reloaded.",
                        "start a new Python interpreter (restart the script or kernel) to send the new code.",
                        module=info.name, path=info.path,
                    ))
        if fresh:
            # a module whose top-level name the server already has installed is shadowed there
            for info in fresh:
                if "." in info.name:
                    continue
                shadow = _installed_shadow(info.name, server_path)
                if shadow:
                    out.pitfalls.append(_pitfalls.record(
                        "preinstalled-conflict",
                        f"Your module '{info.name}' ({info.path}) has the name of a package installed on the "
                        f"cloud ({shadow}); jobs import the installed one.",
                        "installed packages come first on the server's import path, so a user module with the "
                        "same name is shadowed.",
                        f"rename your module (e.g. 'my_{info.name}') or put it inside a package of your own.",
                        module=info.name, path=info.path, installed=shadow,
                    ))
            store.ship(fresh, session)
            for info in fresh:
                st = os.stat(info.path)
                shipped[info.name] = (info.path, st.st_mtime_ns, st.st_size)
            _versions[store.dir] = _versions.get(store.dir, 0) + len(fresh)
        out.version = _versions.get(store.dir, 0)
    out.modules = closure.names
    roots = set()
    for info in closure.modules:  # the directories the shipped modules came from are the project's too
        if info.path.endswith(info.relpath):
            roots.add(info.path[: -len(info.relpath)].rstrip(os.sep) or os.sep)
    out.project_dirs = sorted(roots)
    shipped_names = set(out.modules)
    out.seeds = sorted(s for s in seeds if s in shipped_names)
    for ext in closure.extensions:
        reason = (
            f"'{ext.name}' is a compiled extension of your own ({ext.path}); compiled extensions are not "
            "uploaded to the cloud: they must be installed on the server (pitfall: c-extensions)."
        )
        out.unshipped[ext.name] = reason
        out.pitfalls.append(_pitfalls.record(
            "c-extensions", f"Module '{ext.name}' is a compiled extension ({ext.path}) and is not sent to the cloud.",
            "only Python source is shipped; C/C++ extensions must be installed on the server.",
            "install the extension on the server (as a package), or use a pure-Python fallback.",
            module=ext.name, path=ext.path,
        ))
    for site_ in closure.dynamic:
        if site_.target and ANALYZER.is_user_module(site_.target) and site_.target not in out.modules:
            out.unshipped.setdefault(site_.target, (
                f"'{site_.target}' is imported dynamically at {site_.where()}, so it was not shipped: cloudsim, "
                "like the cloud, finds the modules to send by static analysis of import statements "
                "(pitfall: dynamic-import). Fix: import it with a plain `import` statement."
            ))
        key = ("dynamic", site_.path, site_.line)
        if key not in _reported:
            _reported.add(key)
            target = f" of '{site_.target}'" if site_.target else ""
            out.pitfalls.append(_pitfalls.record(
                "dynamic-import",
                f"Dynamic import{target} at {site_.where()}: modules reached only through __import__ or "
                "importlib.import_module are not sent to the cloud.",
                "the modules a job needs are found by static analysis of import statements; a dynamic import "
                "cannot be seen, so the job fails with ImportError on the cloud.",
                "use a plain `import module` statement (it may sit inside the function), so it is shipped.",
                path=site_.path, line=site_.line, target=site_.target,
            ))
    return out


def shipped_modules(module_dir: str) -> Dict[str, Tuple[str, int, int]]:
    """The modules this process shipped to a module directory (for tests and diagnostics)."""
    with _lock:
        return dict(_shipped.get(module_dir, {}))
