"""Code shipping, seen from real client interpreters running small projects (section D, and C's
main-module, runtime-patches, import-order).

Each scenario writes a tiny project into a temporary directory and runs a
separate client interpreter in it, as a user would (``python script.py``),
so the client's ``sys.path``, ``__main__`` and module cache are the project's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import psutil
import pytest

TIMEOUT = 120


def write(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_client(project: Path, script: str, server_root: Path, stdin: str = "") -> Tuple[int, str, str]:
    """Run ``script`` as __main__ of a fresh client interpreter in ``project``; returns (rc, out, err)."""
    (project / "client.py").write_text(textwrap.dedent(script))
    env = dict(os.environ, CLOUDSIM_SERVER_ROOT=str(server_root), PYTHONWARNINGS="always")
    proc = subprocess.Popen([sys.executable, "client.py"], cwd=project, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(stdin, timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


PRELUDE = """\
import json, sys, warnings
warnings.simplefilter("always")
import cloudsim as cloud
cloud.start_simulator()
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""


def results(stdout: str) -> dict:
    merged: dict = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            merged.update(json.loads(line[len("RESULT "):]))
    return merged


def test_only_the_shipped_modules_exist_on_the_server(tmp_path: Path) -> None:
    """The modules the job's code imports travel; the rest of the project does not."""
    project = tmp_path / "proj"
    write(project, {
        "mymod.py": """
            import helper
            def f(x):
                return helper.double(x)
            def try_import(name):
                try:
                    __import__(name)
                    return "imported"
                except ImportError as exc:
                    return str(exc)
        """,
        "helper.py": "def double(x):\n    return 2 * x\n",
        "unused.py": "VALUE = 1\n",
    })
    rc, out, err = run_client(project, PRELUDE + """
import mymod
out(value=cloud.result(cloud.call(mymod.f, 21)))
out(unused=cloud.result(cloud.call(mymod.try_import, "unused")))
out(module_dir=cloud.connection_info()["module_dir"])
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert got["value"] == 42
    assert "No module named 'unused'" in got["unused"]
    shipped = sorted(p.name for p in Path(got["module_dir"]).glob("*.py"))
    assert shipped == ["helper.py", "mymod.py"]


def test_a_module_is_never_sent_again_and_the_change_is_reported(tmp_path: Path) -> None:
    """module-snapshot: after an edit (and a reload) jobs still run the first version; a new interpreter sends the new one."""
    project = tmp_path / "proj"
    write(project, {"mymod.py": "def version():\n    return 1\n"})
    script = PRELUDE + """
import importlib, os, time, mymod
first = cloud.result(cloud.call(mymod.version))
with open("mymod.py", "w") as f:
    f.write("def version():\\n    return 2\\n")
os.utime("mymod.py", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
importlib.reload(mymod)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    second = cloud.result(cloud.call(mymod.version))
out(first=first, second=second, local=mymod.version(),
    warned=[str(w.message) for w in caught if w.category.__name__ == "ModuleSnapshotWarning"])
cloud.close()
"""
    rc, out, err = run_client(project, script, tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert got["first"] == 1 and got["local"] == 2
    assert got["second"] == 1, "the cloud must keep running the version sent first"
    assert len(got["warned"]) == 1
    assert "Module 'mymod'" in got["warned"][0] and "new Python interpreter" in got["warned"][0]
    # a new client interpreter ships the edited module
    rc, out, err = run_client(project, PRELUDE + """
import mymod
out(value=cloud.result(cloud.call(mymod.version)))
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    assert results(out)["value"] == 2


def test_same_top_level_name_from_two_projects_conflicts_while_live(tmp_path: Path) -> None:
    """flat-module-dir: project2/foo.py cannot be shipped while project1/foo.py is live; packages may share names."""
    p1, p2 = tmp_path / "project1", tmp_path / "project2"
    write(p1, {"foo.py": "def who():\n    return 'project1'\n", "pkg1/__init__.py": "", "pkg1/util.py": "def f():\n    return 1\n"})
    write(p2, {"foo.py": "def who():\n    return 'project2'\n", "pkg2/__init__.py": "", "pkg2/util.py": "def f():\n    return 2\n"})
    server_root = tmp_path / "srv"
    holder_script = PRELUDE + """
import foo
from pkg1 import util
out(who=cloud.result(cloud.call(foo.who)), util=cloud.result(cloud.call(util.f)))
sys.stdin.readline()  # stay live until told to stop
cloud.close()
"""
    (p1 / "client.py").write_text(textwrap.dedent(holder_script))
    env = dict(os.environ, CLOUDSIM_SERVER_ROOT=str(server_root))
    holder = subprocess.Popen([sys.executable, "client.py"], cwd=p1, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert results(line) == {"who": "project1", "util": 1}, holder.stderr.read() if not line else line
        rc, out, err = run_client(p2, PRELUDE + """
from pkg2 import util
out(util=cloud.result(cloud.call(util.f)))
import foo
try:
    cloud.call(foo.who)
    out(conflict=None)
except cloud.CloudException as exc:
    out(conflict=str(exc), kind=type(exc).__name__)
cloud.close()
""", server_root)
        assert rc == 0, err
        got = results(out)
        assert got["util"] == 2, "modules inside different packages may share a name"
        assert got["conflict"] is not None
        assert str(p1 / "foo.py") in got["conflict"] and str(p2 / "foo.py") in got["conflict"]
        assert "flat-module-dir" in got["conflict"]
    finally:
        holder.communicate("stop\n", timeout=TIMEOUT)
    # once project1's client is gone, project2 may take the name
    rc, out, err = run_client(p2, PRELUDE + """
import foo
out(who=cloud.result(cloud.call(foo.who)))
cloud.close()
""", server_root)
    assert rc == 0, err
    assert results(out)["who"] == "project2"


def test_dynamic_import_is_not_shipped_and_both_messages_explain(tmp_path: Path) -> None:
    """dynamic-import: a warning at call time names the file and line; the job's ImportError says why."""
    project = tmp_path / "proj"
    write(project, {
        "mymod.py": """
            import importlib
            def load():
                return importlib.import_module("plugin").NAME
        """,
        "plugin.py": "NAME = 'plugin'\n",
    })
    rc, out, err = run_client(project, PRELUDE + """
import mymod
assert mymod.load() == "plugin"   # works in the client, where the module is there
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jid = cloud.call(mymod.load)
try:
    cloud.result(jid)
    out(error=None)
except cloud.CloudException as exc:
    out(error=str(exc))
out(warned=[str(w.message) for w in caught if w.category.__name__ == "DynamicImportWarning"])
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert len(got["warned"]) == 1
    assert f"{project / 'mymod.py'}:4" in got["warned"][0]
    assert "ModuleNotFoundError" in got["error"] and "No module named 'plugin'" in got["error"]
    assert "not shipped" in got["error"] and "dynamic-import" in got["error"]


def test_a_module_that_cannot_load_on_the_server_is_could_not_depickle(tmp_path: Path) -> None:
    """could-not-depickle: the job is an error carrying the original ImportError."""
    project = tmp_path / "proj"
    write(project, {"clientonly.py": """
        import os
        if os.environ.get("CLOUDSIM__SERVER"):
            raise ImportError("this module only imports on the client")
        def f():
            return 1
    """})
    rc, out, err = run_client(project, PRELUDE + """
import clientonly
try:
    cloud.result(cloud.call(clientonly.f))
    out(error=None)
except cloud.CloudException as exc:
    out(error=str(exc))
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    text = results(out)["error"]
    assert "Could not depickle job" in text
    assert "this module only imports on the client" in text


def test_a_module_named_like_an_installed_package_is_shadowed(tmp_path: Path) -> None:
    """preinstalled-conflict: the server imports its installed package; the pitfall names both."""
    project = tmp_path / "proj"
    write(project, {"psutil.py": "def mine():\n    return 'user module'\n"})
    rc, out, err = run_client(project, PRELUDE + """
import psutil
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jid = cloud.call(psutil.mine)
try:
    out(value=cloud.result(jid))
except cloud.CloudException as exc:
    out(error=str(exc))
out(warned=[str(w.message) for w in caught if w.category.__name__ == "PreinstalledConflictWarning"])
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert len(got["warned"]) == 1
    assert "psutil" in got["warned"][0] and str(project / "psutil.py") in got["warned"][0]
    assert "site-packages" in got["warned"][0]
    assert "value" not in got, "the installed psutil has no mine(): the job must not see the user's module"


def test_user_compiled_extension_is_not_shipped(tmp_path: Path) -> None:
    """c-extensions: the user's own .so is not uploaded; the job's ImportError says to install it on the server."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "myext.c").write_text(textwrap.dedent("""
        #include <Python.h>
        static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "myext", NULL, -1, NULL};
        PyMODINIT_FUNC PyInit_myext(void) { return PyModule_Create(&def); }
    """))
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    include = sysconfig.get_paths()["include"]
    try:
        build = subprocess.run(["cc", "-shared", "-fPIC", f"-I{include}", "myext.c", "-o", f"myext{suffix}"],
                               cwd=project, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no C compiler: {exc}")
    if build.returncode != 0:
        pytest.skip(f"cannot build a C extension here: {build.stderr[-300:]}")
    write(project, {"usesext.py": "import myext\ndef f():\n    return myext.__name__\n"})
    rc, out, err = run_client(project, PRELUDE + """
import usesext
assert usesext.f() == "myext"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jid = cloud.call(usesext.f)
try:
    out(value=cloud.result(jid))
except cloud.CloudException as exc:
    out(error=str(exc))
out(warned=[str(w.message) for w in caught if w.category.__name__ == "CExtensionsWarning"])
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert "value" not in got
    assert "No module named 'myext'" in got["error"] and "installed on the server" in got["error"]
    assert len(got["warned"]) == 1 and "myext" in got["warned"][0]


def test_main_module_and_runtime_patches_stay_on_the_client(tmp_path: Path) -> None:
    """main-module and runtime-patches: the job's __main__ is the server's; client monkeypatches are not sent."""
    project = tmp_path / "proj"
    write(project, {"shapes.py": "class Shape:\n    sides = 3\ndef sides():\n    return Shape.sides\n"})
    rc, out, err = run_client(project, PRELUDE + """
import os, shapes
CONFIG = {"answer": 42}
def read_main_config():
    import sys
    return getattr(sys.modules["__main__"], "CONFIG", "missing")
def mkdir_name():
    import os
    return os.mkdir.__name__
os.mkdir = lambda *a, **k: None      # a client-side monkeypatch
shapes.Shape.sides = 5               # a runtime change to a class
out(main=cloud.result(cloud.call(read_main_config)),
    mkdir=cloud.result(cloud.call(mkdir_name)),
    sides=cloud.result(cloud.call(shapes.sides)),
    local_sides=shapes.sides())
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert got["main"] == "missing"
    assert got["mkdir"] == "mkdir"
    assert got["sides"] == 3 and got["local_sides"] == 5


def test_import_order_varies_with_the_seed_and_is_shown_in_info(tmp_path: Path) -> None:
    """import-order: the order a job's modules are first imported follows import_order_seed, shown in info."""
    project = tmp_path / "proj"
    write(project, {
        "order.py": "LOG = []\n",
        "alpha.py": "import order\norder.LOG.append('alpha')\ndef f():\n    return 'a'\n",
        "beta.py": "import order\norder.LOG.append('beta')\ndef g():\n    return 'b'\n",
        "report.py": "import order\ndef log(*funcs):\n    return list(order.LOG)\n",
    })
    rc, out, err = run_client(project, PRELUDE + """
import alpha, beta, report
seen = {}
for seed in range(12):
    cloud.start_simulator(force_restart=True, import_order_seed=seed)
    jid = cloud.call(report.log, alpha.f, beta.g)
    seen[seed] = (cloud.result(jid), cloud.info(jid, ["import_order_seed"])[jid]["import_order_seed"])
again = {}
for seed in (0, 1):
    cloud.start_simulator(force_restart=True, import_order_seed=seed)
    again[seed] = cloud.result(cloud.call(report.log, alpha.f, beta.g))
out(seen=seen, again=again)
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    orders = {tuple(order) for order, _ in got["seen"].values()}
    assert orders == {("alpha", "beta"), ("beta", "alpha")}, orders
    assert all(int(seed) == shown for seed, (_, shown) in got["seen"].items())
    for seed in ("0", "1"):
        assert got["again"][seed] == got["seen"][seed][0], "the same seed gives the same order"


def test_a_project_installed_in_editable_mode_is_user_code_and_shipped(tmp_path: Path) -> None:
    """An editable install (a finder on sys.meta_path pointing into the project, as setuptools makes) is the
    user's code: the server does not share the client's finder, so the package is shipped like any other."""
    project = tmp_path / "proj"
    write(project, {
        "src/edpkg/__init__.py": "from edpkg import core\n",
        "src/edpkg/core.py": "def answer():\n    return 'from the editable project'\n",
    })
    workdir = tmp_path / "work"
    workdir.mkdir()
    rc, out, err = run_client(workdir, PRELUDE + f"""
import importlib.abc, importlib.util, sys
SRC = {str(project / 'src')!r}

class EditableFinder(importlib.abc.MetaPathFinder):   # what `pip install -e` puts on sys.meta_path
    def find_spec(self, name, path=None, target=None):
        if name == "edpkg" or name.startswith("edpkg."):
            from importlib.machinery import PathFinder
            return PathFinder.find_spec(name, [SRC] if name == "edpkg" else path)
        return None

sys.meta_path.append(EditableFinder())
from edpkg import core
out(value=cloud.result(cloud.call(core.answer)), module_dir=cloud.connection_info()["module_dir"])
cloud.close()
""", tmp_path / "srv")
    assert rc == 0, err
    got = results(out)
    assert got["value"] == "from the editable project"
    shipped = Path(got["module_dir"]) / "edpkg"
    assert (shipped / "__init__.py").exists() and (shipped / "core.py").exists()
