"""D. Code shipping: what the cloud gets of the user's modules, and when.

Each case proves one quirk of QUIRKS.md section D through the public API of
the backend (``cloud``). The user's project is made of modules written into a
temporary directory on the client's ``sys.path`` (fixture ``user_modules``),
with names unique to the case, so nothing stays shipped between cases.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
import types
import uuid
import warnings
from pathlib import Path

import pytest

# --------------------------------------------------------------------------- jobs


def identity(value):
    return value


# ----------------------------------------------------------------------- helpers
def _tag() -> str:
    return uuid.uuid4().hex[:10]


def _reported(cloud, caught, jids, quirk_id):
    """True when ``quirk_id`` was reported as a warning (``caught``) or as a pitfall record on a job."""
    for w in caught:
        if getattr(w.category, "id", None) == quirk_id or f"[pitfall: {quirk_id}]" in str(w.message):
            return True
    for jid in jids:
        try:
            pits = cloud.info(jid, ["pitfalls"])[jid]["pitfalls"]
        except Exception:
            continue
        if any(p.get("id") == quirk_id for p in pits):
            return True
    return False


def _snapshot_module(user_modules):
    """A user module ``snapmod_<tag>`` whose ``version()`` returns 1, loaded in the client."""
    name = f"snapmod_{_tag()}"
    path = user_modules.write(f"{name}.py", "VERSION = 1\n\n\ndef version():\n    return VERSION\n")
    return user_modules.load(name), path


def _edit_and_reload(mod, path):
    """Change the module on disk to return 2 and reload it in the client."""
    path.write_text("VERSION = 2\n\n\ndef version():\n    return VERSION\n")
    later = time.time() + 5
    os.utime(path, (later, later))  # a changed mtime even on coarse file systems
    importlib.invalidate_caches()
    importlib.reload(mod)
    assert mod.version() == 2, "the client runs the new code"


def _compile_extension(directory: Path, name: str) -> Path:
    """Build a tiny C extension module ``name`` (VALUE = 7) in ``directory``, or skip the case."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    source = directory / f"{name}.c"
    source.write_text(
        "#include <Python.h>\n"
        f'static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, NULL}};\n'
        f"PyMODINIT_FUNC PyInit_{name}(void) {{\n"
        "    PyObject *m = PyModule_Create(&def);\n"
        '    if (m != NULL && PyModule_AddIntConstant(m, "VALUE", 7) < 0) { Py_DECREF(m); return NULL; }\n'
        "    return m;\n"
        "}\n"
    )
    target = directory / f"{name}{suffix}"
    if not os.path.isfile(os.path.join(include, "Python.h")):
        pytest.skip("no Python headers to build a C extension")
    try:
        done = subprocess.run(
            [*cc, "-shared", "-fPIC", "-I", include, str(source), "-o", str(target)],
            capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot build a C extension here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot build a C extension here: {done.stderr[-500:]}")
    return target


class OtherClient:
    """Another client process on the same machine: it starts the same backend (same workdir), ships
    ``module_name`` from ``directory`` by running its ``who()``, and stays up until the ``with`` block ends.
    """

    _SCRIPT = textwrap.dedent(
        """
        import importlib, sys
        from conformance.backends import resolve_backend

        spec, workdir, directory, name = sys.argv[1:5]
        sys.path.insert(0, directory)
        backend = resolve_backend(spec)(workdir)
        cloud = backend.start()
        try:
            module = importlib.import_module(name)
            print("result", cloud.result(cloud.call(module.who), timeout=60), flush=True)
            sys.stdin.read()  # stay up, with the module live, until the case closes stdin
        finally:
            backend.stop()
        """
    )

    def __init__(self, backend, directory: Path, module_name: str) -> None:
        spec = f"{type(backend).__module__}:{type(backend).__qualname__}"
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._SCRIPT, spec, backend.workdir, str(directory), module_name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root, env=env,
        )
        self.result = None

    def __enter__(self) -> "OtherClient":
        line = self.proc.stdout.readline()  # the script answers within its own 60 s timeout, or dies
        if not line.startswith("result "):
            self._end()
            pytest.fail(f"the other client did not ship its module: {line!r}\n{self.proc.stderr.read()[-3000:]}")
        self.result = line.split(" ", 1)[1].strip()
        return self

    def __exit__(self, *exc) -> None:
        self._end()

    def _end(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


# ------------------------------------------------------------------------- cases
class TestCodeShipping:
    """Section D of the catalogue."""

    @pytest.mark.quirk("module-snapshot")
    def test_module_snapshot(self, cloud, user_modules):
        """QUIRKS module-snapshot: "At the first call/map, the client snapshots the user modules the job needs
        and ships them; a module is never sent again in the life of the client interpreter, even if it
        changes on disk or is reloaded; jobs keep running the old code."
        """
        mod, _path = _snapshot_module(user_modules)
        assert cloud.result(cloud.call(mod.version), timeout=60) == 1
        _edit_and_reload(mod, _path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = cloud.result(cloud.call(mod.version), timeout=60)
        assert got == 1, "the cloud must still run the module as first shipped"

    @pytest.mark.quirk("module-snapshot")
    def test_module_snapshot_change_is_reported(self, cloud, user_modules):
        """QUIRKS module-snapshot, explain: "Pitfall at the next call when a shipped module changed since it was
        sent: 'the cloud still runs the old version, start a new interpreter'" (edited a while after the
        first call, as a person would).
        """
        mod, path = _snapshot_module(user_modules)
        assert cloud.result(cloud.call(mod.version), timeout=60) == 1
        time.sleep(1.5)  # an edit made a moment later, not in the same instant as the call
        _edit_and_reload(mod, path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jid = cloud.call(mod.version)
            got = cloud.result(jid, timeout=60)
        assert got == 1
        assert _reported(cloud, caught, [jid], "module-snapshot"), "no module-snapshot pitfall at the next call"

    @pytest.mark.quirk("module-snapshot")
    def test_module_snapshot_change_is_reported_at_the_very_next_call(self, cloud, user_modules):
        """QUIRKS module-snapshot, explain: "Pitfall at the next call when a shipped module changed since it was
        sent" -- also when the edit and the next call follow the first call at once (a script that rewrites and
        reloads a module).
        """
        mod, path = _snapshot_module(user_modules)
        assert cloud.result(cloud.call(mod.version), timeout=60) == 1
        _edit_and_reload(mod, path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jid = cloud.call(mod.version)
            cloud.result(jid, timeout=60)
        assert _reported(cloud, caught, [jid], "module-snapshot"), "no module-snapshot pitfall at the next call"

    @pytest.mark.quirk("dynamic-import")
    def test_dynamic_import(self, cloud, user_modules):
        """QUIRKS dynamic-import: "Dependencies are found by static analysis of imports; modules reached only
        through __import__/importlib.import_module are not shipped, so the job fails with ImportError."
        API.md: "... not shipped even when the client has it loaded."
        """
        tag = _tag()
        user_modules.write(f"dynhelper_{tag}.py", "VALUE = 42\n")
        user_modules.write(
            f"dynuser_{tag}.py",
            f"import importlib\n\n\ndef load():\n    return importlib.import_module('dynhelper_{tag}').VALUE\n",
        )
        assert user_modules.load(f"dynhelper_{tag}").VALUE == 42  # the client has it loaded
        user = user_modules.load(f"dynuser_{tag}")
        assert user.load() == 42
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jid = cloud.call(user.load)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert info.value.exc_type in ("ImportError", "ModuleNotFoundError"), info.value.exc_type
        assert f"dynhelper_{tag}" in str(info.value)

    @pytest.mark.quirk("dynamic-import")
    def test_dynamic_import_is_explained(self, cloud, user_modules):
        """QUIRKS dynamic-import, explain: "Warning at call time that names the dynamic import site; the job's
        ImportError says the module was not shipped and why."
        """
        tag = _tag()
        user_modules.write(f"dynhelper_{tag}.py", "VALUE = 42\n")
        user_modules.write(
            f"dynuser_{tag}.py",
            f"import importlib\n\n\ndef load():\n    return importlib.import_module('dynhelper_{tag}').VALUE\n",
        )
        user_modules.load(f"dynhelper_{tag}")
        user = user_modules.load(f"dynuser_{tag}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jid = cloud.call(user.load)
        site = [w for w in caught if getattr(w.category, "id", None) == "dynamic-import"]
        assert site and f"dynuser_{tag}" in str(site[0].message), [str(w.message) for w in caught]
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert "shipped" in str(info.value)

    @pytest.mark.quirk("dynamic-import")
    def test_dynamic_import_only_real_calls_are_reported(self, cloud, user_modules):
        """QUIRKS dynamic-import, explain: the "Warning at call time that names the dynamic import site" is about
        real __import__/importlib.import_module calls: text that only mentions them (a help string) is none.
        """
        tag = _tag()
        user_modules.write(
            f"dyntext_{tag}.py",
            'HELP = "plugins are loaded with importlib.import_module(\'name\') or __import__(\'name\')"\n'
            "\n\ndef helptext():\n    return HELP\n",
        )
        module = user_modules.load(f"dyntext_{tag}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jid = cloud.call(module.helptext)
            assert cloud.result(jid, timeout=60) == module.HELP
        assert not _reported(cloud, caught, [jid], "dynamic-import"), [str(w.message) for w in caught]

    @pytest.mark.quirk("c-extensions")
    def test_c_extensions(self, cloud, user_modules):
        """QUIRKS c-extensions: "The user's own compiled extension modules (outside installed packages) are not
        uploaded; importing one in a job fails with ImportError."
        """
        tag = _tag()
        ext = f"cext_{tag}"
        _compile_extension(user_modules.root, ext)
        user_modules.write(f"cextuser_{tag}.py", f"def value():\n    import {ext}\n    return {ext}.VALUE\n")
        user = user_modules.load(f"cextuser_{tag}")
        assert user.value() == 7, "the extension works in the client"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jid = cloud.call(user.value)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert info.value.exc_type in ("ImportError", "ModuleNotFoundError"), info.value.exc_type

    @pytest.mark.quirk("c-extensions")
    def test_c_extensions_is_explained(self, cloud, user_modules):
        """QUIRKS c-extensions, explain: "Message saying such extensions must be installed on the server."""
        tag = _tag()
        ext = f"cext_{tag}"
        _compile_extension(user_modules.root, ext)
        user_modules.write(f"cextuser_{tag}.py", f"def value():\n    import {ext}\n    return {ext}.VALUE\n")
        user = user_modules.load(f"cextuser_{tag}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jid = cloud.call(user.value)
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert "installed" in str(info.value) and "server" in str(info.value), str(info.value)

    @pytest.mark.quirk("could-not-depickle")
    def test_could_not_depickle(self, cloud, monkeypatch):
        """QUIRKS could-not-depickle: "A job whose function or arguments cannot be deserialized on the server
        (e.g. missing module) fails with a 'Could not depickle job' error carrying the original ImportError."
        """
        name = f"conformance_client_only_{_tag()}"
        module = types.ModuleType(name)  # a module the client has and the server cannot import
        exec("class Payload:\n    def __init__(self, v):\n        self.v = v\n", module.__dict__)
        monkeypatch.setitem(sys.modules, name, module)
        jid = cloud.call(identity, module.Payload(3))
        with pytest.raises(cloud.CloudException) as info:
            cloud.result(jid, timeout=60)
        assert cloud.status(jid) == "error"
        text = str(info.value)
        assert "Could not depickle job" in text, text
        assert "ModuleNotFoundError" in text or "ImportError" in text, text
        assert name in text

    @pytest.mark.quirk("flat-module-dir")
    def test_flat_module_dir(self, cloud, backend, user_modules):
        """QUIRKS flat-module-dir: "All shipped modules live in one flat directory on the server shared by every
        client on the machine; two different files with the same top-level module name (e.g. project1/foo.py
        and project2/foo.py) conflict." Explain: "Error naming both files when a conflicting module is shipped
        while another is live." API.md: "A module is 'live' on the flat directory while any running simulator
        on the machine has shipped it."
        """
        name = f"flatmod_{_tag()}"
        first = user_modules.write(f"project1/{name}.py", "def who():\n    return 'project1'\n")
        second = user_modules.write(f"project2/{name}.py", "def who():\n    return 'project2'\n")
        two = user_modules.load(name, second.parent)
        with OtherClient(backend, first.parent, name) as other:
            assert other.result == "project1"
            with pytest.raises(cloud.CloudException) as info:
                cloud.result(cloud.call(two.who), timeout=60)
            text = str(info.value)
            assert str(first) in text and str(second) in text, text
        # the other client is gone, so its module is no longer live
        assert cloud.result(cloud.call(two.who), timeout=60) == "project2"

    @pytest.mark.quirk("flat-module-dir")
    def test_flat_module_dir_packages_may_share_names(self, cloud, user_modules):
        """QUIRKS flat-module-dir: "Modules inside different packages may share a name.\""""
        tag = _tag()
        for pkg in (f"flatpkga_{tag}", f"flatpkgb_{tag}"):
            user_modules.write(f"{pkg}/__init__.py", "")
            user_modules.write(f"{pkg}/common.py", f"def who():\n    return {pkg!r}\n")
        a = user_modules.load(f"flatpkga_{tag}.common")
        b = user_modules.load(f"flatpkgb_{tag}.common")
        jids = [cloud.call(a.who), cloud.call(b.who)]
        assert cloud.result(jids, timeout=60) == [f"flatpkga_{tag}", f"flatpkgb_{tag}"]

    @pytest.mark.quirk("preinstalled-conflict")
    def test_preinstalled_conflict(self, cloud, user_modules):
        """QUIRKS preinstalled-conflict: "The server has packages installed (the simulator's own environment); a
        user module with the same name as one of them is shadowed by the installed one." Explain: "Pitfall
        naming the user module and the installed package."
        """
        tag = _tag()
        user_modules.write("colorsys.py", "WHO = 'user'\n")
        user_modules.write(
            f"colorsysuser_{tag}.py", "import colorsys\n\n\ndef who():\n    return getattr(colorsys, 'WHO', 'installed')\n"
        )
        assert user_modules.load("colorsys").WHO == "user", "the client imports the user's colorsys"
        user = user_modules.load(f"colorsysuser_{tag}")
        assert user.who() == "user"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jid = cloud.call(user.who)
            got = cloud.result(jid, timeout=60)
        assert got == "installed", "the job imported the user's module instead of the installed one"
        assert _reported(cloud, caught, [jid], "preinstalled-conflict"), "no preinstalled-conflict pitfall"
