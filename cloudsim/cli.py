"""The ``cloudsim`` command (``python -m cloudsim``): run PiCloud-era scripts, check a call, run the conformance suite.

::

    cloudsim run [--strict] SCRIPT [ARGS...]      a legacy script, unchanged ("import cloud" works)
    cloudsim check MODULE:FUNC [ARGS...]           cloudsim.check's pitfall report for one call
    cloudsim conformance [--backend NAME] [--report-dir DIR] [-- PYTEST_ARGS...]
    cloudsim demo                                  the tour in examples/demo.py

Each subcommand has ``--help``. Exit status, for every subcommand (scripts
can rely on it):

    0  everything went well
    1  the script, the check or the conformance suite failed (or, with
       ``--strict``, pitfalls were found), or what the subcommand needs is not
       available (e.g. ``conformance`` outside a source checkout)
    2  usage error: unknown option, missing argument, a script that does not exist

This is the only part of cloudsim that prints (the library logs and warns);
what it prints about the run goes to stderr, so a script's stdout stays its own.

Not for: configuring the simulator (use ``CLOUDSIM_<SETTING>`` environment
variables or ``[tool.cloudsim]`` in pyproject.toml, which every subcommand honours).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser", "repo_root", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_EXIT_HELP = """\
exit status:
  0  success
  1  the script/check/conformance suite failed, pitfalls were found with --strict,
     or what the subcommand needs is not available
  2  usage error (bad option or argument, script not found)
"""

_SETTINGS_HELP = (
    "Settings come from CLOUDSIM_<NAME> environment variables (e.g. CLOUDSIM_MAX_CONCURRENT_JOBS=4, "
    "CLOUDSIM_PITFALLS=error) and [tool.cloudsim] in pyproject.toml."
)


class _UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


def _say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ locating the source tree
def repo_root() -> Optional[Path]:
    """The source checkout cloudsim runs from (the directory holding ``cloudsim/``), if it is one.

    It is one when ``conformance/`` or ``examples/`` sits next to the package,
    i.e. cloudsim is installed from the repository (editable) or run from it.
    """
    import cloudsim

    root = Path(cloudsim.__file__).resolve().parent.parent
    if (root / "conformance").is_dir() or (root / "examples").is_dir():
        return root
    return None


# ------------------------------------------------------------------ pitfall summary
def _summarize(records: List[Dict[str, Any]], what: str) -> List[str]:
    """Lines describing the pitfalls found, grouped by id in catalogue order."""
    from cloudsim import pitfalls

    if not records:
        return [f"cloudsim: no pitfalls found while running {what}."]
    by_id: Dict[str, List[Dict[str, Any]]] = {}
    for rec in records:
        by_id.setdefault(str(rec.get("id")), []).append(rec)
    order = [i for i in pitfalls.CATALOGUE if i in by_id] + [i for i in by_id if i not in pitfalls.CATALOGUE]
    count = "1 pitfall" if len(records) == 1 else f"{len(records)} pitfalls"
    lines = [f"cloudsim: {count} found while running {what}:"]
    for pid in order:
        recs = by_id[pid]
        jids = [str(r["jid"]) for r in recs if r.get("jid") is not None]
        where = f", job{'s' if len(jids) > 1 else ''} {', '.join(dict.fromkeys(jids))}" if jids else ""
        first = str(recs[0].get("what") or str(recs[0].get("message", "")).splitlines()[0])
        lines.append(f"  {pid} (x{len(recs)}{where}): {first}")
        kind = pitfalls.CATALOGUE.get(pid)
        if kind is not None:
            lines.append(f"      see {kind.anchor}")
    return lines


def _exit_status(exc: SystemExit) -> int:
    """The process status ``exc`` stands for, printing a message code as Python does."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    _say(str(code))
    return 1


def _print_user_traceback(exc: BaseException, filename: str) -> None:
    """Print ``exc`` as Python would for the script: without cloudsim's and runpy's frames."""
    tb = exc.__traceback__
    target = os.path.realpath(filename)
    walk = tb
    while walk is not None and os.path.realpath(walk.tb_frame.f_code.co_filename) != target:
        walk = walk.tb_next
    traceback.print_exception(type(exc), exc, walk if walk is not None else tb)
    sys.stderr.flush()


# ------------------------------------------------------------------ run
def cmd_run(ns: argparse.Namespace) -> int:
    """Run a legacy script with ``import cloud`` working and the simulator starting on first use."""
    script = ns.script
    if not os.path.isfile(script):
        raise _UsageError(f"cannot run {script!r}: no such file")
    import cloudsim
    import cloudsim.files  # noqa: F401 - as PiCloud's `import cloud` did, so `cloud.files` works
    from cloudsim import pitfalls
    from cloudsim.alias import install_cloud_alias
    from cloudsim.config import config

    install_cloud_alias()
    start = len(pitfalls.LOG)
    saved_argv, saved_path0 = sys.argv[:], (sys.path[0] if sys.path else None)
    sys.argv = [script] + list(ns.args)
    script_dir = os.path.dirname(os.path.abspath(script))
    if sys.path:
        sys.path[0] = script_dir  # as `python SCRIPT` does
    else:
        sys.path.insert(0, script_dir)
    config.use_simulator = True
    status = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        status = _exit_status(exc)
    except KeyboardInterrupt:
        _say("KeyboardInterrupt")
        status = 130
    except BaseException as exc:  # the script's own error: shown as Python would
        _print_user_traceback(exc, script)
        status = 1
    finally:
        sys.stdout.flush()
        try:
            cloudsim.close()
        finally:
            del config.use_simulator
            sys.argv = saved_argv
            if saved_path0 is not None and sys.path:
                sys.path[0] = saved_path0
    records = pitfalls.LOG.snapshot()[start:]
    for line in _summarize(records, script):
        _say(line)
    if status != 0:
        _say(f"cloudsim: {script} failed (exit status {status}).")
        return EXIT_FAILED
    if ns.strict and records:
        _say("cloudsim: failing because of --strict: pitfalls were found.")
        return EXIT_FAILED
    return EXIT_OK


# ------------------------------------------------------------------ check
def _parse_value(text: str) -> Any:
    """A command-line argument as a Python literal (``3``, ``'a'``, ``[1, 2]``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _split_call_args(values: Sequence[str]) -> Tuple[list, dict]:
    args: list = []
    kwargs: dict = {}
    for text in values:
        name, sep, rest = text.partition("=")
        if sep and name.isidentifier():
            kwargs[name] = _parse_value(rest)
        else:
            if kwargs:
                raise _UsageError(f"positional argument {text!r} after a keyword argument")
            args.append(_parse_value(text))
    return args, kwargs


def _load_function(target: str) -> Any:
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name:
        raise _UsageError(f"expected MODULE:FUNC (e.g. mypkg.tasks:resize), got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `python -m` puts the working directory first; do the same for the script
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _UsageError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in func_name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(f"{module_name!r} has no attribute {func_name!r}") from None
    if not callable(obj):
        raise _UsageError(f"{target} is not callable ({type(obj).__name__})")
    return obj


def cmd_check(ns: argparse.Namespace) -> int:
    """Print ``cloudsim.check``'s report for one call."""
    try:
        check_module = importlib.import_module("cloudsim.check")
        check = getattr(check_module, "check")
    except (ImportError, AttributeError) as exc:
        _say(f"cloudsim check is not available in this version of cloudsim: cloudsim.check cannot be loaded ({exc}).")
        return EXIT_FAILED
    import cloudsim
    from cloudsim.alias import install_cloud_alias

    install_cloud_alias()
    func = _load_function(ns.target)
    args, kwargs = _split_call_args(ns.args)
    try:
        report = check(func, *args, **kwargs)  # starts (and closes) a simulator of its own when none runs
    except Exception as exc:  # the check itself could not run: say so, don't hide it
        _say(f"cloudsim check: {ns.target} could not be checked: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        cloudsim.close()
    print(str(report), flush=True)
    return EXIT_OK if getattr(report, "ok", False) else EXIT_FAILED


# ------------------------------------------------------------------ conformance
def _conformance_command(root: Path, ns: argparse.Namespace, extra: List[str]) -> Tuple[List[str], Path]:
    report_dir = Path(ns.report_dir or "conformance-report").resolve()
    cmd = [
        sys.executable, "-m", "pytest", str(root / "conformance"),
        "-p", "conformance.report",
        "--conformance-report-dir", str(report_dir),
        f"--junitxml={report_dir / 'conformance.xml'}",
        "-o", "junit_family=xunit2",
        "-p", "no:cacheprovider",
        "--rootdir", str(root),
    ]
    if ns.backend:
        cmd += ["--conformance-backend", ns.backend]
    cmd += extra
    return cmd, report_dir


def cmd_conformance(ns: argparse.Namespace, extra: List[str]) -> int:
    """Run the conformance suite (``pytest conformance``) with the report plugin."""
    root = repo_root()
    if root is None or not (root / "conformance" / "conftest.py").is_file():
        import cloudsim

        _say(
            "cloudsim conformance is not available: the conformance suite (conformance/) is not next to the "
            f"installed package ({Path(cloudsim.__file__).resolve().parent}). It ships with cloudsim's source "
            "repository: clone it, `pip install -e .` from it, and run `cloudsim conformance` again."
        )
        return EXIT_FAILED
    if not (root / "conformance" / "report.py").is_file():
        _say(f"cloudsim conformance is not available: {root / 'conformance' / 'report.py'} is missing.")
        return EXIT_FAILED
    cmd, report_dir = _conformance_command(root, ns, extra)
    report_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    _say("cloudsim: " + " ".join(cmd[1:]))
    try:
        code = subprocess.call(cmd, cwd=str(root), env=env)
    except KeyboardInterrupt:
        return EXIT_FAILED
    if code == 0:
        return EXIT_OK
    if code == 4:  # pytest: usage error (bad option), e.g. an unknown backend
        return EXIT_USAGE
    return EXIT_FAILED


# ------------------------------------------------------------------ demo
def cmd_demo(ns: argparse.Namespace) -> int:
    """Run examples/demo.py (a tour of the simulator)."""
    root = repo_root()
    demo = root / "examples" / "demo.py" if root is not None else None
    if demo is None or not demo.is_file():
        _say(
            "cloudsim demo is not available: examples/demo.py is not next to the installed package. "
            "It is in cloudsim's source repository (examples/demo.py); run it there with `python examples/demo.py`."
        )
        return EXIT_FAILED
    saved_argv = sys.argv[:]
    sys.argv = [str(demo)]
    try:
        runpy.run_path(str(demo), run_name="__main__")
    except SystemExit as exc:
        return EXIT_OK if _exit_status(exc) == 0 else EXIT_FAILED
    except BaseException as exc:
        _print_user_traceback(exc, str(demo))
        return EXIT_FAILED
    finally:
        sys.argv = saved_argv
        import cloudsim

        cloudsim.close()
    return EXIT_OK


# ------------------------------------------------------------------ parser
def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of the ``cloudsim`` command."""
    from cloudsim import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog or "cloudsim",
        description="cloudsim: run code written for PiCloud's cloud API on this machine, with the cloud's "
        "pitfalls reproduced and explained.",
        epilog=_EXIT_HELP + "\n" + _SETTINGS_HELP,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a PiCloud-era script unchanged",
        description="Run SCRIPT as `python SCRIPT ARGS` would, with `import cloud` resolving to cloudsim and the "
        "simulator starting on first use (use_simulator); sys.argv is the script's and __main__ is the script. "
        "The simulator is closed afterwards and the pitfalls found during the run are listed on stderr.",
        epilog=_EXIT_HELP + "\n" + _SETTINGS_HELP,
        formatter_class=fmt,
    )
    run.add_argument("--strict", action="store_true", help="exit with status 1 when any pitfall was found")
    run.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    run.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="arguments for the script (its sys.argv[1:])")

    check = sub.add_parser(
        "check",
        help="print cloudsim.check's pitfall report for one call",
        description="Import FUNC from MODULE (the working directory is on sys.path) and print the report of "
        "cloudsim.check(FUNC, *ARGS, **KWARGS). Each ARG is a Python literal (3, 'text', [1, 2]) or else a "
        "plain string; NAME=VALUE passes a keyword argument. Exit status 1 when the report is not OK (a pitfall "
        "was found or a run failed).",
        epilog=_EXIT_HELP,
        formatter_class=fmt,
    )
    check.add_argument("target", metavar="MODULE:FUNC", help="e.g. mypkg.tasks:resize")
    check.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="arguments of the call")

    conf = sub.add_parser(
        "conformance",
        help="run the conformance suite and write a report",
        description="Run `pytest conformance` (the suite in cloudsim's source repository) and write what each "
        "quirk case checked and its outcome as a table on the terminal and as conformance.md, conformance.json "
        "and conformance.xml (JUnit) in the report directory. Arguments after `--` go to pytest "
        "(e.g. -- -k sys_exit -x). Status 1 when a case failed; 2 when pytest refused the arguments "
        "(e.g. an unknown backend).",
        epilog=_EXIT_HELP,
        formatter_class=fmt,
    )
    conf.add_argument("--backend", metavar="NAME",
                      help="backend(s) to judge: a registered name (default: simulator) or package.module:Class")
    conf.add_argument("--report-dir", metavar="DIR", help="where to write the reports (default: ./conformance-report)")

    sub.add_parser(
        "demo",
        help="a tour of the simulator (examples/demo.py)",
        description="Run examples/demo.py: PiCloud code running locally, with the cloud's pitfalls happening.",
        epilog=_EXIT_HELP,
        formatter_class=fmt,
    )
    return parser


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run the ``cloudsim`` command; returns the exit status (see the module docstring)."""
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv and argv[:1] == ["conformance"]:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return EXIT_OK if not exc.code else EXIT_USAGE
    if ns.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if ns.command == "run":
            return cmd_run(ns)
        if ns.command == "check":
            return cmd_check(ns)
        if ns.command == "conformance":
            return cmd_conformance(ns, extra)
        if ns.command == "demo":
            return cmd_demo(ns)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        _say(f"{parser.prog} {ns.command}: error: {exc}")
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {ns.command!r}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
