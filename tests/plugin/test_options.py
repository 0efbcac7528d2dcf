"""The plugin's registration and options: loaded through pytest11, free when off, every option with an
ini twin, and bad values refused with a pytest.UsageError that names the option and the fix."""

from __future__ import annotations

import textwrap

import pytest

from pytest_cloudsim import plugin


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_the_entry_point_registers_the_options_and_their_ini_twins_with_one_help_text(pytester: pytest.Pytester) -> None:
    """`pytest --help` of a fresh interpreter lists each option and its ini twin, both with the shared help."""
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    out = " ".join(result.stdout.str().split())  # help is wrapped; compare with whitespace folded
    for option in ("--cloudsim", "--no-cloudsim", "--cloudsim-pitfalls=ACTION", "--cloudsim-ignore=ID[,ID]"):
        assert option in out
    for ini in ("cloudsim (bool):", "cloudsim_pitfalls (string):", "cloudsim_ignore (string):"):
        assert ini in out
    for text in (plugin.CLOUDSIM_HELP, plugin.PITFALLS_HELP, plugin.IGNORE_HELP):
        folded = " ".join(text.split())
        assert out.count(folded) == 2, f"help text not shared by the option and its ini twin: {folded!r}"


def test_without_cloudsim_nothing_of_cloudsim_is_imported(pytester: pytest.Pytester) -> None:
    """Installed but off, the plugin costs nothing: no cloudsim module is imported and there is no cloud fixture."""
    pytester.makepyfile(
        test_free=dedent(
            """
            import sys

            def test_no_cloudsim_module():
                loaded = [m for m in sys.modules if m.split(".")[0] in ("cloudsim", "cloud")]
                assert loaded == []

            def test_cloud_fixture(cloud):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'cloud' not found*"])
    result.stdout.no_fnmatch_line("*cloudsim: one simulator*")
    result.stdout.no_fnmatch_line("*= cloudsim =*")


def test_the_marker_is_registered_even_when_off(pytester: pytest.Pytester) -> None:
    """--strict-markers accepts @pytest.mark.cloudsim in a run without --cloudsim."""
    pytester.makepyfile(
        test_marked=dedent(
            """
            import pytest

            @pytest.mark.cloudsim(max_concurrent_jobs=2)
            def test_marked():
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1)
    markers = pytester.runpytest_subprocess("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.cloudsim(**settings): run this test on a simulator*"])


def test_the_report_header_says_how_cloudsim_runs(run_cloudsim) -> None:
    """With --cloudsim the header has one line with the pitfall mode and the ignored ids."""
    result = run_cloudsim("--co", "--cloudsim-ignore=recursion-deadlock,pass-by-value")
    result.stdout.fnmatch_lines(
        ["cloudsim: one simulator per test process; pitfalls: error (strict*; ignored ids: recursion-deadlock, pass-by-value"]
    )


def test_ini_cloudsim_true_turns_it_on_and_no_cloudsim_turns_it_off(project: pytest.Pytester) -> None:
    """ini `cloudsim = true` does what --cloudsim does (import cloud works); --no-cloudsim overrides it."""
    project.makeini("[pytest]\ncloudsim = true\n")
    project.makepyfile(
        test_alias=dedent(
            """
            def test_import_cloud():
                import cloud
                assert cloud.__name__ == "cloudsim"
                assert cloud.is_simulated()
            """
        )
    )
    on = project.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    on.assert_outcomes(passed=1)
    on.stdout.fnmatch_lines(["*= cloudsim =*", "no pitfalls found"])
    off = project.runpytest_subprocess("-p", "no:cacheprovider", "--no-cloudsim", timeout=240)
    off.assert_outcomes(failed=1)
    off.stdout.fnmatch_lines(["*ModuleNotFoundError: No module named 'cloud'*"])


@pytest.mark.parametrize(
    "args, ini, expected",
    [
        (
            ["--cloudsim", "--cloudsim-pitfalls=strict"],
            "",
            "*Invalid cloudsim pitfalls action 'strict' from --cloudsim-pitfalls=strict ('error' is the strict one). "
            "Fix: pass --cloudsim-pitfalls one of error (fail the test), warn or ignore.*",
        ),
        (
            ["--cloudsim"],
            "cloudsim_pitfalls = warns\n",
            "*Invalid cloudsim pitfalls action 'warns' from ini option cloudsim_pitfalls in *tox.ini ('warns') "
            "(did you mean 'warn'?). Fix: set cloudsim_pitfalls to one of error*",
        ),
        (
            ["--cloudsim", "--cloudsim-ignore=pass-by-value,recursion-deadlok"],
            "",
            "*Unknown pitfall id 'recursion-deadlok' in --cloudsim-ignore (did you mean 'recursion-deadlock'?). "
            "Fix: use ids of the catalogue (docs/pitfalls.md has one section per id)*",
        ),
        (
            ["--cloudsim"],
            "cloudsim_ignore =\n    pass-by-value\n    no-such-pitfall\n",
            "*Unknown pitfall id 'no-such-pitfall' in ini option cloudsim_ignore in *tox.ini*Fix: use ids*",
        ),
        (
            [],
            "cloudsim = maybe\n",
            "*ini option cloudsim in *tox.ini is not a boolean*Fix: write cloudsim = true or cloudsim = false.*",
        ),
        (
            ["--cloudsim-pitfalls=warn"],
            "",
            "*--cloudsim-pitfalls only applies when cloudsim is on. Fix: add --cloudsim (or set cloudsim = true in the "
            "ini file), or drop them.*",
        ),
        (
            ["--no-cloudsim", "--cloudsim-ignore=pass-by-value"],
            "",
            "*--cloudsim-ignore only applies when cloudsim is on*",
        ),
    ],
    ids=["bad-action", "bad-ini-action", "bad-id", "bad-ini-id", "bad-ini-bool", "pitfalls-without-cloudsim",
         "ignore-with-no-cloudsim"],
)
def test_bad_values_are_usage_errors_naming_the_option_and_the_fix(
    project: pytest.Pytester, args: list, ini: str, expected: str
) -> None:
    """Each bad value or combination stops the run before any test, exit status 4, with what to change."""
    if ini:
        project.makefile(".ini", tox="[pytest]\n" + ini)
    project.makepyfile(test_never="def test_never():\n    raise AssertionError('must not run')\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([expected])
    result.stdout.no_fnmatch_line("*must not run*")


def test_ini_twins_are_read_when_the_options_are_absent(project: pytest.Pytester) -> None:
    """ini cloudsim_pitfalls/cloudsim_ignore take effect (read back from the report header)."""
    project.makeini("[pytest]\ncloudsim_pitfalls = warn\ncloudsim_ignore = recursion-deadlock, pass-by-value\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--cloudsim", "--co", timeout=240)
    result.stdout.fnmatch_lines(["cloudsim: *pitfalls: warn; ignored ids: recursion-deadlock, pass-by-value"])
    # the command line wins over the ini file
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--cloudsim", "--co", "--cloudsim-pitfalls=ignore", "--cloudsim-ignore=sys-exit",
        timeout=240,
    )
    result.stdout.fnmatch_lines(["cloudsim: *pitfalls: ignore; ignored ids: sys-exit"])


def test_a_bad_cloudsim_setting_in_the_environment_is_a_usage_error(project: pytest.Pytester, monkeypatch) -> None:
    """--cloudsim with a bad CLOUDSIM_* value stops at once, naming the variable."""
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "0")
    project.makepyfile(test_never="def test_never():\n    pass\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--cloudsim", timeout=240)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cloudsim cannot start with the settings in force: *CLOUDSIM_MAX_CONCURRENT_JOBS*"])
