"""What crosses the wire: serializing functions, arguments and results, and the limits on them.

- ``pickler``: ``serialize`` (call/map pieces) and ``serialize_result`` (a job's return value), the
  by-value policy, and the fast path (one pickling, nothing else, when all is well);
- ``rules``: PiCloud's rules in the pickler: ``files`` (read-only files travel whole; writable files,
  streams, virtual files and file methods are refused), ``transient`` (``__transient__``), refused types;
- ``diagnose``, ``tree``, ``explain``, ``log``: only when pickling failed or is too large: the path
  to the culprit or the largest parts, the message, and the serialization log under
  ``<server_root>/logs/serialization/``.
"""
