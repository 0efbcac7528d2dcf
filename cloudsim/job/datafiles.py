"""Only code is shipped: a job cannot open the data files of the client's project (``non-code-files``, ``sqlite``).

On PiCloud a job ran on another machine, where the client's project tree
did not exist: only the code the job needed was shipped. Here the worker
runs on the same disk, so this hook puts the project out of reach while a
job runs. A ``sys.addaudithook`` hook (so ``open()``, ``io.open``,
``os.open``, ``pathlib`` and C code that raises the ``open`` audit event are
all covered, not only a patched builtin) refuses:

- ``open`` of a path inside the client's project tree: ``FileNotFoundError``
  whose text says data files are not sent and points to ``cloud.files``;
- ``sqlite3.connect`` to a database file inside the project:
  ``sqlite3.OperationalError`` naming sqlite and saying a socket-based
  database is needed.

Each refusal is also recorded as a pitfall on the job, even when the job
catches the error.

"The client's project tree" is the worker setting ``project_dirs`` (the
client's working directory when the simulator started, the directory of its
``__main__`` script, and the directories its shipped modules came from),
plus ``project_dirs`` in a job's options when given. Paths below a more
specific *allowed* root stay reachable even inside the project: the
installed Python (standard library, site-packages, a virtualenv inside the
project), cloudsim's own package, the server root (the job's working
directory, the flat module directory, the data store) and the temporary
directory. The decision goes to the longest matching root. Reading source
lines for tracebacks (``linecache``) is let through, so job tracebacks keep
their source lines.

The hook is inert outside jobs (between ``before`` and ``after``), so the
worker's own machinery is never affected.

Not for: what crosses the wire at call time (``cloudsim.wire``).
"""

from __future__ import annotations

import errno
import os
import site
import sys
import sysconfig
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Tuple

from cloudsim import pitfalls as _pitfalls
from cloudsim.job import scope as _scope

__all__ = ["install", "before", "after", "configure", "decide", "roots"]

MAX_RECORDS = 5  # pitfall records per job and kind; a loop over many files needs only a few

_READ_TEXT = (
    "No such file on the cloud: the data files of your project are not sent with a job, only code "
    "(pitfall: non-code-files). Store the file with cloud.files.put() in the client and fetch it in the "
    "job with cloud.files.get()"
)
_WRITE_TEXT = (
    "No such directory on the cloud: your project's directories are not on the server, so a job cannot "
    "write into them (pitfall: non-code-files). Write into the job's working directory and return the "
    "data, or store it with cloud.files.put()"
)
_SQLITE_TEXT = (
    "unable to open database file {path!r} on the cloud: sqlite is a file-based database and the files "
    "of your project are not sent with a job (pitfall: sqlite). A job needs a socket-based database server "
    "(PostgreSQL, MySQL, ...) that it reaches over the network"
)

_active = False  # True while a job runs
_in_hook = False  # the hook's own work must not be checked again
# (root with a trailing separator, is_project), longest first, e.g. [('/work/p/.venv/', False), ('/work/p/', True)]
_roots: List[Tuple[str, bool]] = []
_base: Tuple[List[str], List[str]] = ([], [])  # the project dirs and allowed roots from install()
_base_roots: List[Tuple[str, bool]] = []  # the decision table of _base
# a job's extra project dirs -> the decision table with them, e.g. {('/proj',): [('/proj/.venv/', False), ...]}
_tables: Dict[Tuple[str, ...], List[Tuple[str, bool]]] = {}
# what the running job was refused: (kind, path, mode), kind 'open' or 'sqlite'
_found: List[Tuple[str, str, str]] = []
_linecache_files: frozenset = frozenset()


def _real(path: str) -> str:
    real = os.path.realpath(path)
    return real if real.endswith(os.sep) else real + os.sep


def configure(project_dirs: Iterable[str], allowed: Iterable[str]) -> None:
    """Set the project dirs and the allowed roots the hook decides by."""
    global _roots
    table = {}
    for root in allowed:
        if isinstance(root, str) and root:
            table[_real(root)] = False
    for root in project_dirs:
        if isinstance(root, str) and root:
            key = _real(root)
            table.setdefault(key, True)  # a root both allowed and project (e.g. /tmp) stays allowed
    _roots = sorted(table.items(), key=lambda item: -len(item[0]))


def roots() -> List[Tuple[str, bool]]:
    """The decision table, longest root first: ``[(root/, is_project), ...]``."""
    return list(_roots)


# directory -> its real path, for this job (a realpath per open would double the cost of open())
_real_dirs: Dict[str, str] = {}


def _resolve(path: str) -> str:
    """``os.path.realpath(path)`` with the directory part cached (a last component that is itself a
    symlink is not followed: that would cost an ``lstat`` per open)."""
    absolute = os.path.abspath(path)
    head, _, tail = absolute.rpartition(os.sep)
    real_head = _real_dirs.get(head)
    if real_head is None:
        if len(_real_dirs) > 4096:
            _real_dirs.clear()
        real_head = _real_dirs[head] = os.path.realpath(head or os.sep)
    return real_head.rstrip(os.sep) + os.sep + tail if tail else real_head


def decide(path: str) -> bool:
    """True when ``path`` (made absolute against the current directory) is a data file of the project."""
    real = _resolve(path)
    probe = real if real.endswith(os.sep) else real + os.sep
    for root, is_project in _roots:
        if probe.startswith(root):
            return is_project
    return False


def _allowed_roots(settings: dict) -> List[str]:
    """Installed Python, cloudsim's own code, the server root, the job's directory and the temp dir."""
    found = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib", "include", "platinclude", "scripts", "data"):
        if paths.get(key):
            found.add(paths[key])
    for prefix in (sys.prefix, sys.exec_prefix, getattr(sys, "base_prefix", ""), getattr(sys, "base_exec_prefix", "")):
        if prefix:
            found.add(prefix)
    # The server runs without site processing, so sys.prefix is the base interpreter's even when
    # the client runs in a virtualenv (often one inside the project): every entry of the server's
    # sys.path is installed code, and so is the environment the interpreter was started from.
    found.update(p for p in sys.path if p)
    found.add(os.path.dirname(os.path.dirname(os.path.abspath(sys.executable))))
    try:
        found.update(site.getsitepackages())
        if site.ENABLE_USER_SITE and site.USER_SITE:
            found.add(site.USER_SITE)
    except Exception:  # pragma: no cover - an unusual site module
        pass
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../cloudsim
    found.add(package)
    found.add(os.path.join(os.path.dirname(package), "pytest_cloudsim"))
    for key in ("server_root",):
        if settings.get(key):
            found.add(settings[key])
    module_dir = os.environ.get("CLOUDSIM__MODULE_DIR")
    if module_dir:
        found.add(os.path.dirname(module_dir))
        found.add(module_dir)
    found.add(os.getcwd())  # the worker's own directory (install runs after chdir)
    found.add(tempfile.gettempdir())
    return sorted(found)


def install(settings: dict) -> None:
    """Once per worker: learn the project tree and add the audit hook (inert until a job starts)."""
    global _linecache_files
    import linecache
    import tokenize

    install_settings(settings)
    _linecache_files = frozenset(f for f in (getattr(linecache, "__file__", None), getattr(tokenize, "__file__", None)) if f)
    sys.addaudithook(_audit)


def install_settings(settings: dict) -> None:
    """Learn the client's project tree (again, for a later client of a shared Dask worker)."""
    global _base, _base_roots
    project = [d for d in settings.get("project_dirs") or [] if isinstance(d, str)]
    allowed = _allowed_roots(settings)
    _base = (project, allowed)
    configure(project, allowed)
    _base_roots = _roots
    _tables.clear()


def before(job: Any) -> None:
    """Arm the hook for this job (with its own extra project dirs, if its options carry any)."""
    global _active
    global _roots
    extra = (job.opts or {}).get("project_dirs")
    if extra:
        key = tuple(extra)
        table = _tables.get(key)
        if table is None:  # resolving the roots costs a realpath each: once per distinct set of dirs
            configure(list(_base[0]) + [d for d in extra if isinstance(d, str)], _base[1])
            table = _tables[key] = _roots
        _roots = table
        job.scratch[__name__] = True
    _found.clear()
    _real_dirs.clear()  # a job may have changed symlinks since the last one
    _active = True


def after(job: Any) -> None:
    """Disarm the hook and record a pitfall for each project file the job was refused."""
    global _active
    _active = False
    global _roots
    if job.scratch.pop(__name__, None):
        _roots = _base_roots
    if not _found:
        return
    seen = set()
    counts = {"open": 0, "sqlite": 0}
    for kind, path, mode in _found:
        if (kind, path) in seen or counts[kind] >= MAX_RECORDS:
            continue
        seen.add((kind, path))
        counts[kind] += 1
        job.pitfalls.append(_record(job, kind, path, mode))
    _found.clear()


def _record(job: Any, kind: str, path: str, mode: str) -> dict:
    name = getattr(job, "func_name", "?")
    if kind == "sqlite":
        return _pitfalls.record(
            "sqlite",
            f"Job {job.jid} ({name}) connected to the sqlite database {path}, a file of your project; "
            "the file is not on the cloud.",
            "sqlite is a file-based database: its file stays on your machine and a job cannot reach it.",
            "use a socket-based database server (PostgreSQL, MySQL, ...) that the job reaches over the network.",
            path=path,
        )
    action = "write" if mode == "write" else "read"
    return _pitfalls.record(
        "non-code-files",
        f"Job {job.jid} ({name}) tried to {action} {path}, a data file of your project; it is not on the cloud.",
        "only code is shipped with a job; the data files of your project are not sent.",
        "store the file with cloud.files.put() in the client and fetch it in the job with cloud.files.get()"
        + (", or write into the job's working directory and return the data." if action == "write" else "."),
        path=path,
        mode=action,
    )


def _from_linecache() -> bool:
    frame: Optional[Any] = sys._getframe(3)  # above _from_linecache, _on_open, _audit
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_code.co_filename in _linecache_files:
            return True
        frame = frame.f_back
    return False


def _writing(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    if isinstance(flags, int):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    return False


def _on_open(args: tuple) -> Optional[BaseException]:
    target = args[0] if args else None
    if target is None or isinstance(target, int):
        return None
    try:
        text = os.fsdecode(target)
    except TypeError:
        return None
    if not decide(text):
        return None
    writing = _writing(args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
    if not writing and _from_linecache():
        return None
    _found.append(("open", _resolve(text), "write" if writing else "read"))
    return FileNotFoundError(errno.ENOENT, _WRITE_TEXT if writing else _READ_TEXT, text)


def _sqlite_path(database: Any) -> Optional[str]:
    try:
        text = os.fsdecode(database)
    except TypeError:
        return None
    if not text or text == ":memory:":
        return None
    if text.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        text = unquote(parsed.path)
        if not text or text == ":memory:" or "mode=memory" in parsed.query:
            return None
    return text


def _on_sqlite(args: tuple) -> Optional[BaseException]:
    path = _sqlite_path(args[0]) if args else None
    if path is None or not decide(path):
        return None
    _found.append(("sqlite", _resolve(path), "read"))
    error = getattr(sys.modules.get("sqlite3"), "OperationalError", None) or OSError
    return error(_SQLITE_TEXT.format(path=path))


def _audit(event: str, args: tuple) -> None:
    global _in_hook
    if not _active or _in_hook:
        return
    if event == "open":
        handler = _on_open
    elif event == "sqlite3.connect":
        handler = _on_sqlite
    else:
        return
    if not _scope.applies():
        return
    _in_hook = True
    try:
        refusal = handler(args)
    finally:
        _in_hook = False
    if refusal is not None:
        raise refusal  # raised here, so the job's traceback shows one frame of cloudsim, not three
