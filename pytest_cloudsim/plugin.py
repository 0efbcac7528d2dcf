"""pytest entry point (``pytest11``) of cloudsim.

Registers the ``--cloudsim`` option only; nothing of cloudsim is imported
unless it is given, so having the plugin installed costs nothing.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloudsim", "run cloud calls through the cloudsim simulator")
    group.addoption(
        "--cloudsim",
        action="store_true",
        default=False,
        help="start the cloudsim simulator for this test session.",
    )
