"""Benchmarks: cloudsim beside multiprocessing, concurrent.futures and loky; its Dask backend beside plain Dask.

Run from the repository root::

    python -m bench.run            # the full run (a few minutes on 2 cores)
    python -m bench.run --quick    # a short run, to see that it works
    python -m bench.run --json out.json --only round_trip,map_throughput
    python -m bench.run --only dask_backend   # the Dask backend against plain distributed.Client

Everything is measured in one run, each contender beside the others, and
printed as one table: the absolute figures, and the ratio cloudsim / best
peer with the direction that is better. The Dask backend gets a second
table (:data:`TABLES`): cloudsim on a Dask cluster beside a plain
``distributed.Client`` on the same cluster, their ratio, and the wrapper's
share of each job's time. ``bench/README.md`` says what each
row measures and how to read it.

Layout: a *contender* (:class:`Contender`) is one way of running a job in
another process (cloudsim, ``multiprocessing.Pool``, ``ProcessPoolExecutor``,
loky); a *benchmark* is one function ``(Context) -> List[Row]`` registered
with ``@benchmark``. Adding a benchmark is that function plus its
``@benchmark`` line; adding a contender is one class plus one entry in
:data:`CONTENDERS`.

What this is not: a test. Nothing here asserts a speed; the only checks are
that every job returned the right value and that no process is left behind.

Only the standard library, cloudsim, loky and psutil are used, and
``distributed`` for the Dask table (that benchmark is skipped, with the
reason printed, where it is not installed). The heavy imports (cloudsim,
multiprocessing, concurrent.futures, loky, psutil, distributed) happen
inside the contenders and benchmarks, so that the cold-start benchmark
counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKERS = 4  # processes of every contender in the warm benchmarks (cloudsim: max_concurrent_jobs)
COLD_SLOTS = 16  # processes (slots) in the cold-start benchmark
CHILD_MARK = "BENCH-COLD-RESULT "  # prefix of the cold-start child's one result line
CHILD_TIMEOUT = 180.0  # seconds; only a hang reaches it


from bench.jobs import identity, inc  # noqa: E402 - the job functions, shipped on their own


# ------------------------------------------------------------------ contenders
class Contender:
    """One way of running a job in another process.

    ``open(slots)`` starts it with that many worker processes (or slots),
    ``call`` is one job there and back, ``run_each`` is one job per item
    (submitted all at once, then every result collected), ``close`` stops
    everything it started. ``peer`` is False for cloudsim itself.
    """

    label = "?"
    kind = "?"  # the name used on the command line of the cold-start child
    peer = True

    def open(self, slots: int) -> None:
        raise NotImplementedError

    def call(self, func: Callable, arg: Any) -> Any:
        raise NotImplementedError

    def run_each(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class CloudsimContender(Contender):
    """cloudsim's simulator, with ``server_root`` in a directory of the run's temporary directory."""

    label = "cloudsim"
    kind = "cloudsim"
    peer = False

    def __init__(self, root: str, label: str = "cloudsim", **settings: Any) -> None:
        self.root = root
        self.label = label
        self.settings = settings  # more start_simulator settings, e.g. {"pitfalls": "ignore"}
        self.cloud: Any = None

    def open(self, slots: int) -> None:
        import cloudsim as cloud

        self.cloud = cloud
        cloud.start_simulator(server_root=self.root, max_concurrent_jobs=slots, **self.settings)

    def call(self, func: Callable, arg: Any) -> Any:
        return self.cloud.result(self.cloud.call(func, arg))

    def run_each(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        return self.cloud.result(self.cloud.map(func, args))

    def close(self) -> None:
        if self.cloud is not None:
            self.cloud.close()


class CloudsimNoChecks(CloudsimContender):
    """cloudsim with the job-side checks (sandbox, data files, leaks, globals, pass-by-value) left out."""

    label = "cloudsim, no checks"

    def __init__(self, root: str) -> None:
        super().__init__(root, self.label)

    def open(self, slots: int) -> None:
        os.environ["CLOUDSIM__NO_CHECKS"] = "1"  # read by the server when it starts
        try:
            super().open(slots)
        finally:
            del os.environ["CLOUDSIM__NO_CHECKS"]


class PoolContender(Contender):
    """``multiprocessing.Pool(slots)`` with the platform's default start method."""

    label = "mp.Pool"
    kind = "pool"

    def __init__(self, root: str) -> None:
        self.pool: Any = None

    def open(self, slots: int) -> None:
        import multiprocessing

        self.pool = multiprocessing.Pool(slots)

    def call(self, func: Callable, arg: Any) -> Any:
        return self.pool.apply_async(func, (arg,)).get()

    def run_each(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        pending = [self.pool.apply_async(func, (a,)) for a in args]
        return [r.get() for r in pending]

    def chunked_map(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        """``Pool.map`` with its default chunksize (information only: it batches items)."""
        return self.pool.map(func, args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


class ExecutorContender(Contender):
    """``concurrent.futures.ProcessPoolExecutor(slots)`` with the forkserver start method."""

    label = "PPE(forkserver)"
    kind = "ppe"

    def __init__(self, root: str) -> None:
        self.executor: Any = None

    def open(self, slots: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(slots, mp_context=multiprocessing.get_context("forkserver"))

    def call(self, func: Callable, arg: Any) -> Any:
        return self.executor.submit(func, arg).result()

    def run_each(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        futures = [self.executor.submit(func, a) for a in args]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class LokyContender(Contender):
    """``loky.get_reusable_executor(slots)`` (loky's own start method; cloudpickle for functions)."""

    label = "loky"
    kind = "loky"

    def __init__(self, root: str) -> None:
        self.executor: Any = None

    def open(self, slots: int) -> None:
        import loky

        self.executor = loky.get_reusable_executor(max_workers=slots)

    def call(self, func: Callable, arg: Any) -> Any:
        return self.executor.submit(func, arg).result()

    def run_each(self, func: Callable, args: Sequence[Any]) -> List[Any]:
        futures = [self.executor.submit(func, a) for a in args]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


# The columns of the table, in order; cloudsim first.
CONTENDERS = [CloudsimContender, PoolContender, ExecutorContender, LokyContender]


# ------------------------------------------------------------------- framework
@dataclass
class Row:
    """One line of the table: one figure per contender (a missing one is left blank)."""

    name: str
    unit: str
    better: str  # "lower" or "higher"
    figures: Dict[str, Optional[float]]
    note: str = ""
    info_only: bool = False  # True: no ratio (the figures are not comparable with cloudsim's)
    details: Dict[str, Any] = field(default_factory=dict)  # raw data for --json
    table: str = "main"  # which printed table: "main" (columns: CONTENDERS) or a key of TABLES
    mine: str = "cloudsim"  # the column whose figure is divided by the best peer's

    def best_peer(self) -> Optional[Tuple[str, float]]:
        peers = [(lbl, v) for lbl, v in self.figures.items() if lbl != self.mine and v is not None]
        if not peers:
            return None
        pick = min if self.better == "lower" else max
        return pick(peers, key=lambda p: p[1])

    def ratio(self) -> Optional[float]:
        mine = self.figures.get(self.mine)
        best = self.best_peer()
        if self.info_only or mine is None or best is None or best[1] == 0 or mine == 0:
            return None
        return mine / best[1]

    def overhead_share(self) -> Optional[float]:
        """The part of ``mine``'s cost per job that the peer does not pay: (mine - peer) / mine.

        Meaningful where ``mine`` wraps the peer (cloudsim's Dask backend on
        top of ``distributed.Client``): then it is the wrapper's share of
        each job's time. For times (lower is better) that is 1 - peer/mine;
        for throughputs (higher is better) the time per item is 1/rate, so
        it is 1 - mine/peer. Negative when ``mine`` did better.
        """
        ratio = self.ratio()
        if ratio is None:
            return None
        return 1.0 - 1.0 / ratio if self.better == "lower" else 1.0 - ratio


class Context:
    """What a benchmark gets: the run's settings and a way to use each contender in turn."""

    def __init__(self, quick: bool, tmp: str) -> None:
        self.quick = quick
        self.tmp = tmp
        self.errors: List[str] = []
        self.skipped: List[str] = []  # "benchmark: why", for benchmarks that could not run here
        self._roots = 0

    def skip(self, name: str, reason: str) -> None:
        """Record (and say on stderr) that benchmark ``name`` did not run, and why; the run goes on."""
        self.skipped.append(f"{name}: {reason}")
        log(f"  SKIPPED {name}: {reason}")

    def scale(self, full: int, quick: int) -> int:
        """``full`` in the full run, ``quick`` with --quick."""
        return quick if self.quick else full

    def new_root(self) -> str:
        """A fresh cloudsim ``server_root`` inside the run's temporary directory."""
        self._roots += 1
        path = os.path.join(self.tmp, f"server-root-{self._roots}")
        os.makedirs(path)
        return path

    def each(self, slots: int, body: Callable[[Contender], Any],
             only: Iterable[Callable[[str], Contender]] = ()) -> Dict[str, Any]:
        """Open each contender in turn (alone: the others are closed), run ``body`` on it, close it.

        ``only``: contender classes, or factories ``(server_root) -> Contender``
        such as ``lambda root: CloudsimContender(root, "cloudsim, no checks",
        pitfalls="ignore")``; default: every class of :data:`CONTENDERS`.
        Returns label -> what ``body`` returned; a contender that failed is
        reported on stderr, recorded in ``errors`` and left out.
        """
        out: Dict[str, Any] = {}
        for make in (tuple(only) or CONTENDERS):
            contender = make(self.new_root())
            label = contender.label
            try:
                contender.open(slots)
                out[label] = body(contender)
            except Exception as exc:  # a broken contender must not hide the others' figures
                message = f"{label}: {type(exc).__name__}: {exc}"
                self.errors.append(message)
                log(f"  ERROR {message}")
            finally:
                try:
                    contender.close()
                except Exception as exc:
                    self.errors.append(f"{label} close: {type(exc).__name__}: {exc}")
                    log(f"  ERROR closing {label}: {exc}")
        return out


# name -> benchmark function, in the order of the table
BENCHMARKS: Dict[str, Callable[[Context], List[Row]]] = {}


def benchmark(func: Callable[[Context], List[Row]]) -> Callable[[Context], List[Row]]:
    """Register a benchmark: a function ``(Context) -> List[Row]``, run in the order registered."""
    BENCHMARKS[func.__name__] = func
    return func


def log(message: str) -> None:
    """Progress goes to stderr, so stdout is only the table."""
    print(message, file=sys.stderr, flush=True)


def timed_calls(contender: Contender, func: Callable, args: Sequence[Any], expect: Callable[[Any, Any], bool]) -> List[float]:
    """Seconds per round trip of ``contender.call(func, a)``, one after another; checks each result."""
    times = []
    clock = time.perf_counter
    for a in args:
        t0 = clock()
        value = contender.call(func, a)
        times.append(clock() - t0)
        if not expect(a, value):
            raise AssertionError(f"wrong result from {contender.label}: {func.__name__}({a!r:.40}) gave {value!r:.40}")
    return times


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


# ----------------------------------------------------------------- benchmarks
@benchmark
def round_trip(ctx: Context) -> List[Row]:
    """1. Tiny-job round trip: one ``inc`` job there and back, one after another."""
    n = ctx.scale(2000, 300)
    warm = ctx.scale(200, 50)

    def body(c: Contender) -> List[float]:
        timed_calls(c, inc, range(warm), lambda a, v: v == a + 1)
        return timed_calls(c, inc, range(n), lambda a, v: v == a + 1)

    samples = ctx.each(WORKERS, body)
    note = f"{n} calls one after another, after {warm} warm-up calls; {WORKERS} workers each"
    return [
        Row("tiny-job round trip, median", "ms", "lower",
            {k: statistics.median(v) * 1e3 for k, v in samples.items()}, note),
        Row("tiny-job round trip, p90", "ms", "lower", {k: p90(v) * 1e3 for k, v in samples.items()}, note),
    ]


@benchmark
def checks_cost(ctx: Context) -> List[Row]:
    """1b. What cloudsim's job-side checks cost per job: the tiny round trip with and without them."""
    n = ctx.scale(2000, 300)
    warm = ctx.scale(200, 50)

    def body(c: Contender) -> List[float]:
        timed_calls(c, inc, range(warm), lambda a, v: v == a + 1)
        return timed_calls(c, inc, range(n), lambda a, v: v == a + 1)

    rounds = ctx.scale(3, 1)
    medians: Dict[str, List[float]] = {"cloudsim": [], "cloudsim, no checks": []}
    for _ in range(rounds):  # alternate, so load on the machine hits both alike
        got = ctx.each(WORKERS, body, only=[CloudsimContender, CloudsimNoChecks])
        for label, samples in got.items():
            medians[label].append(statistics.median(samples) * 1e6)
    with_checks = statistics.median(medians["cloudsim"]) if medians["cloudsim"] else None
    without = statistics.median(medians["cloudsim, no checks"]) if medians["cloudsim, no checks"] else None
    note = (f"median of {rounds} alternating runs of {n} round trips; checks: network sandbox, data files, "
            "leaked threads and subprocesses, changed globals, pass-by-value")
    rows = [Row("tiny round trip with every check, median", "us", "lower",
                {"cloudsim": with_checks}, note, info_only=True,
                details={"with": medians["cloudsim"], "without": medians["cloudsim, no checks"]})]
    if with_checks is not None and without is not None:
        rows.append(Row("checks' cost per job (difference)", "us", "lower", {"cloudsim": with_checks - without},
                        f"without checks: {without:.0f} us", info_only=True))
    return rows


@benchmark
def map_throughput(ctx: Context) -> List[Row]:
    """2. One job per item for n items, submitted at once, all results collected."""
    n = ctx.scale(10_000, 2_000)
    repeats = ctx.scale(3, 1)
    items = list(range(n))
    expected = [i + 1 for i in items]
    warm_items = list(range(50 * WORKERS))

    def measure(run: Callable[[Sequence[int]], List[int]]) -> List[float]:
        if run(warm_items) != [i + 1 for i in warm_items]:  # starts every worker
            raise AssertionError("wrong results in the warm-up")
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            got = run(items)
            elapsed = time.perf_counter() - t0
            if got != expected:
                raise AssertionError("wrong results")
            rates.append(n / elapsed)
        return rates

    per_item = ctx.each(WORKERS, lambda c: measure(lambda xs: c.run_each(inc, xs)))
    chunked = ctx.each(WORKERS, lambda c: measure(lambda xs: c.chunked_map(inc, xs)), only=[PoolContender])
    how = f"{n:,} items, median of {repeats} run(s) after a warm-up; {WORKERS} workers each"
    return [
        Row("map throughput, one job per item", "items/s", "higher",
            {k: statistics.median(v) for k, v in per_item.items()},
            f"{how}; cloudsim: result(map(inc, items)); peers: apply_async/submit per item, then every result",
            details={"samples": per_item}),
        Row("map throughput, Pool.map chunked (info)", "items/s", "higher",
            {k: statistics.median(v) for k, v in chunked.items()},
            f"{how}; Pool.map(inc, items) with its default chunksize (batches items: not one job per item)",
            info_only=True, details={"samples": chunked}),
    ]


def _cold_child(kind: str, root: str) -> None:
    """The cold-start child: time from before the imports to the first result, then close and check."""
    t0 = time.perf_counter()
    cls = {c.kind: c for c in CONTENDERS}[kind]
    contender = cls(root)
    try:
        contender.open(COLD_SLOTS)
        value = contender.call(inc, 1)
        first = time.perf_counter() - t0
    finally:
        t1 = time.perf_counter()
        contender.close()
        closing = time.perf_counter() - t1
    stop_helper_processes()
    left = [describe(p) for p in leftover_children(10.0)]
    print(CHILD_MARK + json.dumps({"first_result_s": first, "close_s": closing, "ok": value == 2, "left": left}),
          flush=True)


def _run_cold_child(kind: str, root: str) -> Dict[str, Any]:
    """One fresh interpreter running :func:`_cold_child`; adds the wall time of the whole subprocess."""
    cmd = [sys.executable, "-m", "bench.run", "--cold-child", kind, root]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its pid
        proc.communicate()
        raise RuntimeError(f"cold-start child for {kind} did not finish in {CHILD_TIMEOUT:.0f} s")
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"cold-start child for {kind} exited {proc.returncode}: {tail}")
    report = json.loads(lines[-1][len(CHILD_MARK):])
    if not report["ok"]:
        raise RuntimeError(f"cold-start child for {kind}: wrong first result")
    report["wall_s"] = wall
    return report


@benchmark
def cold_start(ctx: Context) -> List[Row]:
    """3. Fresh interpreter -> imports -> start with 16 slots -> first result; repeated, contenders interleaved."""
    repeats = ctx.scale(5, 3)
    runs: Dict[str, List[Dict[str, Any]]] = {c.label: [] for c in CONTENDERS}
    for rep in range(repeats):
        for cls in CONTENDERS:
            try:
                report = _run_cold_child(cls.kind, ctx.new_root())
            except Exception as exc:
                ctx.errors.append(f"{cls.label}: {exc}")
                log(f"  ERROR {cls.label}: {exc}")
                continue
            for proc in report["left"]:
                log(f"WARNING: the {cls.label} cold-start child left a process behind: {proc}")
                ctx.errors.append(f"{cls.label} cold-start child left {proc}")
            runs[cls.label].append(report)
    runs = {k: v for k, v in runs.items() if v}
    note = (f"median of {repeats} fresh subprocesses per contender, interleaved; {COLD_SLOTS} slots; "
            "in-process: perf_counter from before the imports to the first result; "
            "subprocess wall: interpreter start to exit, closing included")
    return [
        Row("cold start to first result, in-process", "s", "lower",
            {k: statistics.median(r["first_result_s"] for r in v) for k, v in runs.items()}, note,
            details={"runs": runs}),
        Row("cold start, whole subprocess wall", "s", "lower",
            {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}, note),
    ]


def payload_under(limit: int) -> bytes:
    """The largest ``b'x' * n`` whose pickled one-tuple ``(payload,)`` is at most ``limit`` bytes."""
    n = limit
    while len(pickle.dumps((b"x" * n,), protocol=pickle.HIGHEST_PROTOCOL)) > limit:
        n -= 1
    return b"x" * n


@benchmark
def big_argument(ctx: Context) -> List[Row]:
    """4. A ~1 MB bytes argument there and back (``identity``), sized to cloudsim's default limit."""
    limit = 1_000_000  # cloudsim's default max_transmit_size, checked per pickled piece
    payload = payload_under(limit)
    pickled = len(pickle.dumps((payload,), protocol=pickle.HIGHEST_PROTOCOL))
    n = ctx.scale(200, 40)
    warm = ctx.scale(20, 5)

    def body(c: Contender) -> List[float]:
        same = lambda a, v: v == payload  # noqa: E731
        timed_calls(c, identity, [payload] * warm, same)
        return timed_calls(c, identity, [payload] * n, same)

    samples = ctx.each(WORKERS, body)
    note = (f"payload b'x' * {len(payload):,}: its pickled args tuple is {pickled:,} bytes, the most allowed by cloudsim's "
            f"default max_transmit_size ({limit:,} per pickled piece; left at its default); "
            f"{n} round trips after {warm} warm-up; same payload to every contender")
    return [
        Row("1 MB argument round trip, median", "ms", "lower",
            {k: statistics.median(v) * 1e3 for k, v in samples.items()}, note),
        Row("1 MB argument round trip, p90", "ms", "lower", {k: p90(v) * 1e3 for k, v in samples.items()}, note),
    ]


@benchmark
def dependency_analysis(ctx: Context) -> List[Row]:
    """5. cloudsim alone: finding what a 200-module project needs shipped, first time and cached."""
    from cloudsim.shipping.analysis import Analyzer

    n_modules = 200
    root = os.path.join(ctx.tmp, "project200")
    os.makedirs(os.path.join(root, "proj200"), exist_ok=True)
    with open(os.path.join(root, "proj200", "__init__.py"), "w") as f:
        f.write("")
    for i in range(n_modules):
        deps = "".join(f"from proj200 import m{j}\n" for j in (2 * i + 1, 2 * i + 2, i + 50) if j < n_modules)
        body = "".join(f"def f{k}(x):\n    return x + {k}\n\n" for k in range(20))
        with open(os.path.join(root, "proj200", f"m{i}.py"), "w") as f:
            f.write(f'"""module {i}"""\nimport os\nimport json\n{deps}\n{body}')
    sys.path.insert(0, root)
    try:
        __import__("proj200.m0")
        firsts, cached = [], []
        for _ in range(ctx.scale(5, 2)):
            analyzer = Analyzer()
            t0 = time.perf_counter()
            closure = analyzer.closure(["proj200.m0"])
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            analyzer.closure(["proj200.m0"])
            cached.append(time.perf_counter() - t0)
        assert len(closure.modules) == n_modules + 1, len(closure.modules)
    finally:
        sys.path.remove(root)
    note = (f"{n_modules} modules of 20 functions each, each importing up to 3 others (a tree with cross links); median of "
            f"{len(firsts)} fresh analyzers; cloudsim only (the peers ship no code)")
    return [
        Row("dependency analysis, 200 modules, first", "ms", "lower",
            {"cloudsim": statistics.median(firsts) * 1e3}, note, info_only=True),
        Row("dependency analysis, 200 modules, cached", "ms", "lower",
            {"cloudsim": statistics.median(cached) * 1e3}, note, info_only=True),
    ]


# The second table: cloudsim's Dask backend beside plain distributed.Client on the same cluster.
DASK_WORKERS = 2  # worker processes of the local cluster, one thread each; also max_concurrent_jobs
DASK_MINE = "cloudsim on Dask"
DASK_PLAIN = "plain Client"
# table name -> (its columns, the first being the one divided by the other; the ratio's header)
TABLES: Dict[str, Tuple[Tuple[str, ...], str]] = {"dask": ((DASK_MINE, DASK_PLAIN), "cloudsim/plain")}


def _timed(call: Callable[[int], Any], args: Iterable[int], label: str) -> List[float]:
    """Seconds per ``call(a)``, one after another; checks that each returned ``a + 1``."""
    times = []
    clock = time.perf_counter
    for a in args:
        t0 = clock()
        value = call(a)
        times.append(clock() - t0)
        if value != a + 1:
            raise AssertionError(f"wrong result from {label}: inc({a!r}) gave {value!r:.40}")
    return times


def _scheduler_can_import_jobs(client: Any, tmp: str) -> str:
    """Make ``bench.jobs`` importable in the Dask scheduler; return where it was put.

    Recent ``distributed`` unpickles every task on the scheduler, and the
    local cluster runs in a clean ``python -I`` interpreter, so a plain
    ``client.submit(inc, x)`` fails there with "No module named 'bench'".
    A copy of ``bench/jobs.py`` (in a ``bench`` package of its own in the
    run's temporary directory) goes on the end of the scheduler's
    ``sys.path``. The scheduler runs no job, so nothing else changes; the
    workers already have ``bench.jobs``, shipped there by cloudsim.
    ``inc`` is thus pickled by reference for both sides, as users' code is.
    """
    import shutil

    root = os.path.join(tmp, "dask-scheduler-path")
    os.makedirs(os.path.join(root, "bench"), exist_ok=True)
    with open(os.path.join(root, "bench", "__init__.py"), "w"):
        pass
    shutil.copy(os.path.join(REPO, "bench", "jobs.py"), os.path.join(root, "bench", "jobs.py"))

    def add_path() -> str:  # a local function: cloudpickle sends it by value
        import importlib
        import sys

        if root not in sys.path:
            sys.path.append(root)
        return importlib.import_module("bench.jobs").__file__

    return client.run_on_scheduler(add_path)


def _drop_scheduler_path(client: Any, where: str) -> None:
    """Undo :func:`_scheduler_can_import_jobs` (best effort: the cluster is about to stop anyway)."""
    root = os.path.dirname(os.path.dirname(where))

    def drop_path() -> None:
        import sys

        while root in sys.path:
            sys.path.remove(root)
        sys.modules.pop("bench.jobs", None)
        sys.modules.pop("bench", None)

    try:
        client.run_on_scheduler(drop_path)
    except Exception as exc:
        log(f"  WARNING: could not restore the scheduler's sys.path: {type(exc).__name__}: {exc}")


@benchmark
def dask_backend(ctx: Context) -> List[Row]:
    """6. The Dask backend's wrapper overhead: cloudsim on Dask beside plain ``Client`` on the same cluster.

    One local cluster from ``cloudsim.start_dask(n_workers=2,
    max_concurrent_jobs=2)``; a plain ``distributed.Client`` connects to the
    same scheduler. Both run ``inc`` from ``bench.jobs``, pickled by
    reference. The two sides alternate (blocks of calls, whole map runs,
    the order flipped each time), so load on the machine hits both alike.
    Registered last: ``distributed``'s threads must not exist while
    ``multiprocessing.Pool`` forks this process.
    """
    try:
        import distributed
    except ImportError as exc:
        ctx.skip("dask_backend", f"distributed is not installed ({exc}); "
                                 "pip install 'picloud-cloudsim[dask]' to run it")
        return []
    import cloudsim as cloud

    n_calls = ctx.scale(600, 120)
    block = ctx.scale(50, 20)
    warm_calls = ctx.scale(40, 10)
    n_items = ctx.scale(1000, 200)
    repeats = ctx.scale(3, 1)
    items = list(range(n_items))
    expected = [i + 1 for i in items]
    warm_items = list(range(10 * DASK_WORKERS))

    client: Any = None
    where: Optional[str] = None
    try:
        cloud.start_dask(n_workers=DASK_WORKERS, max_concurrent_jobs=DASK_WORKERS, server_root=ctx.new_root())
        info = cloud.connection_info()
        address = info["scheduler_address"]

        def cs_call(a: int) -> Any:
            return cloud.result(cloud.call(inc, a))

        def cs_map(xs: Sequence[int]) -> List[Any]:
            return cloud.result(cloud.map(inc, xs))

        # cloudsim first: its first job ships bench.jobs to the workers, where the plain client's tasks find it
        if cs_map(warm_items) != [i + 1 for i in warm_items]:  # a job on every worker: each sets up the wrapper
            raise AssertionError("wrong results from cloudsim's map in the warm-up")
        _timed(cs_call, range(warm_calls), DASK_MINE)

        client = distributed.Client(address, set_as_default=False, timeout=60)
        where = _scheduler_can_import_jobs(client, ctx.tmp)

        def plain_call(a: int) -> Any:
            return client.submit(inc, a, pure=False).result()

        def plain_map(xs: Sequence[int]) -> List[Any]:
            return client.gather(client.map(inc, xs, pure=False))

        if plain_map(warm_items) != [i + 1 for i in warm_items]:
            raise AssertionError("wrong results from the plain client's map in the warm-up")
        _timed(plain_call, range(warm_calls), DASK_PLAIN)

        calls: Dict[str, List[float]] = {DASK_MINE: [], DASK_PLAIN: []}
        sides = [(DASK_MINE, cs_call), (DASK_PLAIN, plain_call)]
        for b in range(n_calls // block):
            args = range(b * block, (b + 1) * block)
            for label, call in (sides if b % 2 == 0 else sides[::-1]):
                calls[label].extend(_timed(call, args, label))

        rates: Dict[str, List[float]] = {DASK_MINE: [], DASK_PLAIN: []}
        runs = [(DASK_MINE, cs_map), (DASK_PLAIN, plain_map)]
        for r in range(repeats):
            for label, run in (runs if r % 2 == 0 else runs[::-1]):
                t0 = time.perf_counter()
                got = run(items)
                elapsed = time.perf_counter() - t0
                if got != expected:
                    raise AssertionError(f"wrong results from {label}'s map")
                rates[label].append(n_items / elapsed)
    except Exception as exc:  # a broken backend must not hide the other benchmarks' figures
        message = f"dask_backend: {type(exc).__name__}: {exc}"
        ctx.errors.append(message)
        log(f"  ERROR {message}")
        return []
    finally:
        if client is not None:
            if where is not None:
                _drop_scheduler_path(client, where)
            client.close()
        cloud.close()

    rt_med = {k: statistics.median(v) * 1e3 for k, v in calls.items()}
    rt_p90 = {k: p90(v) * 1e3 for k, v in calls.items()}
    rate = {k: statistics.median(v) for k, v in rates.items()}
    per_item = {k: 1e3 / v for k, v in rate.items()}
    cluster = (f"one local cluster, {DASK_WORKERS} one-thread worker processes, cloudsim's max_concurrent_jobs="
               f"{info.get('num_procs')} (Dask threads {info.get('dask_slots')}); the plain Client on the same "
               "scheduler; inc from bench.jobs by reference on both sides")
    rt_note = (f"{cluster}; {n_calls} calls each, one after another, in alternating blocks of {block}, after "
               f"{warm_calls} warm-up calls; cloudsim: result(call(inc, i)); plain: submit(inc, i, pure=False).result()")
    map_note = (f"{n_items:,} items, median of {repeats} run(s), the sides alternating; cloudsim: result(map(inc, items)); "
                "plain: gather(map(inc, items, pure=False)). cloudsim hands Dask the jobs that may start plus at most "
                "max(64, 8 x cap) more, and each job asks the client before it starts (so a job killed while "
                "queued never runs); the plain Client hands over all of them at once")
    dask = {"table": "dask", "mine": DASK_MINE}
    return [
        Row("Dask: tiny-job round trip, median", "ms", "lower", rt_med, rt_note,
            details={"samples_ms": {k: [t * 1e3 for t in v] for k, v in calls.items()}}, **dask),
        Row("Dask: tiny-job round trip, p90", "ms", "lower", rt_p90, rt_note, **dask),
        Row("Dask: map throughput, one job per item", "items/s", "higher", rate, map_note,
            details={"samples": rates}, **dask),
        Row("Dask: wrapper cost per round trip (difference)", "ms", "lower",
            {DASK_MINE: rt_med[DASK_MINE] - rt_med[DASK_PLAIN]}, "median cloudsim minus median plain",
            info_only=True, **dask),
        Row("Dask: wrapper cost per map item (difference)", "ms", "lower",
            {DASK_MINE: per_item[DASK_MINE] - per_item[DASK_PLAIN]}, "1/rate cloudsim minus 1/rate plain",
            info_only=True, **dask),
    ]


# ------------------------------------------------------- processes left behind
def stop_helper_processes() -> None:
    """Stop the helper processes that live until interpreter exit unless told to stop.

    multiprocessing's forkserver and resource tracker and loky's resource
    tracker are started on first use and normally end when this interpreter
    exits; they have no public stop, so their private ``_stop()`` is used.
    Only modules already imported are touched.
    """
    for module_name, attr in (
        ("multiprocessing.forkserver", "_forkserver"),
        ("multiprocessing.resource_tracker", "_resource_tracker"),
        ("loky.backend.resource_tracker", "_resource_tracker"),
    ):
        module = sys.modules.get(module_name)
        helper = getattr(module, attr, None)
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:
                log(f"WARNING: could not stop {module_name}.{attr}: {type(exc).__name__}: {exc}")


def leftover_children(timeout: float) -> List[Any]:
    """This process's descendants still alive after waiting up to ``timeout`` seconds for them to end."""
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in me.children(recursive=True) if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(proc: Any) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:160]})"
    except Exception:
        return f"pid {proc.pid}"


# ---------------------------------------------------------------------- table
def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "items/s":
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render(rows: List[Row]) -> str:
    """The main table (one column per contender), then each other table of :data:`TABLES` that has rows."""
    parts = []
    main = [r for r in rows if r.table == "main"]
    if main:
        parts.append(_render_table(main, [c.label for c in CONTENDERS], "cloudsim/best", share=False))
    for name, (labels, ratio_header) in TABLES.items():
        mine = [r for r in rows if r.table == name]
        if mine:
            parts.append(_render_table(mine, list(labels), ratio_header, share=True))
    return "\n\n".join(parts)


def _render_table(rows: List[Row], labels: List[str], ratio_header: str, share: bool) -> str:
    """One table: figures per label, the best peer, the ratio and (``share``) the wrapper's share."""
    header = ["benchmark", "unit", *labels]
    header += [ratio_header, "wrapper share"] if share else ["best peer", ratio_header]
    header.append("better")
    table = [header]
    for row in rows:
        best = row.best_peer()
        ratio = row.ratio()
        if ratio is None:
            ratio_text = "(info)" if row.info_only else "-"
        else:
            ratio_text = f"{ratio:.2f}x"
        cells = [row.name, row.unit, *[fmt(row.figures.get(lbl), row.unit) for lbl in labels]]
        if share:
            overhead = row.overhead_share()
            cells += [ratio_text, "-" if overhead is None else f"{overhead:.0%}"]
        else:
            cells += [best[0] if best and not row.info_only else "-", ratio_text]
        table.append([*cells, row.better])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for i, r in enumerate(table):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:-1], widths[2:-1])]
        cells.append(r[-1].ljust(widths[-1]))
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def machine() -> Dict[str, Any]:
    import multiprocessing

    versions = {}
    for name in ("cloudsim", "loky", "psutil", "cloudpickle", "distributed"):
        try:
            from importlib.metadata import version

            versions[name] = version({"cloudsim": "picloud-cloudsim"}.get(name, name))
        except Exception:
            versions[name] = "?"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mp_default_start_method": multiprocessing.get_start_method(),
        "versions": versions,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer calls and repeats)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated benchmarks to run, of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--cold-child", nargs=2, metavar=("KIND", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        _cold_child(*args.cold_child)
        return 0

    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    info = machine()
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="cloudsim-bench-") as tmp:
        ctx = Context(args.quick, tmp)
        try:
            for name in names:
                log(f"running {name} ...")
                t0 = time.perf_counter()
                rows.extend(BENCHMARKS[name](ctx))
                log(f"  {name} took {time.perf_counter() - t0:.1f} s")
        finally:
            stop_helper_processes()
            left = leftover_children(10.0)
            for proc in left:
                print(f"WARNING: child process left behind: {describe(proc)}; terminating it")
                ctx.errors.append(f"left behind: {describe(proc)}")
                try:
                    proc.terminate()
                except Exception:
                    pass
    load_after = os.getloadavg()
    total = time.perf_counter() - started

    print(f"cloudsim benchmarks ({'quick' if args.quick else 'full'} run, {total:.0f} s): "
          f"Python {info['python']}, {info['cpus']} CPUs, mp.Pool start method {info['mp_default_start_method']}, "
          f"loky {info['versions']['loky']}")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}: other processes share the CPUs, "
          "so figures move from run to run; compare columns of one run, not runs")
    print()
    print(render(rows) if rows else "(no figures)")
    print()
    if any(r.table == "main" for r in rows):
        print("cloudsim/best = cloudsim's figure / the best peer's (best = lowest where lower is better, highest where "
              "higher is better): with 'lower' a ratio above 1 means cloudsim is slower; with 'higher' a ratio below 1 "
              "means cloudsim is slower.")
    if any(r.table == "dask" for r in rows):
        print(f"Dask table: cloudsim's Dask backend ({DASK_MINE}) and a plain distributed.Client ({DASK_PLAIN}) on the "
              f"same cluster, {DASK_WORKERS} workers; ratio = {DASK_MINE} / {DASK_PLAIN}; wrapper share = the part of "
              "cloudsim's time per job that plain Dask does not spend, (cloudsim - plain) / cloudsim in time per job "
              "(1 - rate ratio for throughput).")
    print("notes:")
    seen = set()
    for row in rows:
        if row.note and row.note not in seen:
            seen.add(row.note)
            print(f"  {row.name}: {row.note}")
    if not ctx.errors:
        print("no errors; no child process left behind")
    else:
        print("errors:")
        for e in ctx.errors:
            print(f"  {e}")
    for s in ctx.skipped:
        print(f"skipped {s}")

    if args.json:
        doc = {
            "quick": args.quick,
            "workers": WORKERS,
            "cold_slots": COLD_SLOTS,
            "machine": info,
            "load_before": load_before,
            "load_after": load_after,
            "seconds": total,
            "rows": [dict(asdict(r), best_peer=r.best_peer(), ratio=r.ratio(),
                          overhead_share=r.overhead_share() if r.table != "main" else None) for r in rows],
            "errors": ctx.errors,
            "skipped": ctx.skipped,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    return 1 if ctx.errors else 0


if __name__ == "__main__":
    sys.exit(main())
