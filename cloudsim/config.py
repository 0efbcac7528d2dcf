"""cloudsim's settings: where each one comes from, how it is checked, what is in force.

``cloudsim.config`` (the ``config`` object at the bottom) re-creates PiCloud's
``cloud.config``. A setting's value comes from, lowest precedence first::

    Settings defaults                          e.g. max_concurrent_jobs = 16
      < [tool.cloudsim] in pyproject.toml      the nearest one from the working directory up
      < CLOUDSIM_<NAME> environment variables  e.g. CLOUDSIM_MAX_CONCURRENT_JOBS=4
      < cloudsim.config.<name> = value         assignment in the client
      < start_simulator(<name>=value)          overrides for one run, via Config.resolve()
      = Settings (frozen)                      what the simulator runs with

Every source goes through the same validator (``_validate``: one rule per
setting), so a bad value fails the same way wherever it came from, with a
``ConfigError`` naming the value, its source, what is allowed and how to fix it.
Sources are read lazily on every ``resolve()`` and attribute read (the
pyproject.toml parse is cached by path and mtime), so a changed environment is
seen at once. ``max_transmit_data``, PiCloud's name, is accepted wherever
``max_transmit_size`` is.

Not for: starting anything (the facade does that with the ``Settings`` that
``resolve()`` returns) or deciding what a pitfall policy means for one pitfall
(``cloudsim.pitfalls`` does; here a policy is only checked). Unlike PiCloud no
config file is written to the home directory and there is no ``commit()``:
settings take effect at the next ``start_simulator()``.
"""

from __future__ import annotations

import difflib
import getpass
import importlib
import logging
import math
import numbers
import operator
import os
import re
import sys
import tempfile
import threading
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

from cloudsim.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised only on Python < 3.11
    try:
        import tomli as _toml
    except ImportError:
        _toml = None

__all__ = [
    "ALIASES",
    "Config",
    "SETTING_NAMES",
    "Settings",
    "config",
    "default_server_root",
    "find_pyproject",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "CLOUDSIM_"
# Variables under this prefix belong to cloudsim's own machinery (e.g. passing
# state to a job's interpreter), not to users, so they are never checked.
INTERNAL_ENV_PREFIX = "CLOUDSIM__"
# Variables of cloudsim's tools (the conformance suite, the test helpers), not settings of the simulator.
TOOL_ENV_VARS = frozenset({"CLOUDSIM_CONFORMANCE_BACKEND", "CLOUDSIM_QUIRKS_MD"})
PYPROJECT_TABLE = "[tool.cloudsim]"

_ACTIONS = ("warn", "error", "ignore")
_TRUE_TEXT = frozenset({"1", "true", "yes", "on"})
_FALSE_TEXT = frozenset({"0", "false", "no", "off"})
_NONE_TEXT = frozenset({"", "none"})
# PiCloud options that have no cloudsim setting of the same name -> the closest one.
_PICLOUD_HINTS = {"num_procs": "max_concurrent_jobs", "redirect_job_output": "force_redirect_job_output"}


# --------------------------------------------------------------------------- values


class _ReadOnlyMap(Mapping):
    """A read-only, hashable, picklable dict: how a per-id ``pitfalls`` policy is stored.

    ``types.MappingProxyType`` would do for read-only, but it can neither be
    hashed (``Settings`` is) nor pickled (``Settings`` goes to the server).
    It compares equal to a dict with the same items.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping = ()) -> None:
        self._data = dict(data)  # e.g. {"default": "warn", "pass-by-value": "error"}

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple:
        return (type(self), (self._data,))


@dataclass(frozen=True)
class _Source:
    """Where a value came from; renders as the label used in messages and ``sources()``.

    Attributes:
        kind: "default", "pyproject", "env", "attribute", "override", "settings" or "other".
        name: the setting's name as the user wrote it, e.g. "max_transmit_data".
        where: the variable name (env), the file (pyproject) or a free label (other).
    """

    kind: str
    name: str
    where: str = ""

    def __str__(self) -> str:
        if self.kind == "pyproject":
            return f"pyproject.toml at {self.where} {PYPROJECT_TABLE}"
        if self.kind == "env":
            return f"environment variable {self.where}"
        if self.kind == "attribute":
            return f"cloudsim.config.{self.name}"
        if self.kind == "override":
            return f"{self.where or 'start_simulator'}({self.name}=...)"
        if self.kind == "settings":
            return f"Settings({self.name}=...)"
        if self.kind == "default":
            return "default"
        return self.where or self.kind

    def fix(self, fix_value: str) -> str:
        """Say how to replace a bad value from this source with ``fix_value``."""
        if self.kind == "env":
            return f"set {self.where} to {fix_value} or unset it."
        if self.kind == "pyproject":
            return f"change {self.name} under {PYPROJECT_TABLE} in {self.where} to {fix_value}, or remove it."
        if self.kind == "attribute":
            return (
                f"assign {fix_value} to cloudsim.config.{self.name}, "
                f"or `del cloudsim.config.{self.name}` to drop the assignment."
            )
        if self.kind == "override":
            return f"pass {fix_value} as {self.name}= to {self.where or 'start_simulator'}(), or leave it out."
        if self.kind == "settings":
            return f"pass {fix_value} as Settings({self.name}=...)."
        return f"use {fix_value}."


class _Invalid(Exception):
    """A value broke its setting's rule; ``_validate`` turns it into a ConfigError naming the source."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class _Rule:
    """How one setting is checked: what is allowed, how environment text is read, how to fix it."""

    check: Callable[[Any, _Source], Any]  # value -> normalized value; raises _Invalid
    parse: Callable[[str], Any]  # environment text -> value for check; raises _Invalid
    allowed: str  # e.g. "must be an integer from 1 to 1024"
    fix_value: str  # e.g. "a value in that range"
    fix_value_env: str = ""  # when environment text is written differently


def _suggest(word: str, candidates: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest candidate, or "" if none is close."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(word.replace("-", "_"), pool, n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a user's value, cut short so one huge value cannot flood a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return "a bool" if isinstance(value, bool) else type(value).__name__


# --------------------------------------------------------------------------- rules


_INT_TEXT = re.compile(r"[+-]?\d+(?:_\d+)*\Z")


def _int_rule(lo: Optional[int], hi: Optional[int], optional: bool = False, unit: str = "") -> _Rule:
    """An integer setting in [lo, hi] (either bound may be None); None allowed if ``optional``."""

    def check(value: Any, source: _Source) -> Optional[int]:
        if value is None and optional:
            return None
        if isinstance(value, bool):  # True is an int to Python, but not a job count
            raise _Invalid("got a bool, which is not a number here")
        try:
            number = operator.index(value)
        except TypeError:
            raise _Invalid(f"got {_type_name(value)}") from None
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise _Invalid()
        return number

    def parse(text: str) -> Any:
        stripped = text.strip()
        if optional and stripped.lower() in _NONE_TEXT:
            return None
        if not _INT_TEXT.match(stripped):
            raise _Invalid("write plain digits, e.g. 1000000 or 1_000_000")
        return int(stripped)

    if lo is not None and hi is not None:
        allowed = f"must be an integer from {lo} to {hi}"
        fix_value = "a value in that range"
    else:
        allowed = "must be an integer"
        fix_value = "an integer"
    if unit:
        allowed += f" ({unit})"
    if optional:
        allowed += " or None"
        return _Rule(check, parse, allowed, f"{fix_value} or None", f"{fix_value} or none")
    return _Rule(check, parse, allowed, fix_value)


def _seconds_rule(optional: bool, what: str) -> _Rule:
    """A positive, finite number of seconds (stored as float); None allowed if ``optional``."""

    def check(value: Any, source: _Source) -> Optional[float]:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Invalid(f"got {_type_name(value)}")
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0:
            raise _Invalid()
        return seconds

    def parse(text: str) -> Any:
        stripped = text.strip()
        if optional and stripped.lower() in _NONE_TEXT:
            return None
        try:
            return float(stripped)
        except ValueError:
            raise _Invalid("not a number") from None

    allowed = "must be a positive number of seconds"
    if optional:
        return _Rule(
            check,
            parse,
            f"{allowed}, or None for {what}",
            "a positive number of seconds or None",
            "a positive number of seconds, or none",
        )
    return _Rule(check, parse, allowed, "a positive number of seconds")


def _bool_rule() -> _Rule:
    """A true/false setting; environment text may also say 1/0, yes/no, on/off."""

    def check(value: Any, source: _Source) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(f"got {_type_name(value)}")
        return value

    def parse(text: str) -> Any:
        word = text.strip().lower()
        if word in _TRUE_TEXT:
            return True
        if word in _FALSE_TEXT:
            return False
        raise _Invalid()

    return _Rule(
        check,
        parse,
        "must be true or false (environment variables also take 1/0, yes/no, on/off)",
        "True or False",
        "true or false",
    )


_PORT_TEXT = re.compile(r"\d{1,5}\Z")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def _normalize_port(entry: str, text: str) -> int:
    if not _PORT_TEXT.match(text) or not 1 <= int(text) <= 65535:
        raise _Invalid(f"{_short(entry)} has port {_short(text)}; a port must be from 1 to 65535")
    return int(text)


def _normalize_ipv6(entry: str, text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise _Invalid(f"{_short(entry)} is not a valid IPv6 address") from None


def _normalize_hostname(entry: str, text: str) -> str:
    import ipaddress

    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if name and all(label.isdigit() for label in labels):  # looks like IPv4: must be one
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise _Invalid(f"{_short(entry)} is not a valid IPv4 address") from None
    if not name or len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise _Invalid(f"{_short(entry)} is not a valid host name")
    return name


def _normalize_host(entry: str) -> str:
    """Normalize one allow_hosts entry to "host", "host:port", "::1" or "[::1]:port"."""
    text = entry.strip()
    if not text:
        raise _Invalid("an entry is empty")
    if "://" in text or "/" in text:
        raise _Invalid(f"{_short(entry)} is a URL; give only host or host:port")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Invalid(f"{_short(entry)} has '[' without ']'")
        address = _normalize_ipv6(entry, text[1:end])
        rest = text[end + 1 :]
        if not rest:
            return address
        if not rest.startswith(":"):
            raise _Invalid(f"{_short(entry)} must be '[address]:port'")
        return f"[{address}]:{_normalize_port(entry, rest[1:])}"
    if text.count(":") > 1:  # bare IPv6: no port can follow without brackets
        return _normalize_ipv6(entry, text)
    if ":" in text:
        host, port = text.rsplit(":", 1)
        return f"{_normalize_hostname(entry, host)}:{_normalize_port(entry, port)}"
    return _normalize_hostname(entry, text)


def _hosts_rule() -> _Rule:
    """A list of "host" / "host:port" strings; a single string is read as a comma-separated list."""

    def check(value: Any, source: _Source) -> Tuple[str, ...]:
        if isinstance(value, str):
            entries: List[Any] = [part for part in value.split(",") if part.strip()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            entries = list(value)
        else:
            raise _Invalid(f"got {_type_name(value)}")
        hosts: Dict[str, None] = {}  # ordered set: the first mention wins
        for entry in entries:
            if not isinstance(entry, str):
                raise _Invalid(f"entry {_short(entry)} is {_type_name(entry)}, not a string")
            hosts[_normalize_host(entry)] = None
        return tuple(hosts)

    return _Rule(
        check,
        str,
        'must be a list of "host" or "host:port" strings (port 1 to 65535; IPv6 as "::1" or "[::1]:80")',
        'a list like ["db.example.com:5432", "[::1]:8080"]',
        "a comma-separated list like db.example.com:5432,[::1]:8080 (or empty)",
    )


def _server_root_rule() -> _Rule:
    """A directory path, made absolute: relative to pyproject.toml's directory when it came from there."""

    def check(value: Any, source: _Source) -> str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise _Invalid(f"got {_type_name(value)}")
        if not value.strip() or "\0" in value:
            raise _Invalid("it is empty" if not value.strip() else "it contains a NUL character")
        path = os.path.expanduser(value)
        if source.kind == "pyproject" and not os.path.isabs(path):
            path = os.path.join(os.path.dirname(source.where), path)
        return os.path.abspath(path)

    return _Rule(
        check,
        str,
        "must be a directory path (a relative one is taken from the working directory, "
        "or from pyproject.toml's directory when written there)",
        "a directory path",
    )


def _policy_from_text(text: str) -> Dict[str, str]:
    """Read "default=warn,pass-by-value=error" into a dict, as cloudsim.pitfalls does.

    A bare action sets the default ("error,sys-exit=warn") and a later entry wins.
    Actions and ids are checked afterwards, with those of a mapping.
    """
    policy: Dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, action = item.partition("=")
        if not sep:
            if item.strip().lower() not in _ACTIONS:
                raise _Invalid(f"{_short(item.strip())} is neither an action nor <pitfall-id>=<action>")
            key, action = "default", item
        policy[key.strip()] = action.strip()
    return policy


def _check_policy_ids(policy: Dict[str, str]) -> Union[str, Mapping[str, str]]:
    """Check a per-id policy's ids against the pitfall catalogue, if cloudsim.pitfalls is importable."""
    try:
        module = importlib.import_module("cloudsim.pitfalls")
    except ImportError:
        logger.debug("accepting any pitfall id in %r: cloudsim.pitfalls is not importable", policy)
        return policy
    ids = getattr(module, "IDS", None)
    if ids is not None:
        for key in policy:
            if key != "default" and key not in ids:
                raise _Invalid(f"unknown pitfall id {_short(key)}{_suggest(key, set(ids) | {'default'})}")
    validate_policy = getattr(module, "validate_policy", None)
    if validate_policy is not None:
        try:
            checked = validate_policy(dict(policy))
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if isinstance(checked, (str, Mapping)):
            return checked
    return policy


def _pitfalls_rule() -> _Rule:
    """'warn' / 'error' / 'ignore', or {pitfall id or 'default': action}; stored as str or read-only map."""

    def check(value: Any, source: _Source) -> Union[str, Mapping[str, str]]:
        if isinstance(value, str):
            text = value.strip()
            if "=" in text or "," in text:
                value = _policy_from_text(text)
            else:
                action = text.lower()
                if action in _ACTIONS:
                    return action
                raise _Invalid(f"{_short(value)} is not one of them{_suggest(action, _ACTIONS)}")
        if not isinstance(value, Mapping):
            raise _Invalid(f"got {_type_name(value)}")
        policy: Dict[str, str] = {}
        for key, action in value.items():
            if not isinstance(key, str) or not key.strip():
                raise _Invalid(f"a pitfall id must be a non-empty string, not {_short(key)}")
            pitfall_id = key.strip().lower()
            if pitfall_id in policy:
                raise _Invalid(f"pitfall id {_short(pitfall_id)} is given twice")
            if not isinstance(action, str) or action.strip().lower() not in _ACTIONS:
                raise _Invalid(f"the action for {pitfall_id!r} must be 'warn', 'error' or 'ignore', not {_short(action)}")
            policy[pitfall_id] = action.strip().lower()
        checked = _check_policy_ids(policy)
        return checked if isinstance(checked, str) else _ReadOnlyMap(checked)

    return _Rule(
        check,
        str,
        "must be 'warn', 'error' or 'ignore', or a table of pitfall id -> one of those "
        "(with an optional 'default')",
        "'warn', 'error', 'ignore' or a dict like {'default': 'warn', '<pitfall-id>': 'error'}",
        "warn, error, ignore or a list like default=warn,<pitfall-id>=error",
    )


# --------------------------------------------------------------------------- Settings


def default_server_root() -> str:
    """Return the default ``server_root``: a per-user directory in the system temp directory.

    Per user (uid, or the user name where there is no uid, as on Windows) so two
    users of one machine never share a flat module directory.
    """
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        owner = str(getuid())
    else:
        try:
            owner = getpass.getuser()
        except (OSError, KeyError, ImportError):  # no USERNAME/LOGNAME and no pwd database
            owner = "user"
        owner = re.sub(r"[^A-Za-z0-9_.-]", "_", owner) or "user"
    return os.path.abspath(os.path.join(tempfile.gettempdir(), f"cloudsim-{owner}"))


@dataclass(frozen=True)
class Settings:
    """The settings one simulator run uses: validated, normalized and frozen.

    Built by ``Config.resolve()``; also checks values given directly, so
    ``dataclasses.replace(s, max_concurrent_jobs=0)`` fails as loudly as any other source.
    """

    max_transmit_size: int = 1_000_000  # bytes per serialized piece (PiCloud's max_transmit_data)
    max_concurrent_jobs: int = 16
    network_timeout: Optional[float] = 30.0  # a job's default socket timeout; None: no timeout
    allow_hosts: Tuple[str, ...] = ()  # e.g. ("localhost:5432", "[::1]:8080")
    server_root: str = field(default_factory=default_server_root)
    use_simulator: bool = False
    force_redirect_job_output: bool = True
    pitfalls: Union[str, Mapping[str, str]] = "warn"  # or e.g. {"default": "warn", "pass-by-value": "error"}
    import_order_seed: Optional[int] = None
    startup_timeout: float = 30.0  # seconds to wait for the server to start

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            normalized = _validate(f.name, value, _Source("settings", f.name))
            if normalized is not value:
                object.__setattr__(self, f.name, normalized)

    def as_dict(self) -> dict:
        """Return the settings as a plain dict (lists and dicts only), e.g. for ``connection_info()``."""
        out: dict = {}
        for name in SETTING_NAMES:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


SETTING_NAMES: Tuple[str, ...] = tuple(f.name for f in fields(Settings))
ALIASES: Dict[str, str] = {"max_transmit_data": "max_transmit_size"}  # PiCloud's name -> ours

_RULES: Dict[str, _Rule] = {
    "max_transmit_size": _int_rule(1, 16_000_000, unit="bytes; PiCloud capped it at 16,000,000"),
    "max_concurrent_jobs": _int_rule(1, 1024),
    "network_timeout": _seconds_rule(optional=True, what="no timeout"),
    "allow_hosts": _hosts_rule(),
    "server_root": _server_root_rule(),
    "use_simulator": _bool_rule(),
    "force_redirect_job_output": _bool_rule(),
    "pitfalls": _pitfalls_rule(),
    "import_order_seed": _int_rule(None, None, optional=True),
    "startup_timeout": _seconds_rule(optional=False, what=""),
}
assert set(_RULES) == set(SETTING_NAMES), "every setting needs exactly one rule"


def _show(value: Any, source: _Source) -> str:
    """Render a bad value for a message: environment text as typed, anything else as repr."""
    if source.kind == "env" and isinstance(value, str) and value and not re.search(r"[\s'\"]", value):
        text = value
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _validate(name: str, value: Any, source: Union[_Source, str]) -> Any:
    """Check one setting's value from any source and return it normalized.

    Args:
        name: the setting (or its alias).
        value: the value; environment text is parsed first.
        source: where it came from (a ``_Source``, or a free label).

    Returns:
        The normalized value (e.g. a float timeout, a tuple of hosts, an absolute path).

    Raises:
        ConfigError: naming the value, its source, what is allowed and the fix.
    """
    canonical = ALIASES.get(name, name)
    rule = _RULES[canonical]
    if not isinstance(source, _Source):
        source = _Source("other", name, str(source))
    try:
        parsed = rule.parse(value) if source.kind == "env" and isinstance(value, str) else value
        return rule.check(parsed, source)
    except _Invalid as exc:
        fix_value = (rule.fix_value_env or rule.fix_value) if source.kind == "env" else rule.fix_value
        message = f"Invalid {source.name} {_show(value, source)} from {source}: {rule.allowed}"
        if exc.detail:
            message += f"; {exc.detail}"
        fix = source.fix(fix_value)
        error = ConfigError(f"{message}. Fix: {fix}", hint=fix)
        error.setting = canonical
        error.source = str(source)
        error.bad_value = value
        raise error from None


# --------------------------------------------------------------------------- pyproject.toml


def find_pyproject(start: Optional[str] = None) -> Optional[str]:
    """Return the nearest pyproject.toml from ``start`` (default: the working directory) upward, or None.

    The nearest file wins even without a [tool.cloudsim] table: it marks the project.
    """
    try:
        here = os.path.abspath(start if start is not None else os.getcwd())
    except OSError:  # the working directory was removed
        logger.debug("not looking for pyproject.toml: the working directory is gone")
        return None
    if os.path.isfile(here):
        here = os.path.dirname(here)
    while True:
        candidate = os.path.join(here, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


# path -> ((mtime_ns, size, inode), [tool.cloudsim] table),
# e.g. {"/home/u/proj/pyproject.toml": ((1718000000000000000, 812, 4711), {"max_concurrent_jobs": 4})}
_PYPROJECT_CACHE: Dict[str, Tuple[Tuple[int, int, int], dict]] = {}
_PYPROJECT_LOCK = threading.Lock()


def _parse_tool_cloudsim(text: str) -> dict:
    """Return the [tool.cloudsim] table of a pyproject.toml text ({} if absent); ValueError if malformed."""
    if _toml is None:
        return _fallback_parse_tool_cloudsim(text)
    data = _toml.loads(text)
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ValueError("'tool' is not a table")
    table = tool.get("cloudsim", {})
    if not isinstance(table, dict):
        raise ValueError("tool.cloudsim is not a table")
    return table


def _load_tool_cloudsim(path: str) -> dict:
    """Read the [tool.cloudsim] table of ``path``, cached while the file is unchanged.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 or is not valid TOML.
    """
    fix = f"Fix: correct {path} (cloudsim reads its {PYPROJECT_TABLE} table), or run from another directory."
    try:
        stat = os.stat(path)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with _PYPROJECT_LOCK:
            cached = _PYPROJECT_CACHE.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise ConfigError(f"Cannot read pyproject.toml at {path}: {exc.strerror or exc}. {fix}") from None
    try:
        table = _parse_tool_cloudsim(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read pyproject.toml at {path}: it is not UTF-8 ({exc.reason}). {fix}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"Invalid pyproject.toml at {path}: {exc}. {fix}") from None
    logger.debug("read %s from %s: %d key(s)", PYPROJECT_TABLE, path, len(table))
    with _PYPROJECT_LOCK:
        _PYPROJECT_CACHE[path] = (key, table)
    return table


_TARGET = ("tool", "cloudsim")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# A bare value ends at whitespace, except inside a date-time written with a space ("1979-05-27 07:32:00").
_SCALAR = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:[^\s,\]}#]*|[^\s,\]}#]+")
_DEC_INT = re.compile(r"[+-]?\d[\d_]*\Z")
_RADIX_INT = re.compile(r"0[xob][0-9A-Fa-f_]+\Z")
_FLOAT = re.compile(r"[+-]?(?:\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d[\d_]*)?|inf|nan)\Z")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_LINE_CONTINUATION = re.compile(r"\\[ \t]*\n[ \t\n]*")


class _FallbackParser:
    """Just enough TOML to read [tool.cloudsim] on a Python with neither tomllib nor tomli.

    It walks the whole document's structure (tables, dotted keys, strings of
    all four kinds, arrays and inline tables across lines, comments), so that
    nothing elsewhere in pyproject.toml is mistaken for our table, and it
    interprets only values under tool.cloudsim: strings, integers, floats,
    booleans, arrays and inline tables. A date is skipped elsewhere and is an
    error there.
    """

    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.pos = 0
        self.result: dict = {}  # the tool.cloudsim table being built, e.g. {"max_concurrent_jobs": 4}
        self.headers: set = set()  # table headers seen under tool.cloudsim, e.g. {("tool", "cloudsim")}

    def error(self, what: str) -> ValueError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ValueError(f"{what} (line {line})")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise self.error(f"expected {token!r}")
        self.pos += len(token)

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def skip_blank(self) -> None:
        """Skip spaces, newlines and comments."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\n":
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def end_of_line(self) -> None:
        self.skip_spaces()
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
        if self.peek() not in ("\n", ""):
            raise self.error("expected the end of the line")

    def parse(self) -> dict:
        table: Tuple[str, ...] = ()
        while True:
            self.skip_blank()
            if self.pos >= len(self.text):
                return self.result
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                table = self.parse_key()
                self.expect("]]")
                if table[:2] == _TARGET:
                    raise self.error("tool.cloudsim must be a table, not an array of tables")
            elif self.peek() == "[":
                self.pos += 1
                table = self.parse_key()
                self.skip_spaces()
                self.expect("]")
                if table[:2] == _TARGET:
                    if table in self.headers:
                        raise self.error(f"table [{'.'.join(table)}] is defined twice")
                    self.headers.add(table)
                    self.store(table[2:], None)
            else:
                self.parse_key_value(table)
            self.end_of_line()

    def parse_key_value(self, table: Tuple[str, ...]) -> None:
        key = self.parse_key()
        self.skip_spaces()
        self.expect("=")
        self.skip_spaces()
        full = table + key
        if full[:2] == _TARGET and len(full) > 2:
            self.store(full[2:], self.parse_value(interpret=True))
        elif full == _TARGET[: len(full)]:  # `tool = {cloudsim = {...}}` or `cloudsim = {...}` under [tool]
            value = self.parse_value(interpret=True)
            for part in _TARGET[len(full) :]:
                value = value.get(part, {}) if isinstance(value, dict) else value
            if not isinstance(value, dict):
                raise self.error("tool.cloudsim is not a table")
            for name, item in value.items():
                self.store((name,), item)
        else:
            self.parse_value(interpret=False)

    def store(self, path: Tuple[str, ...], value: Any) -> None:
        """Put ``value`` at ``path`` in the result; a None value only makes the (sub)table exist."""
        node = self.result
        parts = path if value is None else path[:-1]
        for part in parts:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise self.error(f"key {part!r} in {PYPROJECT_TABLE} is both a value and a table")
        if value is None:
            return
        if path[-1] in node:
            raise self.error(f"key {'.'.join(path)!r} in {PYPROJECT_TABLE} is defined twice")
        node[path[-1]] = value

    def parse_key(self) -> Tuple[str, ...]:
        parts = []
        while True:
            self.skip_spaces()
            char = self.peek()
            if char == '"':
                parts.append(self.parse_basic_string())
            elif char == "'":
                parts.append(self.parse_literal_string())
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if not match:
                    raise self.error("expected a key")
                parts.append(match.group())
                self.pos = match.end()
            self.skip_spaces()
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def parse_value(self, interpret: bool) -> Any:
        if self.text.startswith('"""', self.pos):
            return self.parse_multiline_string('"""')
        if self.text.startswith("'''", self.pos):
            return self.parse_multiline_string("'''")
        char = self.peek()
        if char == '"':
            return self.parse_basic_string()
        if char == "'":
            return self.parse_literal_string()
        if char == "[":
            return self.parse_array(interpret)
        if char == "{":
            return self.parse_inline_table(interpret)
        return self.parse_scalar(interpret)

    def parse_escape(self) -> str:
        """Read one escape sequence starting at the backslash."""
        code = self.text[self.pos + 1 : self.pos + 2]
        if code in _ESCAPES:
            self.pos += 2
            return _ESCAPES[code]
        if code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = self.text[self.pos + 2 : self.pos + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error("invalid unicode escape")
            self.pos += 2 + width
            return chr(int(digits, 16))
        raise self.error(f"invalid escape \\{code}")

    def parse_basic_string(self) -> str:
        self.pos += 1
        out = []
        while True:
            char = self.peek()
            if char in ("", "\n"):
                raise self.error("unterminated string")
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                out.append(self.parse_escape())
            else:
                out.append(char)
                self.pos += 1

    def parse_literal_string(self) -> str:
        end = self.text.find("'", self.pos + 1)
        newline = self.text.find("\n", self.pos + 1)
        if end < 0 or (0 <= newline < end):
            raise self.error("unterminated string")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def parse_multiline_string(self, quotes: str) -> str:
        self.pos += 3
        if self.peek() == "\n":  # a newline right after the opening quotes is trimmed
            self.pos += 1
        out = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated multi-line string")
            if self.text.startswith(quotes, self.pos):
                extra = 0  # up to two quotes may end the content right before the closing ones
                while extra < 2 and self.text.startswith(quotes[0], self.pos + 3 + extra):
                    extra += 1
                out.append(quotes[0] * extra)
                self.pos += 3 + extra
                return "".join(out)
            char = self.text[self.pos]
            if quotes == '"""' and char == "\\":
                match = _LINE_CONTINUATION.match(self.text, self.pos)
                if match:
                    self.pos = match.end()
                else:
                    out.append(self.parse_escape())
            else:
                out.append(char)
                self.pos += 1

    def parse_array(self, interpret: bool) -> list:
        self.pos += 1
        items = []
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.parse_value(interpret))
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise self.error("expected ',' or ']' in an array")

    def parse_inline_table(self, interpret: bool) -> dict:
        self.pos += 1
        table: dict = {}
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.pos += 1
                return table
            key = self.parse_key()
            self.skip_spaces()
            self.expect("=")
            self.skip_spaces()
            value = self.parse_value(interpret)
            node = table
            for part in key[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise self.error(f"key {part!r} is both a value and a table")
            if key[-1] in node:
                raise self.error(f"key {'.'.join(key)!r} is defined twice")
            node[key[-1]] = value
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise self.error("expected ',' or '}' in an inline table")

    def parse_scalar(self, interpret: bool) -> Any:
        match = _SCALAR.match(self.text, self.pos)
        token = match.group() if match else ""
        if not token:
            raise self.error("expected a value")
        self.pos += len(token)
        if token in ("true", "false"):
            return token == "true"
        if _DEC_INT.match(token) or _RADIX_INT.match(token):
            try:
                return int(token, 0) if _RADIX_INT.match(token) else int(token.replace("_", ""), 10)
            except ValueError:
                pass
        elif _FLOAT.match(token):
            return float(token.replace("_", ""))
        if interpret:
            raise self.error(
                f"unsupported value {token!r} (this Python has no TOML parser; `pip install tomli` reads any TOML)"
            )
        return None


def _fallback_parse_tool_cloudsim(text: str) -> dict:
    """Return the [tool.cloudsim] table of a pyproject.toml text without tomllib/tomli.

    Raises:
        ValueError: the text is malformed, naming the line.
    """
    return _FallbackParser(text).parse()


# --------------------------------------------------------------------------- Config

_Entry = Tuple[Any, _Source]  # (raw value, where it came from)
_Layer = Dict[str, List[_Entry]]  # setting -> entries; more than one means a name and its alias


class _Gathered(NamedTuple):
    """Every source but the defaults, read once for one resolution."""

    path: Optional[str]  # the pyproject.toml used, if any
    table: dict  # its [tool.cloudsim] table
    environ: Dict[str, str]  # a snapshot of os.environ
    layers: List[_Layer]  # lowest precedence first: pyproject, environment, assignments[, overrides]


def _table_layer(table: Mapping[str, Any], path: Optional[str]) -> _Layer:
    layer: _Layer = {}
    for key, value in table.items():
        name = ALIASES.get(key, key)
        if name in _RULES:
            layer.setdefault(name, []).append((value, _Source("pyproject", key, path or "")))
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX) :].lower()  # CLOUDSIM__X gives "_x", which is no setting
        name = ALIASES.get(key, key)
        if name in _RULES:
            layer.setdefault(name, []).append((text, _Source("env", key, var)))
    return layer


def _alias_note(name: str) -> str:
    aliases = [alias for alias, target in ALIASES.items() if target == name]
    return f" ({', '.join(aliases)} is PiCloud's name for {name})" if aliases else ""


def _valid_names_text() -> str:
    text = ", ".join(SETTING_NAMES)
    for alias, target in ALIASES.items():
        text += f"; {alias} is accepted as PiCloud's name for {target}"
    return text


def _check_unknown(gathered: _Gathered) -> None:
    """Raise ConfigError for [tool.cloudsim] keys and CLOUDSIM_* variables that are no setting."""
    names = set(SETTING_NAMES) | set(ALIASES)
    unknown_keys = [key for key in gathered.table if key not in names]
    if unknown_keys:
        listed = ", ".join(f"{key!r}{_suggest(key, names)}" for key in unknown_keys)
        raise ConfigError(
            f"Unknown key(s) {listed} in {PYPROJECT_TABLE} of {gathered.path}. "
            f"Valid keys: {_valid_names_text()}. Fix: rename or remove them."
        )
    variables = {ENV_PREFIX + name.upper() for name in names}
    unknown_vars = sorted(
        var
        for var in gathered.environ
        if var.startswith(ENV_PREFIX) and not var.startswith(INTERNAL_ENV_PREFIX) and var not in variables
        and var not in TOOL_ENV_VARS
    )
    if unknown_vars:
        listed = ", ".join(f"{var}{_suggest(var, variables)}" for var in unknown_vars)
        raise ConfigError(
            f"Unknown environment variable(s) {listed}: cloudsim reads CLOUDSIM_<SETTING> for the settings "
            f"{_valid_names_text()}. Fix: rename or unset them."
        )


def _unknown_setting_message(name: str, where: str) -> str:
    hint = ""
    if name in _PICLOUD_HINTS:
        hint = f" ({name} is a PiCloud option; the closest cloudsim setting is {_PICLOUD_HINTS[name]!r})"
    else:
        hint = _suggest(name, set(SETTING_NAMES) | set(ALIASES))
    return f"{where} has no setting {name!r}{hint}. Settings: {_valid_names_text()}."


def _default_value(name: str) -> Any:
    for f in fields(Settings):
        if f.name == name:
            return f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
    raise KeyError(name)


class Config:
    """``cloudsim.config``: settings from defaults < [tool.cloudsim] in pyproject.toml < CLOUDSIM_* env vars
    < attribute assignment < overrides passed to ``resolve()``.

    Reading an attribute gives the value in force now (environment and
    pyproject.toml are read each time); assigning one checks it at once; ``del``
    forgets an assignment. Thread-safe.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_lock", threading.RLock())
        # setting -> (normalized value, source), e.g. {"max_concurrent_jobs": (4, _Source("attribute", ...))}
        object.__setattr__(self, "_assigned", {})

    # ----------------------------------------------------------------- gathering

    def _gather(self, overrides: Optional[_Layer] = None) -> _Gathered:
        path = find_pyproject()
        table = _load_tool_cloudsim(path) if path else {}
        environ = dict(os.environ)
        with self._lock:
            assigned: _Layer = {name: [entry] for name, entry in self._assigned.items()}
        layers = [_table_layer(table, path), _env_layer(environ), assigned]
        if overrides:
            layers.append(overrides)
        return _Gathered(path, table, environ, layers)

    @staticmethod
    def _pick(name: str, gathered: _Gathered) -> _Entry:
        """Return the raw value of ``name`` from the highest source that sets it, or the default."""
        for layer in reversed(gathered.layers):
            entries = layer.get(name)
            if not entries:
                continue
            if len(entries) > 1:
                labels = " and ".join(str(source) for _, source in entries)
                raise ConfigError(f"{labels} both set {name}{_alias_note(name)}. Fix: keep only one of them.")
            return entries[0]
        return _default_value(name), _Source("default", name)

    @classmethod
    def _effective(cls, name: str, gathered: _Gathered) -> Tuple[Any, _Source]:
        value, source = cls._pick(name, gathered)
        if source.kind in ("default", "attribute"):  # checked already
            return value, source
        return _validate(name, value, source), source

    # ----------------------------------------------------------------- public

    def resolve(self, caller: str = "start_simulator", /, **overrides: Any) -> Settings:
        """Return the settings in force, with ``overrides`` (from ``caller``, e.g. ``start_dask``) on top.

        Raises:
            TypeError: an override is no setting (or a setting is given under both its names).
            ConfigError: a value, a [tool.cloudsim] key, a CLOUDSIM_* variable or pyproject.toml is bad.
        """
        layer: _Layer = {}
        unknown = [key for key in overrides if ALIASES.get(key, key) not in _RULES]
        if unknown:
            listed = ", ".join(f"{key!r}{_suggest(key, set(SETTING_NAMES) | set(ALIASES))}" for key in unknown)
            raise TypeError(f"{caller}() got unknown setting(s) {listed}. Valid settings: {_valid_names_text()}.")
        for key, value in overrides.items():
            name = ALIASES.get(key, key)
            if name in layer:
                raise TypeError(f"{caller}() got {name} twice{_alias_note(name)}; pass only one of them.")
            layer[name] = [(value, _Source("override", key, caller))]
        gathered = self._gather(layer)
        _check_unknown(gathered)
        values: Dict[str, Any] = {}
        origins: List[str] = []
        for name in SETTING_NAMES:
            values[name], source = self._effective(name, gathered)
            if source.kind != "default":
                origins.append(f"{name}={values[name]!r} from {source}")
        settings = Settings(**values)
        logger.debug("settings resolved: %s", "; ".join(origins) or "all defaults")
        return settings

    def sources(self) -> Dict[str, str]:
        """Return setting -> where its value comes from, e.g. {"max_concurrent_jobs": "environment variable
        CLOUDSIM_MAX_CONCURRENT_JOBS", "use_simulator": "default", ...}. Values are not checked here."""
        gathered = self._gather()
        return {name: str(self._pick(name, gathered)[1]) for name in SETTING_NAMES}

    def reset(self) -> None:
        """Forget every assignment, so values come from pyproject.toml, the environment and defaults again."""
        with self._lock:
            self._assigned.clear()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # internals, and copy/pickle probing: never settings
            raise AttributeError(name)
        canonical = ALIASES.get(name, name)
        if canonical not in _RULES:
            raise AttributeError(_unknown_setting_message(name, "cloudsim.config"))
        # Only this setting is checked: an unrelated bad value or stray variable is reported by resolve().
        return self._effective(canonical, self._gather())[0]

    def __setattr__(self, name: str, value: Any) -> None:
        canonical = ALIASES.get(name, name)
        if canonical not in _RULES:
            raise AttributeError(_unknown_setting_message(name, "cloudsim.config"))
        source = _Source("attribute", name)
        normalized = _validate(canonical, value, source)
        with self._lock:
            self._assigned[canonical] = (normalized, source)
        logger.debug("cloudsim.config.%s = %r", name, normalized)

    def __delattr__(self, name: str) -> None:
        canonical = ALIASES.get(name, name)
        if canonical not in _RULES:
            raise AttributeError(_unknown_setting_message(name, "cloudsim.config"))
        with self._lock:  # forgetting an absent assignment is fine: the setting still has a value
            self._assigned.pop(canonical, None)

    def __dir__(self) -> List[str]:
        return sorted(set(super().__dir__()) | set(SETTING_NAMES))

    def __repr__(self) -> str:
        try:
            gathered = self._gather()
        except ConfigError as exc:
            return f"<cloudsim.config: {exc}>"
        parts = []
        for name in SETTING_NAMES:
            try:
                parts.append(f"{name}={self._effective(name, gathered)[0]!r}")
            except ConfigError:
                parts.append(f"{name}=<invalid>")
        return f"<cloudsim.config {', '.join(parts)}>"

    def __reduce__(self) -> Any:
        # The module's singleton travels by reference (a job that captured it gets its own);
        # another instance carries its assignments.
        if self is config:
            return "config"
        with self._lock:
            return (_rebuild_config, (dict(self._assigned),))


def _rebuild_config(assigned: Dict[str, _Entry]) -> Config:
    rebuilt = Config()
    rebuilt._assigned.update(assigned)
    return rebuilt


config = Config()
