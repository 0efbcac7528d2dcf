"""Fixtures of the plugin tests: pytester, and a project directory for the runs it starts.

``pytester`` is registered from ``pytest_configure`` rather than with
``pytest_plugins = ["pytester"]``: this conftest is not at the top of the
test tree, and pytest refuses ``pytest_plugins`` there when the whole suite
runs (``python -m pytest`` from the repository root).
"""

from __future__ import annotations

from typing import Callable

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("pytester")


# The jobs of the test projects: in an importable module, as a user's project has them.
JOBS_MODULE = '''
import time


def double(x):
    return 2 * x


def child():
    return 1


def parent():
    """Blocks on a job of its own: deadlocks when it holds the only slot (recursion-deadlock)."""
    import cloud
    return cloud.result(cloud.call(child))


def grandparent():
    """Under max_concurrent_jobs=2 both it and parent() block: two recursion-deadlock records."""
    import cloud
    return cloud.result(cloud.call(parent))


def cloud_name():
    """`import cloud` inside a job gives cloudsim, as the server's own cloud package."""
    import cloud
    return cloud.__name__, cloud.running_on_cloud()


def slow():
    time.sleep(600)


COUNTER = []


def stateful():
    COUNTER.append(1)
    return len(COUNTER)
'''


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A test project with ``jobs.py``, whose runs keep their simulator under the project's directory."""
    monkeypatch.setenv("CLOUDSIM_SERVER_ROOT", str(pytester.path / "server"))
    pytester.makepyfile(jobs=JOBS_MODULE)
    return pytester


@pytest.fixture
def run_cloudsim(project: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """run_cloudsim(*args): pytest in a subprocess of the project, --cloudsim and -p no:cacheprovider added."""

    def run(*args: str) -> pytest.RunResult:
        return project.runpytest_subprocess("--cloudsim", "-p", "no:cacheprovider", *args, timeout=240)

    return run
