"""``python -m cloudsim``: the ``cloudsim`` command (see :mod:`cloudsim.cli`)."""

from __future__ import annotations

import sys

from cloudsim.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m cloudsim"))
