"""The simulator runs jobs in separate interpreters and gives back their results and errors."""

import os

import pytest

import cloudsim


def square(x):
    return x * x


def test_call_and_result(cloud):
    jid = cloud.call(square, 7)
    assert isinstance(jid, int)
    assert cloud.result(jid) == 49
    assert cloud.status(jid) == "done"


def test_job_runs_in_another_process(cloud):
    assert cloud.result(cloud.call(os.getpid)) != os.getpid()


def test_failed_job_raises_with_remote_traceback(cloud):
    jid = cloud.call(square, "x")
    with pytest.raises(cloudsim.CloudException) as info:
        cloud.result(jid)
    text = str(info.value)
    assert text.startswith(f"Job {jid}: Traceback (most recent call last):")
    assert "TypeError" in text
    assert info.value.exc_type == "TypeError"
    assert cloud.status(jid) == "error"


def test_map_pads_with_none(cloud):
    def pair(a, b):
        return (a, b)

    assert cloud.result(cloud.map(pair, [1, 2, 3], [4])) == [(1, 4), (2, None), (3, None)]
