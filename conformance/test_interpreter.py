"""C. The job's interpreter: fresh, persistent, cleaned up, and not the client's.

Each case proves one quirk of QUIRKS.md section C through the public API of
the backend (``cloud``). Cases about what a job must *not* inherit change the
client first and start the cloud afterwards (``start_cloud``), so a backend
that copied the client when it started would fail them too.
"""

from __future__ import annotations

import os
import string
import sys
import time
import uuid
import warnings
from html.parser import HTMLParser

import psutil
import pytest

# --------------------------------------------------------------------------- jobs

MARKER_ATTR = "_cloudsim_conformance_marker"


def interpreter_view(env_name, path_entry, module_names):
    import os
    import sys

    return {
        "pid": os.getpid(),
        "env": os.environ.get(env_name),
        "path": path_entry in sys.path,
        "modules": [name for name in module_names if name in sys.modules],
    }


def set_marker(token):
    import json
    import os

    setattr(json, "_cloudsim_conformance_marker", token)
    return os.getpid()


def get_marker():
    import json
    import os

    return os.getpid(), getattr(json, "_cloudsim_conformance_marker", None)


def exit_with(how):
    import sys

    if how == "sys.exit(3)":
        sys.exit(3)
    elif how == "sys.exit()":
        sys.exit()
    elif how == "raise SystemExit":
        raise SystemExit("bye")
    elif how == "exit()":
        exit()  # noqa: F821 - the site builtin, as a script would call it
    return "returned"


def die(how):
    import os

    if how == "os._exit":
        os._exit(1)
    elif how == "segfault":
        import ctypes

        ctypes.string_at(0)
    return "survived"


def main_module_view(attr):
    import sys

    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None), getattr(main, attr, None)


def patched_view():
    import os
    import string
    from html.parser import HTMLParser

    return {
        "getcwd": os.getcwd(),
        "capwords": string.capwords("hello world"),
        "cdata": tuple(HTMLParser.CDATA_CONTENT_ELEMENTS),
    }


def display_view():
    import os

    return os.environ.get("MPLBACKEND"), os.environ.get("DISPLAY")


def leak_thread():
    import os
    import threading

    never = threading.Event()
    threading.Thread(target=never.wait, name="conformance-leaked-thread", daemon=True).start()
    return os.getpid()


def leak_subprocess():
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    return os.getpid(), child.pid


def bump_counter():
    global COUNTER
    COUNTER += 1
    return COUNTER


COUNTER = 0


def no_arguments():
    return "ran"


# ----------------------------------------------------------------------- helpers
def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_dead(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _order_modules(user_modules):
    """Five independent user modules that each note, in a shared log module, when they are first imported.

    Returns (the log module, one function of each module, the module names in the client's import order).
    """
    tag = uuid.uuid4().hex[:8]
    log = f"orderlog_{tag}"
    parts = [f"orderpart{i}_{tag}" for i in range(5)]
    user_modules.write(f"{log}.py", "ORDER = []\n\n\ndef report(*markers):\n    return list(ORDER)\n")
    for name in parts:
        user_modules.write(
            f"{name}.py", f"import {log}\n{log}.ORDER.append(__name__)\n\n\ndef marker():\n    return __name__\n"
        )
    log_module = user_modules.load(log)
    markers = [user_modules.load(name).marker for name in parts]
    assert log_module.ORDER == parts, "the client imported the modules in the static order"
    return log_module, markers, parts


# ------------------------------------------------------------------------- cases
class TestTheJobsInterpreter:
    """Section C of the catalogue."""

    @pytest.mark.quirk("fresh-interpreter")
    def test_fresh_interpreter(self, start_cloud, monkeypatch, tmp_path):
        """QUIRKS fresh-interpreter: "Jobs run in interpreters that are not copies of the client: no client
        sys.modules state, no client sys.path, no runtime monkeypatches, a different __main__, a minimal
        environment (client environment variables are not copied unless _os_env_vars)."
        """
        env_name = "CONFORMANCE_CLIENT_SECRET"  # not CLOUDSIM_*: cloudsim reads those as settings
        token = uuid.uuid4().hex
        only_client = f"conformance_client_only_{token[:8]}"
        monkeypatch.setenv(env_name, token)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setitem(sys.modules, only_client, type(sys)(only_client))
        cloud = start_cloud()  # after the client changed: a copy of the client would have all of it
        names = [only_client]
        view = cloud.result(cloud.call(interpreter_view, env_name, str(tmp_path), names), timeout=60)
        assert view["pid"] != os.getpid()
        assert view["env"] is None, "the client's environment was copied into the job"
        assert view["path"] is False, "the client's sys.path entry is in the job"
        assert view["modules"] == [], f"client modules are loaded in the job: {view['modules']}"
        copied = cloud.call(interpreter_view, env_name, str(tmp_path), [], _os_env_vars=[env_name])
        assert cloud.result(copied, timeout=60)["env"] == token, "_os_env_vars must copy the variable"

    @pytest.mark.quirk("persistent-interpreter", max_concurrent_jobs=1)
    def test_persistent_interpreter(self, cloud):
        """QUIRKS persistent-interpreter: "Interpreters are reused by later jobs (that is the default and the
        simulator really does it), unless _kill_process=True."
        """
        token = uuid.uuid4().hex
        first_pid = cloud.result(cloud.call(set_marker, token), timeout=60)
        second_pid, seen = cloud.result(cloud.call(get_marker), timeout=60)
        assert second_pid == first_pid, "the second job did not reuse the first job's interpreter"
        assert seen == token, "module state set by one job is not seen by the next"

    @pytest.mark.quirk("persistent-interpreter", max_concurrent_jobs=1)
    def test_persistent_interpreter_global_pitfall(self, cloud):
        """QUIRKS persistent-interpreter, explain: "Pitfall when a job leaves a module-level global of user
        code changed, naming module.name."
        """
        jid = cloud.call(bump_counter)
        cloud.result(jid, timeout=60)
        pits = [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == "persistent-interpreter"]
        assert pits and "COUNTER" in pits[0]["message"], pits

    @pytest.mark.quirk("leaked-threads", max_concurrent_jobs=1)
    def test_leaked_threads(self, cloud):
        """QUIRKS leaked-threads: "Threads a job started that are still alive when it returns are listed on
        the job's stderr and the interpreter is killed (the next job gets a new one)." API.md: "A job that
        leaks threads ... still finishes done with its result". Explain: "Pitfall naming each thread".
        """
        jid = cloud.call(leak_thread)
        pid = cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "done"
        info = cloud.info(jid, ["stderr", "pitfalls"])[jid]
        assert "conformance-leaked-thread" in info["stderr"]
        assert any(p["id"] == "leaked-threads" and "conformance-leaked-thread" in p["message"]
                   for p in info["pitfalls"]), info["pitfalls"]
        assert cloud.result(cloud.call(os.getpid), timeout=60) != pid, "the interpreter was not replaced"

    @pytest.mark.quirk("leaked-subprocesses", max_concurrent_jobs=1)
    def test_leaked_subprocesses(self, cloud):
        """QUIRKS leaked-subprocesses: "Subprocesses a job started that are still alive when it returns are
        killed, listed on stderr, and the interpreter is killed." Explain: "Pitfall naming each process
        (pid, command line)."
        """
        jid = cloud.call(leak_subprocess)
        pid, child = cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "done"
        assert _wait_dead(child), f"the job's subprocess {child} is still running after the job returned"
        info = cloud.info(jid, ["stderr", "pitfalls"])[jid]
        assert str(child) in info["stderr"]
        assert any(p["id"] == "leaked-subprocesses" and str(child) in p["message"] for p in info["pitfalls"])
        assert cloud.result(cloud.call(os.getpid), timeout=60) != pid, "the interpreter was not replaced"

    @pytest.mark.quirk("kill-process", max_concurrent_jobs=1)
    def test_kill_process(self, cloud):
        """QUIRKS kill-process: "_kill_process=True: the interpreter is discarded after the job."""
        token = uuid.uuid4().hex
        killed_pid = cloud.result(cloud.call(set_marker, token, _kill_process=True), timeout=60)
        next_pid, seen = cloud.result(cloud.call(get_marker), timeout=60)
        assert next_pid != killed_pid, "the interpreter of a _kill_process job was reused"
        assert seen is None, "state of a _kill_process job reached the next job"
        assert _wait_dead(killed_pid), "the discarded interpreter is still running"
        # without the keyword, reuse resumes
        reused_pid = cloud.result(cloud.call(set_marker, token), timeout=60)
        assert cloud.result(cloud.call(get_marker), timeout=60) == (reused_pid, token)

    @pytest.mark.parametrize(
        "how",
        [
            "sys.exit(3)",
            "sys.exit()",
            "raise SystemExit",
            "exit()",
        ],
    )
    @pytest.mark.quirk("sys-exit", max_concurrent_jobs=1)
    def test_sys_exit(self, cloud, how):
        """QUIRKS sys-exit: "A job must return, never exit: sys.exit()/exit()/raise SystemExit ends the job in
        error with a message saying so". Explain: "The error text."
        """
        jid = cloud.call(exit_with, how)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "error"
        text = str(info.value).lower()
        assert "exit" in text and "return" in text, str(info.value)
        assert cloud.result(cloud.call(exit_with, "no"), timeout=60) == "returned"

    @pytest.mark.parametrize("how", ["os._exit", "segfault"])
    @pytest.mark.quirk("sys-exit", max_concurrent_jobs=1)
    def test_sys_exit_interpreter_dies(self, cloud, how):
        """QUIRKS sys-exit: "os._exit or a crash kills the interpreter and the job is error, and the
        simulator carries on."
        """
        before = cloud.result(cloud.call(os.getpid), timeout=60)
        jid = cloud.call(die, how)
        with pytest.raises(cloud.CloudException):
            cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "error"
        after = cloud.result(cloud.call(os.getpid), timeout=60)
        assert after != before, "a dead interpreter cannot run the next job"
        assert cloud.result(cloud.call(die, "no"), timeout=60) == "survived"

    @pytest.mark.quirk("main-module")
    def test_main_module(self, start_cloud, monkeypatch):
        """QUIRKS main-module: "__main__ in a job is the server's, not the client's script; code that looks
        things up in __main__ fails there."
        """
        client_main = sys.modules["__main__"]
        token = uuid.uuid4().hex
        monkeypatch.setattr(client_main, MARKER_ATTR, token, raising=False)
        cloud = start_cloud()
        job_file, seen = cloud.result(cloud.call(main_module_view, MARKER_ATTR), timeout=60)
        assert seen is None, "the job's __main__ is the client's"
        client_file = getattr(client_main, "__file__", None)
        if client_file is not None:
            assert job_file != client_file

    @pytest.mark.quirk("runtime-patches")
    def test_runtime_patches(self, start_cloud, monkeypatch):
        """QUIRKS runtime-patches: "Changes made at runtime to modules or classes on the client
        (os.mkdir = f, A.attr = x) are not seen by jobs: jobs import modules fresh."
        """
        monkeypatch.setattr(string, "capwords", lambda s, sep=None: "patched by the client")
        monkeypatch.setattr(HTMLParser, "CDATA_CONTENT_ELEMENTS", ("patched",))
        cloud = start_cloud()
        monkeypatch.setattr(os, "getcwd", lambda: "/patched/by/the/client")
        view = cloud.result(cloud.call(patched_view), timeout=60)
        assert view["getcwd"] != "/patched/by/the/client"
        assert view["capwords"] == "Hello World"
        assert view["cdata"] == ("script", "style")

    @pytest.mark.quirk("import-order")
    def test_import_order(self, start_cloud, user_modules):
        """QUIRKS import-order: "Modules may be imported in any logically possible order on the cloud; the
        simulator varies the order in which a job's shipped modules are first imported (seeded, the seed
        printed) so order-dependent code shows up."

        The job refers to five independent modules (through its arguments); each notes when it is first
        imported. In the client they were imported in one order; over fresh interpreters the cloud must not
        always use it.
        """
        log_module, markers, parts = _order_modules(user_modules)
        orders = []
        for _ in range(3):  # several starts: a backend may draw one order per start
            cloud = start_cloud()
            jids = [cloud.call(log_module.report, *markers, _kill_process=True) for _ in range(4)]
            orders.extend(tuple(o) for o in cloud.result(jids, timeout=60))
        assert all(sorted(o) == sorted(parts) for o in orders), orders
        assert any(list(o) != parts for o in orders), f"every job imported its modules in the client's order {parts}"
        assert len(set(orders)) > 1, f"the import order never varied: {orders[0]}"

    @pytest.mark.quirk("import-order")
    def test_import_order_seed_reproduces_an_order(self, start_cloud, user_modules):
        """QUIRKS import-order: the order is "seeded, the seed printed": the seed a job was given (info field
        ``import_order_seed``) reproduces its order when given back as the ``import_order_seed`` setting.
        """
        log_module, markers, parts = _order_modules(user_modules)
        cloud = start_cloud()
        jid = cloud.call(log_module.report, *markers, _kill_process=True)
        order = cloud.result(jid, timeout=60)
        seed = cloud.info(jid, ["import_order_seed"])[jid]["import_order_seed"]
        assert seed is not None, "the job's import order seed is not shown"
        cloud = start_cloud(import_order_seed=seed)
        jids = [cloud.call(log_module.report, *markers, _kill_process=True) for _ in range(3)]
        assert cloud.result(jids, timeout=60) == [order] * 3

    @pytest.mark.quirk("package-behavior")
    def test_package_behavior(self, start_cloud, monkeypatch):
        """QUIRKS package-behavior: "Some common packages behave differently on the server: no display,
        non-interactive matplotlib backend (MPLBACKEND=Agg)."
        """
        monkeypatch.setenv("DISPLAY", ":99")
        monkeypatch.setenv("MPLBACKEND", "TkAgg")
        cloud = start_cloud()
        assert cloud.result(cloud.call(display_view), timeout=60) == ("Agg", None)

    @pytest.mark.quirk("fork-danger")
    def test_fork_danger(self, cloud):
        """QUIRKS fork-danger: "The client library runs threads; forking the client while the simulator runs
        is dangerous." Explain: "Warning when the client process forks while the simulator is running."
        """
        if not hasattr(os, "fork"):
            pytest.skip("os.fork is not available on this platform")
        read_end, write_end = os.pipe()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = os.fork()
            if pid == 0:  # the forked copy of the test runner: report what it saw, then leave at once
                try:
                    seen = ",".join(str(getattr(w.category, "id", "")) + " " + str(w.message)[:200] for w in caught)
                    os.write(write_end, seen.encode("utf-8", "replace")[:60000])
                finally:
                    os._exit(0)
            os.close(write_end)
            chunks = []
            while True:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(read_end)
            os.waitpid(pid, 0)
        in_parent = [w for w in caught if getattr(w.category, "id", None) == "fork-danger"
                     or "fork-danger" in str(w.message)]
        in_child = b"fork-danger" in b"".join(chunks)
        assert in_parent or in_child, "no fork-danger warning when the client forked"

    @pytest.mark.quirk("cloud-import-from")
    def test_cloud_import_from(self, backend, start_cloud):
        """QUIRKS cloud-import-from: "from cloud import call breaks: start_simulator() rebinds the module's
        functions, and a function captured before that raises an error telling the user to call through
        the cloud namespace."
        """
        stale_call = backend.api().call  # as `from cloud import call` before start_simulator()
        cloud = start_cloud()
        with pytest.raises(cloud.CloudException) as info:
            stale_call(no_arguments)
        assert "namespace" in str(info.value) or "cloud.call" in str(info.value), str(info.value)
        assert cloud.result(cloud.call(no_arguments), timeout=60) == "ran"
