"""What a job leaves in its interpreter: threads, subprocesses, changed globals; and the server's packages.

These are the ``leaked-threads``, ``leaked-subprocesses``,
``persistent-interpreter`` and ``package-behavior`` entries of ``QUIRKS.md``,
checked with real threads, real child processes and real worker
interpreters (``cloudsim/job/hygiene.py``). Each leak test also shows the
consequence: the job is still ``done`` with its result, and the next job
runs in a new interpreter. Each has a control that does the same thing
cleanly and keeps its interpreter, so an over-eager check fails too.

The first tests call the checks in this process (``leaked_threads``,
``GlobalsBaseline``) to pin down the rules (grace, what is not blamed) without
depending on scheduling.

Jobs are module-level functions of this module, which the client ships to the
server's flat module directory; ``hyg_counter_mod`` is a module the tests
write into that directory themselves (the client has no such module).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import psutil
import pytest

from cloudsim.job import hygiene

WAIT = 60.0  # seconds; only a hang reaches it
COUNTER_MODULE = "hyg_counter_mod"
COUNTER_SOURCE = "COUNTER = 0\nITEMS = []\nSETTINGS = {'mode': 'fast'}\n"

THREADED_SOURCE = (
    "import os, threading\n"
    "PID = os.getpid()\n"
    "_stop = threading.Event()\n"
    "threading.Thread(target=_stop.wait, name='hyg-import-thread', daemon=True).start()\n"
)

BUMPS = 0  # changed by bump_module_global() in the job's interpreter only


# ------------------------------------------------------------------ jobs


def leak_thread(name: str, daemon: bool) -> int:
    never = threading.Event()
    threading.Thread(target=never.wait, name=name, daemon=daemon).start()
    return os.getpid()


def leak_queue_listener() -> int:
    """A library starts the thread: logging's QueueListener, started and never stopped."""
    import logging.handlers
    import queue

    listener = logging.handlers.QueueListener(queue.Queue(), logging.NullHandler())
    listener.start()
    return os.getpid()


def import_threaded_module() -> int:
    import hyg_threaded_mod

    return hyg_threaded_mod.PID


def join_own_thread() -> int:
    done = threading.Event()
    thread = threading.Thread(target=done.wait, name="hyg-joined")
    thread.start()
    done.set()
    thread.join(30)
    return os.getpid()


def leak_subprocess() -> Tuple[int, int]:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # hyg-leaked-child"])
    return os.getpid(), child.pid


def leak_orphaned_grandchild() -> Tuple[int, int]:
    """A shell starts a sleeper in the background and exits: the sleeper is nobody's child any more."""
    import subprocess

    out = subprocess.run(["/bin/sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE, timeout=30, check=True)
    return os.getpid(), int(out.stdout.split()[0])


def leak_tree() -> Tuple[int, int, int]:
    """A child that starts a grandchild and waits for it: both are still running when the job returns."""
    import subprocess

    code = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)  # hyg-grandchild'])\n"
        "print(g.pid, flush=True)\n"
        "g.wait()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    grandchild = int(child.stdout.readline())
    return os.getpid(), child.pid, grandchild


def leave_zombie() -> Tuple[int, int]:
    """A child that has exited but was never waited for (a zombie) when the job returns."""
    import subprocess

    child = subprocess.Popen(["/bin/true"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    child.returncode = 0  # keep Popen.__del__ from reaping it first: the check must do it
    return os.getpid(), child.pid


def wait_for_subprocess() -> int:
    import subprocess

    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
    return os.getpid()


def bump_counter_module() -> Tuple[int, int, List[int]]:
    import hyg_counter_mod

    hyg_counter_mod.COUNTER += 1
    hyg_counter_mod.ITEMS.append(1)
    return os.getpid(), hyg_counter_mod.COUNTER, list(hyg_counter_mod.ITEMS)


def change_counter_settings() -> str:
    import hyg_counter_mod

    hyg_counter_mod.SETTINGS["mode"] = "slow"
    return hyg_counter_mod.SETTINGS["mode"]


def read_counter_module() -> Tuple[int, int, List[int]]:
    import hyg_counter_mod

    return os.getpid(), hyg_counter_mod.COUNTER, list(hyg_counter_mod.ITEMS)


def bump_and_restore_counter_module() -> int:
    import hyg_counter_mod

    saved = hyg_counter_mod.COUNTER
    hyg_counter_mod.COUNTER += 100
    hyg_counter_mod.ITEMS.append(2)
    try:
        return hyg_counter_mod.COUNTER
    finally:
        hyg_counter_mod.COUNTER = saved
        hyg_counter_mod.ITEMS.pop()


def bump_module_global() -> int:
    global BUMPS
    BUMPS += 1
    return BUMPS


def display_environment() -> Dict[str, Any]:
    return {"MPLBACKEND": os.environ.get("MPLBACKEND"), "DISPLAY": os.environ.get("DISPLAY")}


def matplotlib_backend() -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    plt.figure()
    plt.plot([1, 2, 3])
    plt.close("all")
    return matplotlib.get_backend()


def worker_pid() -> int:
    return os.getpid()


# ------------------------------------------------------------------ helpers


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_if_alive(pids: List[int], cmd_marker: str) -> None:
    """End processes a failing test may have left, by pid, only if they are the ones the job started."""
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if cmd_marker in " ".join(proc.cmdline()):
                proc.kill()
        except psutil.Error:
            pass


def _pitfalls(cloud: Any, jid: int, quirk: str) -> List[dict]:
    return [p for p in cloud.info(jid, ["pitfalls"])[jid]["pitfalls"] if p["id"] == quirk]


def _result(cloud: Any, jid: int) -> Any:
    with warnings.catch_warnings():  # the pitfall warnings are what the tests look at, through info()
        warnings.simplefilter("ignore")
        return cloud.result(jid, timeout=WAIT)


@pytest.fixture
def flat_module() -> Iterator[Callable[[Any, str, str], Path]]:
    """``flat_module(cloud, name, source)``: write a module into the simulator's flat module directory.

    The client has no such module; a job that imports it gets it from that
    directory, as a shipped module. It is removed (with its bytecode) after the test.
    """
    written: List[Path] = []

    def write(cloud: Any, name: str, source: str) -> Path:
        path = Path(cloud.connection_info()["module_dir"]) / f"{name}.py"
        path.write_text(source)
        written.append(path)
        return path

    try:
        yield write
    finally:
        for path in written:
            path.unlink()
            for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
                cached.unlink()


@pytest.fixture
def counter_module(start: Callable, flat_module: Callable) -> Any:
    """A simulator (cap 1: one interpreter) whose flat module directory holds ``hyg_counter_mod``."""
    cloud = start(max_concurrent_jobs=1)
    flat_module(cloud, COUNTER_MODULE, COUNTER_SOURCE)
    return cloud


# ------------------------------------------------------- the rules, in this process


def test_leaked_threads_rules_grace_and_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only threads started after the mark count; one that ends within the grace does not; where it started is kept."""
    monkeypatch.setattr(threading.Thread, "start", hygiene._start)
    stop = threading.Event()
    before = threading.Thread(target=stop.wait, name="hyg-before", daemon=True)
    before.start()
    mark = hygiene._started
    assert hygiene.leaked_threads(mark) == []  # nothing started since the mark: nothing to look at
    release = threading.Event()
    ending = threading.Thread(target=lambda: (release.wait(30), time.sleep(0.01)), name="hyg-ending", daemon=True)
    stuck = threading.Thread(target=stop.wait, name="hyg-stuck", daemon=True)
    try:
        ending.start()
        assert hygiene.leaked_threads(mark, grace=0) == [ending]  # still running: without a grace it is blamed
        release.set()
        assert hygiene.leaked_threads(mark, grace=WAIT) == []  # it ends within the grace (join returns at once)
        mark = hygiene._started
        stuck.start()
        assert hygiene.leaked_threads(mark, grace=hygiene.GRACE) == [stuck]  # "before" is never blamed
        where = hygiene.started_at(stuck)
        assert where[-1][2] == "test_leaked_threads_rules_grace_and_baseline"
        assert where[-1][0] == __file__
    finally:
        stop.set()
        release.set()
        for thread in (before, ending, stuck):
            thread.join(WAIT)


def test_globals_baseline_sees_rebinding_in_place_changes_additions_and_deletions() -> None:
    """A namespace's rebound, mutated, added and deleted names are reported; dunders and submodules are not."""
    items: List[int] = []
    namespace: Dict[str, Any] = {"__name__": "m", "COUNTER": 0, "ITEMS": items, "CFG": {"a": 1}, "GONE": 1}
    baseline = hygiene.GlobalsBaseline("m", namespace)
    assert baseline.changes() == []
    namespace["__warningregistry__"] = {}  # set by the warnings machinery: not state
    namespace["sub"] = types.ModuleType("m.sub")  # importing m.sub binds it in m: not state
    assert baseline.changes() == []
    namespace["COUNTER"] = 1
    items.append(1)
    namespace["CFG"]["a"] = 2
    namespace["NEW"] = "x"
    del namespace["GONE"]
    found = {name: how for name, how, _detail in baseline.changes()}
    assert found == {"COUNTER": "rebound", "ITEMS": "changed", "CFG": "changed", "NEW": "added", "GONE": "deleted"}
    baseline.take()
    assert baseline.changes() == []


def test_fingerprint_is_shallow_and_none_for_values_that_cannot_change_in_place() -> None:
    """Containers and plain objects get a fingerprint that changes with their items; scalars and code get None."""
    assert hygiene.fingerprint(3) is None
    assert hygiene.fingerprint("text") is None
    assert hygiene.fingerprint((1, [2])) is None
    assert hygiene.fingerprint(len) is None
    assert hygiene.fingerprint(os) is None
    values = [1, 2]
    before = hygiene.fingerprint(values)
    values[0] = object()
    assert hygiene.fingerprint(values) != before
    config = types.SimpleNamespace(debug=False)
    before = hygiene.fingerprint(config)
    config.debug = True
    assert hygiene.fingerprint(config) != before
    big = list(range(5000))
    before = hygiene.fingerprint(big)
    big.append(1)
    assert hygiene.fingerprint(big) != before


# ------------------------------------------------------------------ leaked-threads


@pytest.mark.parametrize("daemon", [True, False], ids=["daemon", "non-daemon"])
def test_leaked_thread_is_listed_and_the_interpreter_replaced(start: Callable, daemon: bool) -> None:
    """A thread still running when the job returns: stderr and a pitfall name it; job done; next job new interpreter."""
    cloud = start(max_concurrent_jobs=1)
    name = f"hyg-leaked-{'daemon' if daemon else 'plain'}"
    jid = cloud.call(leak_thread, name, daemon)
    pid = _result(cloud, jid)
    assert cloud.status(jid) == "done"
    info = cloud.info(jid, ["stderr", "pitfalls"])[jid]
    stderr = info["stderr"]
    assert f"thread '{name}' ({'daemon' if daemon else 'non-daemon'}), target threading.Event.wait" in stderr
    assert "in leak_thread" in stderr  # where it was started
    assert "interpreter is killed and replaced" in stderr
    pits = [p for p in info["pitfalls"] if p["id"] == "leaked-threads"]
    assert len(pits) == 1, info["pitfalls"]
    assert name in pits[0]["message"] and "threading.Event.wait" in pits[0]["message"]
    assert "[pitfall: leaked-threads]" in pits[0]["message"]
    assert [t["name"] for t in pits[0]["threads"]] == [name]
    assert _result(cloud, cloud.call(worker_pid)) != pid, "the interpreter was reused"
    assert _wait_gone(pid), f"the interpreter {pid} that leaked a thread is still running"


def test_thread_started_by_a_library_is_blamed_too(start: Callable) -> None:
    """A logging QueueListener the job never stopped leaves its thread: named with the library's target."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(leak_queue_listener)
    pid = _result(cloud, jid)
    assert cloud.status(jid) == "done"
    pits = _pitfalls(cloud, jid, "leaked-threads")
    assert pits and "logging.handlers.QueueListener._monitor" in pits[0]["message"], pits
    started = pits[0]["threads"][0]["started_at"]
    assert any("in start" in where and "logging" in where for where in started), started
    assert any("in leak_queue_listener" in where for where in started), started
    assert _result(cloud, cloud.call(worker_pid)) != pid


def test_thread_started_by_module_code_at_import_is_blamed(start: Callable, flat_module: Callable) -> None:
    """A user module that starts a thread when it is imported: the job that imported it is blamed, with the line."""
    cloud = start(max_concurrent_jobs=1)
    path = flat_module(cloud, "hyg_threaded_mod", THREADED_SOURCE)
    jid = cloud.call(import_threaded_module)
    pid = _result(cloud, jid)
    pits = _pitfalls(cloud, jid, "leaked-threads")
    assert pits and "'hyg-import-thread'" in pits[0]["message"], pits
    assert pits[0]["threads"][0]["started_at"][-1] == f"{path}:4 in <module>"
    assert _result(cloud, cloud.call(worker_pid)) != pid


def test_joined_thread_is_not_blamed_and_the_interpreter_stays(start: Callable) -> None:
    """Control: a job that joins the thread it started gets no pitfall and its interpreter serves the next job."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(join_own_thread)
    pid = _result(cloud, jid)
    assert _pitfalls(cloud, jid, "leaked-threads") == []
    assert "leaked-threads" not in cloud.info(jid, ["stderr"])[jid]["stderr"]
    assert _result(cloud, cloud.call(worker_pid)) == pid


# ------------------------------------------------------------------ leaked-subprocesses


def test_leaked_subprocess_is_killed_listed_and_the_interpreter_replaced(start: Callable) -> None:
    """A child still running when the job returns is killed, named (pid, command line), and the interpreter replaced."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(leak_subprocess)
    pid, child = _result(cloud, jid)
    try:
        assert cloud.status(jid) == "done"
        assert _wait_gone(child), f"the job's child {child} is still running"
        info = cloud.info(jid, ["stderr", "pitfalls"])[jid]
        assert f"pid {child}: {sys.executable} -c import time; time.sleep(600)" in info["stderr"]
        pits = [p for p in info["pitfalls"] if p["id"] == "leaked-subprocesses"]
        assert len(pits) == 1 and f"pid {child}" in pits[0]["message"], info["pitfalls"]
        assert [p["pid"] for p in pits[0]["processes"]] == [child]
        assert _result(cloud, cloud.call(worker_pid)) != pid
    finally:
        _kill_if_alive([child], "hyg-leaked-child")


def test_leaked_process_tree_is_killed_whole(start: Callable) -> None:
    """A child with a grandchild of its own: both are killed and both are listed."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(leak_tree)
    pid, child, grandchild = _result(cloud, jid)
    try:
        assert _wait_gone(child) and _wait_gone(grandchild)
        listed = {p["pid"] for p in _pitfalls(cloud, jid, "leaked-subprocesses")[0]["processes"]}
        assert listed == {child, grandchild}
        assert f"pid {grandchild}:" in cloud.info(jid, ["stderr"])[jid]["stderr"]
    finally:
        _kill_if_alive([child, grandchild], "hyg-grandchild")


def test_orphaned_grandchild_does_not_escape(start: Callable) -> None:
    """A background process whose parent shell already exited (an orphan) is still found and killed."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(leak_orphaned_grandchild)
    pid, orphan = _result(cloud, jid)
    try:
        assert _wait_gone(orphan), f"the orphaned sleeper {orphan} escaped the check"
        pits = _pitfalls(cloud, jid, "leaked-subprocesses")
        assert pits and f"pid {orphan} (sleep 600)" in pits[0]["message"], pits
        assert _result(cloud, cloud.call(worker_pid)) != pid
    finally:
        _kill_if_alive([orphan], "sleep")


def test_zombie_child_is_reaped_not_blamed(start: Callable) -> None:
    """A child that already exited (a zombie) is reaped; no pitfall, and the interpreter is kept."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(leave_zombie)
    pid, child = _result(cloud, jid)
    assert _pitfalls(cloud, jid, "leaked-subprocesses") == []
    assert _result(cloud, cloud.call(worker_pid)) == pid
    assert not psutil.pid_exists(child) or psutil.Process(child).ppid() != pid, "the zombie was not reaped"


def test_waited_subprocess_is_not_blamed(start: Callable) -> None:
    """Control: a job that waits for its child gets no pitfall and keeps its interpreter."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(wait_for_subprocess)
    pid = _result(cloud, jid)
    assert _pitfalls(cloud, jid, "leaked-subprocesses") == []
    assert _result(cloud, cloud.call(worker_pid)) == pid


# ------------------------------------------------------------------ persistent-interpreter


def test_changed_globals_of_a_module_persist_and_are_named(counter_module: Any) -> None:
    """A job rebinds COUNTER and appends to ITEMS of a module in the flat directory: the next job sees both; pitfall."""
    cloud = counter_module
    jid = cloud.call(bump_counter_module)
    pid, counter, items = _result(cloud, jid)
    assert (counter, items) == (1, [1])
    pits = _pitfalls(cloud, jid, "persistent-interpreter")
    assert len(pits) == 1, pits
    message = pits[0]["message"]
    assert f"{COUNTER_MODULE}.COUNTER (rebound: 0 -> 1)" in message
    assert f"{COUNTER_MODULE}.ITEMS (changed in place" in message
    assert "reset them to their initial values" in message
    assert sorted(pits[0]["globals"]) == [f"{COUNTER_MODULE}.COUNTER", f"{COUNTER_MODULE}.ITEMS"]
    # the persistence is real: the next job, in the same interpreter, starts with the changed values
    read = cloud.call(read_counter_module)
    assert _result(cloud, read) == (pid, 1, [1])
    assert _pitfalls(cloud, read, "persistent-interpreter") == [], "a job that only reads was blamed"
    again = cloud.call(change_counter_settings)
    assert _result(cloud, again) == "slow"
    pits = _pitfalls(cloud, again, "persistent-interpreter")
    assert pits and pits[0]["globals"] == [f"{COUNTER_MODULE}.SETTINGS"], pits


def test_globals_restored_before_returning_are_not_blamed(counter_module: Any) -> None:
    """Control: a job that changes globals and restores them in ``finally`` gets no pitfall."""
    cloud = counter_module
    jid = cloud.call(bump_and_restore_counter_module)
    assert _result(cloud, jid) == 100
    assert _pitfalls(cloud, jid, "persistent-interpreter") == []
    assert _result(cloud, cloud.call(read_counter_module))[1:] == (0, [])


def test_kill_process_job_changing_globals_is_not_blamed(counter_module: Any) -> None:
    """With ``_kill_process=True`` nothing persists, so changing a global is not a pitfall."""
    cloud = counter_module
    jid = cloud.call(bump_counter_module, _kill_process=True)
    pid = _result(cloud, jid)[0]
    assert _pitfalls(cloud, jid, "persistent-interpreter") == []
    assert _result(cloud, cloud.call(read_counter_module))[1:] == (0, [])
    assert _result(cloud, cloud.call(worker_pid)) != pid


def test_global_of_a_shipped_user_module_is_named(start: Callable) -> None:
    """A job of this (shipped) module does ``global BUMPS; BUMPS += 1``: the pitfall names it; the client's is untouched."""
    cloud = start(max_concurrent_jobs=1)
    jid = cloud.call(bump_module_global)
    assert _result(cloud, jid) == 1
    pits = _pitfalls(cloud, jid, "persistent-interpreter")
    assert pits and pits[0]["globals"] == [f"{__name__}.BUMPS"], pits
    assert _result(cloud, cloud.call(bump_module_global)) == 2  # same interpreter: the change stayed
    assert BUMPS == 0


# ------------------------------------------------------------------ package-behavior


def test_jobs_have_agg_backend_and_no_display(start: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs get ``MPLBACKEND=Agg`` and no ``DISPLAY``, even when the client has a display."""
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("MPLBACKEND", "TkAgg")
    cloud = start()
    assert _result(cloud, cloud.call(display_environment)) == {"MPLBACKEND": "Agg", "DISPLAY": None}


def test_matplotlib_in_a_job_uses_agg(cloud: Any) -> None:
    """matplotlib, where installed, picks the non-interactive Agg backend in a job and can draw."""
    pytest.importorskip("matplotlib")
    assert _result(cloud, cloud.call(matplotlib_backend)).lower() == "agg"
