"""The cloudsim session plugin: one simulator per test process, and each pitfall charged to its test.

Registered by :mod:`pytest_cloudsim.plugin` only when cloudsim is on. It owns
the simulator of a test process (the session, or one xdist worker) and, for
every test::

    setup (tryfirst)     apply @pytest.mark.cloudsim (restart with those settings),
                         note the jobs that exist and where the pitfall log stands
    call (wrapper)       record warnings: PitfallWarnings are the test's pitfalls, the rest
                         go on to pytest; then sweep the test's jobs (cloud.info) for
                         pitfalls the client never saw (jobs collected by jobs, never collected)
                         ─► 'error': the test fails with every pitfall's full message
                            'warn':  the pitfalls are warnings of the test
                            'ignore' (or --cloudsim-ignore): counted in the summary only
    teardown (wrapper)   after the fixtures: sweep once more, kill the jobs the test left
                         unfinished and report them (CloudsimJobsLeftWarning)
    makereport           findings ride on the test report (``report.cloudsim_pitfalls``,
                         ``report.cloudsim_killed``), so under xdist they reach the controller
    logreport            the summary's tally, wherever the reports end up

and at the end closes the simulator (before coverage plugins collect their
data) and writes the "cloudsim" section of the terminal summary.

Not for: options (``plugin.py``) or fixtures (``fixtures.py``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import pytest

import cloudsim
from cloudsim import pitfalls as _pitfalls
from cloudsim.alias import CloudAliasFinder, remove_cloud_alias
from cloudsim.errors import CloudException
from pytest_cloudsim.plugin import ALIAS_KEY, CloudsimOptions

log = logging.getLogger(__name__)

__all__ = ["CloudsimSession", "CloudsimJobsLeftWarning", "marker_settings"]

SESSION_PLUGIN_NAME = "cloudsim-session"
_UNFINISHED = ("waiting", "queued", "processing")


class CloudsimJobsLeftWarning(pytest.PytestWarning):
    """A test left cloud jobs unfinished, and cloudsim killed them at the test's end."""


# Per-test state, kept on the item.
# (session_dir of the simulator at setup, jids that existed then, length of pitfalls.LOG then)
_START = pytest.StashKey[Tuple[Optional[str], Set[int], int]]()
# pitfall records already accounted for, as (jid, id, message)
_SEEN = pytest.StashKey[Set[Tuple[Any, str, str]]]()
# phase -> findings, e.g. {"call": [{"id": "recursion-deadlock", "message": "...", "jid": 1,
#                                    "action": "fail", "where": "client"}]}
_FOUND = pytest.StashKey[Dict[str, List[Dict[str, Any]]]]()
# jobs killed at the test's end, e.g. [{"jid": 7, "status": "processing", "function": "mod.slow"}]
_KILLED = pytest.StashKey[List[Dict[str, Any]]]()


def marker_settings(item: pytest.Item) -> Dict[str, Any]:
    """The settings of every ``@pytest.mark.cloudsim`` on ``item``, the closest marker winning.

    Raises:
        pytest.fail.Exception: a marker has positional arguments.
    """
    settings: Dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("cloudsim"))):
        if mark.args:
            pytest.fail(
                f"@pytest.mark.cloudsim takes settings as keywords, e.g. @pytest.mark.cloudsim(max_concurrent_jobs=2); "
                f"got positional arguments {mark.args!r}.",
                pytrace=False,
            )
        settings.update(mark.kwargs)
    return settings


def _simulator_jobs() -> Tuple[Optional[str], Set[int]]:
    """Return (session_dir, jids) of the running simulator, or (None, empty set) when none runs.

    cloudsim's API has no way to list jobs, so this reads the simulator's job
    table under its lock; everything else the plugin does goes through the
    public API. (A public ``job_ids()`` on the simulator would replace this.)
    """
    from cloudsim import client

    sim = getattr(client, "_cloud", None)
    if sim is None:
        return None, set()
    with sim.lock:
        return sim.session_dir, set(sim.sched.jobs)


def _running_dir() -> Optional[str]:
    """The session directory of the running simulator (its identity), or None."""
    info = cloudsim.connection_info()
    return info.get("session_dir") if info.get("opened") else None


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("dsession")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class CloudsimSession:
    """The hooks of a test process that runs against the simulator."""

    def __init__(self, config: pytest.Config, options: CloudsimOptions) -> None:
        self.config = config
        self.options = options
        # What the session's simulator is started with: every pitfall is reported as a
        # warning (and kept in pitfalls.LOG), so the plugin decides what it does to a test.
        self.settings: Dict[str, Any] = {"pitfalls": "warn"}
        # (session_dir, settings) of the simulator the plugin started last, e.g.
        # ("/tmp/cloudsim-0/sessions/4242-1a2b3c4d", {"pitfalls": "warn"})
        self._running: Optional[Tuple[str, Dict[str, Any]]] = None
        # the summary's tally: id -> [(nodeid, action)], e.g. {"recursion-deadlock": [("t.py::test_a", "fail")]}
        self.found: Dict[str, List[Tuple[str, str]]] = {}
        # [(nodeid, {"jid": 7, "status": "processing", "function": "mod.slow"})]
        self.killed: List[Tuple[str, Dict[str, Any]]] = []
        try:
            cloudsim.config.resolve(**self.settings)
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise pytest.UsageError(f"cloudsim cannot start with the settings in force: {exc}") from None
        self._alias_was_installed = config.stash.get(
            ALIAS_KEY, any(isinstance(f, CloudAliasFinder) for f in sys.meta_path)
        )
        cloudsim.install_cloud_alias()

    # ------------------------------------------------------------ the simulator
    def use(self, extra: Mapping[str, Any]) -> None:
        """Make sure the simulator runs with the session's settings plus ``extra``; restart it if not.

        Raises:
            TypeError, ValueError, CloudException: from ``cloudsim.start_simulator`` (bad settings).
        """
        wanted = {**self.settings, **extra}
        if self._running is not None:
            session_dir, settings = self._running
            if settings == wanted and _running_dir() == session_dir:
                return
        log.debug("starting the simulator with %r", wanted)
        # The plugin's own restarts (markers, cloudsim_config) are the harness's doing, not the
        # user's: functions a test module took with `from cloud import ...` stay valid.
        from cloudsim import client as _client

        _client._start(True, wanted, rebind=self._running is None)
        self._running = (_running_dir() or "", wanted)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Started before collection, so `from cloud import call` in a test module is
        # bound to this simulator (pitfall: cloud-import-from). The xdist controller
        # runs no test and gets none; --collect-only needs none.
        if _is_xdist_controller(self.config) or self.config.option.collectonly:
            return
        try:
            self.use({})
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"cloudsim cannot start with the settings in force: {exc}") from None

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[Any]:
        # Innermost wrapper: the simulator is closed (its processes write their data)
        # before coverage plugins finish their measurement in their own wrappers.
        try:
            return (yield)
        finally:
            self._close()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._close()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._close()
        if not self._alias_was_installed:
            remove_cloud_alias()

    def _close(self) -> None:
        if self._running is not None:
            self._running = None
            cloudsim.close()

    # ------------------------------------------------------------ per test
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        extra = marker_settings(item)
        try:
            self.use(extra)
        except (TypeError, ValueError, CloudException) as exc:
            described = ", ".join(f"{k}={v!r}" for k, v in extra.items())
            pytest.fail(f"cloudsim could not start for @pytest.mark.cloudsim({described}): {exc}", pytrace=False)
        session_dir, jids = _simulator_jobs()
        item.stash[_START] = (session_dir, jids, len(_pitfalls.LOG))
        item.stash[_SEEN] = set()
        item.stash[_FOUND] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[Any]:
        error: Optional[BaseException] = None
        result: Any = None
        with warnings.catch_warnings(record=True) as caught:
            # Appended: the user's own filters (-W, filterwarnings) still come first.
            warnings.filterwarnings("always", category=_pitfalls.PitfallWarning, append=True)
            try:
                result = yield
            except BaseException as exc:  # re-raised below, after the pitfalls are accounted for
                error = exc
        findings = self._from_warnings(item, caught)
        findings += self._sweep(item)
        self._settle(item, "call", findings, error)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[Any]:
        error: Optional[BaseException] = None
        result: Any = None
        try:
            result = yield
        except BaseException as exc:
            error = exc
        if _START in item.stash:
            findings = self._sweep(item)
            self._kill_unfinished(item)
            self._settle(item, "teardown", findings, error)
        elif error is not None:
            raise error
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        findings = item.stash.get(_FOUND, {}).get(call.when)
        if findings:
            report.cloudsim_pitfalls = findings
        if call.when == "teardown" and item.stash.get(_KILLED, None):
            report.cloudsim_killed = item.stash[_KILLED]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for finding in getattr(report, "cloudsim_pitfalls", None) or ():
            self.found.setdefault(finding["id"], []).append((report.nodeid, finding["action"]))
        for job in getattr(report, "cloudsim_killed", None) or ():
            self.killed.append((report.nodeid, job))

    # ------------------------------------------------------------ finding pitfalls
    def _action(self, pitfall_id: str) -> str:
        """'fail', 'warn' or 'ignore': what a pitfall with this id does to its test."""
        if pitfall_id in self.options.ignore:
            return "ignore"
        return {"error": "fail", "warn": "warn", "ignore": "ignore"}[self.options.pitfalls]

    def _finding(self, pitfall_id: str, message: str, jid: Any, where: str) -> Dict[str, Any]:
        return {"id": pitfall_id, "message": message, "jid": jid, "action": self._action(pitfall_id), "where": where}

    def _log_since_setup(self, item: pytest.Item) -> List[Dict[str, Any]]:
        records = _pitfalls.LOG.snapshot()
        mark = item.stash[_START][2]
        return records[mark:] if mark <= len(records) else records  # someone cleared the log meanwhile

    def _from_warnings(self, item: pytest.Item, caught: Sequence[warnings.WarningMessage]) -> List[Dict[str, Any]]:
        """Turn the pitfall warnings of a call into findings; hand every other warning on to pytest."""
        jids: Dict[Tuple[str, str], List[Any]] = {}  # (id, message) -> jids in the log, oldest first
        for rec in self._log_since_setup(item):
            jids.setdefault((rec["id"], rec["message"]), []).append(rec.get("jid"))
        seen = item.stash[_SEEN]
        findings = []
        for w in caught:
            if issubclass(w.category, _pitfalls.PitfallWarning):
                pitfall_id = getattr(w.category, "id", "") or "pitfall"
                message = str(w.message)
                candidates = jids.get((pitfall_id, message))
                jid = candidates.pop(0) if candidates else None
                seen.add((jid, pitfall_id, message))
                finding = self._finding(pitfall_id, message, jid, "client")
                findings.append(finding)
                if finding["action"] != "warn":
                    continue
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        return findings

    def _sweep(self, item: pytest.Item) -> List[Dict[str, Any]]:
        """Findings for pitfalls on the test's jobs that the client never reported in this test.

        These are pitfalls of jobs collected inside other jobs (recursion) or never
        collected; those the client reported (warned, raised, or caught by the test
        with pytest.warns) are in ``pitfalls.LOG`` and are skipped.
        """
        jids = self._new_jobs(item)
        if not jids:
            return []
        seen = item.stash[_SEEN]
        for rec in self._log_since_setup(item):
            seen.add((rec.get("jid"), rec["id"], rec["message"]))
        infos = self._info(jids, ["pitfalls", "parent"])
        policy = cloudsim.connection_info().get("setting.pitfalls", "warn")
        checked = self._checked_jobs(infos)
        findings = []
        for jid in jids:
            if jid in checked or jid not in infos:
                continue
            for rec in infos[jid].get("pitfalls") or ():
                key = (jid, rec.get("id", ""), rec.get("message", ""))
                if key in seen:
                    continue
                seen.add(key)
                try:
                    if _pitfalls.action_for(policy, key[1]) == "ignore":  # the test's own policy says so
                        continue
                except ValueError:
                    pass
                findings.append(self._finding(key[1], key[2], jid, "job"))
        return findings

    @staticmethod
    def _info(jids: List[int], fields: List[str]) -> Dict[int, Dict[str, Any]]:
        try:
            return cloudsim.info(jids, fields)
        except CloudException:  # a job was deleted meanwhile: ask one by one
            out = {}
            for jid in jids:
                try:
                    out.update(cloudsim.info(jid, fields))
                except CloudException:
                    pass
            return out

    @staticmethod
    def _checked_jobs(infos: Mapping[int, Mapping[str, Any]]) -> Set[int]:
        """Jobs run by cloudsim.check (and their children): their pitfalls are the check's report."""
        check_module = sys.modules.get("cloudsim.check")
        roots = set(getattr(check_module, "_CHECK_JIDS", ()))
        if not roots:
            return set()
        out = set()
        for jid in infos:
            node: Any = jid
            while node is not None and node not in out:
                if node in roots:
                    out.add(jid)
                    break
                node = infos.get(node, {}).get("parent")
        return out

    def _new_jobs(self, item: pytest.Item) -> List[int]:
        start_dir, before, _ = item.stash[_START]
        now_dir, jids = _simulator_jobs()
        if now_dir is None:
            return []
        return sorted(jids if now_dir != start_dir else jids - before)

    def _kill_unfinished(self, item: pytest.Item) -> None:
        jids = self._new_jobs(item)
        if not jids:
            return
        infos = self._info(jids, ["status", "function"])
        left = [jid for jid in jids if infos.get(jid, {}).get("status") in _UNFINISHED]
        if not left:
            return
        try:
            cloudsim.kill(left)
        except CloudException as exc:
            log.debug("could not kill jobs %s left by %s: %s", left, item.nodeid, exc)
        killed = [
            {"jid": jid, "status": infos[jid]["status"], "function": infos[jid].get("function") or "?"} for jid in left
        ]
        item.stash[_KILLED] = killed
        listed = ", ".join(f"job {k['jid']} ({k['status']}, {k['function']})" for k in killed)
        warnings.warn_explicit(
            CloudsimJobsLeftWarning(
                f"{item.name} left {_plural(len(killed), 'cloud job')} unfinished; cloudsim killed "
                f"{'it' if len(killed) == 1 else 'them'} at the end of the test: {listed}. "
                "Fix: wait for the jobs a test starts (cloud.join or cloud.result), or kill them in the test."
            ),
            CloudsimJobsLeftWarning,
            *_location(item),
        )

    # ------------------------------------------------------------ what a test gets
    def _settle(self, item: pytest.Item, when: str, findings: List[Dict[str, Any]], error: Optional[BaseException]) -> None:
        """Record the findings of a phase, warn or fail as the options say, re-raise the phase's own error."""
        item.stash[_FOUND].setdefault(when, []).extend(findings)
        failing = [f for f in findings if f["action"] == "fail"]
        for f in findings:
            if f["action"] == "warn" and f["where"] == "job":  # client-side ones were warned already
                warnings.warn_explicit(f["message"], _category(f["id"]), *_location(item))
        if error is not None:
            if failing:
                item.add_report_section(when, "cloudsim pitfalls", self._failure_text(failing))
            raise error
        if failing:
            pytest.fail(self._failure_text(failing), pytrace=False)

    def _failure_text(self, failing: List[Dict[str, Any]]) -> str:
        source = self.options.pitfalls_source
        why = "with --cloudsim a pitfall fails its test" if source == "default" else f"{source} makes a pitfall fail its test"
        parts = [f"cloudsim: the jobs of this test hit {_plural(len(failing), 'pitfall')}; {why}.", ""]
        for f in failing:
            job = f"job {f['jid']}" if f["jid"] is not None else "a job"
            if f["where"] == "job":
                job += " (never collected by the test: found on the job)"
            parts.append(f"[{f['id']}] {job}:")
            parts.append(f["message"])
            parts.append("")
        ids = ",".join(dict.fromkeys(f["id"] for f in failing))
        parts.append(
            f"To let it pass: fix the code, or --cloudsim-ignore={ids} (ini cloudsim_ignore), "
            "or --cloudsim-pitfalls=warn (ini cloudsim_pitfalls)."
        )
        return "\n".join(parts)

    # ------------------------------------------------------------ summary
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        tr = terminalreporter
        tr.write_sep("=", "cloudsim")
        if not self.found:
            tr.write_line("no pitfalls found")
        else:
            total = sum(len(v) for v in self.found.values())
            tests = {nodeid for v in self.found.values() for nodeid, _ in v}
            failing = {nodeid for v in self.found.values() for nodeid, action in v if action == "fail"}
            line = f"{_plural(total, 'pitfall')} in {_plural(len(tests), 'test')}"
            if failing:
                line += f" ({_plural(len(failing), 'test')} failed for them)"
            tr.write_line(line)
            for pitfall_id in _catalogue_order(self.found):
                hits = self.found[pitfall_id]
                tr.write_line(f"{pitfall_id}: {len(hits)}")
                per_test: Dict[str, List[str]] = {}
                for nodeid, action in hits:
                    per_test.setdefault(nodeid, []).append(action)
                for nodeid, actions in per_test.items():
                    count = f" x{len(actions)}" if len(actions) > 1 else ""
                    what = {"fail": "failed", "warn": "warned", "ignore": "ignored"}[actions[0]]
                    tr.write_line(f"    {nodeid}{count} ({what})")
        if self.killed:
            tr.write_line(f"jobs left unfinished by tests, killed: {len(self.killed)}")
            for nodeid, job in self.killed:
                tr.write_line(f"    {nodeid}: job {job['jid']} ({job['status']}, {job['function']})")


def _catalogue_order(found: Mapping[str, Any]) -> List[str]:
    order = list(_pitfalls.CATALOGUE)
    return sorted(found, key=lambda i: (order.index(i) if i in order else len(order), i))


def _category(pitfall_id: str) -> type:
    try:
        return _pitfalls.category(pitfall_id)
    except (TypeError, ValueError):
        return _pitfalls.PitfallWarning


def _location(item: pytest.Item) -> Tuple[str, int]:
    """(filename, lineno) of the test, for warnings about it."""
    path, lineno, _ = item.location
    return os.path.join(str(item.config.rootpath), path), (lineno or 0) + 1
