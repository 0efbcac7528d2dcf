"""cloudsim on a Dask ``distributed`` cluster: the second backend behind the ``cloud`` API.

``cloud.start_dask()`` starts a local cluster of worker processes (or, with
an address, uses a running scheduler) and runs every job through the same
job wrapper as the simulator (sandbox, output capture, hygiene checks,
pitfalls), one job at a time per worker process. The job table, the
``max_concurrent_jobs`` cap, dependencies and the exact deadlock check stay
in the client (:class:`cloudsim.backend.JobTable`): Dask receives a job once
its dependencies are done, keeps it in its own queue (in priority order)
until a worker thread is free, and the worker asks the client before it
starts it. So a job holds a slot exactly while it runs, a job blocked in
``join`` keeps its slot as on PiCloud, and a job killed while queued never
runs.

- ``backend.py``: the client side (:class:`DaskBackend`) and the link jobs
  use to call the API from inside the cluster.
- ``cluster.py``: the local cluster, started in a clean interpreter.
- ``task.py``: what runs in a Dask worker (the job wrapper, shipped modules).

Needs the ``dask`` extra: ``pip install 'picloud-cloudsim[dask]'``.
"""

from __future__ import annotations

from typing import Any

from cloudsim.errors import CloudException

INSTALL_HINT = "pip install 'picloud-cloudsim[dask]'  (or: pip install distributed)"

# What a job's Dask task returns in place of an outcome when the client did not let it start. Here, not
# in task.py, because the client reads them without importing distributed's worker side.
NOT_STARTED = ("not-started",)  # the client no longer wanted the job run (killed while queued, or gone)
LATER = ("later",)  # every slot was taken: the client hands the job out again


def require() -> Any:
    """Import ``distributed``, or explain how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise CloudException(
            f"cloud.start_dask() needs Dask's distributed package, which is not installed ({exc}).\n"
            f"Fix: {INSTALL_HINT}; or use cloud.start_simulator(), which needs nothing more."
        ) from None
    return distributed
