"""Serialization logs: the object tree of a piece that could not be sent, written to disk.

PiCloud wrote serialization reports so a user could find the variable that
broke pickling. cloudsim writes one when a piece of a job cannot be pickled
or is too large (never on success), in two forms side by side:

    <server_root>/logs/serialization/<YYYY-MM-DD>/<HHMMSS>-<pid>-<n>-<slug>.txt    for people
    <server_root>/logs/serialization/<YYYY-MM-DD>/<HHMMSS>-<pid>-<n>-<slug>.json   for tools

The text shows one node a line (path, type, size) and marks the node that
failed with ``<-- FAILED HERE``; the JSON holds the same tree
(``{"path", "type", "size", "failed", "error", "culprit", "children"}``) under
``"tree"`` with a header (``what``, ``reason``, ``limit``, ``size``, ``pid``,
``time``). The error message gives both paths; :func:`log_directory` gives the
directory for a server root.

``<server_root>`` is, in order: the root of the simulator running in this
process, the server's (inside a job: the worker's ``server_root`` setting, or
the parent of ``CLOUDSIM__MODULE_DIR``), else the configured ``server_root``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from typing import Any, Dict, Optional, Tuple

from cloudsim.wire.tree import Node

__all__ = ["log_directory", "current_server_root", "write"]

_SEQ = itertools.count(1)


def log_directory(server_root: str, day: Optional[str] = None) -> str:
    """The directory of the serialization logs of one day (today by default) under ``server_root``."""
    return os.path.join(server_root, "logs", "serialization", day or time.strftime("%Y-%m-%d"))


def current_server_root() -> str:
    """The server root of the running simulator, the job's server, or the configured one."""
    client = sys.modules.get("cloudsim.client")
    sim = getattr(client, "_cloud", None) if client is not None else None
    root = getattr(sim, "root", None)
    if isinstance(root, str) and root:
        return root
    context = sys.modules.get("cloudsim.job.context")  # inside a job: the worker's settings
    ctx = context.current() if context is not None and hasattr(context, "current") else None
    root = (getattr(ctx, "settings", None) or {}).get("server_root") if ctx is not None else None
    if isinstance(root, str) and root:
        return root
    module_dir = os.environ.get("CLOUDSIM__MODULE_DIR")
    if os.environ.get("CLOUDSIM__SERVER") and module_dir:
        return os.path.dirname(os.path.abspath(module_dir))
    try:
        from cloudsim.config import config

        return os.path.abspath(config.server_root)
    except Exception:  # a bad setting must not hide the pickling error itself
        from cloudsim.config import default_server_root

        return default_server_root()


def _slug(what: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", what).strip("-").lower()[:60] or "piece"


def write(what: str, reason: str, tree: Node, header: Dict[str, Any],
          server_root: Optional[str] = None) -> Tuple[str, str]:
    """Write the text and JSON logs of one failed piece; returns their paths.

    Args:
        what: the piece, e.g. ``"cloud.call(foo): the positional arguments"``.
        reason: ``"unpicklable"`` or ``"transmit-size"``.
        tree: the walked object tree.
        header: extra facts for the JSON header (``limit``, ``size``, ...).
        server_root: where to write; :func:`current_server_root` when None.

    Raises:
        OSError: the log could not be written (callers say so in their message).
    """
    directory = log_directory(server_root or current_server_root())
    os.makedirs(directory, exist_ok=True)
    stem = f"{time.strftime('%H%M%S')}-{os.getpid()}-{next(_SEQ)}-{_slug(what)}"
    base = os.path.join(directory, stem)
    head = {"what": what, "reason": reason, "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **header}
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump({**head, "tree": tree.to_dict()}, f, indent=1, default=str)
    with open(base + ".txt", "w", encoding="utf-8") as f:
        f.write(f"cloudsim serialization log ({reason})\n")
        for key, value in head.items():
            if key != "reason":
                f.write(f"{key}: {value}\n")
        f.write("\nEach line: path  (type, size when pickled alone); the node that failed is marked.\n\n")
        for line in tree.lines():
            f.write(line + "\n")
    return base + ".txt", base + ".json"
