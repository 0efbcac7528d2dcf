"""The reserved keywords of ``cloud.call``/``cloud.map`` and jid arguments, validated as PiCloud did.

``cloudsim.keywords.split`` is tested in-process: for every reserved keyword
of reference §3, what a valid value puts into the job's options, and for each
invalid value the exact exception type and message. ``jid_list`` is the rule
every ``result``/``status``/``join``/... argument goes through.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Type

import pytest

from cloudsim import keywords
from cloudsim.errors import CloudException
from cloudsim.keywords import jid_list, split


def _opts(**kwargs: Any) -> Dict[str, Any]:
    opts, user = split(kwargs)
    assert user == {}, f"reserved keywords leaked to the function: {user}"
    return opts


def _raises_exactly(exc_type: Type[BaseException], message: str, kwargs: Dict[str, Any], for_map: bool = False) -> None:
    with pytest.raises(BaseException) as info:
        split(kwargs, for_map=for_map)
    assert type(info.value) is exc_type, f"{kwargs!r}: expected {exc_type.__name__}, got {type(info.value).__name__}: {info.value}"
    assert str(info.value) == message


# ------------------------------------------------------------------ defaults and pass-through


def test_no_keywords_give_the_defaults() -> None:
    """With no keywords, the options hold only the default machine type and no worker settings."""
    assert split({}) == ({"type": "c1", "worker": None}, {})


def test_non_reserved_keywords_go_to_the_function() -> None:
    """Ordinary keywords, and unknown ones starting with '_', are the user's (PiCloud passed ``_x`` through)."""
    opts, user = split({"x": 1, "_unknown": 2, "_priority": 3, "callback": 4})
    assert user == {"x": 1, "_unknown": 2, "callback": 4}
    assert opts["priority"] == 3
    assert "x" not in opts and "_unknown" not in opts


def test_reserved_names_are_exactly_those_of_the_reference() -> None:
    """The reserved set is reference §3's list, so no user keyword is swallowed and none is missed."""
    assert set(keywords.RESERVED) == {
        "_label", "_priority", "_restartable", "_depends_on", "_depends_on_errors", "_fast_serialization",
        "_type", "_high_cpu", "_cores", "_env", "_vol", "_max_runtime", "_profile", "_kill_process",
        "_os_env_vars", "_callback", "_callback_on_error",
    }


# ------------------------------------------------------------------ _label


def test_label_accepts_ascii_str() -> None:
    """An ASCII label is recorded; None means no label."""
    assert _opts(_label="resize-7")["label"] == "resize-7"
    assert "label" not in _opts(_label=None)


@pytest.mark.parametrize("value", ["caf\u00e9", 3, b"bytes"])
def test_label_rejects_non_ascii_and_non_str(value: Any) -> None:
    """A non-ASCII or non-str label is a TypeError with the original's text."""
    _raises_exactly(TypeError, "_job_label must be an ASCII string", {"_label": value})


# ------------------------------------------------------------------ _priority


@pytest.mark.parametrize("value", [0, 1, 5, 10])
def test_priority_accepts_int(value: int) -> None:
    """An int priority is recorded as given."""
    assert _opts(_priority=value)["priority"] == value


@pytest.mark.parametrize("value", ["x", 1.5, None])
def test_priority_rejects_non_int(value: Any) -> None:
    """A non-int priority is the original's TypeError (with its leading space)."""
    _raises_exactly(TypeError, " _priority must be an integer", {"_priority": value})


# ------------------------------------------------------------------ _restartable


@pytest.mark.parametrize("value", [True, False])
def test_restartable_accepts_bool(value: bool) -> None:
    """A bool is recorded."""
    assert _opts(_restartable=value)["restartable"] is value


@pytest.mark.parametrize("value", [1, "yes", None])
def test_restartable_rejects_non_bool(value: Any) -> None:
    """Anything but a bool is a TypeError."""
    _raises_exactly(TypeError, "_restartable must be boolean", {"_restartable": value})


# ------------------------------------------------------------------ _depends_on


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, (3,)),
        ([1, 2], (1, 2)),
        (range(4, 7), (4, 5, 6)),
        ([1, range(5, 7), 9], (1, 5, 6, 9)),
        ((), ()),
    ],
)
def test_depends_on_accepts_ints_ranges_and_lists(value: Any, expected: Tuple[int, ...]) -> None:
    """An int, a range, or an iterable of ints and ranges is flattened in order into a tuple."""
    assert _opts(_depends_on=value)["depends_on"] == expected


@pytest.mark.parametrize("value", ["3", b"3", 1.0, [1, "2"]])
def test_depends_on_rejects_other_types(value: Any) -> None:
    """A str, bytes, a float or a list holding a non-int is a TypeError."""
    _raises_exactly(
        TypeError, "_depends_on must be a job id (int) or an iterable of job ids (ints or ranges)", {"_depends_on": value}
    )


# ------------------------------------------------------------------ _depends_on_errors


@pytest.mark.parametrize("value", ["abort", "ignore"])
def test_depends_on_errors_accepts_abort_and_ignore(value: str) -> None:
    """'abort' and 'ignore' are recorded."""
    assert _opts(_depends_on_errors=value)["depends_on_errors"] == value


def test_depends_on_errors_rejects_other_strings() -> None:
    """Another string is a ValueError."""
    _raises_exactly(ValueError, "_depends_on_errors must be either 'abort' or 'ignore'", {"_depends_on_errors": "x"})


@pytest.mark.parametrize("value", [1, None, ["abort"]])
def test_depends_on_errors_rejects_non_str(value: Any) -> None:
    """A non-str is a TypeError (checked before the value)."""
    _raises_exactly(TypeError, "_depends_on_errors must be a string", {"_depends_on_errors": value})


# ------------------------------------------------------------------ _fast_serialization


@pytest.mark.parametrize("value", [0, 1, 2])
def test_fast_serialization_accepts_int(value: int) -> None:
    """An int level is recorded."""
    assert _opts(_fast_serialization=value)["fast_serialization"] == value


@pytest.mark.parametrize("value", [True, False, "1", 1.0])
def test_fast_serialization_rejects_bool_and_non_int(value: Any) -> None:
    """A bool (as the original: int but not bool) or a non-int is a TypeError."""
    _raises_exactly(TypeError, "_fast_serialization must be an integer (0, 1 or 2)", {"_fast_serialization": value})


# ------------------------------------------------------------------ _type, _high_cpu, _cores


@pytest.mark.parametrize("value", ["c1", "c2", "f2", "m1", "s1"])
def test_type_accepts_the_machine_types(value: str) -> None:
    """Each PiCloud machine type is recorded."""
    assert _opts(_type=value)["type"] == value


def test_type_rejects_non_str() -> None:
    """A non-str type is a TypeError."""
    _raises_exactly(TypeError, "_type must be a string", {"_type": 2})


def test_type_rejects_unknown_type() -> None:
    """An unknown type name is a ValueError listing the valid ones."""
    _raises_exactly(ValueError, "_type 'zz' is not a valid type; choose one of c1, c2, f2, m1, s1", {"_type": "zz"})


def test_high_cpu_selects_c2() -> None:
    """The deprecated ``_high_cpu=True`` means ``_type='c2'``; False leaves c1."""
    assert _opts(_high_cpu=True)["type"] == "c2"
    assert _opts(_high_cpu=False)["type"] == "c1"


def test_high_cpu_rejects_truthy_non_bool() -> None:
    """A truthy non-bool ``_high_cpu`` is a TypeError."""
    _raises_exactly(TypeError, "_high_cpu must be boolean", {"_high_cpu": 1})


@pytest.mark.parametrize("job_type, cores", [("c1", 1), ("c2", 8), ("m1", 4), ("f2", 16), ("s1", 1)])
def test_cores_accepts_what_the_type_offers(job_type: str, cores: int) -> None:
    """A core count the machine type has is recorded."""
    opts = _opts(_type=job_type, _cores=cores)
    assert opts["cores"] == cores and opts["type"] == job_type


@pytest.mark.parametrize("value", [0, -1, "2", 2.0, True])
def test_cores_rejects_non_positive_or_non_int_with_type_error(value: Any) -> None:
    """``_cores`` must be an int > 0, else a TypeError (even for 0, as the original)."""
    _raises_exactly(TypeError, "_cores must be a positive integer", {"_cores": value})


def test_cores_rejects_a_count_the_type_lacks() -> None:
    """2 cores on a c1 is a ValueError naming what c1 allows."""
    _raises_exactly(ValueError, "_cores=2 is not available for _type 'c1'; allowed: (1,)", {"_cores": 2})


# ------------------------------------------------------------------ _env, _vol


def test_env_is_stringified() -> None:
    """``_env`` takes anything and records ``str()`` of it; None records nothing."""
    assert _opts(_env="py3-base")["env_name"] == "py3-base"
    assert _opts(_env=42)["env_name"] == "42"
    assert "env_name" not in _opts(_env=None)


@pytest.mark.parametrize("value, expected", [("data", ["data"]), (["a", "b"], ["a", "b"]), (("a",), ["a"])])
def test_vol_accepts_str_or_list_of_str(value: Any, expected: list) -> None:
    """A str or a list/tuple of str is recorded as a list."""
    assert _opts(_vol=value)["vol"] == expected


@pytest.mark.parametrize("value", [3, ["a", 3], {"a": 1}])
def test_vol_rejects_other_types(value: Any) -> None:
    """Anything else is a TypeError."""
    _raises_exactly(TypeError, "_vol must be a string or a list of strings", {"_vol": value})


# ------------------------------------------------------------------ _max_runtime


@pytest.mark.parametrize("minutes, seconds", [(1, 60.0), (0.5, 30.0), (2.5, 150.0)])
def test_max_runtime_is_minutes_stored_as_seconds(minutes: float, seconds: float) -> None:
    """``_max_runtime`` is in minutes (int or float): 0.5 means 30 seconds."""
    assert _opts(_max_runtime=minutes)["max_runtime"] == seconds


@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_max_runtime_rejects_zero_and_negative(value: float) -> None:
    """0 or a negative runtime is a ValueError naming the value."""
    _raises_exactly(ValueError, f"_max_runtime must be greater than 0 minutes, got {value!r}", {"_max_runtime": value})


def test_max_runtime_rejects_non_number() -> None:
    """A non-number is a TypeError naming its type."""
    _raises_exactly(TypeError, "_max_runtime must be a number of minutes (int or float), not str", {"_max_runtime": "x"})


def test_max_runtime_none_means_no_limit() -> None:
    """None (the default) records no limit."""
    assert "max_runtime" not in _opts(_max_runtime=None)


# ------------------------------------------------------------------ _profile, _kill_process


@pytest.mark.parametrize("value, expected", [(True, True), (1, True), ("", False), (0, False)])
def test_profile_and_kill_process_apply_bool(value: Any, expected: bool) -> None:
    """Both take any value and record ``bool()`` of it, as the original."""
    opts = _opts(_profile=value, _kill_process=value)
    assert opts["profile"] is expected and opts["kill_process"] is expected


def test_kill_process_reaches_the_worker() -> None:
    """``_kill_process`` is passed on to the worker; without it the worker gets nothing."""
    assert _opts(_kill_process=True)["worker"] == {"kill_process": True}
    assert _opts(_kill_process=False)["worker"] is None


# ------------------------------------------------------------------ _os_env_vars


def test_os_env_vars_list_copies_only_names_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of names copies the client's values of those that exist; missing names are skipped."""
    monkeypatch.setenv("CLOUDSIM_TEST_KW_A", "alpha")
    monkeypatch.setenv("CLOUDSIM_TEST_KW_B", "beta")
    monkeypatch.delenv("CLOUDSIM_TEST_KW_MISSING", raising=False)
    opts = _opts(_os_env_vars=["CLOUDSIM_TEST_KW_A", "CLOUDSIM_TEST_KW_MISSING", "CLOUDSIM_TEST_KW_B"])
    assert opts["env"] == {"CLOUDSIM_TEST_KW_A": "alpha", "CLOUDSIM_TEST_KW_B": "beta"}
    assert opts["worker"] == {"env": {"CLOUDSIM_TEST_KW_A": "alpha", "CLOUDSIM_TEST_KW_B": "beta"}}


def test_os_env_vars_copied_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The values are those of the client when ``split`` runs, not later ones."""
    monkeypatch.setenv("CLOUDSIM_TEST_KW_A", "before")
    opts = _opts(_os_env_vars=["CLOUDSIM_TEST_KW_A"])
    monkeypatch.setenv("CLOUDSIM_TEST_KW_A", "after")
    assert opts["env"] == {"CLOUDSIM_TEST_KW_A": "before"}


def test_os_env_vars_dict_copied_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dict is taken as given (names need not exist on the client)."""
    monkeypatch.delenv("CLOUDSIM_TEST_KW_ONLY_IN_DICT", raising=False)
    opts = _opts(_os_env_vars={"CLOUDSIM_TEST_KW_ONLY_IN_DICT": "v", "OTHER": "w"})
    assert opts["env"] == {"CLOUDSIM_TEST_KW_ONLY_IN_DICT": "v", "OTHER": "w"}


@pytest.mark.parametrize("value", ["PATH", 3, [1, 2], {"PATH"}])
def test_os_env_vars_rejects_other_types(value: Any) -> None:
    """A str, an int, a list of non-str or a set is a TypeError."""
    _raises_exactly(TypeError, "_os_env_vars must be a list of environment variable names or a dict", {"_os_env_vars": value})


# ------------------------------------------------------------------ callbacks


def test_callbacks_recorded_by_kind() -> None:
    """``_callback`` fires on done and ``_callback_on_error`` on failure; a list gives several."""

    def on_done(jid: int) -> None:
        pass

    def on_error() -> None:
        pass

    opts = _opts(_callback=on_done, _callback_on_error=[on_error, print])
    assert opts["callbacks"] == {"on_done": [on_done], "on_error": [on_error, print]}
    assert "callbacks" not in _opts(_callback=None)


@pytest.mark.parametrize("key", ["_callback", "_callback_on_error"])
@pytest.mark.parametrize("value", [3, "f", [print, 3]])
def test_callbacks_must_be_callable(key: str, value: Any) -> None:
    """A non-callable callback (alone or in a list) is the original's CloudException."""
    _raises_exactly(CloudException, "All callbacks must be callable", {key: value})


# ------------------------------------------------------------------ map


@pytest.mark.parametrize("key", ["x", "_unknown", "_callback", "_callback_on_error"])
def test_map_rejects_non_reserved_keywords_and_callbacks(key: str) -> None:
    """``cloud.map`` passes no keywords to the function and takes no callbacks: a ValueError naming the key."""
    _raises_exactly(
        ValueError,
        f"Cannot pass keyword arguments into cloud.map Unexpected keyword argument {key}",
        {key: print},
        for_map=True,
    )


def test_map_accepts_the_other_reserved_keywords() -> None:
    """The job options of a map are validated and recorded as for call."""
    opts, user = split({"_label": "m", "_priority": 2, "_depends_on": [1], "_max_runtime": 1}, for_map=True)
    assert user == {}
    assert (opts["label"], opts["priority"], opts["depends_on"], opts["max_runtime"]) == ("m", 2, (1,), 60.0)


def test_map_still_validates_reserved_values() -> None:
    """A bad reserved value in a map is the same error as in call."""
    _raises_exactly(TypeError, " _priority must be an integer", {"_priority": "x"}, for_map=True)


def test_validation_order_follows_the_original() -> None:
    """With several bad keywords, the first in the original's order (label before priority) is reported."""
    _raises_exactly(TypeError, "_job_label must be an ASCII string", {"_priority": "x", "_label": 3})
    _raises_exactly(TypeError, " _priority must be an integer", {"_cores": 0, "_priority": "x"})


# ------------------------------------------------------------------ jid_list


@pytest.mark.parametrize(
    "value, expected",
    [
        (7, [7]),
        (range(3, 6), [3, 4, 5]),
        ([1, 2, 3], [1, 2, 3]),
        ((4, range(1, 3), 9), [4, 1, 2, 9]),
        ([], []),
        (iter([5, 6]), [5, 6]),
        ({8}, [8]),
    ],
)
def test_jid_list_flattens_ints_ranges_and_lists(value: Any, expected: list) -> None:
    """An int, a range, or an iterable of ints and ranges becomes a flat list of ints, in order."""
    assert jid_list(value) == expected


@pytest.mark.parametrize("value", ["asdf", "1", b"1", bytearray(b"1"), 1.0, None, [1, "2"], [1, 2.0], [None], [[1]]])
def test_jid_list_rejects_str_bytes_float_none(value: Any) -> None:
    """str and bytes (iterable, but never jids), floats, None and lists holding them are TypeErrors."""
    with pytest.raises(TypeError, match="jid"):
        jid_list(value)


def test_jid_list_names_the_argument_in_its_message() -> None:
    """The ``what`` argument names the parameter in the error."""
    with pytest.raises(TypeError, match=r"^_depends_on must be integers"):
        jid_list("x", "_depends_on")
