"""A job's interpreter: fresh (nothing of the client's), persistent (reused), and with its output captured.

These are the ``fresh-interpreter``, ``main-module``, ``runtime-patches``,
``persistent-interpreter``, ``kill-process`` and ``job-output`` entries of
``QUIRKS.md``, checked against real worker processes: each test makes a
change in the client (imports a module, patches ``os``, sets an environment
variable) and shows the job does not see it, or has jobs leave state behind
and shows who sees it.

Functions that run as jobs are module-level and travel by value; they must
not refer to what they check for (a function that names ``xml.dom.minidom``
would ship an import of it), so checks read ``sys.modules`` by name.

Not for: what crosses the wire (pass-by-value tests) or crashes (``tests/faults``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil
import pytest

import cloudsim

WAIT = 60.0  # seconds; only a hang reaches it


# ------------------------------------------------------------------ jobs


def loaded_modules() -> List[str]:
    return sorted(sys.modules)


def search_path() -> List[str]:
    return list(sys.path)


def main_module() -> Dict[str, Any]:
    main = sys.modules.get("__main__")
    return {
        "file": getattr(main, "__file__", None),
        "has_client_marker": hasattr(main, "cloudsim_client_marker"),
    }


def working_directory() -> str:
    return os.getcwd()


def os_module_state() -> Dict[str, Any]:
    return {
        "getcwd_is_builtin": type(os.getcwd).__name__ == "builtin_function_or_method",
        "cwd": os.getcwd(),
        "has_patched_attr": hasattr(os, "cloudsim_client_patch"),
    }


def env_var(name: str) -> Tuple[int, Optional[str]]:
    return os.getpid(), os.environ.get(name)


def environment_names() -> List[str]:
    return sorted(os.environ)


def pids() -> Tuple[int, int, bool]:
    # the cloudsim pytest plugin is loaded in this client by pytest's entry points, never by this test module
    return os.getpid(), os.getppid(), "pytest_cloudsim.plugin" in sys.modules


def set_marker(value: int) -> int:
    sys.cloudsim_test_marker = value  # type: ignore[attr-defined]
    return os.getpid()


def read_marker() -> Tuple[int, Optional[int]]:
    return os.getpid(), getattr(sys, "cloudsim_test_marker", None)


def noisy_job(tag: str) -> int:
    """Write to stdout and stderr in every way a job can: Python, fd level, C stdio, a child process."""
    import ctypes
    import subprocess

    libc = ctypes.CDLL(None)
    print(f"py-out-{tag}")
    sys.stdout.flush()
    os.write(1, f"fd-out-{tag}\n".encode())
    libc.puts(f"c-out-{tag}".encode())
    libc.fflush(None)
    subprocess.run(["echo", f"child-out-{tag}"], check=True)

    print(f"py-err-{tag}", file=sys.stderr)
    sys.stderr.flush()
    os.write(2, f"fd-err-{tag}\n".encode())
    c_stderr = ctypes.c_void_p.in_dll(libc, "stderr")
    libc.fputs(f"c-err-{tag}\n".encode(), c_stderr)
    libc.fflush(None)
    subprocess.run(["sh", "-c", f"echo child-err-{tag} >&2"], check=True)
    return os.getpid()


def quiet_job(tag: str) -> int:
    print(f"only-{tag}")
    return os.getpid()


def print_both(tag: str) -> str:
    print(f"echo-out-{tag}")
    print(f"echo-err-{tag}", file=sys.stderr)
    return tag


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------ fresh-interpreter


def test_job_does_not_see_modules_only_the_client_imported(cloud: Any) -> None:
    """A stdlib module imported only in the client is not in the job's ``sys.modules``."""
    import xml.dom.minidom  # noqa: F401 - imported here, in the client only

    assert "xml.dom.minidom" in sys.modules and "pytest" in sys.modules
    job_modules = cloud.result(cloud.call(loaded_modules), timeout=WAIT)
    assert "sys" in job_modules and "os" in job_modules  # the answer is real
    assert "xml.dom.minidom" not in job_modules
    # (pytest itself may be there: the test module is shipped and imported on the server, and it imports pytest)


def test_job_does_not_get_the_clients_sys_path(cloud: Any) -> None:
    """The job's ``sys.path`` has none of the client's own entries: repo root, tests directories, client cwd."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    client = {os.path.realpath(p or os.getcwd()) for p in sys.path}
    assert os.path.realpath(here) in client  # pytest put the test directory there

    job_path = cloud.result(cloud.call(search_path), timeout=WAIT)
    assert job_path, "the job has an empty sys.path"
    job = {os.path.realpath(p) for p in job_path if p}
    for entry in (here, os.path.dirname(here), repo, os.getcwd()):
        assert os.path.realpath(entry) not in job, f"{entry} from the client reached the job's sys.path: {job_path}"


def test_job_has_its_own_main_module(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``__main__`` in a job is the server's: not the client's file, and without names set on the client's."""
    client_main = sys.modules["__main__"]
    monkeypatch.setattr(client_main, "cloudsim_client_marker", 1, raising=False)
    job = cloud.result(cloud.call(main_module), timeout=WAIT)
    assert job["has_client_marker"] is False
    client_file = getattr(client_main, "__file__", None)
    if client_file is not None:
        assert job["file"] != client_file


def test_client_monkeypatch_does_not_reach_the_job(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patching ``os`` in the client (``os.getcwd`` replaced, an attribute added) changes nothing in the job."""
    real_cwd = os.getcwd()
    monkeypatch.setattr(os, "getcwd", lambda: "/client/patched/cwd")
    monkeypatch.setattr(os, "cloudsim_client_patch", True, raising=False)
    assert os.getcwd() == "/client/patched/cwd"

    job = cloud.result(cloud.call(os_module_state), timeout=WAIT)
    assert job["getcwd_is_builtin"] is True
    assert job["cwd"] != "/client/patched/cwd"
    assert os.path.isabs(job["cwd"]) and os.path.realpath(job["cwd"]) != os.path.realpath(real_cwd)
    assert job["has_patched_attr"] is False


def test_client_environment_variable_is_not_copied(cloud: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set in the client is absent in the job, unless named in ``_os_env_vars``.

    The client's own environment beyond a minimal set stays behind too
    (pytest's ``PYTEST_CURRENT_TEST`` is set in the client while this runs).
    """
    monkeypatch.setenv("CLOUDSIM_TEST_SECRET", "x")
    assert "PYTEST_CURRENT_TEST" in os.environ
    _, plain = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET"), timeout=WAIT)
    assert plain is None
    names = cloud.result(cloud.call(environment_names), timeout=WAIT)
    assert "PYTEST_CURRENT_TEST" not in names and "CLOUDSIM_TEST_SECRET" not in names
    _, passed = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET", _os_env_vars=["CLOUDSIM_TEST_SECRET"]),
                             timeout=WAIT)
    assert passed == "x"


def test_os_env_vars_stay_set_in_the_reused_interpreter(start: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on PiCloud, ``_os_env_vars`` are set in the job interpreter's ``os.environ`` and stay there for
    later jobs of that interpreter (a persistent-interpreter effect code must not rely on, either way)."""
    cloud = start(max_concurrent_jobs=1)
    monkeypatch.setenv("CLOUDSIM_TEST_SECRET", "x")
    pid1, passed = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET", _os_env_vars=["CLOUDSIM_TEST_SECRET"]),
                                timeout=WAIT)
    assert passed == "x"
    pid2, later = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET"), timeout=WAIT)
    assert pid2 == pid1, "the second job did not run in the same interpreter; the test proves nothing"
    assert later == "x"
    pid3, fresh = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET", _kill_process=True), timeout=WAIT)
    pid4, gone = cloud.result(cloud.call(env_var, "CLOUDSIM_TEST_SECRET"), timeout=WAIT)
    assert pid4 != pid1 and gone is None, "a new interpreter starts from the server's environment"


def test_job_runs_in_its_own_directory_under_server_root(cloud: Any) -> None:
    """The job's working directory is its own, under ``server_root``, not the client's cwd."""
    root = os.path.realpath(cloud.connection_info()["server_root"])
    cwd = os.path.realpath(cloud.result(cloud.call(working_directory), timeout=WAIT))
    assert cwd.startswith(root + os.sep), (cwd, root)
    assert cwd != os.path.realpath(os.getcwd())
    assert os.path.isdir(cwd)


def test_worker_is_not_a_fork_of_the_client(cloud: Any) -> None:
    """The job's parent is the simulated server, a fresh interpreter the client started, not the client."""
    job_pid, job_ppid, job_has_pytest = cloud.result(cloud.call(pids), timeout=WAIT)
    server_pid = cloud.connection_info()["server_pid"]
    assert job_pid != os.getpid()
    assert psutil.Process(job_pid).parent().pid != os.getpid()
    assert job_ppid == server_pid == psutil.Process(job_pid).ppid()
    server = psutil.Process(server_pid)
    assert server.ppid() == os.getpid()
    assert server.cmdline() != psutil.Process().cmdline()  # started as a new program, not forked
    assert job_has_pytest is False  # a fork of this client would have pytest's plugins loaded


# ------------------------------------------------------- persistent-interpreter


def test_sequential_jobs_reuse_the_interpreter(cloud: Any) -> None:
    """Two jobs in a row run in the same process, and the second sees a global the first left on ``sys``."""
    pid1 = cloud.result(cloud.call(set_marker, 1), timeout=WAIT)
    pid2, marker = cloud.result(cloud.call(read_marker), timeout=WAIT)
    assert pid2 == pid1
    assert marker == 1
    assert not hasattr(sys, "cloudsim_test_marker")  # the job changed its own sys, not the client's


def test_kill_process_gives_the_next_job_a_new_interpreter(start: Callable) -> None:
    """After a job with ``_kill_process=True`` its interpreter ends; the next job has a new pid and no marker."""
    cloud = start(max_concurrent_jobs=1)
    pid1 = cloud.result(cloud.call(set_marker, 1, _kill_process=True), timeout=WAIT)
    pid2, marker = cloud.result(cloud.call(read_marker), timeout=WAIT)
    assert pid2 != pid1
    assert marker is None
    assert _gone(pid1), f"the _kill_process interpreter {pid1} is still running"


def test_without_kill_process_the_marker_survives_under_cap_one(start: Callable) -> None:
    """Control for the test above: the same two jobs without ``_kill_process`` share pid and marker."""
    cloud = start(max_concurrent_jobs=1)
    pid1 = cloud.result(cloud.call(set_marker, 2), timeout=WAIT)
    pid2, marker = cloud.result(cloud.call(read_marker), timeout=WAIT)
    assert (pid2, marker) == (pid1, 2)


# ------------------------------------------------------------------ job-output


def test_all_kinds_of_job_output_are_captured(cloud: Any) -> None:
    """print, fd-level writes, C stdio and a child process's output all show in ``info`` stdout/stderr."""
    jid = cloud.call(noisy_job, "first")
    cloud.result(jid, timeout=WAIT)
    fields = cloud.info(jid, ["stdout", "stderr"])[jid]
    out, err = fields["stdout"], fields["stderr"]
    for kind in ("py", "fd", "c", "child"):
        assert f"{kind}-out-first" in out, f"{kind} stdout missing: {out!r}"
        assert f"{kind}-err-first" in err, f"{kind} stderr missing: {err!r}"
        assert f"{kind}-err-first" not in out and f"{kind}-out-first" not in err


def test_output_of_one_job_does_not_leak_into_the_next(cloud: Any) -> None:
    """The next job in the same interpreter reports only its own output."""
    first = cloud.call(noisy_job, "first")
    pid1 = cloud.result(first, timeout=WAIT)
    second = cloud.call(quiet_job, "second")
    pid2 = cloud.result(second, timeout=WAIT)
    assert pid2 == pid1, "the jobs ran in different interpreters; the test proves nothing"
    fields = cloud.info(second, ["stdout", "stderr"])[second]
    assert fields["stdout"].strip() == "only-second"
    assert "first" not in fields["stderr"]
    # and the first job's record still has its own output
    assert "py-out-first" in cloud.info(first, "stdout")[first]["stdout"]


def test_job_output_is_echoed_to_the_client_without_force_redirect(
        start: Callable, capsys: pytest.CaptureFixture) -> None:
    """``force_redirect_job_output=False``: a job's stdout/stderr are written on the client when collected, once."""
    cloud = start(force_redirect_job_output=False)
    capsys.readouterr()
    jid = cloud.call(print_both, "on")
    assert cloud.result(jid, timeout=WAIT) == "on"
    out, err = capsys.readouterr()
    assert "echo-out-on" in out
    assert "echo-err-on" in err
    cloud.result(jid, timeout=WAIT)
    out, err = capsys.readouterr()
    assert "echo-out-on" not in out and "echo-err-on" not in err


def test_job_output_is_not_echoed_by_default(cloud: Any, capsys: pytest.CaptureFixture) -> None:
    """Control for the test above: by default the output stays in ``info`` and is not printed on the client."""
    capsys.readouterr()
    jid = cloud.call(print_both, "off")
    assert cloud.result(jid, timeout=WAIT) == "off"
    out, err = capsys.readouterr()
    assert "echo-out-off" not in out and "echo-err-off" not in err
    assert "echo-out-off" in cloud.info(jid, "stdout")[jid]["stdout"]
