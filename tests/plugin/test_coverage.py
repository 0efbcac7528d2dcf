"""Coverage of a `pytest --cloudsim` run: what is measured today, and lines executed inside jobs.

The project's job function lives in an importable module (``jobs.py``), as a user's would. The
simulator keeps its flat module directory inside the project (``CLOUDSIM_SERVER_ROOT``), and the
coverage configuration maps copies found there back to the project (``[paths]``), which is what a
user would need for jobs' lines to count against their files.

Each worker restarts coverage after its fork (the server's tracer and data file came with it) and
saves its data after every job, since workers end with ``os._exit`` or SIGKILL; the server passes
COVERAGE_PROCESS_START and COVERAGE_PROCESS_CONFIG (pytest-cov 7's ``patch = subprocess``) on.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow


COVERAGERC = textwrap.dedent(
    """
    [run]
    parallel = true
    source = .
    patch = subprocess

    [paths]
    project =
        ./
        */modules/
    """
)

TESTS = textwrap.dedent(
    """
    import os
    import sys
    import cloud
    import jobs


    def coverage_in_job():
        import os, sys
        return os.environ.get("COVERAGE_PROCESS_START"), sys.gettrace() is not None


    def test_double():
        assert cloud.result(cloud.call(jobs.double, 21), timeout=120) == 42


    def test_the_job_runs_under_coverage():
        start, traced = cloud.result(cloud.call(coverage_in_job), timeout=120)
        if os.environ.get("COVERAGE_PROCESS_START"):
            assert start == os.environ["COVERAGE_PROCESS_START"]
            assert traced
    """
).lstrip()


@pytest.fixture
def covered(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The project with a coverage configuration, and no coverage settings inherited from this run."""
    for name in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COVERAGE_FILE", "COVERAGE_RCFILE"):
        monkeypatch.delenv(name, raising=False)
    project.makefile("", **{".coveragerc": COVERAGERC})
    project.makepyfile(test_cov=TESTS)
    return project


def _double_body(project: pytest.Pytester) -> int:
    """The line of jobs.py that only a job executes: the body of double()."""
    return (project.path / "jobs.py").read_text().splitlines().index("    return 2 * x") + 1


def _executed(project: pytest.Pytester) -> dict:
    """Combine the data files in the project and return {file: executed lines}."""
    combine = project.run(sys.executable, "-m", "coverage", "combine", timeout=120)
    assert combine.ret == 0, combine.stdout.str() + combine.stderr.str()
    report = project.run(sys.executable, "-m", "coverage", "json", "-o", "cov.json", timeout=120)
    assert report.ret == 0, report.stdout.str() + report.stderr.str()
    with open(project.path / "cov.json") as f:
        files = json.load(f)["files"]
    return {name: set(data["executed_lines"]) for name, data in files.items()}


def _coverage_run(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    monkeypatch.setenv("COVERAGE_PROCESS_START", str(project.path / ".coveragerc"))
    result = project.run(
        sys.executable, "-m", "coverage", "run", "-m", "pytest", "--cloudsim", "-p", "no:cacheprovider", timeout=240
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    return result


def test_coverage_run_measures_the_run_and_jobs_run_under_coverage(covered, monkeypatch) -> None:
    """`coverage run -m pytest --cloudsim` works: the tests pass, the client's lines are measured, and
    COVERAGE_PROCESS_START reaches the jobs, which run with a tracer installed."""
    _coverage_run(covered, monkeypatch)
    executed = _executed(covered)
    assert "test_cov.py" in executed
    assert TESTS.splitlines().index("def test_double():") + 2 in executed["test_cov.py"]
    assert "jobs.py" in executed


def test_coverage_run_counts_the_lines_jobs_execute(covered, monkeypatch) -> None:
    """The body of double(), executed only inside a job, counts after `coverage combine`."""
    _coverage_run(covered, monkeypatch)
    assert _double_body(covered) in _executed(covered)["jobs.py"]


def test_pytest_cov_counts_the_lines_jobs_execute(covered) -> None:
    """pytest --cov with `patch = subprocess`: the body of double() counts in pytest-cov's data."""
    result = covered.runpytest_subprocess("--cloudsim", "-p", "no:cacheprovider", "--cov", "--cov-report=", timeout=240)
    result.assert_outcomes(passed=2)
    report = covered.run(sys.executable, "-m", "coverage", "json", "-o", "cov.json", timeout=120)
    assert report.ret == 0, report.stdout.str() + report.stderr.str()
    with open(covered.path / "cov.json") as f:
        files = json.load(f)["files"]
    assert _double_body(covered) in files["jobs.py"]["executed_lines"]
