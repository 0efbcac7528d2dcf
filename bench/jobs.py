"""The job functions every contender runs, in a module of their own.

cloudsim ships the module a job's function comes from (and what it imports)
to its server; keeping the jobs here keeps the benchmark harness itself off
the wire.
"""

from __future__ import annotations

from typing import Any


def inc(x: int) -> int:
    """The tiny job: almost no work, so the figures are the cost of the round trip."""
    return x + 1


def identity(x: Any) -> Any:
    """Returns its argument: the data goes there and back."""
    return x
