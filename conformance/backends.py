"""Backends the conformance suite runs against: what "a cloud" must offer to be tested.

The cases in ``conformance/test_*.py`` never import cloudsim's internals: they
use the module-like API object a :class:`Backend` hands them (``call``,
``map``, ``result``, ``join``, ``status``, ``info``, ``kill``, ``delete``,
``close``, ``CloudException``, ``CloudTimeoutError``, ``CloudDeadlockError``,
...), so another implementation of PiCloud's ``cloud`` API can be bound later
and judged by the same cases::

    --conformance-backend=simulator            (the default, cloudsim's simulator)
    --conformance-backend=dask                 (cloudsim on a local Dask cluster)
    --conformance-backend=mypkg.mymod:MyCloud  (any Backend subclass, by dotted path)

A backend that cannot reproduce a quirk at all says so in :meth:`Backend.supports`;
the cases for that id are then skipped with its reason, never failed.

Not for: starting anything at import time, or choosing which cases run (the
``quirk`` marker of each case does that, see ``conftest.py``).
"""

from __future__ import annotations

import abc
import importlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple, Type

__all__ = ["UNSUPPORTED_PREFIX", "Backend", "SimulatorBackend", "DaskBackend", "BACKENDS", "DEFAULT_BACKEND",
           "ENV_VAR", "resolve_backend", "BackendError"]

#: How the skip reason of a case starts when its backend cannot reproduce the quirk (the report says "cannot").
UNSUPPORTED_PREFIX = "the backend cannot reproduce this quirk: "

#: The environment variable naming the backend(s), as ``--conformance-backend`` does.
ENV_VAR = "CLOUDSIM_CONFORMANCE_BACKEND"

#: The backend used when neither ``--conformance-backend`` nor the environment names one.
DEFAULT_BACKEND = "simulator"


class BackendError(ValueError):
    """A ``--conformance-backend`` value names no registered backend and no importable Backend class."""


class Backend(abc.ABC):
    """One implementation of PiCloud's ``cloud`` API, as the conformance cases see it.

    Subclass it, implement :meth:`api`, :meth:`start` and :meth:`stop`, and
    name the class with ``--conformance-backend=package.module:ClassName``.

    Settings given to :meth:`start` use cloudsim's names (``max_concurrent_jobs``,
    ``max_transmit_size``, ``network_timeout``, ``allow_hosts``, see
    ``docs/pitfalls.md``); a backend maps them to its own, or declares the
    quirks that need them unsupported.

    Attributes:
        name: a short name shown in test ids and skip reasons, e.g. ``'simulator'``.
        workdir: a directory of the test session this backend may use freely.
    """

    name: str = "abstract"

    def __init__(self, workdir: Optional[str] = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir if workdir is not None else tempfile.mkdtemp(prefix="cloudsim-conformance-")

    @abc.abstractmethod
    def api(self) -> Any:
        """Return the module-like API object without starting anything (``cloud-import-from`` needs it)."""

    @abc.abstractmethod
    def start(self, **settings: Any) -> Any:
        """Start a fresh cloud with these settings (no job of an earlier start may survive); return the API object."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the cloud and every process it started; calling it when nothing runs does nothing."""

    def supports(self, quirk_id: str) -> Tuple[bool, str]:
        """Say whether this backend can reproduce a quirk at all.

        Returns:
            ``(True, '')``, or ``(False, reason)``; the cases of that id are
            then skipped with the reason.
        """
        return True, ""

    def note(self, quirk_id: str) -> str:
        """How this backend reproduces a quirk, where that differs from the simulator ('' if it does not).

        Shown beside the quirk's outcomes in the report, so a pass says what it means on this backend.
        """
        return ""

    def session_processes(self) -> List[int]:
        """Pids the backend keeps for the whole session by design (e.g. a cluster), which outlive a case."""
        return []

    def close(self) -> None:
        """Release what the backend holds for the whole session (its own workdir), after :meth:`stop`."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} workdir={self.workdir!r}>"


class SimulatorBackend(Backend):
    """cloudsim's simulator: ``cloudsim.start_simulator(force_restart=True, server_root=...)`` per case."""

    name = "simulator"

    def __init__(self, workdir: Optional[str] = None) -> None:
        super().__init__(workdir)
        # the simulated server's root (flat module directory, job directories, logs) for this session
        self.server_root = os.path.join(self.workdir, "server")

    def api(self) -> Any:
        import cloudsim

        return cloudsim

    def start(self, **settings: Any) -> Any:
        import cloudsim

        settings.setdefault("server_root", self.server_root)
        cloudsim.start_simulator(force_restart=True, **settings)
        return cloudsim

    def stop(self) -> None:
        import cloudsim

        cloudsim.close()


class DaskBackend(Backend):
    """cloudsim on Dask: one local cluster for the session; each case gets freshly restarted workers.

    ``start`` is ``cloudsim.start_dask(address=..., restart_workers=True, ...)``,
    so every case starts in fresh interpreters (as after ``start_simulator``)
    without paying for a new cluster. The cluster has 16 one-thread workers,
    enough for the default ``max_concurrent_jobs``. Another backend made
    with the same ``workdir`` (another client on the machine, as in the
    flat-module-dir case) uses the same cluster, as a second simulator uses
    the same server root.
    """

    name = "dask"
    workers = 16

    #: quirk id -> why the Dask backend cannot reproduce it (every quirk is reproduced today)
    UNSUPPORTED: Dict[str, str] = {}

    #: quirk id -> how the Dask backend reproduces it, where that differs from the simulator
    NOTES: Dict[str, str] = {
        "job-cap": "enforced by cloudsim in the client; the cap is at most the cluster's worker threads "
                   "(connection_info()['num_procs'])",
        "dependencies": "kept in cloudsim's job table: a job is handed to Dask once its dependencies are done, "
                        "so Dask's own graph has no edge for them",
        "max-runtime": "the job's worker process is ended; its nanny starts a fresh one",
        "job-kill": "the job's worker process is ended; its nanny starts a fresh one",
        "recursion-deadlock": "found by cloudsim's wait-for graph in the client, which sees every job of the "
                              "session; Dask itself never sees a blocked join",
        "leaked-threads": "the worker process is ended after the result is in; its nanny starts a fresh one",
        "leaked-subprocesses": "the worker process is ended after the result is in; its nanny starts a fresh one",
        "kill-process": "the worker process is ended after the job; its nanny starts a fresh one",
        "network-timeout": "the worker's default socket timeout is the job's only while a job runs "
                           "(it is process-wide, so Dask's own new sockets see it meanwhile)",
        "no-listen": "applies to the job's thread and the threads it starts; Dask's own threads may listen",
        "separate-network": "applies to the job's thread and the threads it starts; Dask's own threads are exempt",
        "non-code-files": "applies to the job's thread and the threads it starts",
        "flat-module-dir": "one flat directory per cluster: on each worker (<local_directory>/cloudsim-modules) "
                           "and, for conflicts, under the client's server_root; clients on other machines are "
                           "not seen",
        "module-snapshot": "per client process, as on the simulator; a worker that served another client "
                           "first forgets that client's modules",
    }

    def __init__(self, workdir: Optional[str] = None) -> None:
        super().__init__(workdir)
        self.server_root = os.path.join(self.workdir, "server")
        try:
            from cloudsim.dask.cluster import LocalDaskCluster
            from cloudsim.dask import require

            require()
        except Exception as exc:
            raise BackendError(f"conformance backend 'dask' needs Dask: {exc}") from None
        self.cluster: Optional[LocalDaskCluster] = None
        address_file = os.path.join(self.workdir, "cluster", "address.json")
        self.address = _running_cluster(address_file)
        if self.address is None:
            self.cluster = LocalDaskCluster(self.workers, os.path.join(self.workdir, "cluster", "cluster.log"))
            self.address = self.cluster.start(120.0)
            with open(address_file, "w") as f:
                json.dump({"address": self.address, "pid": self.cluster.pids()[0]}, f)  # the launcher's

    def api(self) -> Any:
        import cloudsim

        return cloudsim

    def start(self, **settings: Any) -> Any:
        import cloudsim

        settings.setdefault("server_root", self.server_root)
        cloudsim.start_dask(address=self.address, restart_workers=True, **settings)
        return cloudsim

    def stop(self) -> None:
        import cloudsim

        cloudsim.close()

    def supports(self, quirk_id: str) -> Tuple[bool, str]:
        reason = self.UNSUPPORTED.get(quirk_id)
        return (False, reason) if reason else (True, "")

    def note(self, quirk_id: str) -> str:
        return self.NOTES.get(quirk_id, "")

    def session_processes(self) -> List[int]:
        return self.cluster.pids() if self.cluster is not None else []

    def close(self) -> None:
        super().close()
        if self.cluster is not None:
            self.cluster.close()


def _running_cluster(address_file: str) -> Optional[str]:
    """The address of the cluster another backend of this workdir runs, if its process still does."""
    try:
        with open(address_file) as f:
            found = json.load(f)
        os.kill(int(found["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(found["address"])


#: registry name -> backend class, e.g. {'simulator': SimulatorBackend}
BACKENDS: Dict[str, Type[Backend]] = {"simulator": SimulatorBackend, "dask": DaskBackend}


def resolve_backend(spec: str) -> Type[Backend]:
    """Find the backend class a ``--conformance-backend`` value names.

    Args:
        spec: a registry name (``'simulator'``) or a dotted path
            ``'package.module:ClassName'`` (``'package.module.ClassName'`` works too).

    Returns:
        The :class:`Backend` subclass.

    Raises:
        BackendError: unknown name, module not importable, no such class, or
            not a Backend subclass; the message says which, and what is valid.
    """
    spec = (spec or "").strip()
    if spec in BACKENDS:
        return BACKENDS[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif "." in spec:
        module_name, _, attr = spec.rpartition(".")
    else:
        raise BackendError(
            f"unknown conformance backend {spec!r}. Registered: {', '.join(sorted(BACKENDS))}; "
            "or give a Backend subclass as 'package.module:ClassName'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"conformance backend {spec!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise BackendError(f"conformance backend {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(
            f"conformance backend {spec!r} is {cls!r}, not a subclass of conformance.backends.Backend"
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise BackendError(f"conformance backend {spec!r} does not implement: {missing}")
    return cls
