"""``multiprocessing.Pool`` code moved to the cloud with ``cloud.pool_interface``.

Run it with ``cloudsim run examples/legacy/pool_squares.py``.
"""

import cloud.pool_interface as pool


def square(x):
    """Runs on the cloud."""
    return x * x


def main():
    print("map: %s" % pool.map(square, range(8)))
    pending = pool.apply_async(square, (12,))
    print("apply_async: %d" % pending.get(timeout=60))
    print("imap_unordered, sorted: %s" % sorted(pool.imap_unordered(square, range(5))))


if __name__ == "__main__":
    main()
