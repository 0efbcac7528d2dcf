"""Recursive jobs that cannot deadlock: each job hands its sum to a dependent job (``_depends_on``).

PiCloud's pitfalls page shows the recursive Fibonacci that blocks on its
children (``cloud.join`` inside a job): with the job cap, every running job
ends up waiting for jobs that can never start. Its advice: "use Dependencies
instead of blocking recursion". That is this script: no job ever waits for an
unfinished job.

- ``fib(n)`` submits ``fib(n-1)``, ``fib(n-2)`` and an ``add`` job that
  depends on both, and returns at once with ``("job", <jid of add>)``;
- ``add`` runs when both are done; if a child handed its sum on to yet
  another job, ``add`` submits itself again, depending on that job;
- the client follows the chain of jids to the value.

Run it with ``cloudsim run examples/legacy/recursive_fib.py [N]``.
"""

import sys

import cloud


def fib(n):
    """Runs on the cloud: a value for n <= 1, else the jid of the job that will add the two halves."""
    if n <= 1:
        return ("value", 1)
    left = cloud.call(fib, n - 1)
    right = cloud.call(fib, n - 2)
    return ("job", cloud.call(add, left, right, _depends_on=[left, right]))


def add(left, right):
    """Runs on the cloud once ``left`` and ``right`` are finished: never blocks on an unfinished job."""
    (kind_l, left_value), (kind_r, right_value) = cloud.result([left, right])  # both done: no waiting
    if kind_l == "value" and kind_r == "value":
        return ("value", left_value + right_value)
    # a child passed its sum on to another job: add again once that one is done
    next_left = left_value if kind_l == "job" else left
    next_right = right_value if kind_r == "job" else right
    waiting = [jid for kind, jid in ((kind_l, left_value), (kind_r, right_value)) if kind == "job"]
    return ("job", cloud.call(add, next_left, next_right, _depends_on=waiting))


def follow(jid):
    """In the client: follow the chain of jobs to the value."""
    kind, value = cloud.result(jid)
    while kind == "job":
        kind, value = cloud.result(value)
    return value


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    top = cloud.call(fib, n)
    print("fib(%d) = %d" % (n, follow(top)))


if __name__ == "__main__":
    main()
