"""A local Dask cluster for ``cloud.start_dask()``, started in a clean interpreter.

The cluster (a scheduler and ``n_workers`` nanny-managed worker processes,
one thread each, all on loopback) runs in its own ``python -I -m
cloudsim.dask.cluster`` process rather than in the client: Dask starts its
workers with ``spawn``, which would re-run the client's ``__main__`` in every
worker (and fail without an ``if __name__ == "__main__"`` guard), and a job's
interpreter must never inherit the client's main module or ``sys.path``.

The launcher prints the scheduler's address as one JSON line, then serves
until its stdin closes (the client closed it, or died) and stops the cluster.
Scheduler settings that make Dask behave as PiCloud's queue:

- ``allowed-failures: 0``: a job whose interpreter dies ends in error; it is
  never run a second time on another worker;
- ``worker-saturation: 1.0``: a worker is handed a job only when its thread
  is free, so the worker of a running job is known exactly;
- ``worker.daemon: False``: jobs may start processes (``multiprocessing``);
- ``multiprocessing-method: forkserver``: workers are forked from a clean
  process that has imported ``distributed`` (never from the client);
- ``deploy.lost-worker-timeout``: off (a day). Dask's local cluster closes
  a worker's nanny for good when no worker of that name is registered 15 s
  after one left; cloudsim replaces interpreters often (kill, leaks,
  ``restart_workers``), and a restart in progress at that moment would
  otherwise cost the cluster a worker. Here a nanny always restarts its
  worker, so a worker is never lost.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from cloudsim.errors import CloudException

DASK_CONFIG: Dict[str, Any] = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.daemon": False,
    "distributed.worker.memory.pause": False,  # a paused worker would hold its jobs back, unlike the cloud
    # workers are forked from a clean server that imported distributed once (a zygote, as the
    # simulator's): a replaced interpreter is ready in a fraction of a spawn's time
    "distributed.worker.multiprocessing-method": "forkserver",
    "distributed.deploy.lost-worker-timeout": "1 day",
}


class LocalDaskCluster:
    """The launcher process of a local cluster, owned by one ``DaskBackend``."""

    def __init__(self, n_workers: int, log_path: str, dashboard_address: Optional[str] = None) -> None:
        self.n_workers = n_workers
        self.log_path = log_path
        self.dashboard_address = dashboard_address
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None

    def start(self, timeout: float) -> str:
        """Start the cluster and return its scheduler's address; raise CloudException if it cannot start."""
        spec = json.dumps({"n_workers": self.n_workers, "dashboard_address": self.dashboard_address})
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        env = dict(os.environ)
        env.setdefault("MPLBACKEND", "Agg")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "cloudsim.dask.cluster", spec],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=os.path.dirname(self.log_path),
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.close()
                raise CloudException(
                    f"The local Dask cluster did not start within {timeout:g} s (startup_timeout); "
                    f"its log: {self.log_path}"
                )
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                self.close()
                raise CloudException(f"The local Dask cluster exited while starting; its log: {self.log_path}")
            line += chunk
        self.address = json.loads(line.decode())["address"]
        return self.address

    def pids(self) -> List[int]:
        """The launcher and every process under it (scheduler, nannies, workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        return [self.proc.pid] + [c.pid for c in children]

    def close(self, timeout: float = 15.0) -> None:
        """Stop the cluster: close the launcher's stdin, then kill what is left (by pid)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        import psutil

        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        left = [p for p in tree if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort; stdin EOF stops the cluster too
        pass


def main(argv: List[str]) -> int:
    """Run a local cluster until stdin closes (see the module docstring)."""
    import logging

    _die_with_parent()
    spec = json.loads(argv[0])
    import dask

    dask.config.set(DASK_CONFIG)
    from distributed import LocalCluster

    dashboard = spec.get("dashboard_address")
    cluster = LocalCluster(
        n_workers=int(spec["n_workers"]), threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=dashboard, worker_dashboard_address=None,
        silence_logs=getattr(logging, os.environ.get("CLOUDSIM__DASK_LOG_LEVEL", "ERROR").upper(), logging.ERROR),
        local_directory=os.path.join(os.getcwd(), "dask-workers"),
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    try:
        sys.stdout.write(json.dumps({"address": cluster.scheduler_address}) + "\n")
        sys.stdout.flush()
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
    finally:
        cluster.close(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
