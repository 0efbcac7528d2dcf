"""Code shipping: which user modules a job needs, and the flat module directory they are sent to."""
