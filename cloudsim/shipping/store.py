"""The flat module directory: where shipped modules live on the simulated server.

As on PiCloud, every shipped module of every client on the machine lands in
one directory (``<server_root>/modules``), by its import name: ``foo.py``,
``pkg/__init__.py``, ``pkg/sub.py``. So two *different* files with the same
top-level name (``project1/foo.py`` and ``project2/foo.py``) cannot both be
live: shipping the second while a running simulator still uses the first
raises :class:`ModuleConflictError` naming both (``flat-module-dir``).
Modules inside different packages may share a name.

Clients coordinate through an exclusive ``flock`` on ``.lock`` and a manifest
(``.manifest.json``) recording, per top-level name, the source it came from,
a digest of each file, and the simulator sessions using it; a session whose
client process is gone no longer counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Dict, Iterable, Iterator, List

from cloudsim.errors import CloudException
from cloudsim.shipping.analysis import ModuleInfo

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class ModuleConflictError(CloudException):
    """Two different files with the same module name would share the flat module directory."""


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _drop_bytecode(path: str) -> None:
    """A replaced module must not be served from a stale .pyc (its mtime is kept in whole seconds)."""
    import importlib.util

    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass


def session_alive(session: str) -> bool:
    """A session id is '<client pid>-<random>': alive while that process runs."""
    try:
        pid = int(session.split("-", 1)[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FlatStore:
    """One flat module directory, shared by every client on the machine."""

    def __init__(self, module_dir: str) -> None:
        self.dir = module_dir
        self.manifest_path = os.path.join(module_dir, ".manifest.json")
        os.makedirs(module_dir, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Dict[str, dict]]:
        with open(os.path.join(self.dir, ".lock"), "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    with open(self.manifest_path, "r", encoding="utf-8") as f:
                        manifest = json.load(f)
                except (OSError, ValueError):
                    manifest = {}
                yield manifest
                fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".manifest.")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(manifest, f, indent=1, sort_keys=True)
                os.replace(tmp, self.manifest_path)
            finally:
                if fcntl is not None:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def ship(self, modules: Iterable[ModuleInfo], session: str) -> List[str]:
        """Copy modules in (all or none); returns the names written. Raises ModuleConflictError."""
        modules = list(modules)
        if not modules:
            return []
        digests = {m.relpath: _digest(m.path) for m in modules}
        written: List[str] = []
        with self._locked() as manifest:
            for m in modules:
                entry = manifest.get(m.relpath)
                if entry is None or entry.get("source") == m.path or entry.get("sha1") == digests[m.relpath]:
                    continue
                live = [s for s in entry.get("sessions", []) if s != session and session_alive(s)]
                if live:
                    top = m.name.split(".")[0]
                    raise ModuleConflictError(
                        f"Module name conflict in the cloud's flat module directory: '{m.name}' from\n"
                        f"  {m.path}\n"
                        f"cannot be shipped while a different '{m.name}' from\n"
                        f"  {entry.get('source')}\n"
                        f"is in use by another running client (session {live[0]}).\n"
                        "Why: all modules sent to the cloud live in one directory, so each top-level module name "
                        "must refer to one file on a machine (pitfall: flat-module-dir).\n"
                        f"Fix: rename one of them (e.g. put '{top}' inside a package), or stop the other client.\n"
                        "See: docs/pitfalls.md#flat-module-dir"
                    )
            for m in modules:
                target = os.path.join(self.dir, m.relpath)
                entry = manifest.get(m.relpath)
                if entry is None or entry.get("sha1") != digests[m.relpath] or not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(m.path, "rb") as src:
                        data = src.read()
                    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".ship.")
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.replace(tmp, target)
                    _drop_bytecode(target)
                    written.append(m.name)
                    sessions = [session]
                else:
                    sessions = [s for s in entry.get("sessions", []) if session_alive(s)]
                    if session not in sessions:
                        sessions.append(session)
                manifest[m.relpath] = {"source": m.path, "sha1": digests[m.relpath], "name": m.name,
                                       "sessions": sessions}
        return written

    def adopt(self, session: str, sources: Iterable[str]) -> Dict[str, bytes]:
        """Mark the modules shipped from ``sources`` as used by ``session`` too; return their files by relpath.

        A client ships a module once per process; a later session of the same
        process (the cloud was restarted) uses what is already here, and its
        workers need those files.
        """
        wanted = set(sources)
        files: Dict[str, bytes] = {}
        with self._locked() as manifest:
            for relpath, entry in manifest.items():
                if entry.get("source") not in wanted:
                    continue
                with open(os.path.join(self.dir, relpath), "rb") as f:
                    files[relpath] = f.read()
                if session not in entry.get("sessions", []):
                    entry["sessions"] = [s for s in entry.get("sessions", []) if session_alive(s)] + [session]
        return files

    def release(self, session: str) -> None:
        """A simulator stopped: its modules are no longer live on its account (files stay)."""
        if not os.path.exists(self.manifest_path):
            return
        with self._locked() as manifest:
            for entry in manifest.values():
                if session in entry.get("sessions", []):
                    entry["sessions"] = [s for s in entry["sessions"] if s != session]
