"""The processes of the simulated server, seen from the client.

:class:`ServerProcess` starts the fork server (``cloudsim.job.zygote``) in a
fresh interpreter with a clean ``sys.path`` (standard library, installed
packages, the flat module directory) and a minimal environment, asks it for
workers and receives each worker's socket. :class:`WorkerHandle` is the
client's end of one worker. Nothing here decides what runs where: that is the
manager's job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from typing import Callable, Deque, Dict, List, Optional

import psutil

from cloudsim.errors import CloudException
from cloudsim.server import protocol

log = logging.getLogger(__name__)

# Environment variables a job's interpreter inherits from the client; the rest
# of the client's environment stays behind, as it would on the cloud.
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TEMP", "TMP", "USER", "LOGNAME", "SYSTEMROOT")

# Runs with -I -S: no site processing, so .pth hooks of the client's environment
# (editable installs of user projects among them) do not reach the server.
_BOOTSTRAP = """\
import sys, json
cfg = json.loads(sys.argv[1])
sys.path[:] = cfg["path"]
if cfg.get("coverage"):
    import os
    try:
        import coverage
    except ImportError:
        coverage = None
    if coverage is not None:
        here = os.getcwd()
        os.chdir(cfg["client_cwd"])  # relative config, source and data file paths are the client's
        try:
            cov = coverage.process_startup()
        finally:
            os.chdir(here)
        os.environ["CLOUDSIM__CLIENT_CWD"] = cfg["client_cwd"]
        if cov is not None:  # workers restart coverage after fork, writing next to the client's data
            os.environ["COVERAGE_FILE"] = os.path.join(cfg["client_cwd"], cov.config.data_file)
import importlib.machinery
class _CloudsimFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in ("cloudsim", "pytest_cloudsim"):
            return importlib.machinery.PathFinder.find_spec(name, [cfg["home"]])
        return None
sys.meta_path.insert(0, _CloudsimFinder)
import site
site.setquit()  # exit() and quit() exist on the cloud's interpreters, as in any normal one
site.setcopyright()
site.sethelper()
from cloudsim.job import zygote
zygote.main(cfg["control"], cfg["fds"], cfg["settings"])
"""


def server_sys_path(module_dir: str) -> List[str]:
    """The server's ``sys.path``: the client's installed-code entries, then the flat module directory."""
    from cloudsim.shipping.analysis import installed_roots

    roots = installed_roots()
    out: List[str] = []
    for entry in sys.path:
        if not entry:
            continue
        real = os.path.realpath(entry)
        if any(real == r or real.startswith(r + os.sep) for r in roots) and entry not in out:
            out.append(entry)
    out.append(module_dir)
    return out


def job_environment(module_dir: str) -> Dict[str, str]:
    """The minimal environment of the server and its jobs."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env["CLOUDSIM__MODULE_DIR"] = module_dir
    # the cloud's machines have a home of their own, not the user's
    home = os.path.join(os.path.dirname(module_dir), "home")
    os.makedirs(home, exist_ok=True)
    env["HOME"] = home
    env["MPLBACKEND"] = "Agg"  # package-behavior: no display on the cloud
    env["PYTHONUNBUFFERED"] = "1"
    env["CLOUDSIM__SERVER"] = "1"
    for key in ("CLOUDSIM__NO_CHECKS", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COVERAGE_FILE", "COVERAGE_RCFILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


class WorkerHandle:
    """The client's end of one worker interpreter."""

    __slots__ = ("wid", "pid", "channel", "outstanding", "retiring")

    def __init__(self, wid: int, pid: int, channel: protocol.Channel) -> None:
        self.wid = wid
        self.pid = pid
        self.channel = channel
        # jobs sent to this worker, in the order it runs them; the first is running
        self.outstanding: Deque = deque()
        self.retiring = False

    def __repr__(self) -> str:
        return f"<worker {self.wid} pid {self.pid} outstanding {len(self.outstanding)}>"


class ServerProcess:
    """The fork server: started once per simulator, asked for workers, stopped at close."""

    def __init__(self, settings: dict, session_dir: str, module_dir: str) -> None:
        self.settings = settings
        self.session_dir = session_dir
        self.module_dir = module_dir
        self.log_path = os.path.join(session_dir, "server.log")
        self.proc: Optional[subprocess.Popen] = None
        self.control: Optional[protocol.Channel] = None
        self.fdsock: Optional[socket.socket] = None
        self.pid: Optional[int] = None
        self.info: dict = {}

    def start(self, timeout: float, while_waiting: Optional[Callable[[], None]] = None) -> None:
        control_a, control_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd_a, fd_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cfg = {
            "path": server_sys_path(self.module_dir),
            "home": home,
            "control": control_b.fileno(),
            "fds": fd_b.fileno(),
            "settings": self.settings,
            "coverage": bool(os.environ.get("COVERAGE_PROCESS_START") or os.environ.get("COVERAGE_PROCESS_CONFIG")),
            "client_cwd": os.getcwd(),
        }
        os.makedirs(self.session_dir, exist_ok=True)
        os.makedirs(self.module_dir, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(cfg)],
                pass_fds=(control_b.fileno(), fd_b.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=self.session_dir,
                env=job_environment(self.module_dir),
                close_fds=True,
            )
        control_b.close()
        fd_b.close()
        self.pid = self.proc.pid
        self.control = protocol.Channel(control_a)
        self.fdsock = fd_a
        if while_waiting is not None:
            while_waiting()
        if not self.control.poll(timeout):
            self.kill()
            raise CloudException(
                f"The simulated server did not start within {timeout:g} s (startup_timeout). "
                f"Its log: {self.log_path}"
            )
        try:
            message = self.control.recv()
        except protocol.ChannelClosed:
            self.proc.wait(5)
            raise CloudException(
                f"The simulated server failed to start (exit status {self.proc.returncode}).\n"
                f"Its output:\n{self._log_tail()}"
            ) from None
        assert message[0] == protocol.HELLO, message
        self.info = message[2]

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def request_worker(self, wid: int, worker_dir: str) -> None:
        assert self.control is not None
        self.control.send((protocol.SPAWN, wid, worker_dir))

    def receive_worker_socket(self) -> socket.socket:
        assert self.fdsock is not None
        fd = protocol.recv_fd(self.fdsock)
        return socket.socket(fileno=fd)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to stop (it kills its workers), then make sure it did."""
        if self.proc is None:
            return
        try:
            if self.control is not None:
                self.control.send((protocol.STOP,))
        except protocol.ChannelClosed:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.debug("stopping server %s: it did not exit within %.1f s, killing it", self.pid, timeout)
            self.kill()
        for sock in (self.control, self.fdsock):
            if sock is not None:
                sock.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait(5)


def kill_worker_tree(pid: int) -> None:
    """SIGKILL a worker, its process group, and any descendants that left the group."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass
