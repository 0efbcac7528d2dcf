"""The harness of the conformance suite: which backend, which quirk, and nothing left behind.

Every case carries ``@pytest.mark.quirk("<id>", **settings)``: the id names the
quirk of ``cloudsim.pitfalls.IDS`` it proves (its function is named after the
id: ``test_sys_exit...`` for ``sys-exit``), the settings are given to the
backend when the case's cloud is started. The suite refuses to run when a
case has no valid marker or when, with every case file collected, some id of
the catalogue has no case at all.

The backend comes from ``--conformance-backend`` (or the environment variable
``CLOUDSIM_CONFORMANCE_BACKEND``): a registry name of ``backends.BACKENDS``
or ``package.module:ClassName``; several, separated by commas, run every case
once per backend. Fixtures:

- ``backend``: the :class:`~conformance.backends.Backend` (one per session);
- ``cloud``: the API object, started for one case with the marker's settings
  and stopped after it;
- ``start_cloud(**extra)``: the same, started when the case says so (for cases
  that must change the client before the cloud starts);
- ``user_modules``: writes modules of "the user's project" into a temporary
  directory on the client's ``sys.path``, and forgets them after the case.

No process may outlive its case: after each stop, and again at the end of the
session, the test runner must have no child process left (psutil); leftovers
are killed by pid and the case fails with what they were.

This conftest is not the one of ``tests/`` and shares nothing with it.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import psutil
import pytest

from cloudsim.pitfalls import CATALOGUE, IDS

from conformance.backends import DEFAULT_BACKEND, ENV_VAR, UNSUPPORTED_PREFIX, Backend, BackendError, resolve_backend

HERE = Path(__file__).resolve().parent
OPTION = "--conformance-backend"
_HELP = (
    "backend(s) the conformance cases run against: a registered name (default: simulator) or "
    "'package.module:ClassName' of a conformance.backends.Backend subclass; comma-separated for several. "
    f"Also read from ${ENV_VAR}."
)
_LEAK_TIMEOUT = 30.0  # seconds a closed cloud's processes get to go away; only a leak waits this long


# ------------------------------------------------------------------ options, marker
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "cloudsim conformance suite")
    try:
        group.addoption(OPTION, action="store", default=None, dest="conformance_backend", help=_HELP)
    except ValueError:  # a plugin registered it already: use theirs
        pass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "quirk(id, **settings): the conformance case proves quirk `id` (an id of cloudsim.pitfalls.IDS); "
        "settings are passed to the backend when the case's cloud starts.",
    )
    for spec in backend_specs(config):
        try:
            resolve_backend(spec)
        except BackendError as exc:
            raise pytest.UsageError(f"{OPTION}: {exc}") from None


def backend_specs(config: pytest.Config) -> List[str]:
    """The backends named by the option, else the environment, else the default, e.g. ``['simulator']``."""
    try:
        value = config.getoption("conformance_backend")
    except ValueError:
        value = None
    value = value or os.environ.get(ENV_VAR) or DEFAULT_BACKEND
    specs = [s.strip() for s in value.split(",") if s.strip()]
    return specs or [DEFAULT_BACKEND]


def pytest_report_header(config: pytest.Config) -> str:
    return f"conformance backend: {', '.join(backend_specs(config))}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        specs = backend_specs(metafunc.config)
        ids = [resolve_backend(s).name if ":" not in s else s.rpartition(":")[2] for s in specs]
        metafunc.parametrize("backend", specs, indirect=True, scope="session", ids=ids)


# ------------------------------------------------------------------ structural checks
def quirk_of(item: pytest.Item) -> Tuple[Optional[str], Dict[str, Any], str]:
    """Return (id, settings, problem) of an item's ``quirk`` marker; problem is '' when it is valid."""
    marker = item.get_closest_marker("quirk")
    if marker is None:
        return None, {}, "has no @pytest.mark.quirk('<id>') marker"
    if len(marker.args) != 1 or not isinstance(marker.args[0], str):
        return None, {}, f"quirk marker needs exactly one id, got args {marker.args!r}"
    quirk_id = marker.args[0]
    if quirk_id not in IDS:
        return quirk_id, {}, f"quirk id {quirk_id!r} is not in cloudsim.pitfalls.IDS"
    name = getattr(item, "originalname", None) or item.name
    expected = "test_" + quirk_id.replace("-", "_")
    if not name.startswith(expected):
        return quirk_id, {}, f"a case of {quirk_id!r} must be named {expected}[_...], not {name}"
    return quirk_id, dict(marker.kwargs), ""


def _ours(item: pytest.Item) -> bool:
    try:
        return Path(str(item.path)).resolve().parent == HERE
    except (OSError, AttributeError):
        return False


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselect, so the coverage check sees every case
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: List[pytest.Item]) -> None:
    ours = [item for item in items if _ours(item) and isinstance(item, pytest.Function)]
    if not ours:
        return
    problems = []
    covered = set()
    for item in ours:
        quirk_id, _settings, problem = quirk_of(item)
        if problem:
            problems.append(f"  {item.nodeid}: {problem}")
        else:
            covered.add(quirk_id)
    if problems:
        raise pytest.UsageError("conformance cases without a valid quirk marker:\n" + "\n".join(problems))
    case_files = {p.resolve() for p in HERE.glob("test_*.py")}
    collected = {Path(str(item.path)).resolve() for item in ours}
    if case_files <= collected:  # the whole suite was collected: every id needs a case
        missing = [quirk_id for quirk_id in CATALOGUE if quirk_id in IDS and quirk_id not in covered]
        if missing:
            raise pytest.UsageError(
                "quirk ids of cloudsim.pitfalls.IDS without a conformance case: " + ", ".join(missing)
                + "\nAdd a case named test_<id> with @pytest.mark.quirk('<id>') to conformance/test_<section>.py."
            )


# ------------------------------------------------------------------ processes
def _children() -> List[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_no_new_children(keep: frozenset = frozenset(), timeout: float = _LEAK_TIMEOUT,
                         also_keep: Callable[[], List[int]] = list) -> List[psutil.Process]:
    """Poll until every child of the test runner outside ``keep`` (and ``also_keep()``) is gone; return the rest."""
    deadline = time.monotonic() + timeout
    while True:
        kept = keep | frozenset(also_keep())
        left = [p for p in _children() if p.pid not in kept and _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def describe(procs: List[psutil.Process]) -> str:
    """One line per process: pid, status and command line (for a leak report)."""
    lines = []
    for proc in procs:
        try:
            lines.append(f"  pid {proc.pid} ({proc.status()}): {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"  pid {proc.pid} (gone)")
    return "\n".join(lines)


def _kill(procs: List[psutil.Process]) -> None:
    """End the leaked processes, each by its pid (they are descendants of this test run)."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def check_no_leak(keep: frozenset, what: str, also_keep: Callable[[], List[int]] = list) -> None:
    """Fail (after killing them) if children outside ``keep`` (and ``also_keep()``) outlive ``what``."""
    left = wait_no_new_children(keep, also_keep=also_keep)
    if left:
        report = describe(left)
        _kill(left)
        pytest.fail(f"processes outlived {what}:\n{report}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _conformance_no_processes_left() -> Iterator[None]:
    """At the end of the session (after every backend closed), the runner has no child left."""
    before = frozenset(p.pid for p in _children())
    yield
    check_no_leak(before, "the conformance session")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The backend the cases run against (parametrized by ``--conformance-backend``)."""
    spec = getattr(request, "param", None) or backend_specs(request.config)[0]
    cls = resolve_backend(spec)
    instance = cls(str(tmp_path_factory.mktemp(f"conformance-{cls.name}")))
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(autouse=True)
def _quirk_supported(request: pytest.FixtureRequest, backend: Backend) -> None:
    """Skip a case whose quirk the backend declares it cannot reproduce; tell the report the backend and its note."""
    quirk_id, _settings, problem = quirk_of(request.node)
    if problem:  # collection refuses these already; this guards items built later
        pytest.fail(f"{request.node.nodeid}: {problem}", pytrace=False)
    request.node.user_properties.append(("backend", backend.name))
    note = backend.note(quirk_id or "")
    if note:
        request.node.user_properties.append(("backend_note", note))
    ok, reason = backend.supports(quirk_id)
    if not ok:
        pytest.skip(f"{UNSUPPORTED_PREFIX}{reason}")


@pytest.fixture
def start_cloud(request: pytest.FixtureRequest, backend: Backend) -> Iterator[Callable[..., Any]]:
    """``start_cloud(**extra)``: start the backend with the marker's settings plus ``extra``; stopped after the case."""
    _id, settings, _problem = quirk_of(request.node)
    before = frozenset(p.pid for p in _children())
    started = []

    def start(**extra: Any) -> Any:
        api = backend.start(**{**settings, **extra})
        started.append(api)
        return api

    try:
        yield start
    finally:
        if started:
            backend.stop()
            check_no_leak(before, f"{request.node.nodeid} (after the backend stopped)", backend.session_processes)


@pytest.fixture
def cloud(start_cloud: Callable[..., Any]) -> Any:
    """The API object (``call``, ``result``, ...), started for this case with the marker's settings."""
    return start_cloud()


class UserModules:
    """Modules of "the user's project", written to a temporary directory that the client imports from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # module name -> the sys.modules entry before the case (None: there was none)
        self._saved: Dict[str, Any] = {}
        self._paths: List[str] = []

    def write(self, relpath: str, source: str) -> Path:
        """Write ``source`` (dedented) to ``root/relpath`` and return the path."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return path

    def add_path(self, directory: Path) -> None:
        """Put a directory first on the client's ``sys.path`` (until the end of the case)."""
        entry = str(directory)
        if entry not in sys.path:
            sys.path.insert(0, entry)
            self._paths.append(entry)
        importlib.invalidate_caches()

    def forget(self, name: str) -> None:
        """Drop ``name`` from the client's ``sys.modules`` (restored after the case)."""
        if name not in self._saved:
            self._saved[name] = sys.modules.get(name)
        sys.modules.pop(name, None)

    def load(self, name: str, directory: Optional[Path] = None) -> Any:
        """Import ``name`` afresh from ``directory`` (default: ``root``) in the client."""
        self.add_path(directory if directory is not None else self.root)
        self.forget(name)
        return importlib.import_module(name)

    def cleanup(self) -> None:
        for entry in self._paths:
            while entry in sys.path:
                sys.path.remove(entry)
        root = str(self.root) + os.sep
        for name, module in list(sys.modules.items()):  # e.g. packages imported on the way
            if name not in self._saved and str(getattr(module, "__file__", None) or "").startswith(root):
                sys.modules.pop(name, None)
        for name, module in self._saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        importlib.invalidate_caches()


@pytest.fixture
def user_modules(tmp_path: Path) -> Iterator[UserModules]:
    """A :class:`UserModules` rooted in this case's temporary directory."""
    modules = UserModules(tmp_path / "project")
    modules.root.mkdir()
    try:
        yield modules
    finally:
        modules.cleanup()
