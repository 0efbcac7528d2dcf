"""`pytest --cloudsim` end to end, in real subprocesses: one simulator per test process, `import cloud`,
the fixtures and the marker, pitfalls charged to the test whose jobs hit them, the summary, xdist.

The pitfall used throughout is recursion-deadlock, which the simulator produces reliably: under
max_concurrent_jobs=1 a job that blocks on a job of its own holds the only slot.
"""

from __future__ import annotations

import json
import textwrap

import pytest


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# The four lines of the pitfall's message, as a strict failure must show them in full.
DEADLOCK_MESSAGE = [
    "Job * blocked in cloud.join/cloud.result on jobs that could never start.",
    "  Why: a job blocked in join keeps its slot; under max_concurrent_jobs the jobs it waits for never get one.",
    "  Fix: submit follow-up work with _depends_on instead of blocking inside a job.",
    "  See: docs/pitfalls.md#recursion-deadlock  [pitfall: recursion-deadlock]",
]

DEADLOCK_TESTS = dedent(
    """
    import pytest
    import cloud
    import jobs


    @pytest.mark.cloudsim(max_concurrent_jobs=1)
    def test_deadlock():
        with pytest.raises(cloud.CloudException):
            cloud.result(cloud.call(jobs.parent), timeout=120)


    def test_clean(cloud):
        assert cloud.result(cloud.call(jobs.double, 21), timeout=120) == 42
    """
)


def test_strict_mode_fails_the_test_with_the_pitfalls_full_message(run_cloudsim, project) -> None:
    """By default a pitfall fails its test even though the test caught the job's error; the failure is
    the pitfall's whole message (not a traceback), and the summary counts it by id and names the test."""
    project.makepyfile(test_deadlock=DEADLOCK_TESTS)
    result = run_cloudsim()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_deadlock _*",
            "cloudsim: the jobs of this test hit 1 pitfall; with --cloudsim a pitfall fails its test.",
            "",
            "[[]recursion-deadlock] job *:",
            *DEADLOCK_MESSAGE,
            "",
            "To let it pass: fix the code, or --cloudsim-ignore=recursion-deadlock (ini cloudsim_ignore), "
            "or --cloudsim-pitfalls=warn (ini cloudsim_pitfalls).",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= cloudsim =*",
            "1 pitfall in 1 test (1 test failed for them)",
            "recursion-deadlock: 1",
            "    test_deadlock.py::test_deadlock (failed)",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_deadlock.py::test_deadlock - Failed: cloudsim: the jobs of this t*"])
    # the failure is the message, not a traceback of the plugin
    result.stdout.no_fnmatch_line("*session.py*")


@pytest.mark.parametrize(
    "args, ini",
    [
        (["--cloudsim-pitfalls=warn"], ""),
        ([], "cloudsim_pitfalls = warn\n"),
    ],
    ids=["option", "ini"],
)
def test_warn_mode_turns_the_pitfall_into_a_warning_of_the_test(run_cloudsim, project, args, ini) -> None:
    """--cloudsim-pitfalls=warn (or its ini twin): the test passes, the pitfall is in the warnings summary."""
    if ini:
        project.makeini("[pytest]\n" + ini)
    project.makepyfile(test_deadlock=DEADLOCK_TESTS)
    result = run_cloudsim(*args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*= warnings summary =*",
            "test_deadlock.py::test_deadlock",
            "*RecursionDeadlockWarning: Job * blocked in cloud.join/cloud.result on jobs that could never start.",
        ]
    )
    result.stdout.fnmatch_lines(["*= cloudsim =*", "recursion-deadlock: 1", "    test_deadlock.py::test_deadlock (warned)"])


@pytest.mark.parametrize(
    "args, ini",
    [
        (["--cloudsim-pitfalls=ignore"], ""),
        (["--cloudsim-ignore=pass-by-value,recursion-deadlock"], ""),
        (["--cloudsim-ignore=pass-by-value", "--cloudsim-ignore=recursion-deadlock"], ""),
        ([], "cloudsim_ignore = recursion-deadlock\n"),
    ],
    ids=["pitfalls-ignore", "ignore-list", "ignore-repeated", "ignore-ini"],
)
def test_ignored_pitfalls_neither_fail_nor_warn_but_are_counted(run_cloudsim, project, args, ini) -> None:
    """Ignored (all of them, or by id): the test passes, no pitfall warning, the summary says 'ignored'."""
    if ini:
        project.makeini("[pytest]\n" + ini)
    project.makepyfile(test_deadlock=DEADLOCK_TESTS)
    result = run_cloudsim(*args)
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*RecursionDeadlockWarning*")
    result.stdout.fnmatch_lines(["*= cloudsim =*", "recursion-deadlock: 1", "    test_deadlock.py::test_deadlock (ignored)"])


def test_a_pitfall_the_test_expects_does_not_fail_it(run_cloudsim, project) -> None:
    """A test that asserts the pitfall (pytest.warns, or pytest.raises(PitfallError) under pitfalls='error')
    has handled it: strict mode leaves it passing, and pytest's own warning capture still works."""
    project.makepyfile(
        test_expected=dedent(
            """
            import warnings
            import pytest
            import cloud
            import jobs


            @pytest.mark.cloudsim(max_concurrent_jobs=1)
            def test_warns():
                with pytest.warns(cloud.RecursionDeadlockWarning, match="blocked in cloud.join"):
                    with pytest.raises(cloud.CloudException):
                        cloud.result(cloud.call(jobs.parent), timeout=120)


            @pytest.mark.cloudsim(max_concurrent_jobs=1, pitfalls="error")
            def test_raises():
                with pytest.raises(cloud.PitfallError, match="recursion-deadlock"):
                    cloud.result(cloud.call(jobs.parent), timeout=120)


            def test_other_warnings_reach_pytest():
                warnings.warn("a plain user warning")
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*UserWarning: a plain user warning*"])
    result.stdout.fnmatch_lines(["*= cloudsim =*", "no pitfalls found"])


def test_a_pitfall_never_collected_by_the_client_still_fails_its_test(run_cloudsim, project) -> None:
    """Pitfalls on jobs the test never collected (it polled status) and on jobs collected inside other jobs
    are found on the jobs (cloud.info) and fail the test too, each counted."""
    project.makepyfile(
        test_uncollected=dedent(
            """
            import time
            import pytest
            import cloud
            import jobs


            def wait(jid):
                deadline = time.monotonic() + 120
                while cloud.status(jid) not in cloud.finished_statuses and time.monotonic() < deadline:
                    time.sleep(0.05)


            @pytest.mark.cloudsim(max_concurrent_jobs=1)
            def test_polled():
                wait(cloud.call(jobs.parent))


            @pytest.mark.cloudsim(max_concurrent_jobs=2)
            def test_nested():
                with pytest.raises(cloud.CloudException):
                    cloud.result(cloud.call(jobs.grandparent), timeout=120)
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_polled _*",
            "cloudsim: the jobs of this test hit 1 pitfall*",
            "",
            "[[]recursion-deadlock] job * (never collected by the test: found on the job):",
            *DEADLOCK_MESSAGE,
        ]
    )
    # grandparent() and parent() both block: one record collected by the client, one by the job
    result.stdout.fnmatch_lines(
        [
            "*_ test_nested _*",
            "cloudsim: the jobs of this test hit 2 pitfalls*",
            "",
            "[[]recursion-deadlock] job *:",
            *DEADLOCK_MESSAGE,
            "",
            "[[]recursion-deadlock] job * (never collected by the test: found on the job):",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= cloudsim =*",
            "3 pitfalls in 2 tests (2 tests failed for them)",
            "recursion-deadlock: 3",
            "    test_uncollected.py::test_polled (failed)",
            "    test_uncollected.py::test_nested x2 (failed)",
        ]
    )


def test_a_failing_test_keeps_its_own_failure_and_shows_the_pitfalls_beside_it(run_cloudsim, project) -> None:
    """When the test fails by itself, its assertion stays the failure; the pitfalls are a report section."""
    project.makepyfile(
        test_both=dedent(
            """
            import pytest
            import cloud
            import jobs


            @pytest.mark.cloudsim(max_concurrent_jobs=1)
            def test_both():
                try:
                    cloud.result(cloud.call(jobs.parent), timeout=120)
                except cloud.CloudException:
                    pass
                assert 1 + 1 == 3, "the test's own failure"
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: the test's own failure",
            "*",
            "*- Captured cloudsim pitfalls call -*",
            "cloudsim: the jobs of this test hit 1 pitfall*",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_both.py::test_both - AssertionError: the test's own failure*"])


def test_import_cloud_works_in_tests_and_jobs_with_one_simulator_per_session(run_cloudsim, project) -> None:
    """`import cloud` gives cloudsim at collection, in tests and inside jobs; the cloud fixture is that module;
    every test of the session sees the same simulator (session directory and server pid)."""
    project.makepyfile(
        test_alias=dedent(
            """
            import json, os
            import cloud
            from cloud import call, result  # bound to the session's simulator: started before collection
            import jobs

            SEEN = os.path.join(os.path.dirname(__file__), "seen.jsonl")


            def note():
                info = cloud.connection_info()
                with open(SEEN, "a") as f:
                    f.write(json.dumps([info["session_dir"], info["server_pid"]]) + "\\n")


            def test_fixture_is_the_module(cloud):
                import cloudsim
                assert cloud is cloudsim
                note()


            def test_import_cloud_in_a_job():
                assert tuple(cloud.result(cloud.call(jobs.cloud_name), timeout=120)) == ("cloudsim", True)
                note()


            def test_names_taken_at_import_work():
                assert result(call(jobs.double, 4), timeout=120) == 8
                note()
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=3)
    with open(project.path / "seen.jsonl") as f:
        seen = {tuple(json.loads(line)) for line in f}
    assert len(seen) == 1, f"one simulator for the session, saw {seen}"


def test_jobs_left_unfinished_are_killed_at_the_end_of_the_test_and_reported(run_cloudsim, project) -> None:
    """A job still running when its test ends is killed then (the next test sees it killed), a warning names
    it on the test, and the summary lists it."""
    project.makepyfile(
        test_left=dedent(
            """
            import cloud
            import jobs

            STARTED = []


            def test_leaves_a_job():
                STARTED.append(cloud.call(jobs.slow))


            def test_it_was_killed():
                assert cloud.status(STARTED[0]) == "killed"
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "test_left.py::test_leaves_a_job",
            "*CloudsimJobsLeftWarning: test_leaves_a_job left 1 cloud job unfinished; cloudsim killed it at the end "
            "of the test: job * (*, jobs.slow). Fix: wait for the jobs a test starts*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*= cloudsim =*", "jobs left unfinished by tests, killed: 1", "    test_left.py::test_leaves_a_job: job * (*, jobs.slow)"]
    )


def test_the_marker_restarts_the_simulator_for_its_test_and_the_session_settings_come_back(run_cloudsim, project) -> None:
    """@pytest.mark.cloudsim(**settings) runs its test with those settings; the next test has the session's."""
    project.makepyfile(
        test_marker=dedent(
            """
            import pytest
            import cloud


            def cap():
                return cloud.connection_info()["setting.max_concurrent_jobs"]


            def test_before():
                assert cap() == 16


            @pytest.mark.cloudsim(max_concurrent_jobs=3, network_timeout=5)
            def test_marked(cloud):
                assert cap() == 3
                assert cloud.connection_info()["setting.network_timeout"] == 5


            @pytest.mark.cloudsim(max_concurrent_jobs=2)
            class TestClass:
                @pytest.mark.cloudsim(max_concurrent_jobs=4)
                def test_closest_marker_wins(self):
                    assert cap() == 4

                def test_class_marker(self):
                    assert cap() == 2


            def test_after():
                assert cap() == 16
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=5)


def test_bad_marker_settings_are_errors_of_that_test(run_cloudsim, project) -> None:
    """An unknown setting or a positional argument errors the test's setup, naming the marker and the fix."""
    project.makepyfile(
        test_bad=dedent(
            """
            import pytest


            @pytest.mark.cloudsim(max_concurent_jobs=2)
            def test_misspelled():
                pass


            @pytest.mark.cloudsim(2)
            def test_positional():
                pass


            def test_fine(cloud):
                assert cloud.connection_info()["setting.max_concurrent_jobs"] == 16
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*cloudsim could not start for @pytest.mark.cloudsim(max_concurent_jobs=2): start_simulator() got unknown "
            "setting(s) 'max_concurent_jobs' (did you mean 'max_concurrent_jobs'?)*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.cloudsim takes settings as keywords, e.g. @pytest.mark.cloudsim(max_concurrent_jobs=2); got "
         "positional arguments (2,).*"]
    )


def test_cloudsim_config_gives_a_group_of_tests_their_settings(run_cloudsim, project) -> None:
    """Overriding the cloudsim_config fixture in a module sets the cloud fixture's settings there; the
    marker wins over it; other modules keep the session's settings; by default it holds the marker's."""
    project.makepyfile(
        test_configured=dedent(
            """
            import pytest


            @pytest.fixture
            def cloudsim_config():
                return {"max_concurrent_jobs": 2}


            def test_configured(cloud):
                assert cloud.connection_info()["setting.max_concurrent_jobs"] == 2


            @pytest.mark.cloudsim(max_concurrent_jobs=5)
            def test_marker_wins(cloud):
                assert cloud.connection_info()["setting.max_concurrent_jobs"] == 5
            """
        ),
        test_plain=dedent(
            """
            import pytest


            def test_session_settings(cloud, cloudsim_config):
                assert cloudsim_config == {}
                assert cloud.connection_info()["setting.max_concurrent_jobs"] == 16


            @pytest.mark.cloudsim(max_concurrent_jobs=7)
            def test_default_is_the_marker(cloudsim_config):
                assert cloudsim_config == {"max_concurrent_jobs": 7}
            """
        ),
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=4)


def test_cloud_check_reports_pitfalls_without_failing_the_test(run_cloudsim, project) -> None:
    """The cloud_check fixture runs cloudsim.check on the test's simulator; what it finds is its report,
    so even strict mode does not fail the test for it."""
    project.makepyfile(
        test_check=dedent(
            """
            import pytest
            import jobs


            @pytest.mark.cloudsim(max_concurrent_jobs=1)
            def test_check_finds_the_deadlock(cloud_check):
                report = cloud_check(jobs.parent)
                assert not report.ok
                assert report.ids == ["recursion-deadlock"]
                assert "[recursion-deadlock]" in str(report)


            def test_check_finds_state_left_in_the_interpreter(cloud_check):
                report = cloud_check(jobs.stateful)
                assert report.results == [1, 2, 1]
                assert report.ids == ["persistent-interpreter"]
            """
        )
    )
    result = run_cloudsim()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*= cloudsim =*", "no pitfalls found"])


@pytest.mark.slow
def test_under_xdist_each_worker_has_its_own_simulator_and_the_summary_has_every_pitfall(run_cloudsim, project) -> None:
    """-n 2: each worker process runs its own simulator (one per worker for all its tests); a pitfall in a
    worker fails its test there, and the controller's summary lists it."""
    tests = dedent(
        """
        import pytest
        import cloud
        import jobs


        @pytest.mark.parametrize("n", range(8))
        def test_double(n):
            assert cloud.result(cloud.call(jobs.double, n), timeout=120) == 2 * n
        """
    )
    note = dedent(
        """
        import json, os
        import pytest
        import cloud


        @pytest.fixture(autouse=True)
        def note(request):
            yield
            if request.node.get_closest_marker("cloudsim"):
                return  # restarted with the marker's settings for that test
            info = cloud.connection_info()
            with open(os.path.join(os.path.dirname(__file__), "seen.jsonl"), "a") as f:
                f.write(json.dumps([os.environ.get("PYTEST_XDIST_WORKER"), os.getpid(), info["server_pid"]]) + "\\n")
        """
    )
    project.makeconftest(note)
    project.makepyfile(test_deadlock=DEADLOCK_TESTS, test_workers=tests)
    result = run_cloudsim("-n", "2", "--dist", "load")
    result.assert_outcomes(failed=1, passed=9)
    result.stdout.fnmatch_lines(
        ["*= cloudsim =*", "1 pitfall in 1 test (1 test failed for them)", "recursion-deadlock: 1",
         "    test_deadlock.py::test_deadlock (failed)"]
    )
    result.stdout.fnmatch_lines(["*[[]recursion-deadlock] job *:", *DEADLOCK_MESSAGE])
    with open(project.path / "seen.jsonl") as f:
        rows = [json.loads(line) for line in f]
    servers = {}  # worker -> server pids it used
    for worker, pid, server in rows:
        assert worker in ("gw0", "gw1")
        servers.setdefault((worker, pid), set()).add(server)
    for key, pids in servers.items():
        assert len(pids) == 1, f"worker {key} used more than one simulator: {pids}"
    assert {worker for worker, _ in servers} == {"gw0", "gw1"}, f"both workers ran tests: {servers}"
    all_servers = [next(iter(p)) for p in servers.values()]
    assert len(all_servers) == len(set(all_servers)), f"workers shared a simulator: {servers}"
