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


def test_forking_the_client_while_the_simulator_runs_warns_once(tmp_path, monkeypatch):
    from cloudsim import client

    monkeypatch.setattr(client, "_fork_warned", False)
    cloudsim.start_simulator(force_restart=True, server_root=str(tmp_path / "srv"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
        fork_warnings = [w for w in caught if issubclass(w.category, cloudsim.ForkDangerWarning)]
        assert len(fork_warnings) == 1
        assert "forked while the cloudsim simulator is running" in str(fork_warnings[0].message)
    finally:
        cloudsim.close()


def test_forking_without_a_simulator_does_not_warn(monkeypatch):
    from cloudsim import client

    cloudsim.close()
    monkeypatch.setattr(client, "_fork_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    assert not [w for w in caught if issubclass(w.category, cloudsim.ForkDangerWarning)]
