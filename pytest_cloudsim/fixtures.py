"""The fixtures of the cloudsim pytest plugin, registered only when cloudsim is on.

- ``cloud``: the ``cloudsim`` module with the simulator running for this test
  (the session's, or one restarted with ``cloudsim_config`` and the marker's
  settings); jobs the test leaves unfinished are killed at its end and reported.
- ``cloudsim_config``: the settings of this test on top of the session's, a
  dict; by default those of ``@pytest.mark.cloudsim``. Override it in a
  ``conftest.py``, module or class to give a group of tests other settings.
- ``cloud_check``: :func:`cloudsim.check.check`, run on the test's simulator.

Not for: hooks (``session.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import pytest

from pytest_cloudsim.session import SESSION_PLUGIN_NAME, CloudsimSession, marker_settings

__all__ = ["cloud", "cloudsim_config", "cloud_check"]


def _session(request: pytest.FixtureRequest) -> CloudsimSession:
    plugin = request.config.pluginmanager.get_plugin(SESSION_PLUGIN_NAME)
    assert isinstance(plugin, CloudsimSession), "the cloudsim fixtures are registered only with the session plugin"
    return plugin


@pytest.fixture
def cloudsim_config(request: pytest.FixtureRequest) -> Dict[str, Any]:
    """Settings for this test on top of the session's (default: the @pytest.mark.cloudsim settings).

    Override this fixture to run a group of tests with other settings, e.g.
    ``return {"max_concurrent_jobs": 2}``; the marker's settings win over it.
    """
    return marker_settings(request.node)


@pytest.fixture
def cloud(request: pytest.FixtureRequest, cloudsim_config: Dict[str, Any]) -> Any:
    """The ``cloudsim`` module, its simulator running with this test's settings."""
    settings = {**cloudsim_config, **marker_settings(request.node)}
    try:
        _session(request).use(settings)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
        described = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        pytest.fail(f"cloudsim could not start with cloudsim_config/marker settings ({described}): {exc}", pytrace=False)
    import cloudsim

    return cloudsim


@pytest.fixture
def cloud_check(cloud: Any) -> Callable[..., Any]:
    """``cloudsim.check``: run a call as the cloud would (twice in one interpreter, once in another) and
    return the report of every pitfall found; pitfalls it finds do not fail the test."""
    from cloudsim.check import check

    return check
