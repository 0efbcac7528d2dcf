"""cloudsim.check: one call run as the cloud would (twice in an interpreter, once in another), every
pitfall gathered into a report, nothing warned or raised unless asked. Real simulators, real jobs."""

from __future__ import annotations

import sys
import warnings

import pytest

import cloudsim
from cloudsim.check import CheckReport, check

_CALLS: list = []


def double(x):
    return 2 * x


def count_calls():
    """Module state that outlives the job in its interpreter (persistent-interpreter)."""
    _CALLS.append(1)
    return len(_CALLS)


def exits():
    sys.exit(3)


def child():
    return 1


def blocks_on_a_child():
    import cloud

    return cloud.result(cloud.call(child))


def check_inside_a_job():
    from cloudsim.check import check as inner

    return inner(double, 1)


def test_a_clean_call_is_ok_and_the_three_runs_agree(start, no_leaked_processes) -> None:
    """A pure function: three runs, each done with the same value; ok, no pitfall, a one-line report."""
    start()
    report = check(double, 21)
    assert isinstance(report, CheckReport)
    assert report.ok
    assert report.pitfalls == []
    assert report.results == [42, 42, 42]
    assert [run.status for run in report.runs] == ["done", "done", "done"]
    assert len({run.jid for run in report.runs}) == 3
    assert str(report) == f"cloudsim.check({__name__}.double(21)): OK, no pitfalls; the 3 runs agree (done: 42)."


def test_state_left_in_the_interpreter_is_a_persistent_interpreter_finding(start, no_leaked_processes) -> None:
    """Run 2 lands in run 1's interpreter and sees its module state; run 3, elsewhere, does not."""
    start()
    report = check(count_calls)
    assert report.results == [1, 2, 1]
    assert not report.ok
    assert report.ids == ["persistent-interpreter"]
    text = str(report)
    assert "gave another outcome when run again in the same interpreter" in text
    assert "run 2 (job" in text and "the interpreter of run 1): done: 2" in text
    assert "See: docs/pitfalls.md#persistent-interpreter  [pitfall: persistent-interpreter]" in text


def test_a_job_that_exits_is_a_sys_exit_finding_and_results_hold_the_errors(start, no_leaked_processes) -> None:
    """A pitfall named in a failed job's error text is a finding; failed runs give CloudException results."""
    start()
    report = check(exits)
    assert report.ids == ["sys-exit"]
    assert [p["run"] for p in report.pitfalls] == [1, 2, 3]
    assert all(isinstance(r, cloudsim.CloudException) for r in report.results)
    assert all(run.exc_type == "SystemExit" for run in report.runs)
    assert "error: SystemExit (Job called sys.exit(3) in exits(): a job must return its result, never exit.)" in str(report)


def test_data_over_the_limit_is_a_transmit_size_finding_not_an_exception(start, no_leaked_processes) -> None:
    """What cloud.call refuses (transmit-size) is reported; no job is sent."""
    start()
    report = check(double, b"x" * 1_100_000)
    assert report.ids == ["transmit-size"]
    assert [run.status for run in report.runs] == ["not sent"] * 3
    assert all(run.jid is None for run in report.runs)
    assert "refused at cloud.call" in str(report)


def test_a_deadlock_is_gathered_silently_even_when_the_running_simulator_says_error(start, no_leaked_processes) -> None:
    """With a running simulator whose policy is 'error', check neither warns nor raises: the
    recursion-deadlock of each run is in the report, and the simulator is left running."""
    start(max_concurrent_jobs=1, pitfalls="error")
    session = cloudsim.connection_info()["session_dir"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = check(blocks_on_a_child)
    assert [w for w in caught if issubclass(w.category, cloudsim.PitfallWarning)] == []
    assert report.ids == ["recursion-deadlock"]
    assert [p["run"] for p in report.pitfalls] == [1, 2, 3]
    assert all(run.exc_type == "CloudDeadlockError" for run in report.runs)
    assert cloudsim.connection_info()["session_dir"] == session


def test_raise_on_pitfall_raises_a_pitfall_error_with_the_report(start, no_leaked_processes) -> None:
    """_raise_on_pitfall=True (and report.raise_for_pitfalls()) raise PitfallError carrying the records."""
    start()
    with pytest.raises(cloudsim.PitfallError) as info:
        check(exits, _raise_on_pitfall=True)
    assert [p["id"] for p in info.value.pitfalls] == ["sys-exit"] * 3
    assert "cloudsim.check(" in str(info.value) and "[sys-exit]" in str(info.value)
    check(double, 1).raise_for_pitfalls()  # nothing found: nothing raised


def test_without_a_simulator_check_starts_one_and_closes_it(no_leaked_processes) -> None:
    """No simulator running: check starts its own and closes it; nothing is warned, and the job-side
    checks still run there (the module-global change is found on the jobs, not only by comparing)."""
    cloudsim.close()
    assert not cloudsim.is_simulated()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = check(count_calls)
    assert [w for w in caught if issubclass(w.category, cloudsim.PitfallWarning)] == []
    assert not cloudsim.is_simulated()
    assert report.ids == ["persistent-interpreter"]
    on_jobs = [p for p in report.pitfalls if p["run"] is not None]
    assert on_jobs and all("left module-level globals of user code changed" in p["message"] for p in on_jobs)
    assert "[persistent-interpreter] (runs " in str(report) and "; comparing the runs)" in str(report)


def test_reserved_keywords_reach_every_run_and_kill_process_is_refused(start, no_leaked_processes) -> None:
    """cloud.call keywords (here _label) apply to each run; _kill_process is the check's own; non-callables fail."""
    start()
    report = check(double, 2, _label="checked")
    assert report.ok
    assert {cloudsim.info(run.jid, ["label"])[run.jid]["label"] for run in report.runs} == {"checked"}
    with pytest.raises(TypeError, match="check\\(\\) sets _kill_process itself"):
        check(double, 2, _kill_process=True)
    with pytest.raises(TypeError, match="not callable"):
        check(42)


def test_check_refuses_to_run_inside_a_job(start, no_leaked_processes) -> None:
    """Inside a job check raises CloudException saying it runs in the client."""
    start()
    with pytest.raises(cloudsim.CloudException, match="runs in the client, not inside a job"):
        cloudsim.result(cloudsim.call(check_inside_a_job), timeout=60)
