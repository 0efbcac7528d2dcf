"""Estimate pi on the cloud: throw darts at a square in batches, one job per batch.

A PiCloud-era script: it imports ``cloud`` and nothing else of cloudsim. Run it
on this machine with::

    cloudsim run examples/legacy/monte_carlo_pi.py [BATCHES] [DARTS_PER_BATCH]
"""

import sys

import cloud


def throw_darts(seed, darts):
    """Runs on the cloud: how many of ``darts`` random points of the unit square fall in the quarter circle."""
    import random

    rng = random.Random(seed)  # each batch its own stream, so the batches are independent
    hits = 0
    for _ in range(darts):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def main():
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    darts = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
    jids = cloud.map(throw_darts, range(batches), [darts] * batches)
    hits = cloud.result(jids)
    estimate = 4.0 * sum(hits) / (batches * darts)
    print("batches: %d jobs, %d darts each" % (len(jids), darts))
    print("hits per batch: %s" % hits)
    print("pi is about %.4f" % estimate)


if __name__ == "__main__":
    main()
