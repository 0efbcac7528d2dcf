"""Unit tests of cloudsim.config: defaults, every source and its precedence, validation, messages.

Each test runs in its own empty project directory (a pyproject.toml without a
[tool.cloudsim] table, so no file above it is read) with every CLOUDSIM_*
variable removed, and with a fresh ``Config``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import pathlib
import pickle
import sys
import tempfile
import types

import pytest

from cloudsim.config import ALIASES, SETTING_NAMES, Config, Settings, config, default_server_root, find_pyproject
from cloudsim.errors import CloudException, ConfigError

# `cloudsim.config` may be the Config object on the package; the module is in sys.modules.
cfgmod = importlib.import_module("cloudsim.config")

DEFAULTS = {
    "max_transmit_size": 1_000_000,
    "max_concurrent_jobs": 16,
    "network_timeout": 30.0,
    "allow_hosts": (),
    "use_simulator": False,
    "force_redirect_job_output": True,
    "pitfalls": "warn",
    "import_order_seed": None,
    "startup_timeout": 30.0,
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """An empty project as the working directory and no CLOUDSIM_* variables."""
    for var in list(os.environ):
        if var.startswith("CLOUDSIM_") and not var.startswith("CLOUDSIM__"):
            monkeypatch.delenv(var)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "example"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cfg():
    return Config()


@pytest.fixture
def no_pitfalls_module(monkeypatch):
    """Make `import cloudsim.pitfalls` fail, so any pitfall id is accepted."""
    monkeypatch.setitem(sys.modules, "cloudsim.pitfalls", None)


@pytest.fixture
def fake_pitfalls(monkeypatch):
    """A stand-in cloudsim.pitfalls with two ids and a validate_policy that refuses ignoring transmit-size."""
    module = types.ModuleType("cloudsim.pitfalls")
    module.IDS = frozenset({"pass-by-value", "transmit-size"})
    module.calls = []

    def validate_policy(value):
        module.calls.append(value)
        if isinstance(value, dict) and value.get("transmit-size") == "ignore":
            raise ValueError("transmit-size cannot be ignored: the cloud refuses the job anyway")
        return value

    module.validate_policy = validate_policy
    monkeypatch.setitem(sys.modules, "cloudsim.pitfalls", module)
    return module


def write_pyproject(directory: pathlib.Path, body: str) -> pathlib.Path:
    path = directory / "pyproject.toml"
    path.write_text('[project]\nname = "example"\n\n[tool.cloudsim]\n' + body)
    return path


def error_of(func, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        func(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- defaults and Settings


def test_defaults(cfg):
    settings = cfg.resolve()
    for name, value in DEFAULTS.items():
        assert getattr(settings, name) == value, name
        assert getattr(cfg, name) == value, name
    assert settings.server_root == default_server_root()
    assert settings == Settings()
    assert set(cfg.sources().values()) == {"default"}


def test_setting_names_and_alias():
    assert SETTING_NAMES == (
        "max_transmit_size",
        "max_concurrent_jobs",
        "network_timeout",
        "allow_hosts",
        "server_root",
        "use_simulator",
        "force_redirect_job_output",
        "pitfalls",
        "import_order_seed",
        "startup_timeout",
    )
    assert ALIASES == {"max_transmit_data": "max_transmit_size"}


def test_default_server_root_is_per_user_in_temp():
    root = default_server_root()
    assert os.path.isabs(root)
    assert os.path.dirname(root) == os.path.abspath(tempfile.gettempdir())
    if hasattr(os, "getuid"):
        assert os.path.basename(root) == f"cloudsim-{os.getuid()}"


def test_default_server_root_without_getuid_uses_a_safe_user_name(monkeypatch):
    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setattr(cfgmod.getpass, "getuser", lambda: "CORP\\bob smith")
    assert os.path.basename(default_server_root()) == "cloudsim-CORP_bob_smith"


def test_default_server_root_without_any_user_name(monkeypatch):
    def no_user():
        raise OSError("No username set in the environment")

    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setattr(cfgmod.getpass, "getuser", no_user)
    assert os.path.basename(default_server_root()) == "cloudsim-user"


def test_settings_are_frozen_hashable_and_picklable(fake_pitfalls):
    settings = Settings(pitfalls={"default": "warn", "pass-by-value": "error"}, allow_hosts=["db:5432"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_concurrent_jobs = 3
    with pytest.raises(TypeError):
        settings.pitfalls["default"] = "error"
    assert settings.allow_hosts == ("db:5432",)
    assert settings.pitfalls == {"default": "warn", "pass-by-value": "error"}
    assert hash(settings) == hash(Settings(pitfalls={"pass-by-value": "error", "default": "warn"}, allow_hosts=["db:5432"]))
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings
    assert copy.pitfalls == {"default": "warn", "pass-by-value": "error"}


def test_settings_check_their_values():
    message = error_of(Settings, max_concurrent_jobs=0)
    assert "Settings(max_concurrent_jobs=...)" in message
    with pytest.raises(ConfigError):
        dataclasses.replace(Settings(), network_timeout=-1)
    assert Settings(network_timeout=5).network_timeout == 5.0
    assert isinstance(Settings(network_timeout=5).network_timeout, float)


def test_as_dict_is_plain(fake_pitfalls):
    settings = Settings(allow_hosts=("a", "b:1"), pitfalls={"pass-by-value": "error"})
    data = settings.as_dict()
    assert list(data) == list(SETTING_NAMES)
    assert data["allow_hosts"] == ["a", "b:1"] and type(data["allow_hosts"]) is list
    assert data["pitfalls"] == {"pass-by-value": "error"} and type(data["pitfalls"]) is dict
    assert data["max_transmit_size"] == 1_000_000
    data["pitfalls"]["x"] = "warn"  # a copy: the Settings are unchanged
    assert "x" not in settings.pitfalls


def test_config_error_is_a_value_error_and_cloud_exception(cfg):
    with pytest.raises(ValueError):
        cfg.max_concurrent_jobs = 0
    with pytest.raises(CloudException):
        cfg.max_concurrent_jobs = 0


# --------------------------------------------------------------------------- sources and precedence


def test_pyproject_source(cfg, isolated):
    path = write_pyproject(isolated, "max_concurrent_jobs = 4\nallow_hosts = ['db:5432']\nuse_simulator = true\n")
    settings = cfg.resolve()
    assert settings.max_concurrent_jobs == 4
    assert settings.allow_hosts == ("db:5432",)
    assert settings.use_simulator is True
    assert cfg.max_concurrent_jobs == 4
    assert cfg.sources()["max_concurrent_jobs"] == f"pyproject.toml at {path} [tool.cloudsim]"
    assert cfg.sources()["network_timeout"] == "default"


def test_pyproject_found_from_a_subdirectory(cfg, isolated, monkeypatch):
    path = write_pyproject(isolated, "max_concurrent_jobs = 5\n")
    sub = isolated / "src" / "pkg"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert find_pyproject() == str(path)
    assert cfg.max_concurrent_jobs == 5


def test_nearest_pyproject_wins_even_without_table(cfg, isolated, monkeypatch):
    write_pyproject(isolated, "max_concurrent_jobs = 5\n")
    inner = isolated / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[project]\nname = 'inner'\n")
    monkeypatch.chdir(inner)
    assert find_pyproject() == str(inner / "pyproject.toml")
    assert cfg.max_concurrent_jobs == 16


def test_find_pyproject_from_a_start_directory_or_file(isolated):
    deep = isolated / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "f.py").write_text("")
    expected = str(isolated / "pyproject.toml")
    assert find_pyproject(str(deep)) == expected
    assert find_pyproject(str(deep / "f.py")) == expected


def test_find_pyproject_none_when_no_file_above(tmp_path, monkeypatch):
    if any((parent / "pyproject.toml").is_file() for parent in tmp_path.parents):
        pytest.skip("a pyproject.toml exists above the temporary directory")
    (tmp_path / "pyproject.toml").unlink()
    (tmp_path / "empty").mkdir()
    assert find_pyproject(str(tmp_path / "empty")) is None
    monkeypatch.chdir(tmp_path / "empty")
    assert Config().resolve() == Settings()


def test_pyproject_relative_server_root_is_relative_to_the_file(cfg, isolated, monkeypatch):
    write_pyproject(isolated, "server_root = 'build/cloud'\n")
    sub = isolated / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert cfg.resolve().server_root == str(isolated / "build" / "cloud")


def test_environment_source_is_read_lazily(cfg, monkeypatch):
    assert cfg.max_concurrent_jobs == 16
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "7")
    assert cfg.max_concurrent_jobs == 7
    assert cfg.resolve().max_concurrent_jobs == 7
    assert cfg.sources()["max_concurrent_jobs"] == "environment variable CLOUDSIM_MAX_CONCURRENT_JOBS"


def test_attribute_source(cfg):
    cfg.max_concurrent_jobs = 3
    assert cfg.max_concurrent_jobs == 3
    assert cfg.resolve().max_concurrent_jobs == 3
    assert cfg.sources()["max_concurrent_jobs"] == "cloudsim.config.max_concurrent_jobs"
    assert Config().max_concurrent_jobs == 16  # assignments belong to one Config


@pytest.mark.parametrize(
    "layers, expected",
    [
        ({"pyproject", "env", "attribute", "override"}, 5),
        ({"pyproject", "env", "attribute"}, 4),
        ({"pyproject", "env"}, 3),
        ({"pyproject"}, 2),
        ({"env", "override"}, 5),
        ({"pyproject", "attribute"}, 4),
        (set(), 16),
    ],
)
def test_precedence(cfg, isolated, monkeypatch, layers, expected):
    if "pyproject" in layers:
        write_pyproject(isolated, "max_concurrent_jobs = 2\n")
    if "env" in layers:
        monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "3")
    if "attribute" in layers:
        cfg.max_concurrent_jobs = 4
    overrides = {"max_concurrent_jobs": 5} if "override" in layers else {}
    assert cfg.resolve(**overrides).max_concurrent_jobs == expected


def test_sources_names_each_kind(cfg, isolated, monkeypatch):
    path = write_pyproject(isolated, "max_concurrent_jobs = 2\n")
    monkeypatch.setenv("CLOUDSIM_NETWORK_TIMEOUT", "4")
    cfg.use_simulator = True
    sources = cfg.sources()
    assert list(sources) == list(SETTING_NAMES)
    assert sources["max_concurrent_jobs"] == f"pyproject.toml at {path} [tool.cloudsim]"
    assert sources["network_timeout"] == "environment variable CLOUDSIM_NETWORK_TIMEOUT"
    assert sources["use_simulator"] == "cloudsim.config.use_simulator"
    assert sources["startup_timeout"] == "default"


# --------------------------------------------------------------------------- the alias


def test_alias_in_pyproject(cfg, isolated):
    path = write_pyproject(isolated, "max_transmit_data = 2_000_000\n")
    assert cfg.resolve().max_transmit_size == 2_000_000
    assert cfg.sources()["max_transmit_size"] == f"pyproject.toml at {path} [tool.cloudsim]"


def test_alias_in_environment(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_MAX_TRANSMIT_DATA", "3_000_000")
    assert cfg.resolve().max_transmit_size == 3_000_000
    assert cfg.max_transmit_data == 3_000_000
    assert cfg.sources()["max_transmit_size"] == "environment variable CLOUDSIM_MAX_TRANSMIT_DATA"


def test_alias_as_attribute(cfg):
    cfg.max_transmit_data = 4_000_000
    assert cfg.max_transmit_size == 4_000_000
    assert cfg.sources()["max_transmit_size"] == "cloudsim.config.max_transmit_data"
    del cfg.max_transmit_data
    assert cfg.max_transmit_size == 1_000_000


def test_alias_as_override(cfg):
    assert cfg.resolve(max_transmit_data=5_000_000).max_transmit_size == 5_000_000


def test_errors_name_the_start_function_that_was_called(cfg):
    """Settings passed to start_dask() are reported as start_dask's, not start_simulator's."""
    with pytest.raises(TypeError, match=r"^start_dask\(\) got unknown setting\(s\) 'bogus'"):
        cfg.resolve("start_dask", bogus=1)
    message = error_of(cfg.resolve, "start_dask", max_concurrent_jobs=0)
    assert "from start_dask(max_concurrent_jobs=...)" in message
    assert "as max_concurrent_jobs= to start_dask()" in message
    assert "from start_simulator(max_concurrent_jobs=...)" in error_of(cfg.resolve, max_concurrent_jobs=0)


def test_alias_names_itself_in_errors(cfg, monkeypatch):
    message = error_of(setattr, cfg, "max_transmit_data", 16_000_001)
    assert message.startswith("Invalid max_transmit_data 16000001 from cloudsim.config.max_transmit_data:")
    monkeypatch.setenv("CLOUDSIM_MAX_TRANSMIT_DATA", "20000000")
    assert "Invalid max_transmit_data 20000000 from environment variable CLOUDSIM_MAX_TRANSMIT_DATA" in error_of(
        cfg.resolve
    )


def test_alias_and_name_together_are_refused(cfg, isolated, monkeypatch):
    with pytest.raises(TypeError, match="max_transmit_size twice"):
        cfg.resolve(max_transmit_size=1, max_transmit_data=2)
    monkeypatch.setenv("CLOUDSIM_MAX_TRANSMIT_DATA", "2")
    monkeypatch.setenv("CLOUDSIM_MAX_TRANSMIT_SIZE", "3")
    message = error_of(cfg.resolve)
    assert "CLOUDSIM_MAX_TRANSMIT_DATA" in message and "CLOUDSIM_MAX_TRANSMIT_SIZE" in message
    assert "keep only one" in message
    monkeypatch.delenv("CLOUDSIM_MAX_TRANSMIT_DATA")
    monkeypatch.delenv("CLOUDSIM_MAX_TRANSMIT_SIZE")
    write_pyproject(isolated, "max_transmit_data = 2\nmax_transmit_size = 3\n")
    message = error_of(cfg.resolve)
    assert "both set max_transmit_size (max_transmit_data is PiCloud's name for max_transmit_size)" in message


# --------------------------------------------------------------------------- validation rules


def test_the_documented_message(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "0")
    assert error_of(cfg.resolve) == (
        "Invalid max_concurrent_jobs 0 from environment variable CLOUDSIM_MAX_CONCURRENT_JOBS: "
        "must be an integer from 1 to 1024. Fix: set CLOUDSIM_MAX_CONCURRENT_JOBS to a value in that "
        "range or unset it."
    )


BAD_VALUES = [
    ("max_transmit_size", 16_000_001, "from 1 to 16000000"),
    ("max_transmit_size", 0, "from 1 to 16000000"),
    ("max_transmit_size", True, "got a bool"),
    ("max_transmit_size", 1e6, "got float"),
    ("max_transmit_size", "1000", "got str"),
    ("max_concurrent_jobs", 0, "from 1 to 1024"),
    ("max_concurrent_jobs", 1025, "from 1 to 1024"),
    ("max_concurrent_jobs", False, "got a bool"),
    ("max_concurrent_jobs", None, "got NoneType"),
    ("network_timeout", 0, "positive number of seconds"),
    ("network_timeout", -1.5, "positive number of seconds"),
    ("network_timeout", math.nan, "positive number of seconds"),
    ("network_timeout", math.inf, "positive number of seconds"),
    ("network_timeout", True, "got a bool"),
    ("network_timeout", "3", "got str"),
    ("startup_timeout", None, "got NoneType"),
    ("startup_timeout", 0, "positive number of seconds"),
    ("allow_hosts", ["db:0"], "port '0'"),
    ("allow_hosts", ["db:65536"], "port '65536'"),
    ("allow_hosts", ["db:http"], "port 'http'"),
    ("allow_hosts", ["bad host"], "not a valid host name"),
    ("allow_hosts", ["-bad.example.com"], "not a valid host name"),
    ("allow_hosts", ["a" * 64 + ".com"], "not a valid host name"),
    ("allow_hosts", ["1.2.3.999"], "not a valid IPv4 address"),
    ("allow_hosts", ["http://db:80"], "is a URL"),
    ("allow_hosts", ["[::1"], "without ']'"),
    ("allow_hosts", ["[::zz]:80"], "not a valid IPv6 address"),
    ("allow_hosts", ["[::1]80"], "must be '[address]:port'"),
    ("allow_hosts", ["ok", 3], "entry 3 is int"),
    ("allow_hosts", ["ok", ""], "an entry is empty"),
    ("allow_hosts", 80, "got int"),
    ("server_root", "", "it is empty"),
    ("server_root", "   ", "it is empty"),
    ("server_root", 3, "got int"),
    ("server_root", b"/tmp/x", "got bytes"),
    ("use_simulator", 1, "got int"),
    ("use_simulator", "yes", "got str"),
    ("force_redirect_job_output", None, "got NoneType"),
    ("pitfalls", "loud", "'loud' is not one of them"),
    ("pitfalls", "warning", "did you mean 'warn'"),
    ("pitfalls", 1, "got int"),
    ("pitfalls", {"default": "loud"}, "the action for 'default'"),
    ("pitfalls", {3: "warn"}, "must be a non-empty string"),
    ("pitfalls", {"a": "warn", " A ": "error"}, "given twice"),
    ("pitfalls", "default=warn,oops", "'oops' is neither an action nor <pitfall-id>=<action>"),
    ("pitfalls", "default=loud", "the action for 'default'"),
    ("import_order_seed", True, "got a bool"),
    ("import_order_seed", 1.0, "got float"),
    ("import_order_seed", "7", "got str"),
]


@pytest.mark.parametrize("name, value, detail", BAD_VALUES)
def test_bad_values_are_refused_naming_the_attribute(cfg, no_pitfalls_module, name, value, detail):
    message = error_of(setattr, cfg, name, value)
    assert message.startswith(f"Invalid {name} ")
    assert f"from cloudsim.config.{name}: " in message
    assert detail in message
    assert f"Fix: assign " in message and f"del cloudsim.config.{name}" in message
    assert name not in cfg._assigned  # nothing was stored


@pytest.mark.parametrize("name, value, detail", BAD_VALUES)
def test_bad_values_are_refused_as_overrides(cfg, no_pitfalls_module, name, value, detail):
    message = error_of(cfg.resolve, **{name: value})
    assert f"from start_simulator({name}=...): " in message
    assert detail in message
    assert f"as {name}= to start_simulator(), or leave it out" in message


def test_error_carries_setting_and_source(cfg):
    with pytest.raises(ConfigError) as info:
        cfg.network_timeout = -1
    assert info.value.setting == "network_timeout"
    assert info.value.source == "cloudsim.config.network_timeout"
    assert info.value.bad_value == -1
    assert "positive number" in info.value.hint


def test_bad_value_in_pyproject_names_the_file_and_fix(cfg, isolated):
    path = write_pyproject(isolated, "max_concurrent_jobs = 0\n")
    message = error_of(cfg.resolve)
    assert message.startswith(
        f"Invalid max_concurrent_jobs 0 from pyproject.toml at {path} [tool.cloudsim]: must be an integer"
    )
    assert f"Fix: change max_concurrent_jobs under [tool.cloudsim] in {path}" in message
    assert "or remove it" in message
    assert "Invalid max_concurrent_jobs 0" in error_of(getattr, cfg, "max_concurrent_jobs")


def test_a_bad_pyproject_value_does_not_block_other_settings(cfg, isolated):
    write_pyproject(isolated, "max_concurrent_jobs = 0\n")
    assert cfg.use_simulator is False


def test_the_highest_source_alone_is_checked(cfg, isolated, monkeypatch):
    write_pyproject(isolated, "max_concurrent_jobs = 0\n")
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "8")
    assert cfg.resolve().max_concurrent_jobs == 8


GOOD_VALUES = [
    ("max_transmit_size", 16_000_000, 16_000_000),
    ("max_transmit_size", 1, 1),
    ("max_concurrent_jobs", 1024, 1024),
    ("network_timeout", None, None),
    ("network_timeout", 2, 2.0),
    ("network_timeout", 0.25, 0.25),
    ("startup_timeout", 60, 60.0),
    ("allow_hosts", (), ()),
    ("allow_hosts", "db:5432, cache", ("db:5432", "cache")),
    (
        "allow_hosts",
        ["LocalHost", "db:5432", "[::1]:80", "::1", "[0:0::1]", "127.0.0.1:8080", "db:5432", "example.com."],
        ("localhost", "db:5432", "[::1]:80", "::1", "127.0.0.1:8080", "example.com"),
    ),
    ("allow_hosts", ["[FE80::1]:65535", "host_1:1"], ("[fe80::1]:65535", "host_1:1")),
    ("use_simulator", True, True),
    ("force_redirect_job_output", False, False),
    ("pitfalls", "ERROR ", "error"),
    ("pitfalls", "ignore", "ignore"),
    ("import_order_seed", 7, 7),
    ("import_order_seed", -3, -3),
    ("import_order_seed", None, None),
]


@pytest.mark.parametrize("name, value, expected", GOOD_VALUES)
def test_good_values_are_normalized(cfg, name, value, expected):
    setattr(cfg, name, value)
    assert getattr(cfg, name) == expected
    assert type(getattr(cfg, name)) is type(expected)
    assert getattr(cfg.resolve(), name) == expected


def test_server_root_is_made_absolute(cfg, isolated):
    cfg.server_root = "rel/dir"
    assert cfg.server_root == str(isolated / "rel" / "dir")
    cfg.server_root = pathlib.Path("p")
    assert cfg.server_root == str(isolated / "p")
    cfg.server_root = "~/cloud"
    assert cfg.server_root == os.path.join(os.path.expanduser("~"), "cloud")


ENV_GOOD = [
    ("MAX_TRANSMIT_SIZE", "1_000", 1000),
    ("MAX_TRANSMIT_SIZE", " 2000 ", 2000),
    ("MAX_CONCURRENT_JOBS", "+8", 8),
    ("NETWORK_TIMEOUT", "2.5", 2.5),
    ("NETWORK_TIMEOUT", "3", 3.0),
    ("NETWORK_TIMEOUT", "none", None),
    ("NETWORK_TIMEOUT", "None", None),
    ("NETWORK_TIMEOUT", "", None),
    ("STARTUP_TIMEOUT", "1e1", 10.0),
    ("ALLOW_HOSTS", "a:1, b ,,[::1]:2", ("a:1", "b", "[::1]:2")),
    ("ALLOW_HOSTS", "", ()),
    ("SERVER_ROOT", "/srv/cloud", os.path.abspath("/srv/cloud")),
    ("PITFALLS", "error", "error"),
    ("IMPORT_ORDER_SEED", "none", None),
    ("IMPORT_ORDER_SEED", "", None),
    ("IMPORT_ORDER_SEED", "-3", -3),
] + [
    (name, text, value)
    for name in ("USE_SIMULATOR", "FORCE_REDIRECT_JOB_OUTPUT")
    for text, value in [
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        ("Yes", True),
        ("no", False),
        ("on", True),
        (" OFF ", False),
    ]
]


@pytest.mark.parametrize("var, text, expected", ENV_GOOD)
def test_environment_text_is_parsed(cfg, monkeypatch, var, text, expected):
    monkeypatch.setenv("CLOUDSIM_" + var, text)
    value = getattr(cfg.resolve(), var.lower())
    assert value == expected
    assert type(value) is type(expected)


ENV_BAD = [
    ("MAX_TRANSMIT_SIZE", "1e6", "write plain digits"),
    ("MAX_TRANSMIT_SIZE", "1.0", "write plain digits"),
    ("MAX_TRANSMIT_SIZE", "", "''"),
    ("MAX_TRANSMIT_SIZE", "16000001", "from 1 to 16000000"),
    ("MAX_CONCURRENT_JOBS", "true", "write plain digits"),
    ("MAX_CONCURRENT_JOBS", "none", "write plain digits"),
    ("NETWORK_TIMEOUT", "soon", "not a number"),
    ("NETWORK_TIMEOUT", "-1", "positive number"),
    ("NETWORK_TIMEOUT", "inf", "positive number"),
    ("STARTUP_TIMEOUT", "", "not a number"),
    ("STARTUP_TIMEOUT", "none", "not a number"),
    ("USE_SIMULATOR", "maybe", "must be true or false"),
    ("USE_SIMULATOR", "", "must be true or false"),
    ("ALLOW_HOSTS", "db:99999", "port '99999'"),
    ("SERVER_ROOT", "", "it is empty"),
    ("PITFALLS", "", "is not one of them"),
    ("PITFALLS", "strict", "is not one of them"),
    ("IMPORT_ORDER_SEED", "seven", "write plain digits"),
]


@pytest.mark.parametrize("var, text, detail", ENV_BAD)
def test_bad_environment_text_names_the_variable(cfg, monkeypatch, var, text, detail):
    monkeypatch.setenv("CLOUDSIM_" + var, text)
    message = error_of(cfg.resolve)
    assert message.startswith(f"Invalid {var.lower()} ")
    assert f"from environment variable CLOUDSIM_{var}: " in message
    assert detail in message
    assert f"Fix: set CLOUDSIM_{var} to " in message and message.endswith("or unset it.")
    assert detail in error_of(getattr, cfg, var.lower())


def test_environment_hosts_fix_shows_the_comma_form(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_ALLOW_HOSTS", "db:0")
    assert "a comma-separated list like db.example.com:5432,[::1]:8080" in error_of(cfg.resolve)


def test_long_values_are_shortened_in_messages(cfg):
    message = error_of(setattr, cfg, "pitfalls", "x" * 500)
    assert "x" * 70 in message and "x" * 100 not in message
    assert "..." in message


# --------------------------------------------------------------------------- pitfalls policies


def test_pitfalls_mapping_without_catalogue_accepts_any_id(cfg, no_pitfalls_module):
    cfg.pitfalls = {"Default": "WARN", "anything-at-all": "error"}
    assert cfg.pitfalls == {"default": "warn", "anything-at-all": "error"}
    with pytest.raises(TypeError):
        cfg.pitfalls["default"] = "ignore"


def test_pitfalls_from_environment_as_a_list(cfg, no_pitfalls_module, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_PITFALLS", "default=warn, pass-by-value = error,")
    assert cfg.resolve().pitfalls == {"default": "warn", "pass-by-value": "error"}
    monkeypatch.setenv("CLOUDSIM_PITFALLS", "a=warn,a=error")  # as cloudsim.pitfalls: the later entry wins
    assert cfg.resolve().pitfalls == {"a": "error"}
    monkeypatch.setenv("CLOUDSIM_PITFALLS", "ERROR,sys-exit=warn")  # a bare action sets the default
    assert cfg.resolve().pitfalls == {"default": "error", "sys-exit": "warn"}
    monkeypatch.setenv("CLOUDSIM_PITFALLS", "ignore,")
    assert cfg.resolve().pitfalls == {"default": "ignore"}


def test_pitfalls_from_pyproject_table(cfg, fake_pitfalls, isolated):
    write_pyproject(isolated, "[tool.cloudsim.pitfalls]\ndefault = 'ignore'\npass-by-value = 'error'\n")
    assert cfg.resolve().pitfalls == {"default": "ignore", "pass-by-value": "error"}


def test_pitfalls_ids_are_checked_against_the_catalogue(cfg, fake_pitfalls):
    message = error_of(setattr, cfg, "pitfalls", {"pass-by-valu": "error"})
    assert "unknown pitfall id 'pass-by-valu' (did you mean 'pass-by-value'?)" in message
    cfg.pitfalls = {"pass-by-value": "error", "default": "ignore"}
    assert fake_pitfalls.calls[-1] == {"pass-by-value": "error", "default": "ignore"}


def test_pitfalls_validate_policy_errors_become_config_errors(cfg, fake_pitfalls, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_PITFALLS", "transmit-size=ignore")
    message = error_of(cfg.resolve)
    assert "from environment variable CLOUDSIM_PITFALLS" in message
    assert "transmit-size cannot be ignored" in message


def test_pitfalls_strings_do_not_need_the_catalogue(cfg, fake_pitfalls):
    cfg.pitfalls = "error"
    assert cfg.pitfalls == "error"
    assert fake_pitfalls.calls == []


# --------------------------------------------------------------------------- overrides, reset, attributes


def test_overrides_apply_to_one_resolution(cfg):
    settings = cfg.resolve(max_concurrent_jobs=2, network_timeout=None, allow_hosts=["db:1"])
    assert (settings.max_concurrent_jobs, settings.network_timeout, settings.allow_hosts) == (2, None, ("db:1",))
    assert cfg.resolve().max_concurrent_jobs == 16
    assert cfg.sources()["max_concurrent_jobs"] == "default"


def test_unknown_override_is_a_type_error_naming_the_valid_ones(cfg):
    with pytest.raises(TypeError) as info:
        cfg.resolve(max_concurent_jobs=2)
    message = str(info.value)
    assert "'max_concurent_jobs' (did you mean 'max_concurrent_jobs'?)" in message
    for name in SETTING_NAMES:
        assert name in message
    assert "max_transmit_data" in message


def test_reset_and_del_forget_assignments(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "6")
    cfg.max_concurrent_jobs = 3
    cfg.use_simulator = True
    del cfg.max_concurrent_jobs
    assert cfg.max_concurrent_jobs == 6
    assert cfg.use_simulator is True
    del cfg.max_concurrent_jobs  # forgetting twice is fine
    cfg.reset()
    assert cfg.use_simulator is False
    assert cfg.sources()["use_simulator"] == "default"


@pytest.mark.parametrize("action", ["get", "set", "del"])
def test_unknown_attribute_suggests_a_setting(cfg, action):
    with pytest.raises(AttributeError) as info:
        if action == "get":
            cfg.max_concurent_jobs
        elif action == "set":
            cfg.max_concurent_jobs = 3
        else:
            del cfg.max_concurent_jobs
    assert "no setting 'max_concurent_jobs' (did you mean 'max_concurrent_jobs'?)" in str(info.value)


def test_picloud_only_option_gets_a_hint(cfg):
    with pytest.raises(AttributeError, match="num_procs is a PiCloud option.*'max_concurrent_jobs'"):
        cfg.num_procs = 4


def test_method_names_cannot_be_overwritten(cfg):
    with pytest.raises(AttributeError):
        cfg.resolve = 3
    assert callable(cfg.resolve)


def test_private_names_are_plain_attribute_errors(cfg):
    with pytest.raises(AttributeError):
        cfg._missing
    assert not hasattr(cfg, "__deepcopy__")


def test_dir_and_repr(cfg, monkeypatch):
    assert set(SETTING_NAMES) <= set(dir(cfg))
    assert "resolve" in dir(cfg)
    cfg.max_concurrent_jobs = 9
    text = repr(cfg)
    assert "max_concurrent_jobs=9" in text and "pitfalls='warn'" in text
    monkeypatch.setenv("CLOUDSIM_NETWORK_TIMEOUT", "-1")
    assert "network_timeout=<invalid>" in repr(cfg)


def test_module_config_is_a_config_singleton_that_pickles_by_reference():
    assert isinstance(config, Config)
    assert pickle.loads(pickle.dumps(config)) is config


def test_other_configs_pickle_with_their_assignments(cfg):
    cfg.max_concurrent_jobs = 11
    copy = pickle.loads(pickle.dumps(cfg))
    assert copy is not cfg
    assert copy.max_concurrent_jobs == 11
    assert copy.sources()["max_concurrent_jobs"] == "cloudsim.config.max_concurrent_jobs"


def test_resolve_logs_where_values_came_from(cfg, monkeypatch, caplog):
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURRENT_JOBS", "4")
    with caplog.at_level(logging.DEBUG, logger="cloudsim.config"):
        cfg.resolve()
    assert "max_concurrent_jobs=4 from environment variable CLOUDSIM_MAX_CONCURRENT_JOBS" in caplog.text


# --------------------------------------------------------------------------- unknown names in sources


def test_unknown_environment_variable_is_refused_with_a_suggestion(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM_MAX_CONCURENT_JOBS", "4")
    message = error_of(cfg.resolve)
    assert "CLOUDSIM_MAX_CONCURENT_JOBS (did you mean 'CLOUDSIM_MAX_CONCURRENT_JOBS'?)" in message
    assert "Fix: rename or unset them." in message
    assert cfg.use_simulator is False  # reading one setting is not blocked by a stray variable


def test_internal_and_foreign_variables_are_not_checked(cfg, monkeypatch):
    monkeypatch.setenv("CLOUDSIM__JOB_TOKEN", "abc")
    monkeypatch.setenv("NOT_CLOUDSIM_X", "1")
    monkeypatch.setenv("CLOUDSIMX", "1")
    assert cfg.resolve() == Settings()


def test_unknown_pyproject_key_is_refused_with_a_suggestion(cfg, isolated):
    path = write_pyproject(isolated, "max-concurrent-jobs = 4\n")
    message = error_of(cfg.resolve)
    assert f"in [tool.cloudsim] of {path}" in message
    assert "'max-concurrent-jobs' (did you mean 'max_concurrent_jobs'?)" in message


# --------------------------------------------------------------------------- pyproject.toml reading


def test_malformed_pyproject_names_the_file(cfg, isolated):
    path = isolated / "pyproject.toml"
    path.write_text("[tool.cloudsim\nmax_concurrent_jobs = 4\n")
    message = error_of(cfg.resolve)
    assert message.startswith(f"Invalid pyproject.toml at {path}: ")
    assert str(path) in error_of(getattr, cfg, "use_simulator")


def test_non_utf8_pyproject_names_the_file(cfg, isolated):
    path = isolated / "pyproject.toml"
    path.write_bytes(b"[tool.cloudsim]\nserver_root = '\xff'\n")
    assert error_of(cfg.resolve).startswith(f"Cannot read pyproject.toml at {path}: it is not UTF-8")


def test_unreadable_pyproject_names_the_file(cfg, isolated, monkeypatch):
    path = isolated / "pyproject.toml"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cfgmod, "open", refuse, raising=False)
    cfgmod._PYPROJECT_CACHE.clear()
    assert error_of(cfg.resolve).startswith(f"Cannot read pyproject.toml at {path}: Permission denied")


def test_tool_cloudsim_must_be_a_table(cfg, isolated):
    (isolated / "pyproject.toml").write_text("[tool]\ncloudsim = 3\n")
    assert "tool.cloudsim is not a table" in error_of(cfg.resolve)


def test_pyproject_parse_is_cached_until_the_file_changes(cfg, isolated, monkeypatch):
    path = write_pyproject(isolated, "max_concurrent_jobs = 4\n")
    parsed = []
    real = cfgmod._parse_tool_cloudsim
    monkeypatch.setattr(cfgmod, "_parse_tool_cloudsim", lambda text: parsed.append(text) or real(text))
    assert cfg.max_concurrent_jobs == 4
    assert cfg.resolve().max_concurrent_jobs == 4
    assert cfg.use_simulator is False
    assert len(parsed) == 1
    path.write_text(path.read_text().replace("= 4", "= 12"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cfg.max_concurrent_jobs == 12
    assert len(parsed) == 2


def test_pyproject_read_with_the_fallback_parser(cfg, isolated, monkeypatch):
    monkeypatch.setattr(cfgmod, "_toml", None)
    cfgmod._PYPROJECT_CACHE.clear()
    write_pyproject(isolated, "max_concurrent_jobs = 3  # fewer\nallow_hosts = ['db:1', 'cache']\n")
    settings = cfg.resolve()
    assert settings.max_concurrent_jobs == 3
    assert settings.allow_hosts == ("db:1", "cache")
    cfgmod._PYPROJECT_CACHE.clear()


# --------------------------------------------------------------------------- the fallback parser

parse_fallback = cfgmod._fallback_parse_tool_cloudsim

SAMPLE = r'''
# A realistic pyproject.toml
[build-system]
requires = ["setuptools>=64"]

[project]
name = "demo"
description = """
Not a table: [tool.cloudsim]
max_concurrent_jobs = 99
"""
dependencies = [
    "cloudpickle>=2.2",  # a comment
    ["nested", "array"],
]
released = 1979-05-27 07:32:00Z
literal = 'C:\path'

[tool.other]
cloudsim = "not ours"

[tool.cloudsim]
max_transmit_size = 2_000_000
max_concurrent_jobs = 8          # comment after a value
network_timeout = 2.5
use_simulator = true
force_redirect_job_output = false
server_root = "C:\\cloud \"root\" \u00e9"
allow_hosts = [
    "db:5432",   # the database
    'cache',
]
pitfalls = { default = "warn", pass-by-value = "error" }
"quoted key" = 'x'
big = 0x10
exp = 1e3
neg = -7

[tool.cloudsim.extra]
depth = 1

[tool.after]
max_concurrent_jobs = 1
'''

SAMPLE_EXPECTED = {
    "max_transmit_size": 2_000_000,
    "max_concurrent_jobs": 8,
    "network_timeout": 2.5,
    "use_simulator": True,
    "force_redirect_job_output": False,
    "server_root": 'C:\\cloud "root" \u00e9',
    "allow_hosts": ["db:5432", "cache"],
    "pitfalls": {"default": "warn", "pass-by-value": "error"},
    "quoted key": "x",
    "big": 16,
    "exp": 1000.0,
    "neg": -7,
    "extra": {"depth": 1},
}


def test_fallback_parser_reads_only_our_table():
    assert parse_fallback(SAMPLE) == SAMPLE_EXPECTED


@pytest.mark.skipif(cfgmod._toml is None, reason="needs tomllib or tomli")
def test_fallback_parser_agrees_with_tomllib():
    assert cfgmod._toml.loads(SAMPLE)["tool"]["cloudsim"] == parse_fallback(SAMPLE)
    project = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"
    if project.is_file():
        text = project.read_text()
        assert parse_fallback(text) == cfgmod._toml.loads(text).get("tool", {}).get("cloudsim", {})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("[project]\nname = 'x'\n", {}),
        ("[tool.cloudsim]\n", {}),
        ("[tool]\ncloudsim.max_concurrent_jobs = 4\n", {"max_concurrent_jobs": 4}),
        ("tool.cloudsim.use_simulator = true\n", {"use_simulator": True}),
        ("[tool]\ncloudsim = { pitfalls = 'error' }\n", {"pitfalls": "error"}),
        ("[ tool . cloudsim ]\nx = 1\n", {"x": 1}),
        ('[tool."cloudsim"]\nx = "a#b"  # c\n', {"x": "a#b"}),
        ("[tool.cloudsim]\npitfalls.default = 'warn'\npitfalls.x = 'error'\n", {"pitfalls": {"default": "warn", "x": "error"}}),
        ("[tool.cloudsim]\nx = '''\nraw \\n'''\n", {"x": "raw \\n"}),
        ('[tool.cloudsim]\nx = """\\\n   joined"""\n', {"x": "joined"}),
        ("[tool.cloudsim]\r\nx = 1\r\n", {"x": 1}),
        ("[tool.cloudsim]\nx = []\ny = {}\n", {"x": [], "y": {}}),
        ("[tool.cloudsim]\nx = -inf\n", {"x": -math.inf}),
        ('[tool.cloudsim]\nx = """say "hi""""\n', {"x": 'say "hi"'}),
        ("[tool.cloudsim]\nx = '''it''s'''''\n", {"x": "it''s''"}),
    ],
)
def test_fallback_parser_cases(text, expected):
    assert parse_fallback(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[tool.cloudsim]\nx = 'open\n", "unterminated string (line 2)"),
        ('[tool.cloudsim]\nx = "open\n', "unterminated string (line 2)"),
        ('[tool.cloudsim]\nx = """open\n', "unterminated multi-line string"),
        ("[tool.cloudsim]\nx = 1\nx = 2\n", "defined twice (line 3)"),
        ("[tool.cloudsim]\n[tool.cloudsim]\n", "defined twice (line 2)"),
        ("[tool.cloudsim]\nx = 1979-05-27\n", "unsupported value '1979-05-27'"),
        ("[tool.cloudsim]\nx = [1 2]\n", "expected ',' or ']'"),
        ("[tool.cloudsim]\nx = {a = 1 b = 2}\n", "expected ',' or '}'"),
        ("[tool.cloudsim]\nx = 1 2\n", "expected the end of the line"),
        ("[tool.cloudsim]\nx 1\n", "expected '='"),
        ("[tool.cloudsim]\n= 1\n", "expected a key"),
        ("[tool.cloudsim]\nx =\n", "expected a value"),
        ("[tool.cloudsim]\nx = 'a' 'b'\n", "expected the end of the line"),
        ('[tool.cloudsim]\nx = "\\q"\n', "invalid escape"),
        ("[[tool.cloudsim]]\n", "not an array of tables"),
        ("[tool.cloudsim]\nx = 1\n[tool.cloudsim.x]\n", "both a value and a table"),
        ("[tool]\ncloudsim = 3\n", "tool.cloudsim is not a table"),
    ],
)
def test_fallback_parser_errors(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_fallback(text)
    assert fragment in str(info.value)
