"""Hand-off latency between dependent jobs, and the per-job overhead of a warm worker.

    python bench/latency.py                       # both backends, tables
    python bench/latency.py --backend embedded    # SQLite + files only
    python bench/latency.py --backend aws --json  # the emulator only, one JSON object

**Hand-off latency** (time from a job finishing to its dependent starting): runs
``chain-50`` (49 samples) and ``fanout-200-join`` (200 root -> fan-out samples plus 1
fan-out -> join sample) as ``overseer run`` does (``--workers`` worker processes, the
scheduler pumped in this process), and takes, for every job with dependencies,
``started_at - max(finished_at of its deps)`` from the stored jobs (millisecond
timestamps). p50 / p95 / max per shape and backend. On the fan-out most of that is the
wait for a free worker (200 ready jobs, ``--workers`` workers), so the "dispatch" figures
also count from the moment a worker was free (``dispatch_samples``).

**Per-job overhead of a warm worker** (no-op handler): ``--jobs`` independent jobs are
pre-queued (the graph is created, and its ready jobs sent to the queue directly, so no
scheduler runs); then an ``overseer.worker.Worker`` is driven *in this process*: receive
one message, ``Worker.process`` it (claim, heartbeat thread, handler, finish, delete).
``--warmup`` jobs first are not measured (child process start, connections). Per job:

* wall time (``time.perf_counter``);
* CPU time of this process (``time.process_time``): engine + SQLite, or engine + boto3
  client (the moto server runs in another process and its CPU is *not* included);
* CPU time of the handler child process with ``isolation="process"`` (from
  ``/proc/<pid>/stat``);
* backend round trips: AWS requests by operation (``overseer.backends.aws.clients.RequestCounter``
  attached to every client the services build), or SQLite statements and write
  transactions (``sqlite3.Connection.set_trace_callback`` on the worker's connection).

Each is run with ``isolation="process"`` (the default: handler in a warm child process,
one pipe round trip per job) and ``isolation="none"`` (handler called in the worker).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import SHAPES
from tables import load_cell, print_table
from throughput import NOOP_HANDLERS, run_shape

from overseer import timeutil
from overseer.backends import build_services
from overseer.config import Settings
from overseer.graph import parse_graph
from overseer.handlers import load_handlers
from overseer.store import JobMessage, Services
from overseer.worker import Worker

HANDOFF_SHAPES = ("chain-50", "fanout-200-join")
ISOLATIONS = ("process", "none")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- hand-off latency -------------------------------------------------------------------
def handoff_samples(jobs: dict[str, dict[str, Any]]) -> list[float]:
    samples = []
    for job in jobs.values():
        deps = job.get("deps") or []
        if not deps or not job.get("started_at"):
            continue
        finished = [jobs[d]["finished_at"] for d in deps if jobs.get(d, {}).get("finished_at")]
        if len(finished) != len(deps):
            continue
        last = max(timeutil.parse(f) for f in finished)
        samples.append((timeutil.parse(job["started_at"]) - last).total_seconds())
    return samples


def dispatch_samples(jobs: dict[str, dict[str, Any]], workers: int) -> list[float]:
    """Like ``handoff_samples``, but from the moment the dependent could run: its deps
    are done *and* a worker is free. No more than ``workers`` jobs run at once, so the
    k-th job to start (0-based) had a free worker once k - workers + 1 jobs had finished.
    Leaves out the time a ready job waits behind its siblings for a worker."""
    started = sorted((timeutil.parse(j["started_at"]), n) for n, j in jobs.items() if j.get("started_at"))
    finishes = sorted(timeutil.parse(j["finished_at"]) for j in jobs.values() if j.get("finished_at"))
    samples = []
    for k, (start, name) in enumerate(started):
        deps = jobs[name].get("deps") or []
        finished = [jobs[d].get("finished_at") for d in deps]
        if not deps or not all(finished):
            continue
        runnable = max(timeutil.parse(f) for f in finished)
        if k >= workers:
            runnable = max(runnable, finishes[k - workers])
        samples.append((start - runnable).total_seconds())
    return samples


def run_graph(backend: str, jobs: dict[str, Any], name: str, workers: int) -> Any:
    document = {"id": f"latency-{name}-{time.strftime('%Y%m%dT%H%M%S')}", "args": {}, "jobs": jobs}
    if backend == "aws":
        return run_shape(document, NOOP_HANDLERS, workers)
    from overseer.runner import run_graph

    handlers = load_handlers(NOOP_HANDLERS)
    spec = parse_graph(document, handler_types=handlers.keys())
    with tempfile.TemporaryDirectory(prefix="overseer-latency-") as state_dir:
        return run_graph(
            spec, NOOP_HANDLERS, handlers, backend="embedded", workers=workers, state_dir=Path(state_dir)
        )


def handoff(backend: str, shape: str, workers: int) -> dict[str, Any]:
    jobs = SHAPES[shape]()
    load_before = load()
    result = run_graph(backend, jobs, shape, workers)
    for name, job in result.jobs.items():  # summaries may not carry deps: take them from the graph
        job.setdefault("deps", jobs[name]["deps"])
    samples = handoff_samples(result.jobs)
    dispatch = dispatch_samples(result.jobs, workers)
    return {
        "backend": backend,
        "shape": shape,
        "workers": workers,
        "status": result.status,
        "samples": len(samples),
        "p50_ms": round(1000 * percentile(samples, 50), 1),
        "p95_ms": round(1000 * percentile(samples, 95), 1),
        "max_ms": round(1000 * max(samples), 1) if samples else None,
        "dispatch_p50_ms": round(1000 * percentile(dispatch, 50), 1),
        "dispatch_p95_ms": round(1000 * percentile(dispatch, 95), 1),
        "load_before": load_before,
        "load_after": load(),
    }


# -- per-job overhead of a warm worker --------------------------------------------------
def _child_cpu_seconds(worker: Worker) -> float:
    process = getattr(worker.run_handler, "_process", None)
    if process is None or process.pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SqliteCounter:
    """Counts statements and write transactions on one sqlite3 connection."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, statement: str) -> None:
        text = statement.lstrip()
        if text.startswith("--"):  # a statement run by a trigger
            self.counts["trigger statements"] += 1
            return
        verb = text.split(None, 1)[0].upper() if text else "?"
        if verb == "BEGIN":
            verb = "BEGIN " + ("IMMEDIATE" if "IMMEDIATE" in text.upper() else "(read)")
        self.counts[verb] += 1


@contextlib.contextmanager
def embedded_stack(isolation: str) -> Iterator[tuple[Services, Counter[str]]]:
    from overseer.backends.embedded import db_path, embedded_services
    from overseer.backends.embedded.db import database

    with tempfile.TemporaryDirectory(prefix="overseer-overhead-") as tmp:
        settings = Settings(
            backend="embedded",
            state_dir=tmp,
            handlers=NOOP_HANDLERS,
            isolation=isolation,
            receive_wait_seconds=1,
            lease_seconds=60,
            scratch_dir=str(Path(tmp) / "scratch"),
        )
        services = embedded_services(tmp, settings)
        counter = SqliteCounter()
        database(db_path(tmp)).conn.set_trace_callback(counter)
        yield services, counter.counts


@contextlib.contextmanager
def aws_stack(isolation: str) -> Iterator[tuple[Services, Counter[str]]]:
    from overseer.backends.aws import clients
    from overseer.backends.aws.emulator import emulator, environment
    from overseer.backends.aws.resources import provision

    # OVERSEER_REQUEST_LOG makes clients.process_counter() count every client's requests.
    with (
        emulator() as aws_env,
        tempfile.TemporaryDirectory(prefix="overseer-overhead-") as tmp,
        environment({**aws_env, "OVERSEER_REQUEST_LOG": tmp}),
    ):
        settings = Settings.from_env(
            handlers=NOOP_HANDLERS, isolation=isolation, receive_wait_seconds=1, lease_seconds=60
        )
        services = build_services(provision(settings))
        counter = clients.process_counter()
        assert counter is not None
        yield services, counter.counts


def overhead(backend: str, isolation: str, jobs: int, warmup: int) -> dict[str, Any]:
    stack = aws_stack if backend == "aws" else embedded_stack
    handlers = load_handlers(NOOP_HANDLERS)
    names = [f"j{i:05d}" for i in range(warmup + jobs)]
    document = {
        "id": f"overhead-{isolation}-{time.strftime('%Y%m%dT%H%M%S')}",
        "args": {},
        "jobs": {n: {"type": "noop", "deps": []} for n in names},
    }
    spec = parse_graph(document, handler_types=handlers.keys())
    with stack(isolation) as (services, round_trips):
        services.store.create_graph(spec, max_attempts={})
        services.queue.send([JobMessage(spec.id, n, 0) for n in names])
        worker = Worker(services, handlers)
        try:
            load_before = load()
            walls: list[float] = []
            kinds: Counter[str] = Counter()
            for i in range(warmup + jobs):
                if i == warmup:
                    round_trips.clear()
                    wall0, cpu0, child0 = time.perf_counter(), time.process_time(), _child_cpu_seconds(worker)
                t0 = time.perf_counter()
                deliveries = services.queue.receive(max_messages=1, wait_seconds=1, visibility_seconds=60)
                if not deliveries:
                    raise RuntimeError(f"queue empty after {i} jobs")
                kinds[worker.process(deliveries[0]).kind] += 1
                if i >= warmup:
                    walls.append(time.perf_counter() - t0)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            child = _child_cpu_seconds(worker) - child0
            counts = Counter(round_trips)
        finally:
            worker.close()
    if backend == "aws":
        trips = sum(counts.values())
        detail = {op: round(n / jobs, 2) for op, n in counts.most_common()}
    else:
        trips = sum(n for verb, n in counts.items() if verb != "trigger statements")
        detail = {verb: round(n / jobs, 2) for verb, n in counts.most_common()}
    return {
        "backend": backend,
        "isolation": isolation,
        "jobs": jobs,
        "outcomes": dict(kinds),
        "wall_ms_per_job": round(1000 * wall / jobs, 2),
        "wall_ms_p50": round(1000 * percentile(walls, 50), 2),
        "wall_ms_p95": round(1000 * percentile(walls, 95), 2),
        "cpu_ms_per_job": round(1000 * cpu / jobs, 2),
        "child_cpu_ms_per_job": round(1000 * child / jobs, 2),
        "round_trips_per_job": round(trips / jobs, 2),
        "round_trip_kind": "AWS requests" if backend == "aws" else "SQLite statements",
        "round_trips_by_kind": detail,
        "load_before": load_before,
        "load_after": load(),
    }


def print_tables(handoffs: list[dict[str, Any]], overheads: list[dict[str, Any]]) -> None:
    if handoffs:
        print("hand-off latency: dependency's finished_at -> dependent's started_at")
        print_table(
            [
                ("backend", "<9", lambda r: r["backend"]),
                ("shape", "<18", lambda r: r["shape"]),
                ("workers", ">8", lambda r: str(r["workers"])),
                ("samples", ">8", lambda r: str(r["samples"])),
                *(
                    (title, ">9", lambda r, key=key: f"{r[key]:.1f}")
                    for title, key in (
                        ("p50 ms", "p50_ms"),
                        ("p95 ms", "p95_ms"),
                        ("max ms", "max_ms"),
                        ("disp p50", "dispatch_p50_ms"),
                        ("disp p95", "dispatch_p95_ms"),
                    )
                ),
                ("load", ">12", load_cell),
            ],
            handoffs,
        )
        print("  p50/p95/max: all deps finished -> started (includes waiting behind siblings for a worker)")
        print("  disp p50/p95: all deps finished and a worker free -> started (see dispatch_samples)")
        print()
    if overheads:
        print("per-job overhead of one warm in-process worker, no-op handler")
        print_table(
            [
                ("backend", "<9", lambda r: r["backend"]),
                ("isolation", "<10", lambda r: r["isolation"]),
                ("jobs", ">5", lambda r: str(r["jobs"])),
                ("wall ms", ">9", lambda r: f"{r['wall_ms_per_job']:.2f}"),
                ("p50", ">7", lambda r: f"{r['wall_ms_p50']:.1f}"),
                ("p95", ">7", lambda r: f"{r['wall_ms_p95']:.1f}"),
                ("cpu ms", ">8", lambda r: f"{r['cpu_ms_per_job']:.2f}"),
                ("child ms", ">9", lambda r: f"{r['child_cpu_ms_per_job']:.2f}"),
                ("trips", ">7", lambda r: f"{r['round_trips_per_job']:.2f}"),
                ("load", ">12", load_cell),
            ],
            overheads,
        )
        print("  cpu ms: this process (engine + SQLite, or engine + boto3 client; not the moto server)")
        print("  child ms: the handler process (isolation=process); trips: AWS requests or SQLite statements")
        for r in overheads:
            by = ", ".join(f"{k} {v}" for k, v in r["round_trips_by_kind"].items())
            print(f"  {r['backend']}/{r['isolation']} {r['round_trip_kind']} per job: {by}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "aws", "both"], default="both")
    parser.add_argument("--workers", type=int, default=4, help="worker processes for the hand-off runs")
    parser.add_argument("--jobs", type=int, default=200, help="measured jobs for the overhead (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured jobs first (default 10)")
    parser.add_argument("--skip-handoff", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    backends = ["embedded", "aws"] if args.backend == "both" else [args.backend]
    handoffs, overheads = [], []
    for backend in backends:
        if not args.skip_handoff:
            for shape in HANDOFF_SHAPES:
                handoffs.append(handoff(backend, shape, args.workers))
                print(f"{backend} {shape}: {handoffs[-1]}", file=sys.stderr, flush=True)
        if not args.skip_overhead:
            for isolation in ISOLATIONS:
                overheads.append(overhead(backend, isolation, args.jobs, args.warmup))
                print(f"{backend} {isolation}: {overheads[-1]}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "handoff": handoffs, "overhead": overheads}))
    else:
        print(f"machine: {os.cpu_count()} CPUs, shared with other work: see the load column (1-min avg)")
        print_tables(handoffs, overheads)
    ok = all(r["status"] == "finished" for r in handoffs) and all(
        set(r["outcomes"]) == {"finished"} for r in overheads
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
