"""cloudsim's conformance suite: one executable case per quirk id of the catalogue.

Each case in ``conformance/test_<section>.py`` proves, through the public
``cloud`` API only, that a backend reproduces one documented behaviour of
PiCloud (``QUIRKS.md``, ``docs/pitfalls.md``). The cases are written against
:class:`conformance.backends.Backend`, so any implementation of the API can be
judged by them; cloudsim's simulator is the default backend.

Run it with ``python -m pytest conformance`` (see ``conformance/README.md``).
"""

from __future__ import annotations

__all__ = ["backends"]
