"""A job that opens a data file of the project: it works on a laptop, and fails on the cloud.

Only code travels with a job. ``data/words.txt`` sits next to this script, on
the client's disk; the job runs on the cloud, where that path does not
exist. The fix: put the file in ``cloud.files`` from the client and read it
from there in the job.

Run it with ``cloudsim run examples/legacy/data_file_mistake.py``.
"""

import os

import cloud

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "words.txt")


def count_words(path):
    """The mistake: open a file of the client's project from inside a job."""
    with open(path) as f:
        return len(f.read().split())


def count_stored_words(name):
    """The fix: read the file from cloud.files, the cloud's data store."""
    stored = cloud.files.getf(name)
    try:
        return len(stored.read().decode("utf-8").split())
    finally:
        stored.close()


def main():
    print("counting the words of %s on the cloud" % os.path.relpath(DATA))
    jid = cloud.call(count_words, DATA)
    try:
        print("the job read the file: %d words (on the real cloud this job fails)" % cloud.result(jid))
    except cloud.CloudException as exc:
        print("the job failed, as it would on the cloud:")
        print("    " + str(exc).strip().splitlines()[-1])

    print("the fix: cloud.files.put() in the client, cloud.files.getf() in the job")
    cloud.files.put(DATA, "words.txt")
    words = cloud.result(cloud.call(count_stored_words, "words.txt"))
    print("words counted on the cloud from cloud.files: %d" % words)
    cloud.files.delete("words.txt")


if __name__ == "__main__":
    main()
