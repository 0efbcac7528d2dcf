"""Shared fixtures: a simulator per test module or per test, and a check that nothing outlives its test.

Every process a test starts must be gone when it ends: the session fixture
closes the simulator and asserts (with psutil) that no child process of the
test runner is left, and `no_leaked_processes` does the same per test.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator, List

import psutil
import pytest

import cloudsim


def _children() -> List[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def wait_no_children(timeout: float = 10.0, keep: tuple = ()) -> List[psutil.Process]:
    """Poll until this process has no children (other than ``keep`` pids); return what is left."""
    deadline = time.monotonic() + timeout
    left = [p for p in _children() if p.pid not in keep]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in _children() if p.pid not in keep and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return left


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0,
               on_fail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until it is true; fail naming ``what`` (and ``on_fail()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}. {on_fail()}")
        time.sleep(0.02)


def describe(procs: List[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f"pid {p.pid} {p.status()} {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {p.pid} (gone)")
    return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def _no_processes_left_at_end() -> Iterator[None]:
    yield
    cloudsim.close()
    left = wait_no_children()
    for p in left:  # end only what this run started, then fail loudly
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, "processes outlived the test session:\n" + describe(left)


@pytest.fixture
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The cloudsim module with a simulator started for this test (default settings), closed after it."""
    cloudsim.start_simulator(force_restart=True, server_root=str(tmp_path_factory.getbasetemp() / "server"))
    try:
        yield cloudsim
    finally:
        cloudsim.close()


@pytest.fixture
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """start(**settings): start a simulator with these settings for this test; closed after it."""
    root = str(tmp_path_factory.getbasetemp() / "server")

    def _start(**settings: object) -> object:
        settings.setdefault("server_root", root)
        cloudsim.start_simulator(force_restart=True, **settings)
        return cloudsim

    try:
        yield _start
    finally:
        cloudsim.close()


@pytest.fixture
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if it leaves a child process behind after the simulator is closed."""
    before = {p.pid for p in _children()}
    yield
    cloudsim.close()
    left = wait_no_children(keep=tuple(before))
    assert not left, "processes left behind:\n" + describe(left)
