"""The simulated server: a clean interpreter that forks worker interpreters.

The client starts this module in a fresh interpreter (never a fork of the
client), with a clean ``sys.path`` and a minimal environment. It imports the
job runtime once, then forks a worker whenever the client asks for one, so a
new worker costs a fork, not an interpreter start-up. It is single-threaded,
which is what makes forking it safe.

It owns its workers: it reaps them and reports how each one ended (exit
status or signal), and when the client goes away (its control socket closes,
also when the client is SIGKILLed) it kills every worker and exits. Workers
die with it through ``PR_SET_PDEATHSIG`` on Linux and by noticing their
parent changed elsewhere.

Not for: scheduling (the client's manager decides what runs where) or
running user code (the workers do).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
from typing import Dict

from cloudsim.server import protocol
from cloudsim.job import worker as _worker


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError, OSError):
            pass


class Server:
    """The fork server's event loop: spawn requests in, exit reports out."""

    def __init__(self, control: socket.socket, fdsock: socket.socket, settings: dict) -> None:
        self.control = protocol.Channel(control)
        self.fdsock = fdsock
        self.settings = settings
        # worker pid -> worker id, e.g. {4242: 3}
        self.children: Dict[int, int] = {}
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the client
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.control.fileno(), selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.control.send((protocol.HELLO, os.getpid(), {"sys_path": list(sys.path), "executable": sys.executable}))
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.data == "signal":
                        try:
                            os.read(self.wake_r, 4096)
                        except BlockingIOError:
                            pass
                        self.reap()
                    elif not self.on_control():
                        return
        finally:
            self.shutdown()

    def on_control(self) -> bool:
        """Handle every request that has arrived; False when the client is gone or said stop."""
        try:
            messages = self.control.recv_available()
        except protocol.ChannelClosed:
            return False
        for message in messages:
            if message[0] == protocol.SPAWN:
                self.spawn(message[1], message[2])
            elif message[0] == protocol.STOP:
                return False
        return True

    def spawn(self, worker_id: int, worker_dir: str) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as exc:
            parent_end.close()
            child_end.close()
            self.control.send((protocol.SPAWN_FAILED, worker_id, f"fork failed: {exc}"))
            return
        if pid == 0:  # the worker
            code = 1
            try:
                parent_end.close()
                self.selector.close()
                for fd in (self.wake_r, self.wake_w):
                    os.close(fd)
                self.control.close()
                self.fdsock.close()
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                code = _worker.main(child_end, worker_id, worker_dir, self.settings)
            finally:
                os._exit(code)
        child_end.close()
        self.children[pid] = worker_id
        protocol.send_fd(self.fdsock, parent_end.fileno())
        parent_end.close()
        self.control.send((protocol.SPAWNED, worker_id, pid))

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            try:  # what the job started dies with its interpreter (a pid in use as a group id is never reused)
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
            try:
                self.control.send((protocol.EXITED, pid, code))
            except protocol.ChannelClosed:
                pass

    def shutdown(self) -> None:
        for pid in list(self.children):
            _kill_group(pid)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()


def main(control_fd: int, fd_fd: int, settings: dict) -> None:
    """Entry point, called by the bootstrap code the client passes with ``-c``."""
    control = socket.socket(fileno=control_fd)
    fdsock = socket.socket(fileno=fd_fd)
    Server(control, fdsock, settings).serve()
