"""The ``cloudsim`` command, run as users run it: ``python -m cloudsim`` (and the ``cloudsim`` script) in a subprocess.

Covers every subcommand (``run``, ``check``, ``conformance``, ``demo``), their
``--help``, the exit statuses scripts rely on (0 ok, 1 failed, 2 usage), the
legacy PiCloud-era examples of ``examples/legacy/`` run unchanged, and the
conformance report plugin (``conformance/report.py``) on a synthetic suite
with every outcome. Each run uses its own ``server_root`` (through
``CLOUDSIM_SERVER_ROOT``), and after each one no process of that simulator
may be left (found by the root in their command lines, since a finished
command's children would be re-parented away from this test runner).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import psutil
import pytest

import cloudsim
from cloudsim import cli

REPO = Path(cloudsim.__file__).resolve().parent.parent
LEGACY = REPO / "examples" / "legacy"
RUN_TIMEOUT = 300  # seconds for one command; only a hang reaches it


# ------------------------------------------------------------------ helpers
def processes_mentioning(text: str) -> List[psutil.Process]:
    """Live processes whose command line contains ``text`` (the simulator's server and workers name their root)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return [p for p in found if p.pid != os.getpid()]


def assert_no_processes_left(root: Path, timeout: float = 30.0) -> None:
    """Wait until no process mentions ``root``; otherwise kill them (they were started by this test) and fail."""
    deadline = time.monotonic() + timeout
    left = processes_mentioning(str(root))
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(str(root))
    if left:
        report = "\n".join(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}" for p in left if p.is_running())
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        pytest.fail(f"processes of the simulator under {root} outlived the command:\n{report}")


@pytest.fixture
def server_root(tmp_path: Path) -> Iterator[Path]:
    """A server_root for the commands of one test; checked for leftover processes after the test."""
    root = tmp_path / "server-root"
    yield root
    assert_no_processes_left(root)


def command(args: Sequence[str], *, root: Path, cwd: Path = REPO, exe: Optional[Sequence[str]] = None,
            env: Optional[Dict[str, str]] = None, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m cloudsim ARGS`` (or ``exe ARGS``) with ``root`` as server_root; return the finished process."""
    full_env = dict(os.environ)
    for key in [k for k in full_env if k.startswith("CLOUDSIM_") or k.startswith("PYTEST_")]:
        full_env.pop(key)
    full_env["CLOUDSIM_SERVER_ROOT"] = str(root)
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    base = list(exe) if exe is not None else [sys.executable, "-m", "cloudsim"]
    return subprocess.run(base + list(args), cwd=str(cwd), env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def script(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# ------------------------------------------------------------------ help and usage
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["check", "--help"], ["conformance", "--help"],
                                  ["demo", "--help"]], ids=lambda a: " ".join(a))
def test_help_documents_the_exit_statuses(args: List[str], server_root: Path) -> None:
    """--help on the command and on each subcommand exits 0 and documents the exit statuses."""
    proc = command(args, root=server_root)
    assert proc.returncode == 0, show(proc)
    out = proc.stdout
    assert "usage: python -m cloudsim" in out
    for line in ("0  success", "1  the script/check/conformance suite failed", "2  usage error"):
        assert line in out, show(proc)


def test_version(server_root: Path) -> None:
    """--version prints the package version and exits 0."""
    proc = command(["--version"], root=server_root)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"python -m cloudsim {cloudsim.__version__}"


@pytest.mark.parametrize("args,message", [
    ([], "COMMAND"),
    (["bogus"], "invalid choice"),
    (["run"], "required: SCRIPT"),
    (["run", "--bogus", "x.py"], "unrecognized arguments"),
    (["run", "no/such/script.py"], "no such file"),
    (["check"], "MODULE:FUNC"),
    (["check", "not-a-target"], "expected MODULE:FUNC"),
    (["demo", "extra"], "unrecognized arguments"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_exit_2(args: List[str], message: str, server_root: Path) -> None:
    """Bad commands, options and arguments exit with status 2 and say what is wrong on stderr."""
    proc = command(args, root=server_root)
    assert proc.returncode == 2, show(proc)
    assert message in proc.stderr, show(proc)


def test_main_in_process_returns_statuses(capsys: pytest.CaptureFixture) -> None:
    """cli.main() returns the status instead of exiting: 0 for --help, 2 for a usage error."""
    assert cli.main(["--help"]) == 0
    assert cli.main(["run"]) == 2
    assert "usage:" in capsys.readouterr().err


# ------------------------------------------------------------------ run
def test_run_a_legacy_script(tmp_path: Path, server_root: Path) -> None:
    """run: `import cloud` works, sys.argv is the script's, __main__ is the script, the simulator starts by itself."""
    project = tmp_path / "project"
    script(project / "helper.py", """
        def double(x):
            return 2 * x
    """)
    main = script(project / "main.py", """
        import sys
        import cloud
        import helper

        def triple(x):
            return 3 * x

        print("argv", sys.argv)
        print("name", __name__)
        print("cloud", cloud.__name__)
        jid = cloud.call(triple, 7)  # the first call starts the simulator
        print("triple", cloud.result(jid))
        print("helper", cloud.result(cloud.call(helper.double, 21)))
        print("map", cloud.result(cloud.map(triple, [1, 2])))
        print("files", cloud.files.__name__)
        print("simulated", cloud.is_simulated())
    """)
    proc = command(["run", str(main), "--flag", "-x", "value"], root=server_root, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    lines = proc.stdout.splitlines()
    assert lines == [
        f"argv {[str(main), '--flag', '-x', 'value']}",
        "name __main__",
        "cloud cloudsim",
        "triple 21",
        "helper 42",
        "map [3, 6]",
        "files cloudsim.files",
        "simulated True",
    ], show(proc)
    assert f"cloudsim: no pitfalls found while running {main}." in proc.stderr
    assert (server_root / "sessions").is_dir(), "the simulator should have used the configured server_root"


def test_run_through_the_console_script(tmp_path: Path, server_root: Path) -> None:
    """The `cloudsim` script on PATH (the console entry point) runs a legacy script the same way."""
    exe = Path(sys.executable).parent / "cloudsim"
    if not exe.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    main = script(tmp_path / "s.py", """
        import cloud
        jid = cloud.call(pow, 2, 10)
        print(cloud.result(jid))
    """)
    proc = command(["run", str(main)], root=server_root, exe=[str(exe)], cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == "1024"
    assert command(["--version"], root=server_root, exe=[str(exe)]).stdout.strip() == f"cloudsim {cloudsim.__version__}"


def test_run_reports_pitfalls_and_strict_fails(tmp_path: Path, server_root: Path) -> None:
    """Pitfalls found during the run are listed at the end; with --strict they make the exit status 1."""
    main = script(tmp_path / "mutate.py", """
        import cloud

        def grow(values):
            values.append(1)
            return len(values)

        data = [1, 2]
        jid = cloud.call(grow, data)
        print(cloud.result(jid), data)
    """)
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == "3 [1, 2]"
    assert "cloudsim: 1 pitfall found while running" in proc.stderr, show(proc)
    assert "pass-by-value (x1, job 1)" in proc.stderr
    assert "see docs/pitfalls.md#pass-by-value" in proc.stderr
    strict = command(["run", "--strict", str(main)], root=server_root, cwd=tmp_path)
    assert strict.returncode == 1, show(strict)
    assert "--strict" in strict.stderr


def test_run_script_error(tmp_path: Path, server_root: Path) -> None:
    """An uncaught error in the script: its traceback (script frames only), exit status 1, the simulator closed."""
    main = script(tmp_path / "broken.py", """
        import cloud

        def work():
            return "done"

        jid = cloud.call(work)
        print(cloud.result(jid))
        raise RuntimeError("the script broke")
    """)
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path)
    assert proc.returncode == 1, show(proc)
    assert proc.stdout.strip() == "done"
    assert "RuntimeError: the script broke" in proc.stderr
    assert f'File "{main}", line 9' in proc.stderr
    assert "runpy" not in proc.stderr and "cli.py" not in proc.stderr, show(proc)
    assert "failed (exit status 1)" in proc.stderr


@pytest.mark.parametrize("code,status,text", [("sys.exit(0)", 0, None), ("sys.exit(3)", 1, "exit status 3"),
                                              ("sys.exit('giving up')", 1, "giving up")])
def test_run_script_exit(code: str, status: int, text: Optional[str], tmp_path: Path, server_root: Path) -> None:
    """A script's sys.exit: 0 stays 0, anything else is status 1 with the script's own status or message shown."""
    main = script(tmp_path / "exits.py", f"""
        import sys
        import cloud
        jid = cloud.call(abs, -5)
        print(cloud.result(jid))
        {code}
        print("not reached")
    """)
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path)
    assert proc.returncode == status, show(proc)
    assert proc.stdout.strip() == "5"
    if text:
        assert text in proc.stderr, show(proc)


def test_run_first_call_inside_result(tmp_path: Path, server_root: Path) -> None:
    """The PiCloud idiom `cloud.result(cloud.call(f))` works as a script's first use of the cloud.

    Python looks up `cloud.result` before it evaluates `cloud.call(...)`, whose
    lazy start of the simulator must not make that `result` stale (PiCloud
    re-bound its functions on start_simulator/setkey, never on the lazy open).
    """
    main = script(tmp_path / "idiom.py", """
        import cloud
        print(cloud.result(cloud.call(abs, -5)))
    """)
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == "5"


def test_run_closes_the_simulator_with_jobs_still_running(tmp_path: Path, server_root: Path) -> None:
    """A script that leaves a long job running: run ends promptly, and no process of the simulator is left."""
    main = script(tmp_path / "leaves.py", """
        import time
        import cloud
        jid = cloud.call(time.sleep, 600)
        while cloud.status(jid) != "processing":
            time.sleep(0.02)
        print("left", jid, "running")
    """)
    started = time.monotonic()
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == "left 1 running"
    assert time.monotonic() - started < 120, "run waited for the job instead of closing the simulator"
    assert_no_processes_left(server_root)


def test_run_honours_settings_from_the_environment(tmp_path: Path, server_root: Path) -> None:
    """CLOUDSIM_* settings apply to the run (here the pitfalls policy 'error' turns a pitfall into a failure)."""
    main = script(tmp_path / "mutate.py", """
        import cloud

        def grow(values):
            values.append(1)
            return len(values)

        jid = cloud.call(grow, [1])
        print(cloud.result(jid))
    """)
    proc = command(["run", str(main)], root=server_root, cwd=tmp_path, env={"CLOUDSIM_PITFALLS": "error"})
    assert proc.returncode == 1, show(proc)
    assert "PitfallError" in proc.stderr and "pass-by-value" in proc.stderr


# ------------------------------------------------------------------ the legacy examples
def test_legacy_monte_carlo_pi(server_root: Path) -> None:
    """examples/legacy/monte_carlo_pi.py: cloud.map over batches; the estimate is close to pi."""
    proc = command(["run", "examples/legacy/monte_carlo_pi.py", "6", "20000"], root=server_root)
    assert proc.returncode == 0, show(proc)
    assert "batches: 6 jobs, 20000 darts each" in proc.stdout
    estimate = float(proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1])
    assert abs(estimate - math.pi) < 0.05, show(proc)
    assert "no pitfalls found" in proc.stderr


def test_legacy_recursive_fib_finishes(server_root: Path) -> None:
    """examples/legacy/recursive_fib.py: recursion through _depends_on finishes, even with a job cap of 2."""
    proc = command(["run", "examples/legacy/recursive_fib.py", "7"], root=server_root,
                   env={"CLOUDSIM_MAX_CONCURRENT_JOBS": "2"})
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.strip() == "fib(7) = 21"
    assert "recursion-deadlock" not in proc.stderr


def test_legacy_data_file_mistake(server_root: Path) -> None:
    """examples/legacy/data_file_mistake.py: the job opening a project data file fails; the cloud.files fix works."""
    proc = command(["run", "examples/legacy/data_file_mistake.py"], root=server_root)
    assert proc.returncode == 0, show(proc)
    out = proc.stdout
    assert "the fix: cloud.files.put() in the client, cloud.files.getf() in the job" in out
    assert "words counted on the cloud from cloud.files: 11" in out
    assert "the job failed, as it would on the cloud:" in out, show(proc)
    assert "FileNotFoundError" in out and "cloud.files" in out
    assert "non-code-files (x1, job 1)" in proc.stderr, show(proc)
    assert not (server_root / "files" / "words.txt").exists(), "the example deletes what it stored"
    strict = command(["run", "--strict", "examples/legacy/data_file_mistake.py"], root=server_root)
    assert strict.returncode == 1, show(strict)


def test_legacy_pool_squares(server_root: Path) -> None:
    """examples/legacy/pool_squares.py: `import cloud.pool_interface as pool` in a legacy script."""
    proc = command(["run", "examples/legacy/pool_squares.py"], root=server_root)
    assert proc.returncode == 0, show(proc)
    assert proc.stdout.splitlines() == [
        "map: [0, 1, 4, 9, 16, 25, 36, 49]",
        "apply_async: 144",
        "imap_unordered, sorted: [0, 1, 4, 9, 16]",
    ]


def test_legacy_examples_do_not_import_cloudsim() -> None:
    """The legacy examples are PiCloud-era code: they import `cloud`, never cloudsim."""
    scripts = sorted(LEGACY.glob("*.py"))
    assert len(scripts) >= 3
    for path in scripts:
        lines = [line.strip() for line in path.read_text().splitlines()]
        assert not [line for line in lines if line.startswith(("import cloudsim", "from cloudsim"))], path
        assert any(line.startswith("import cloud") for line in lines), path


# ------------------------------------------------------------------ check
def _need_check() -> None:
    try:
        from cloudsim.check import check  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"cloudsim.check is not there yet: {exc}")


@pytest.fixture
def mods(tmp_path: Path) -> Path:
    script(tmp_path / "mods.py", """
        def square(x):
            return x * x

        def power(base, exponent=2):
            return base ** exponent

        def bump(values):
            values.append(1)
            return len(values)
    """)
    return tmp_path


def test_check_ok(mods: Path, server_root: Path) -> None:
    """check MODULE:FUNC ARGS prints an OK report and exits 0 for a clean call; ARGS are literals, NAME=VALUE keywords."""
    _need_check()
    proc = command(["check", "mods:square", "3"], root=server_root, cwd=mods)
    assert proc.returncode == 0, show(proc)
    assert "OK" in proc.stdout and "9" in proc.stdout
    kw = command(["check", "mods:power", "2", "exponent=10"], root=server_root, cwd=mods)
    assert kw.returncode == 0, show(kw)
    assert "1024" in kw.stdout


def test_check_finds_a_pitfall(mods: Path, server_root: Path) -> None:
    """check exits 1 and the report names the pitfall when the call has one."""
    _need_check()
    proc = command(["check", "mods:bump", "[1, 2]"], root=server_root, cwd=mods)
    assert proc.returncode == 1, show(proc)
    assert "pass-by-value" in proc.stdout


@pytest.mark.parametrize("target,message", [("mods:missing", "has no attribute"), ("nosuchmodule:f", "cannot import")])
def test_check_bad_targets_are_usage_errors(target: str, message: str, mods: Path, server_root: Path) -> None:
    """A function or module that cannot be found is a usage error (2)."""
    _need_check()
    proc = command(["check", target], root=server_root, cwd=mods)
    assert proc.returncode == 2, show(proc)
    assert message in proc.stderr


# ------------------------------------------------------------------ demo
def test_demo(tmp_path: Path, server_root: Path) -> None:
    """demo runs examples/demo.py to the end and exits 0."""
    proc = command(["demo"], root=server_root, env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, show(proc)
    assert "== 1. A job runs somewhere else" in proc.stdout
    assert "== Done" in proc.stdout
    assert_no_processes_left(tmp_path)


@pytest.mark.parametrize("subcommand,message", [
    (["demo"], "cloudsim demo is not available"),
    (["conformance"], "cloudsim conformance is not available"),
])
def test_not_available_outside_a_checkout(subcommand: List[str], message: str, tmp_path: Path,
                                          server_root: Path) -> None:
    """Installed without its source tree (package moved elsewhere), demo and conformance say so and exit 1."""
    fake = tmp_path / "site" / "cloudsim" / "__init__.py"
    code = (f"import sys, cloudsim; cloudsim.__file__ = {str(fake)!r}\n"
            f"from cloudsim.cli import main\nsys.exit(main({subcommand!r}))")
    proc = command(["-c", code], root=server_root, cwd=tmp_path, exe=[sys.executable])
    assert proc.returncode == 1, show(proc)
    assert message in proc.stderr


def test_repo_root_is_the_checkout() -> None:
    """Installed from the repository, repo_root() is the directory holding cloudsim/, conformance/ and examples/."""
    assert cli.repo_root() == REPO
    assert (REPO / "conformance" / "report.py").is_file()


# ------------------------------------------------------------------ conformance
def _outcome_counts(report: dict) -> Dict[str, int]:
    return report["summary"]


def test_conformance_subset_writes_every_report(tmp_path: Path, server_root: Path) -> None:
    """conformance runs the suite with the report plugin: a terminal table, Markdown, JSON and JUnit XML.

    The exit status follows the outcomes: 0 exactly when no case failed.
    """
    out = tmp_path / "report"
    proc = command(["conformance", "--backend", "simulator", "--report-dir", str(out), "--",
                    "-k", "job_output or network_timeout", "-p", "no:randomly"], root=server_root, cwd=tmp_path)
    assert proc.returncode in (0, 1), show(proc)
    assert "conformance report" in proc.stdout, show(proc)
    assert "conformance backend: simulator" in proc.stdout
    data = json.loads((out / "conformance.json").read_text())
    cases = data["cases"]
    quirks = {case["quirk"] for case in cases}
    assert quirks == {"job-output", "network-timeout"}, cases
    for case in cases:
        assert case["outcome"] in ("pass", "fail", "error", "skip", "xfail", "xpass")
        assert case["checked"], case
        assert case["nodeid"].startswith("conformance/")
        assert case["backend"] == "simulator", case
    assert data["backends"] == ["simulator"]
    assert set(data["by_quirk"]) == {"job-output", "network-timeout"}
    failed = data["summary"]["fail"] + data["summary"]["error"]
    assert (proc.returncode == 0) == (failed == 0), show(proc)
    markdown = (out / "conformance.md").read_text()
    assert "| quirk | simulator |" in markdown
    assert "| quirk | backend | outcome | checked | case | reason |" in markdown
    assert "`job-output`" in markdown
    tree = ET.parse(out / "conformance.xml")
    props = {p.get("value") for p in tree.iter("property") if p.get("name") == "quirk"}
    assert props == {"job-output", "network-timeout"}
    assert len(list(tree.iter("testcase"))) == len(cases)


def test_conformance_unknown_backend_is_a_usage_error(tmp_path: Path, server_root: Path) -> None:
    """An unknown --backend is refused by the suite as a usage error: status 2."""
    proc = command(["conformance", "--backend", "no-such-backend", "--report-dir", str(tmp_path / "r")],
                   root=server_root, cwd=tmp_path)
    assert proc.returncode == 2, show(proc)
    assert "no-such-backend" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the report plugin on a synthetic suite
SYNTHETIC = '''
import pytest


@pytest.fixture
def broken():
    raise RuntimeError("setup exploded")


@pytest.mark.quirk("alpha")
def test_alpha():
    """Alpha is checked here,
    over two lines.

    Details that are not part of the summary.
    """


@pytest.mark.quirk("beta", max_concurrent_jobs=1)
def test_beta():
    """Beta | with a pipe."""
    assert 1 == 2, "beta broke"


@pytest.mark.quirk("gamma")
def test_gamma():
    """Gamma."""
    pytest.skip("no gamma here")


@pytest.mark.quirk("delta")
@pytest.mark.xfail(reason="known delta gap")
def test_delta():
    """Delta."""
    assert False


@pytest.mark.quirk("eps")
@pytest.mark.xfail(reason="eps was fixed?")
def test_eps():
    """Eps."""


@pytest.mark.quirk("zeta")
def test_zeta(broken):
    """Zeta."""


def test_unmarked():
    pass
'''

EXPECTED = {
    "test_alpha": ("alpha", "pass", "Alpha is checked here, over two lines.", ""),
    "test_beta": ("beta", "fail", "Beta | with a pipe.", "beta broke"),
    "test_gamma": ("gamma", "skip", "Gamma.", "no gamma here"),
    "test_delta": ("delta", "xfail", "Delta.", "known delta gap"),
    "test_eps": ("eps", "xpass", "Eps.", "eps was fixed?"),
    "test_zeta": ("zeta", "error", "Zeta.", "setup exploded"),
    "test_unmarked": ("", "pass", "", ""),
}


def _run_synthetic(tmp_path: Path, extra: Sequence[str] = ()) -> tuple:
    suite = tmp_path / "suite"
    script(suite / "conftest.py", '''
        def pytest_configure(config):
            config.addinivalue_line("markers", "quirk(id, **settings): the quirk a case proves")
    ''')
    (suite / "test_synthetic.py").write_text(SYNTHETIC)
    out = tmp_path / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-p", "conformance.report", "-p", "no:cacheprovider",
         "--conformance-report-dir", str(out), f"--junitxml={out / 'junit.xml'}", "-rN", *extra],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    return proc, out


def _check_synthetic(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode == 1, show(proc)  # a failure and an error
    data = json.loads((out / "conformance.json").read_text())
    by_name = {case["nodeid"].rsplit("::", 1)[1]: case for case in data["cases"]}
    assert set(by_name) == set(EXPECTED)
    for name, (quirk, outcome, checked, reason) in EXPECTED.items():
        case = by_name[name]
        assert (case["quirk"], case["outcome"], case["checked"]) == (quirk, outcome, checked), case
        assert reason in case["reason"], case
    assert data["summary"] == {"pass": 2, "fail": 1, "error": 1, "skip": 1, "xfail": 1, "xpass": 1}
    markdown = (out / "conformance.md").read_text()
    assert "| `beta` | - | fail | Beta \\| with a pipe. |" in markdown, markdown
    assert "| `-` | - | pass |" in markdown
    assert "Outcomes: 2 pass, 1 fail, 1 error, 1 skip, 1 xfail, 1 xpass" in markdown
    tree = ET.parse(out / "junit.xml")
    quirks = sorted(p.get("value") for p in tree.iter("property") if p.get("name") == "quirk")
    assert quirks == sorted(q for q, *_ in EXPECTED.values())


def test_report_plugin_outcomes(tmp_path: Path) -> None:
    """The plugin records quirk, checked line (first docstring paragraph) and every outcome, in all three files."""
    proc, out = _run_synthetic(tmp_path)
    _check_synthetic(proc, out)
    table = proc.stdout[proc.stdout.index("conformance report"):]
    assert "alpha" in table and "xpass" in table and "(known delta gap)" in table
    assert f"written: {out / 'conformance.json'}" in proc.stdout
    assert "JUnit XML:" in proc.stdout


def test_report_plugin_under_xdist(tmp_path: Path) -> None:
    """With pytest-xdist the cases run in workers; the controller still writes the same report."""
    pytest.importorskip("xdist")
    proc, out = _run_synthetic(tmp_path, ["-n", "2"])
    _check_synthetic(proc, out)


def test_report_plugin_verdicts_per_quirk_and_backend(tmp_path: Path) -> None:
    """Cases run against two backends: the report gives each quirk a verdict per backend, with the backend's note.

    Backend 'two' declares it cannot reproduce 'solo' (the harness's skip reason) and has a note on 'pair';
    'pair' fails on 'one' only.
    """
    suite = tmp_path / "suite"
    script(suite / "conftest.py", '''
        import pytest
        from conformance.backends import UNSUPPORTED_PREFIX

        def pytest_configure(config):
            config.addinivalue_line("markers", "quirk(id, **settings): the quirk a case proves")

        @pytest.fixture(params=["one", "two"])
        def backend(request):
            return request.param

        @pytest.fixture(autouse=True)
        def _as_the_harness_does(request, backend):
            request.node.user_properties.append(("backend", backend))
            quirk = request.node.get_closest_marker("quirk").args[0]
            if backend == "two" and quirk == "pair":
                request.node.user_properties.append(("backend_note", "done another way"))
            if backend == "two" and quirk == "solo":
                pytest.skip(UNSUPPORTED_PREFIX + "two has no solo")
    ''')
    script(suite / "test_cases.py", '''
        import pytest

        @pytest.mark.quirk("solo")
        def test_solo(backend):
            """Solo works."""

        @pytest.mark.quirk("pair")
        @pytest.mark.parametrize("n", [1, 2])
        def test_pair(backend, n):
            """Pair works."""
            assert not (backend == "one" and n == 2), "pair broke on one"

        @pytest.mark.quirk("pair")
        def test_pair_optional(backend):
            """Pair needs an optional package."""
            pytest.skip("no optional package")
    ''')
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "conformance.report",
                           "-p", "no:cacheprovider", "--conformance-report-dir", str(out)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 1, show(proc)
    data = json.loads((out / "conformance.json").read_text())
    assert data["backends"] == ["one", "two"]
    verdicts = {q: {b: cell["verdict"] for b, cell in cells.items()} for q, cells in data["by_quirk"].items()}
    assert verdicts == {
        "solo": {"one": "reproduced (1 case)", "two": "cannot: two has no solo"},
        "pair": {"one": "FAILS (1 of 3 cases)",
                 "two": "reproduced (2 cases), 1 skipped: no optional package"},
    }
    assert data["by_quirk"]["pair"]["two"]["note"] == "done another way"
    assert {c["backend"] for c in data["cases"]} == {"one", "two"}
    markdown = (out / "conformance.md").read_text()
    assert "| quirk | one | two |" in markdown
    assert "| `solo` | reproduced (1 case) | cannot: two has no solo |" in markdown
    assert "reproduced (2 cases), 1 skipped: no optional package<br>*done another way*" in markdown
    table = proc.stdout[proc.stdout.index("by quirk: one / two"):]
    assert "solo" in table and "cannot: two has no solo" in table


def test_report_plugin_without_a_directory_only_prints(tmp_path: Path) -> None:
    """Without --conformance-report-dir the plugin prints the table and writes no file."""
    suite = tmp_path / "suite"
    script(suite / "test_one.py", '''
        import pytest

        @pytest.mark.quirk("solo")
        def test_solo():
            """Solo works."""
    ''')
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-p", "conformance.report",
                           "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, show(proc)
    assert "solo" in proc.stdout and "Solo works." in proc.stdout
    assert not list(tmp_path.rglob("conformance.json"))
