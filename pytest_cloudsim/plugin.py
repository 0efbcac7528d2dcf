"""pytest entry point (``pytest11``) of cloudsim: the options, their ini twins, and nothing else.

Loaded by pytest for every run in an environment where cloudsim is installed,
so it must cost nothing: it registers the options and the ``cloudsim`` marker,
checks the option values (``pytest.UsageError`` naming the option and the
fix), and imports cloudsim only when ``--cloudsim`` (or ini ``cloudsim =
true``) is given. Then it registers the session plugin
(:mod:`pytest_cloudsim.session`, the hooks) and the fixtures
(:mod:`pytest_cloudsim.fixtures`), as pytest-xdist does with its
``pytest_configure``::

    pytest_addoption ─► pytest_configure ─► read_options() ─► enabled? ─► CloudsimSession + fixtures
                                                 │
                                                 └─► pytest.UsageError for a bad value or combination

Not for: running anything; the session plugin does that.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import pytest

__all__ = ["CloudsimOptions", "OPTIONS_KEY", "read_options"]

ACTIONS: Tuple[str, ...] = ("error", "warn", "ignore")
DEFAULT_ACTION = "error"
_STRICT_WORDS = frozenset({"strict", "fail", "raise", "true", "on"})  # what people may write for 'error'

# One help text per option, shared by the command-line option and its ini twin (pytest-timeout's habit).
CLOUDSIM_HELP = (
    "run the tests against the cloudsim simulator: one simulator per test session (per xdist worker), "
    "`import cloud` gives cloudsim, and pitfalls hit by the tests' jobs are reported (ini: cloudsim = true)."
)
PITFALLS_HELP = (
    "what a pitfall hit by a job that a test started does to that test: 'error' fails the test with the "
    "pitfall's message (strict, the default), 'warn' turns it into a warning, 'ignore' only counts it in "
    "the summary (ini: cloudsim_pitfalls)."
)
IGNORE_HELP = (
    "pitfall ids that never fail or warn a test, separated by commas (the option may be repeated; the ini "
    "value may also use spaces or lines), e.g. recursion-deadlock,pass-by-value; ids are listed in "
    "docs/pitfalls.md (ini: cloudsim_ignore)."
)
MARKER_HELP = (
    "cloudsim(**settings): run this test on a simulator started with these cloudsim settings "
    "(e.g. max_concurrent_jobs=2), restarted with the session's settings afterwards; needs --cloudsim."
)


@dataclass(frozen=True)
class CloudsimOptions:
    """The plugin's options, checked, as the session plugin uses them.

    Attributes:
        enabled: ``--cloudsim`` or ini ``cloudsim = true`` (and no ``--no-cloudsim``).
        pitfalls: ``'error'``, ``'warn'`` or ``'ignore'``.
        ignore: pitfall ids that never fail or warn a test, e.g. ``('recursion-deadlock',)``.
        pitfalls_source: where ``pitfalls`` came from, e.g. ``'--cloudsim-pitfalls'`` or
            ``'ini cloudsim_pitfalls in /p/pytest.ini'``, for messages.
    """

    enabled: bool = False
    pitfalls: str = DEFAULT_ACTION
    ignore: Tuple[str, ...] = ()
    pitfalls_source: str = "default"


OPTIONS_KEY = pytest.StashKey[CloudsimOptions]()
# Whether `import cloud` already gave cloudsim before the plugin installed the alias (then it stays).
ALIAS_KEY = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudsim", "run cloud calls through the cloudsim simulator")
    group.addoption("--cloudsim", action="store_true", default=None, dest="cloudsim", help=CLOUDSIM_HELP)
    group.addoption(
        "--no-cloudsim",
        action="store_false",
        dest="cloudsim",
        help="do not use cloudsim in this run, even if the ini file says cloudsim = true.",
    )
    group.addoption("--cloudsim-pitfalls", dest="cloudsim_pitfalls", metavar="ACTION", default=None, help=PITFALLS_HELP)
    group.addoption(
        "--cloudsim-ignore", dest="cloudsim_ignore", metavar="ID[,ID]", action="append", default=None, help=IGNORE_HELP
    )
    parser.addini("cloudsim", CLOUDSIM_HELP, type="bool", default=False)
    parser.addini("cloudsim_pitfalls", PITFALLS_HELP, default="")
    parser.addini("cloudsim_ignore", IGNORE_HELP, default="")


def _ini_label(config: pytest.Config, name: str) -> str:
    where = f" in {config.inipath}" if config.inipath else ""
    return f"ini option {name}{where}"


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.lower(), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_enabled(config: pytest.Config) -> bool:
    flag = getattr(config.known_args_namespace, "cloudsim", None)
    if flag is None:
        flag = config.getoption("cloudsim")
    if flag is not None:
        return bool(flag)
    try:
        return bool(config.getini("cloudsim"))
    except (ValueError, pytest.UsageError) as exc:  # "invalid truth value 'maybe'"; recent pytest wraps it in a UsageError
        raise pytest.UsageError(
            f"{_ini_label(config, 'cloudsim')} is not a boolean ({exc}). Fix: write cloudsim = true or cloudsim = false."
        ) from None


def _read_action(config: pytest.Config) -> Tuple[str, str]:
    value = config.getoption("cloudsim_pitfalls")
    if value is not None:
        source, fix_where = f"--cloudsim-pitfalls={value}", "pass --cloudsim-pitfalls"
    else:
        value = (config.getini("cloudsim_pitfalls") or "").strip()
        if not value:
            return DEFAULT_ACTION, "default"
        source, fix_where = f"{_ini_label(config, 'cloudsim_pitfalls')} ({value!r})", "set cloudsim_pitfalls to"
    action = value.strip().lower()
    if action not in ACTIONS:
        hint = " ('error' is the strict one)" if action in _STRICT_WORDS else _suggest(action, ACTIONS)
        raise pytest.UsageError(
            f"Invalid cloudsim pitfalls action {value!r} from {source}{hint}. "
            f"Fix: {fix_where} one of error (fail the test), warn or ignore."
        )
    return action, source


def _split_ids(text: str) -> List[str]:
    return [part for part in re.split(r"[\s,]+", text) if part]


def _read_ignore(config: pytest.Config) -> Tuple[List[str], str]:
    values = config.getoption("cloudsim_ignore")
    if values is not None:
        return [i for v in values for i in _split_ids(v)], "--cloudsim-ignore"
    return _split_ids(config.getini("cloudsim_ignore") or ""), _ini_label(config, "cloudsim_ignore")


def _check_ids(ids: List[str], source: str) -> Tuple[str, ...]:
    """Check pitfall ids against cloudsim's catalogue (imported only when the plugin is on)."""
    from cloudsim.pitfalls import CATALOGUE, DOCS_PAGE

    checked: List[str] = []
    for raw in ids:
        pid = raw.strip().lower()
        if pid not in CATALOGUE:
            raise pytest.UsageError(
                f"Unknown pitfall id {raw!r} in {source}{_suggest(pid, list(CATALOGUE))}. "
                f"Fix: use ids of the catalogue ({DOCS_PAGE} has one section per id), separated by commas."
            )
        if pid not in checked:
            checked.append(pid)
    return tuple(checked)


def read_options(config: pytest.Config) -> CloudsimOptions:
    """Read and check the plugin's options and ini values.

    Raises:
        pytest.UsageError: a bad value (naming the option or ini file and the fix), or
            ``--cloudsim-pitfalls``/``--cloudsim-ignore`` on the command line without cloudsim on.
    """
    enabled = _read_enabled(config)
    action, action_source = _read_action(config)  # checked even when off: it needs no cloudsim
    ids, ids_source = _read_ignore(config)
    if not enabled:
        given = [
            name
            for name, dest in (("--cloudsim-pitfalls", "cloudsim_pitfalls"), ("--cloudsim-ignore", "cloudsim_ignore"))
            if config.getoption(dest) is not None
        ]
        if given:
            raise pytest.UsageError(
                f"{' and '.join(given)} only {'applies' if len(given) == 1 else 'apply'} when cloudsim is on. "
                "Fix: add --cloudsim (or set cloudsim = true in the ini file), or drop them."
            )
        return CloudsimOptions(enabled=False, pitfalls=action, pitfalls_source=action_source)
    return CloudsimOptions(
        enabled=True, pitfalls=action, ignore=_check_ids(ids, ids_source), pitfalls_source=action_source
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: List[str]) -> None:
    # Conftest files are imported before pytest_configure: install the alias now,
    # so `import cloud` works at the top of a conftest.py too.
    try:
        enabled = _read_enabled(early_config)
    except pytest.UsageError:
        return  # pytest_configure reports it
    if enabled:
        from cloudsim.alias import install_cloud_alias

        early_config.stash[ALIAS_KEY] = _alias_installed()
        install_cloud_alias()


def _alias_installed() -> bool:
    import sys

    return any(type(f).__name__ == "CloudAliasFinder" for f in sys.meta_path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    options = read_options(config)
    config.stash[OPTIONS_KEY] = options
    if not options.enabled:
        return
    from pytest_cloudsim import fixtures
    from pytest_cloudsim.session import CloudsimSession

    config.pluginmanager.register(CloudsimSession(config, options), "cloudsim-session")
    config.pluginmanager.register(fixtures, "cloudsim-fixtures")


def pytest_report_header(config: pytest.Config) -> Optional[List[str]]:
    options = config.stash.get(OPTIONS_KEY, None)
    if options is None or not options.enabled:
        return None
    ignored = ", ".join(options.ignore) or "none"
    mode = {"error": "error (strict: a pitfall fails its test)", "warn": "warn", "ignore": "ignore"}[options.pitfalls]
    return [f"cloudsim: one simulator per test process; pitfalls: {mode}; ignored ids: {ignored}"]
