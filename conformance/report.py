"""A pytest plugin that reports the conformance suite case by case: which quirk, what was checked, the outcome.

Load it with ``-p conformance.report`` (``cloudsim conformance`` does)::

    python -m pytest conformance -p conformance.report --conformance-report-dir=out --junitxml=out/conformance.xml

For every case it keeps the quirk id (the ``@pytest.mark.quirk("<id>", ...)``
marker), what the case checks (the first line of its docstring, to the end of
its paragraph), the backend it ran against with that backend's note on the
quirk (``Backend.note``), and its
outcome (``pass``, ``fail``, ``error``, ``skip``, ``xfail``, ``xpass``) with the
reason for anything but a pass, and then:

- prints them as a table in the terminal summary, then one line per quirk
  id with its verdict on each backend;
- writes ``conformance.md`` (Markdown: the verdict per quirk id and backend,
  then every case) and ``conformance.json`` into ``--conformance-report-dir``
  (ini: ``conformance_report_dir``) when given.

A verdict is ``reproduced`` (every case passed, or failed as expected),
``cannot: <reason>`` (the backend declares it cannot reproduce the quirk:
every case skipped with ``UNSUPPORTED_PREFIX``) or ``FAILS`` (some case
failed, errored or passed unexpectedly); skips for other reasons (a missing
optional package) are counted beside it.

JUnit XML is pytest's own ``--junitxml``; this plugin adds the quirk id and
the checked line to each test case there as ``<property>`` entries.

The facts travel on each test report (``user_properties``), not on the items,
so the plugin also works when the cases run in ``pytest-xdist`` workers.

Not for: deciding outcomes or checking markers (``conformance/conftest.py``
does that).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conformance.backends import UNSUPPORTED_PREFIX

__all__ = ["ConformanceReport", "OUTCOMES"]

OPTION = "--conformance-report-dir"
INI = "conformance_report_dir"
_QUIRK_PROP = "quirk"
_CHECKED_PROP = "checked"
_BACKEND_PROP = "backend"  # set by conformance/conftest.py when the case's backend is known
_NOTE_PROP = "backend_note"
#: every outcome a case can have, in the order the summary lists them
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass")
_MAX_REASON = 160


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance-report", "conformance report")
    group.addoption(
        OPTION, dest="conformance_report_dir", metavar="DIR", default=None,
        help="write the conformance report (conformance.md, conformance.json) into DIR",
    )
    parser.addini(INI, "directory for the conformance report (like --conformance-report-dir)", default="")


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("conformance-report-instance"):
        config.pluginmanager.register(ConformanceReport(config), "conformance-report-instance")


def _first_paragraph(text: Optional[str]) -> str:
    """The docstring's first line, continued to the end of its paragraph (docstrings wrap mid-sentence)."""
    lines: List[str] = []
    for line in (text or "").strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _reason(report: pytest.TestReport) -> str:
    """Why a case did not simply pass, in one line."""
    if hasattr(report, "wasxfail"):
        return _short(str(report.wasxfail or "expected to fail"))
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        reason = str(longrepr[2])
        return _short(reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason)
    text = getattr(report, "longreprtext", "") or str(longrepr or "")
    errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    if errors:
        return _short(errors[0])
    lines = [line for line in text.splitlines() if line.strip()]
    return _short(lines[-1]) if lines else ""


def _verdict(outcomes: "Counter[str]", skipped: List[str]) -> str:
    """One backend's verdict on one quirk, from its cases' outcomes and skip reasons (see the module docstring)."""
    bad = sum(outcomes[o] for o in ("fail", "error", "xpass"))
    total = sum(outcomes.values())
    if bad:
        return f"FAILS ({bad} of {total} cases)"
    cannot = [r for r in skipped if r.startswith(UNSUPPORTED_PREFIX)]
    if cannot and outcomes["skip"] == total:
        return "cannot: " + cannot[0][len(UNSUPPORTED_PREFIX):]
    done = outcomes["pass"] + outcomes["xfail"]
    if not done:
        return "skipped: " + "; ".join(skipped)
    text = f"reproduced ({done} case{'s' if done != 1 else ''})"
    if outcomes["skip"]:
        text += f", {outcomes['skip']} skipped: " + "; ".join(skipped)
    return text


class ConformanceReport:
    """Collects the outcome of every case and writes the report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # nodeid -> case, in the order the cases ran, e.g.
        # {"test_wire.py::T::test_sys_exit[simulator]": {"quirk": "sys-exit", "outcome": "pass", ...}}
        self.cases: Dict[str, Dict[str, Any]] = {}
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.written: List[Path] = []

    # ------------------------------------------------------------ facts onto the reports
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: List[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("quirk")
            quirk = str(marker.args[0]) if marker is not None and marker.args else ""
            doc = getattr(getattr(item, "function", None), "__doc__", None)
            props = dict(item.user_properties)
            if _QUIRK_PROP not in props:
                item.user_properties.append((_QUIRK_PROP, quirk))
            if _CHECKED_PROP not in props:
                item.user_properties.append((_CHECKED_PROP, _first_paragraph(doc)))

    # ------------------------------------------------------------ outcomes
    def _case(self, report: pytest.TestReport) -> Dict[str, Any]:
        case = self.cases.get(report.nodeid)
        if case is None:
            props = dict(report.user_properties)
            case = {
                "quirk": str(props.get(_QUIRK_PROP, "")),
                "checked": str(props.get(_CHECKED_PROP, "")),
                "backend": "",
                "note": "",
                "nodeid": report.nodeid,
                "outcome": None,
                "reason": "",
                "duration": 0.0,
            }
            self.cases[report.nodeid] = case
        return case

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        case = self._case(report)
        props = dict(report.user_properties)  # the backend is known from setup on
        case["backend"] = str(props.get(_BACKEND_PROP, case["backend"]))
        case["note"] = str(props.get(_NOTE_PROP, case["note"]))
        case["duration"] = round(case["duration"] + float(getattr(report, "duration", 0.0) or 0.0), 3)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if hasattr(report, "wasxfail"):
                outcome = "xfail" if report.skipped else "xpass"
            elif report.passed:
                outcome = "pass"
            elif report.skipped:
                outcome = "skip"
            else:
                outcome = "fail" if report.when == "call" else "error"
            case["outcome"] = outcome
            if outcome != "pass":
                case["reason"] = _reason(report)
        elif report.when == "teardown" and report.failed:
            # a case that passed but left something behind (e.g. a process) fails in teardown
            if case["outcome"] in (None, "pass", "xpass"):
                case["outcome"] = "error"
                case["reason"] = _reason(report)

    # ------------------------------------------------------------ output
    def summary(self) -> Dict[str, int]:
        counts = Counter(case["outcome"] for case in self.cases.values() if case["outcome"])
        return {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}

    def _finished_cases(self) -> List[Dict[str, Any]]:
        return [case for case in self.cases.values() if case["outcome"]]

    def backends(self) -> List[str]:
        """The backends the cases ran against, in the order they first appear ('' for a case with none)."""
        return list(dict.fromkeys(case["backend"] for case in self._finished_cases()))

    def by_quirk(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """quirk id -> backend -> its verdict there, e.g.
        ``{"job-kill": {"dask": {"verdict": "reproduced", "outcomes": {"pass": 1}, "note": "...", "reasons": []}}}``.
        """
        table: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for case in self._finished_cases():
            cell = table.setdefault(case["quirk"] or "-", {}).setdefault(
                case["backend"], {"outcomes": Counter(), "reasons": [], "skipped": [], "note": ""})
            cell["outcomes"][case["outcome"]] += 1
            for key, wanted in (("reasons", case["outcome"] != "pass"), ("skipped", case["outcome"] == "skip")):
                if wanted and case["reason"] and case["reason"] not in cell[key]:
                    cell[key].append(case["reason"])
            cell["note"] = cell["note"] or case["note"]
        for cells in table.values():
            for cell in cells.values():
                cell["verdict"] = _verdict(cell["outcomes"], cell.pop("skipped"))
                cell["outcomes"] = dict(cell["outcomes"])
        return table

    def as_json(self) -> Dict[str, Any]:
        return {
            "suite": "cloudsim conformance",
            "started": self.started.isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "summary": self.summary(),
            "backends": self.backends(),
            "by_quirk": self.by_quirk(),
            "cases": self._finished_cases(),
        }

    def as_markdown(self) -> str:
        summary = self.summary()
        lines = [
            "# cloudsim conformance report",
            "",
            f"Run {self.started.strftime('%Y-%m-%d %H:%M:%S UTC')} on Python {platform.python_version()} "
            f"({platform.system()}).",
            "",
            "Outcomes: " + ", ".join(f"{n} {o}" for o, n in summary.items() if n) if any(summary.values())
            else "No case ran.",
            "",
        ]

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        backends = self.backends()
        if any(backends):
            lines += [
                "## By quirk and backend",
                "",
                "Each cell: the verdict of the quirk's cases on that backend, and how the backend reproduces "
                "it where that differs from the simulator.",
                "",
                "| quirk | " + " | ".join(b or "-" for b in backends) + " |",
                "|---|" + "---|" * len(backends),
            ]
            for quirk, cells in self.by_quirk().items():
                row = []
                for backend in backends:
                    found = cells.get(backend)
                    if found is None:
                        row.append("-")
                        continue
                    text = found["verdict"]
                    if found["note"]:
                        text += f"<br>*{found['note']}*"
                    row.append(cell(text))
                lines.append(f"| `{cell(quirk)}` | " + " | ".join(row) + " |")
            lines += ["", "## Cases", ""]
        lines += [
            "| quirk | backend | outcome | checked | case | reason |",
            "|---|---|---|---|---|---|",
        ]
        for case in self._finished_cases():
            lines.append(
                f"| `{cell(case['quirk'] or '-')}` | {cell(case['backend'] or '-')} | {case['outcome']} | "
                f"{cell(case['checked'])} | `{cell(case['nodeid'])}` | {cell(case['reason'])} |"
            )
        return "\n".join(lines) + "\n"

    def _report_dir(self) -> Optional[Path]:
        value = self.config.getoption("conformance_report_dir", None) or self.config.getini(INI)
        if not value:
            return None
        return Path(str(value)).expanduser().resolve()

    def _write(self) -> None:
        directory = self._report_dir()
        if directory is None or hasattr(self.config, "workerinput"):  # xdist workers report to the controller
            return
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in (("conformance.md", self.as_markdown()),
                           ("conformance.json", json.dumps(self.as_json(), indent=2) + "\n")):
            path = directory / name
            tmp = path.with_name(f".{name}.tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            self.written.append(path)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self._write()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        cases = self._finished_cases()
        if not cases:
            return
        tr = terminalreporter
        tr.write_sep("=", "conformance report")
        quirk_w = max(len("quirk"), *(len(c["quirk"] or "-") for c in cases))
        out_w = max(len("outcome"), *(len(c["outcome"]) for c in cases))
        width = getattr(tr, "_tw", None).fullwidth if getattr(tr, "_tw", None) is not None else 120
        rest = max(30, width - quirk_w - out_w - 6)
        tr.write_line(f"{'quirk':<{quirk_w}}  {'outcome':<{out_w}}  checked")
        for case in cases:
            checked = case["checked"] or case["nodeid"]
            if case["reason"]:
                checked += f" ({case['reason']})"
            if len(checked) > rest:
                checked = checked[: rest - 3] + "..."
            tr.write_line(f"{case['quirk'] or '-':<{quirk_w}}  {case['outcome']:<{out_w}}  {checked}")
        backends = [b for b in self.backends() if b]
        if backends:
            tr.write_line("")
            tr.write_line("by quirk: " + " / ".join(backends))
            for quirk, cells in self.by_quirk().items():
                verdicts = [cells[b]["verdict"] if b in cells else "-" for b in backends]
                line = f"{quirk:<{quirk_w}}  " + " / ".join(verdicts)
                tr.write_line(line if len(line) <= width else line[: width - 3] + "...")
        tr.write_line("")
        tr.write_line("outcomes: " + ", ".join(f"{n} {o}" for o, n in self.summary().items() if n))
        for path in self.written:
            tr.write_line(f"written: {path}")
        xml = getattr(self.config.option, "xmlpath", None)
        if xml:
            tr.write_line(f"JUnit XML: {os.path.abspath(xml)}")
