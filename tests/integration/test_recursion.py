"""Jobs that use the cloud API from inside the cloud, and the deadlock that blocking recursion causes."""

from __future__ import annotations

import time

import pytest

import cloudsim


def fib(n):
    """The seed's recursive Fibonacci: every job blocks on two more."""
    import cloudsim as cloud

    if n <= 1:
        return 1
    jid1 = cloud.call(fib, n - 1)
    jid2 = cloud.call(fib, n - 2)
    return cloud.result(jid1) + cloud.result(jid2)


def test_running_on_cloud_inside_a_job(cloud):
    assert cloud.running_on_cloud() is False
    assert cloud.result(cloud.call(cloudsim.running_on_cloud)) is True


def test_recursive_fib_finishes_with_enough_slots(start):
    cloud = start(max_concurrent_jobs=16)
    assert cloud.result(cloud.call(fib, 4), timeout=60) == 5


def test_recursive_fib_deadlocks_under_a_small_cap_and_says_so(start):
    cloud = start(max_concurrent_jobs=4)
    t0 = time.monotonic()
    jid = cloud.call(fib, 5)
    with pytest.raises(cloudsim.CloudException) as info:
        cloud.result(jid, timeout=60)
    elapsed = time.monotonic() - t0
    text = str(info.value)
    assert "CloudDeadlockError" in text
    assert "max_concurrent_jobs=4" in text
    assert "_depends_on" in text
    assert elapsed < 30, "the deadlock must be detected, not timed out"
    assert cloud.status(jid) == "error"


def test_fib_with_depends_on_finishes_under_the_same_cap(start):
    cloud = start(max_concurrent_jobs=4)
    # the client drives the recursion: jobs never block, dependencies order them
    def build(n):
        if n <= 1:
            return cloud.call(int, 1)
        a, b = build(n - 1), build(n - 2)
        return cloud.call(_add_results, a, b, _depends_on=[a, b])

    top = build(5)
    assert cloud.result(top, timeout=60) == 8


def _add_results(a, b):
    import cloudsim as cloud

    return cloud.result(a) + cloud.result(b)
