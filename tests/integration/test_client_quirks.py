"""Client-side quirks: functions taken from the cloud module go stale, forking the client warns."""

from __future__ import annotations

import os
import warnings

import pytest

import cloudsim


def test_function_taken_before_start_is_stale_and_says_how_to_call(tmp_path):
    from cloudsim import call as early_call

    cloudsim.start_simulator(force_restart=True, server_root=str(tmp_path / "srv"))
    try:
        with pytest.raises(cloudsim.CloudException) as info:
            early_call(abs, -1)
        text = str(info.value)
        assert "from cloud import call" in text
        assert "cloud.call(" in text
        assert "cloud-import-from" in text
        from cloudsim import call as late_call

        assert cloudsim.result(late_call(abs, -4)) == 4
    finally:
        cloudsim.close()


def _fork_warnings(forks: int) -> list:
    """Fork (and reap) ``forks`` children that exit at once; return the fork-danger warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
    return [w for w in caught if issubclass(w.category, cloudsim.ForkDangerWarning)]


def test_forking_the_client_while_the_simulator_runs_warns_once_per_start(tmp_path):
    for _ in range(2):  # a new start warns again: it is a new cloud with threads of its own
        cloudsim.start_simulator(force_restart=True, server_root=str(tmp_path / "srv"))
        try:
            fork_warnings = _fork_warnings(2)
            assert len(fork_warnings) == 1
            assert "forked while the cloudsim simulator is running" in str(fork_warnings[0].message)
        finally:
            cloudsim.close()


def test_forking_without_a_simulator_does_not_warn():
    cloudsim.close()
    assert not _fork_warnings(1)
