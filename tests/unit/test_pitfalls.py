"""Unit tests of cloudsim.pitfalls: the catalogue, messages, the policy, emit and the log.

The catalogue is checked against QUIRKS.md (the list of quirk ids) when that
file can be found, and against docs/pitfalls.md (one section per id) always.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import List

import pytest

import cloudsim.pitfalls as pitfalls
from cloudsim.errors import CloudException, PitfallError
from cloudsim.pitfalls import (
    ACTIONS,
    CATALOGUE,
    IDS,
    PassByValueWarning,
    PitfallKind,
    PitfallLog,
    PitfallWarning,
    SysExitWarning,
    action_for,
    category,
    emit,
    format_message,
    record,
    validate_policy,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "pitfalls.md"
WHERE = "The pitfall ids are documented in docs/pitfalls.md and listed in cloudsim.pitfalls.IDS."
ALLOWED = "Allowed actions: 'warn', 'error', 'ignore'."


def _quirks_path() -> Path | None:
    """QUIRKS.md: $CLOUDSIM_QUIRKS_MD, the repo root, or the shared folder beside the repo."""
    candidates = [
        os.environ.get("CLOUDSIM_QUIRKS_MD", ""),
        REPO / "QUIRKS.md",
        REPO.parent / "shared" / "QUIRKS.md",
        "/work/shared/QUIRKS.md",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _quirk_ids() -> List[str]:
    """The ids of QUIRKS.md's table rows (``| `id` | ...``), in order; skip if the file is absent."""
    path = _quirks_path()
    if path is None:
        pytest.skip("QUIRKS.md not found (set CLOUDSIM_QUIRKS_MD)")
    ids = re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", path.read_text(encoding="utf-8"), re.MULTILINE)
    assert ids, f"no catalogue rows found in {path}"
    return ids


def _quirk_sections() -> dict:
    """id -> section letter, from the ``## X. Title`` headings of QUIRKS.md."""
    path = _quirks_path()
    if path is None:
        pytest.skip("QUIRKS.md not found (set CLOUDSIM_QUIRKS_MD)")
    sections, letter = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^##\s+([A-Z])\.\s", line)
        if heading:
            letter = heading.group(1)
        row = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|", line)
        if row:
            sections[row.group(1)] = letter
    return sections


def _doc_headings() -> List[str]:
    return re.findall(r"^#{1,6}\s+(.+?)\s*$", DOCS.read_text(encoding="utf-8"), re.MULTILINE)


def _camel(id: str) -> str:
    return "".join(part.capitalize() for part in id.split("-")) + "Warning"


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> PitfallLog:
    """A fresh module LOG, so the process-wide one is left alone."""
    fresh = PitfallLog()
    monkeypatch.setattr(pitfalls, "LOG", fresh)
    return fresh


def _rec(id: str = "pass-by-value", what: str = "Job 7 changed its argument x of foo().", **details):
    return record(id, what, "arguments are copied.", "return the value.", **details)


# --- The catalogue ---------------------------------------------------------------


def test_catalogue_has_every_quirk_id_in_order():
    assert list(CATALOGUE) == _quirk_ids()
    assert IDS == frozenset(_quirk_ids())


def test_catalogue_sections_match_quirks():
    sections = _quirk_sections()
    assert {id: kind.section for id, kind in CATALOGUE.items()} == sections
    titles = {kind.section: kind.section_title for kind in CATALOGUE.values()}
    assert titles == {
        "A": "What crosses the wire",
        "B": "Network",
        "C": "The job's interpreter",
        "D": "Code shipping",
        "E": "Scheduling",
    }


def test_every_quirk_id_has_its_category():
    for id in _quirk_ids():
        cls = category(id)
        assert cls.__name__ == _camel(id)
        assert getattr(pitfalls, cls.__name__) is cls
        assert cls.__name__ in pitfalls.__all__
        assert cls.id == id


def test_categories_are_distinct_pitfall_warnings():
    classes = [kind.category for kind in CATALOGUE.values()]
    assert len(set(classes)) == len(classes) == len(IDS)
    assert PitfallWarning.id == ""
    assert issubclass(PitfallWarning, UserWarning)
    for kind in CATALOGUE.values():
        cls = kind.category
        assert issubclass(cls, PitfallWarning) and cls is not PitfallWarning
        # distinct: no category is a subclass of another one
        assert [other for other in classes if issubclass(cls, other)] == [cls]
        doc = (cls.__doc__ or "").strip()
        assert doc.endswith(".") and "\n" not in doc, cls
        assert kind.doc == doc


def test_kinds_are_frozen_and_point_to_their_doc_section():
    kind = CATALOGUE["pass-by-value"]
    assert kind == PitfallKind(
        "pass-by-value", "A", "What crosses the wire", PassByValueWarning, PassByValueWarning.__doc__, "docs/pitfalls.md#pass-by-value"
    )
    with pytest.raises(Exception):
        kind.id = "other"  # type: ignore[misc]
    for id, kind in CATALOGUE.items():
        assert kind.id == id
        assert kind.anchor == f"docs/pitfalls.md#{id}"


def test_all_names_exist():
    for name in pitfalls.__all__:
        assert hasattr(pitfalls, name), name


def test_docs_have_a_section_per_quirk_id():
    headings = _doc_headings()
    for id in _quirk_ids():
        assert headings.count(id) == 1, f"docs/pitfalls.md needs exactly one heading '{id}'"


def test_docs_have_a_section_per_catalogue_id():
    # Independent of QUIRKS.md, so it runs even where that file is absent.
    headings = _doc_headings()
    assert [h for h in headings if h in IDS] == list(CATALOGUE)


def test_docs_sections_say_what_happens_and_how_to_fix():
    text = DOCS.read_text(encoding="utf-8")
    chunks = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    bodies = {chunk.split("\n", 1)[0].strip(): chunk for chunk in chunks}
    for id in CATALOGUE:
        body = bodies[id]
        for label in ("On the cloud", "In cloudsim", "What you see", "Fix"):
            assert f"**{label}" in body, (id, label)


def test_docs_do_not_talk_about_how_cloudsim_is_built():
    text = DOCS.read_text(encoding="utf-8").lower()
    for word in ("quirks.md", "picloud-pitfalls.txt", "the brief", "conformance/"):
        assert word not in text, word


# --- category() ------------------------------------------------------------------------


def test_category_unknown_id_names_close_match_and_docs():
    with pytest.raises(ValueError) as info:
        category("pass-by-valu")
    assert str(info.value) == f"unknown pitfall id 'pass-by-valu' (did you mean 'pass-by-value'?). {WHERE}"


def test_category_accepts_only_ids_but_suggests_the_class_name_spelling():
    with pytest.raises(ValueError, match=r"\(did you mean 'sys-exit'\?\)"):
        category("SysExitWarning")
    with pytest.raises(ValueError, match=r"\(did you mean 'leaked-threads'\?\)"):
        category("leaked_threads")


def test_category_without_close_match_still_says_where_ids_are():
    with pytest.raises(ValueError) as info:
        category("zzz")
    assert str(info.value) == f"unknown pitfall id 'zzz'. {WHERE}"


def test_category_rejects_non_strings():
    with pytest.raises(TypeError, match="must be a str, not NoneType"):
        category(None)  # type: ignore[arg-type]


# --- Filtering by category ---------------------------------------------------------------


def test_simplefilter_error_on_one_category_turns_only_it_into_an_exception():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.simplefilter("error", PassByValueWarning)
        with pytest.raises(PassByValueWarning, match="changed its argument"):
            emit([_rec()], "warn")
        with pytest.warns(SysExitWarning):
            emit([_rec("sys-exit", "Job 7 called sys.exit().")], "warn")


def test_simplefilter_ignore_on_the_base_silences_every_pitfall():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", PitfallWarning)
        emit([_rec(id) for id in CATALOGUE], "warn")
    assert caught == []


def test_filter_by_module_path_as_in_the_command_line():
    # What `-W error::cloudsim.pitfalls.PassByValueWarning` resolves to.
    import importlib

    module, _, name = "cloudsim.pitfalls.PassByValueWarning".rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=cls)
        with pytest.raises(PassByValueWarning):
            emit([_rec()], "warn")


# --- Messages and records ------------------------------------------------------------


def test_format_message_layout():
    text = format_message(
        "pass-by-value",
        "Job 7 changed its argument list_param of foo(); the change stays on the cloud.",
        "arguments are copied to the cloud (pass-by-value); the client's object is never updated.",
        "return the new value from the job and use cloud.result().",
    )
    assert text == (
        "Job 7 changed its argument list_param of foo(); the change stays on the cloud.\n"
        "  Why: arguments are copied to the cloud (pass-by-value); the client's object is never updated.\n"
        "  Fix: return the new value from the job and use cloud.result().\n"
        "  See: docs/pitfalls.md#pass-by-value  [pitfall: pass-by-value]"
    )


def test_format_message_rejects_unknown_id():
    with pytest.raises(ValueError, match="unknown pitfall id 'pass-by-vale'"):
        format_message("pass-by-vale", "a", "b", "c")


def test_record_is_json_able_and_carries_details():
    rec = record("leaked-threads", "Job 3 left thread 'poller' running.", "why", "fix", threads=[["poller", "poll"]])
    assert rec == {
        "id": "leaked-threads",
        "message": format_message("leaked-threads", "Job 3 left thread 'poller' running.", "why", "fix"),
        "what": "Job 3 left thread 'poller' running.",
        "threads": [["poller", "poll"]],
    }
    assert json.loads(json.dumps(rec)) == rec


def test_record_validates_id_and_details():
    with pytest.raises(ValueError, match="unknown pitfall id 'leaked-thread' \\(did you mean 'leaked-threads'\\?\\)"):
        record("leaked-thread", "a", "b", "c")
    with pytest.raises(TypeError, match="detail 'threads' is not JSON-serializable \\(set\\)"):
        record("leaked-threads", "a", "b", "c", threads={"poller"})
    with pytest.raises(TypeError, match="detail 'message' would overwrite a field"):
        record("leaked-threads", "a", "b", "c", message="x")


# --- The policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("warn", "warn"),
        (" Error ", "error"),
        ("ignore", "ignore"),
        ({"default": "ignore", "pass-by-value": "error"}, {"default": "ignore", "pass-by-value": "error"}),
        ({"Sys-Exit": " WARN "}, {"sys-exit": "warn"}),
        ({}, {}),
        ("default=warn,pass-by-value=error", {"default": "warn", "pass-by-value": "error"}),
        (" default = ignore , sys-exit = error ", {"default": "ignore", "sys-exit": "error"}),
        ("error,sys-exit=warn", {"default": "error", "sys-exit": "warn"}),
        ("pass-by-value=error,pass-by-value=ignore", {"pass-by-value": "ignore"}),
    ],
)
def test_validate_policy_accepts_and_normalizes(value, expected):
    result = validate_policy(value)
    assert result == expected
    assert type(result) is type(expected)


def test_validate_policy_returns_a_plain_dict_from_any_mapping():
    from types import MappingProxyType

    result = validate_policy(MappingProxyType({"default": "error"}))
    assert type(result) is dict and result == {"default": "error"}


def test_validate_policy_output_is_accepted_again():
    for value in ("error", "default=warn,sys-exit=ignore"):
        normalized = validate_policy(value)
        assert validate_policy(normalized) == normalized


@pytest.mark.parametrize(
    "value, message",
    [
        ("eror", f"invalid pitfalls action 'eror' (did you mean 'error'?). {ALLOWED}"),
        ("", f"invalid pitfalls action ''. {ALLOWED}"),
        ("strict", f"invalid pitfalls action 'strict'. {ALLOWED}"),
        ({"pass-by-value": "warning"}, f"invalid pitfalls action 'warning' for 'pass-by-value' (did you mean 'warn'?). {ALLOWED}"),
        ({"default": None}, f"invalid pitfalls action None for 'default'. {ALLOWED}"),
        ("default=eror", f"invalid pitfalls action 'eror' for 'default' (did you mean 'error'?). {ALLOWED}"),
        (
            "pass-by-valu=error",
            "unknown pitfall id 'pass-by-valu' in the pitfalls setting (did you mean 'pass-by-value'?). "
            f"Use a pitfall id or 'default'. {WHERE}",
        ),
        (
            {"sys_exit": "warn"},
            "unknown pitfall id 'sys_exit' in the pitfalls setting (did you mean 'sys-exit'?). "
            f"Use a pitfall id or 'default'. {WHERE}",
        ),
        (
            {"defualt": "warn"},
            "unknown pitfall id 'defualt' in the pitfalls setting (did you mean 'default'?). "
            f"Use a pitfall id or 'default'. {WHERE}",
        ),
        ({1: "warn"}, f"unknown pitfall id 1 in the pitfalls setting. Use a pitfall id or 'default'. {WHERE}"),
        (
            "warn,,sys-exit=error",
            "empty entry in the pitfalls setting 'warn,,sys-exit=error'; expected 'id=action' entries "
            "separated by commas, e.g. 'default=warn,pass-by-value=error'.",
        ),
    ],
)
def test_validate_policy_rejects_with_a_helpful_message(value, message):
    with pytest.raises(ValueError) as info:
        validate_policy(value)
    assert str(info.value) == message


def test_validate_policy_rejects_other_types():
    with pytest.raises(TypeError, match="must be an action \\('warn', 'error', 'ignore'\\) or a mapping .* not int"):
        validate_policy(3)  # type: ignore[arg-type]


def test_actions():
    assert ACTIONS == ("warn", "error", "ignore")


def test_action_for():
    assert action_for("error", "sys-exit") == "error"
    policy = {"default": "ignore", "pass-by-value": "error"}
    assert action_for(policy, "pass-by-value") == "error"
    assert action_for(policy, "sys-exit") == "ignore"
    assert action_for({"pass-by-value": "error"}, "sys-exit") == "warn"
    assert action_for({}, "job-cap") == "warn"
    assert action_for("default=error,job-cap=warn", "job-cap") == "warn"
    assert action_for("default=error,job-cap=warn", "sys-exit") == "error"
    with pytest.raises(ValueError, match="unknown pitfall id 'job-caps'"):
        action_for("warn", "job-caps")
    with pytest.raises(ValueError, match="invalid pitfalls action 'loud'"):
        action_for("loud", "job-cap")


# --- emit ------------------------------------------------------------------------------------


def _emit_from_library(records, policy, **kwargs):
    """Stands for a cloudsim function: its warnings must blame the code that called it."""
    emit(records, policy, stacklevel=2, **kwargs)


def test_emit_warn_uses_the_category_the_message_and_the_callers_line(log):
    rec = _rec()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _emit_from_library([rec], "warn", jid=7)
        line = __import__("inspect").currentframe().f_lineno - 1
    assert len(caught) == 1
    assert caught[0].category is PassByValueWarning
    assert str(caught[0].message) == (
        "Job 7 changed its argument x of foo().\n"
        "  Why: arguments are copied.\n"
        "  Fix: return the value.\n"
        "  See: docs/pitfalls.md#pass-by-value  [pitfall: pass-by-value]"
    )
    assert caught[0].filename == __file__
    assert caught[0].lineno == line
    assert log.snapshot() == [dict(rec, jid=7)]


def test_emit_ignore_reports_nothing(log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emit([_rec(), _rec("sys-exit")], "ignore")
        emit([_rec()], {"default": "warn", "pass-by-value": "ignore"})
    assert caught == []
    assert log.snapshot() == []


def test_emit_error_raises_one_pitfall_error_after_the_warnings(log):
    records = [
        _rec("pass-by-value", "Job 7 changed its argument x of foo()."),
        _rec("sys-exit", "Job 7 called sys.exit()."),
        _rec("leaked-threads", "Job 7 left thread 'poller' running."),
        _rec("job-cap", "Job 7 waited."),
    ]
    policy = "default=error,sys-exit=warn,job-cap=ignore"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PitfallError) as info:
            emit(records, policy, jid=7)
    assert [w.category for w in caught] == [SysExitWarning]
    error = info.value
    assert isinstance(error, CloudException)
    assert error.jid == 7
    assert error.pitfalls == [records[0], records[2]]
    assert str(error) == (
        "Job 7: 2 pitfalls are set to 'error' by the pitfalls setting (pass-by-value, leaked-threads):\n"
        + records[0]["message"]
        + "\n"
        + records[2]["message"]
    )
    assert [r["id"] for r in log.snapshot()] == ["pass-by-value", "sys-exit", "leaked-threads"]
    assert all(r["jid"] == 7 for r in log.snapshot())


def test_emit_error_without_jid():
    rec = _rec()
    with pytest.raises(PitfallError) as info:
        emit([rec], "error")
    assert info.value.jid is None
    assert str(info.value) == "1 pitfall is set to 'error' by the pitfalls setting (pass-by-value):\n" + rec["message"]
    assert info.value.pitfalls == [rec]


def test_emit_checks_everything_before_reporting_anything(log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="unknown pitfall id 'nope'"):
            emit([_rec(), {"id": "nope", "message": "m"}], "warn")
        with pytest.raises(TypeError, match="with 'id' and a str 'message'"):
            emit([_rec(), {"id": "sys-exit"}], "warn")
        with pytest.raises(ValueError, match="invalid pitfalls action 'loud'"):
            emit([_rec()], "loud")
    assert caught == []
    assert log.snapshot() == []


def test_emit_accepts_any_iterable_and_nothing(log):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emit(iter([_rec()]), "warn")
        emit([], "error")
    assert len(caught) == 1
    assert log.counts() == {"pass-by-value": 1}


# --- PitfallLog -------------------------------------------------------------------------------


def test_log_keeps_copies_and_counts_in_catalogue_order():
    plog = PitfallLog()
    rec = _rec("sys-exit")
    plog.add(rec)
    plog.add(_rec("pass-by-value"), jid=3)
    rec["what"] = "changed afterwards"
    snap = plog.snapshot()
    assert snap[0]["what"] != "changed afterwards"
    assert "jid" not in snap[0] and snap[1]["jid"] == 3
    snap[0]["id"] = "mutated"
    assert plog.snapshot()[0]["id"] == "sys-exit"
    assert list(plog.counts().items()) == [("pass-by-value", 1), ("sys-exit", 1)]
    assert len(plog) == 2
    plog.clear()
    assert plog.snapshot() == [] and plog.counts() == {} and len(plog) == 0


def test_log_rejects_unknown_ids():
    with pytest.raises(ValueError, match="unknown pitfall id 'nope'"):
        PitfallLog().add({"id": "nope", "message": "m"})


def test_log_under_threads_loses_nothing():
    plog = PitfallLog()
    ids = list(CATALOGUE)[:4]
    per_thread, n_threads = 500, 8
    start = threading.Barrier(n_threads + 1)
    snapshots: List[int] = []

    def worker(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            plog.add({"id": ids[n % len(ids)], "message": "m", "i": i}, jid=n)
            if i % 100 == 0:
                snapshots.append(len(plog.snapshot()))
                plog.counts()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(plog.snapshot()) == per_thread * n_threads
    assert plog.counts() == {id: per_thread * n_threads // len(ids) for id in ids}
    # each thread's records stay in its own order
    for n in range(n_threads):
        assert [r["i"] for r in plog.snapshot() if r["jid"] == n] == list(range(per_thread))
    assert snapshots and max(snapshots) <= per_thread * n_threads


def test_module_log_is_a_pitfall_log():
    assert isinstance(pitfalls.LOG, PitfallLog)
