"""What crosses the wire: serializing functions, arguments and results, and the limits on them."""
