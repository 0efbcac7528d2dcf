"""A tour of cloudsim: PiCloud code running locally, with the cloud's pitfalls happening for real.

Run it with ``python examples/demo.py``. Each step prints what the code did,
what the simulated cloud answered, and what that means for code that will run
on a remote service.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import warnings

import cloudsim as cloud


def say(title: str, text: str = "") -> None:
    print(f"\n== {title}")
    if text:
        print(textwrap.indent(textwrap.dedent(text).strip(), "   "))


def square(x: int) -> int:
    return x * x


def increment_first(values: list) -> list:
    values[0] += 1
    return values


def divide(a: float, b: float) -> float:
    return a / b


def leave_without_returning() -> None:
    import sys

    sys.exit(3)


def fib(n: int) -> int:
    """The recursive Fibonacci from PiCloud's own pitfalls page: every job blocks on two more."""
    import cloudsim as cloud

    if n <= 1:
        return 1
    a = cloud.call(fib, n - 1)
    b = cloud.call(fib, n - 2)
    return cloud.result(a) + cloud.result(b)


def main() -> None:
    root = tempfile.mkdtemp(prefix="cloudsim-demo-")
    cloud.start_simulator(server_root=root, max_concurrent_jobs=4)
    say("1. A job runs somewhere else",
        f"cloud.call(square, 12) -> jid; cloud.result(jid) = {cloud.result(cloud.call(square, 12))}.\n"
        f"The client is process {os.getpid()}; the job ran in process {cloud.result(cloud.call(os.getpid))}, "
        "a fresh interpreter that later jobs reuse.")

    jids = cloud.map(square, range(10))
    say("2. cloud.map makes one job per element",
        f"jids {jids[0]}..{jids[-1]} -> {cloud.result(jids)}")

    data = [1, 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = cloud.result(cloud.call(increment_first, data))
    told = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, cloud.PassByValueWarning)]
    say("3. Arguments are copied to the cloud (pass-by-value)",
        f"The job changed its copy to {new}; the client's list is still {data}.\n"
        "Only the return value comes back: return what you change.\n"
        + (f"cloudsim noticed and warned: {told[0]}" if told else ""))

    jid = cloud.call(divide, 1, 0)
    try:
        cloud.result(jid)
    except cloud.CloudException as exc:
        say("4. A failed job raises CloudException with the remote traceback", str(exc))

    try:
        cloud.call(square, b"x" * 2_000_000)
    except cloud.TransmitSizeError as exc:
        say("5. Too much data is refused before anything is sent (transmit-size)", str(exc))

    jid = cloud.call(leave_without_returning)
    try:
        cloud.result(jid)
    except cloud.CloudException as exc:
        say("6. A job must return, never exit (sys-exit)", str(exc).splitlines()[0] + "\n" + str(exc).splitlines()[1])

    crash = cloud.call(os._exit, 1)
    after = cloud.call(square, 3)
    try:
        cloud.result(crash)
    except cloud.CloudException as exc:
        say("7. A crashed interpreter fails only its own job",
            str(exc).splitlines()[0] + f"\nThe next job still ran: square(3) = {cloud.result(after)}.")

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        jid = cloud.call(fib, 5)
        try:
            cloud.result(jid, timeout=60)
        except cloud.CloudException as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            start = next((i for i, line in enumerate(lines) if "Deadlock" in line), 0)
            say("8. Recursive jobs that block on each other deadlock under the job cap (recursion-deadlock)",
                "fib(5) with max_concurrent_jobs=4: every slot is taken by a job waiting for jobs that can\n"
                "never start. On the cloud this hangs; here it is detected at once:\n\n"
                + "\n".join(lines[start:start + 12]))

    cloud.close()
    say("Done", "Every process the simulator started has been stopped.")


if __name__ == "__main__":
    main()
