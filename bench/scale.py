"""Scale: submitting a very large graph, a job with very many deps and one with very many dependents.

    python bench/scale.py                          # 100,000-job graph, 10,000 edges in and out
    python bench/scale.py --jobs 20000 --edges 2000
    python bench/scale.py --tracemalloc            # also the peak of Python allocations (slower)
    python bench/scale.py --json

1. ``--jobs N`` (default 100,000): a graph of N/1,000 layers of 1,000 jobs, each job
   depending on one job of the previous layer (the layered shape of bench/throughput.py).
   Only its creation is measured (``create_graph``: graph item, batched job items, root
   releases): wall time, jobs/s, AWS requests, write units, and the process's peak memory
   (``ru_maxrss``, and with ``--tracemalloc`` the peak of Python allocations while building
   the document, validating it and writing it).
2. ``--edges E`` (default 10,000): ``root -> E parts -> join``. So ``root`` has E dependents
   and ``join`` has E deps. Measured: creation; the scheduler invocation that handles
   ``root``'s "finished" record (it releases the E parts); the invocations that enqueue
   the E ready parts; then, once every part is finished (claimed and finished directly
   in the store, 8 threads, not measured), the invocations that count E finished deps
   into ``join`` and release it. Each with wall time, requests and write units.
3. Every item of both jobs tables is scanned and sized by DynamoDB's rules (attribute
   names + values); the largest is compared with the documented bound (100 KB,
   docs/architecture.md "Size bound").

Runs on one local AWS emulator (moto server) with the engine driven in this process, as
bench/cost.py does; requests and units are counted by the same meters (bench/cost.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import LAMBDA_BATCH, Meter, item_size, metered_stack

ITEM_BOUND = 100 * 1024  # docs/architecture.md


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def fresh_stack(label: str) -> tuple[Any, dict[str, Any], dict[str, Meter], Any]:
    from overseer.backends.aws import clients
    from overseer.backends.aws.resources import stream_arn
    from overseer.backends.aws.stream import StreamReader

    settings, services, meters = metered_stack(
        f"s{uuid.uuid4().hex[:8]}-{label}", ("submission", "scheduler", "worker", "setup"), lease_seconds=300
    )
    raw = clients.client("dynamodbstreams")
    raw.meta.events.register("after-call.dynamodbstreams.GetRecords", _count_raw_records)
    reader = StreamReader(raw, stream_arn(settings))
    return settings, services, meters, reader


# Records the last GetRecords returned before the scheduler's filter: the reader returns
# only records that pass it, so an empty poll does not mean the stream is drained.
RAW = {"last": 0}


def _count_raw_records(parsed: dict[str, Any], **_: Any) -> None:
    RAW["last"] = len(parsed.get("Records") or [])


def snapshot(meter: Meter) -> tuple[int, float, float]:
    return sum(meter.requests.values()), meter.wcu, meter.rcu


def delta(meter: Meter, before: tuple[int, float, float], seconds: float) -> dict[str, Any]:
    requests, wcu, rcu = snapshot(meter)
    return {
        "seconds": round(seconds, 2),
        "requests": requests - before[0],
        "write_units": round(wcu - before[1], 1),
        "read_units": round(rcu - before[2], 1),
    }


def big_graph(jobs: int, width: int, use_tracemalloc: bool, log: Any) -> dict[str, Any]:
    from overseer.graph import parse_graph

    width = min(width, jobs)
    layers = max(1, jobs // width)
    settings, services, meters, _ = fresh_stack("big")
    rss_before = rss_mb()
    if use_tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    document = {
        "id": "scale-big",
        "args": {},
        "jobs": {
            f"l{k:04d}-{i:04d}": {"type": "noop", "deps": [f"l{k - 1:04d}-{i:04d}"] if k else []}
            for k in range(layers)
            for i in range(width)
        },
    }
    spec = parse_graph(document)
    parsed = time.perf_counter() - t0
    log(f"  built and validated {len(spec.jobs)} jobs in {parsed:.1f} s; writing ...")
    meter = meters["submission"]
    before = snapshot(meter)
    t1 = time.perf_counter()
    graph, created = services["submission"].store.create_graph(spec, max_attempts={})
    submit_seconds = time.perf_counter() - t1
    peak_python = None
    if use_tracemalloc:
        peak_python = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    n = len(spec.jobs)
    out = {
        "jobs": n,
        "shape": f"{layers} layers x {width}, one dep each",
        "created": created and graph.jobs_total == n,
        "build_and_validate_seconds": round(parsed, 2),
        "submit": delta(meter, before, submit_seconds),
        "submit_jobs_per_second": round(n / submit_seconds, 1),
        "requests_by_operation": dict(Counter(meter.requests).most_common()),
        "peak_rss_mb": round(rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - rss_before, 1),
        "peak_python_allocations_mb": round(peak_python, 1) if peak_python is not None else None,
        "jobs_table": settings.jobs_table,
    }
    log(
        f"  submitted {n} jobs in {submit_seconds:.1f} s ({out['submit_jobs_per_second']} jobs/s), "
        f"{out['submit']['requests']} requests, peak RSS {out['peak_rss_mb']} MB"
    )
    return out


def pump(reader: Any, scheduler: Any, meter: Meter, once: bool = False) -> dict[str, Any]:
    """Hand the available stream records to the scheduler in events of <= 100 records: every
    record until the stream is drained, or (``once``) only those there now."""
    before = snapshot(meter)
    invocations = records = 0
    slowest = 0.0
    t0 = time.perf_counter()
    while True:
        batch_records = reader.poll()
        if not batch_records and not RAW["last"]:
            break
        for start in range(0, len(batch_records), LAMBDA_BATCH):
            event = {"Records": batch_records[start : start + LAMBDA_BATCH]}
            t = time.perf_counter()
            scheduler.process_stream_event(event)
            slowest = max(slowest, time.perf_counter() - t)
            invocations += 1
            records += len(event["Records"])
        if once:
            break
    out = delta(meter, before, time.perf_counter() - t0)
    out.update(invocations=invocations, records=records, slowest_invocation_seconds=round(slowest, 2))
    return out


def wide_graph(edges: int, log: Any) -> dict[str, Any]:
    from overseer.graph import parse_graph
    from overseer.handlers import to_spec
    from overseer.scheduler import Scheduler
    from overseer.states import CLAIM, FINISH, JobStatus
    from overseer.store import Fence
    from overseer.worker import Worker

    settings, services, meters, reader = fresh_stack("wide")
    parts = [f"part-{i:05d}" for i in range(edges)]
    jobs: dict[str, Any] = {"root": {"type": "noop", "deps": []}}
    jobs.update({p: {"type": "noop", "deps": ["root"]} for p in parts})
    jobs["join"] = {"type": "noop", "deps": parts}
    spec = parse_graph({"id": "scale-wide", "args": {}, "jobs": jobs})
    before = snapshot(meters["submission"])
    t0 = time.perf_counter()
    services["submission"].store.create_graph(spec, max_attempts={})
    out: dict[str, Any] = {
        "edges": edges,
        "create": delta(meters["submission"], before, time.perf_counter() - t0),
    }
    log(f"  created root -> {edges} -> join in {out['create']['seconds']} s")

    scheduler = Scheduler(services["scheduler"].store, services["scheduler"].queue)
    handlers = {"noop": to_spec("noop", lambda job: None)}
    worker = Worker(services["worker"], handlers, worker_id="bench-worker")
    pump(reader, scheduler, meters["scheduler"])  # root's ready record: enqueue root
    deliveries = services["worker"].queue.receive(max_messages=1, wait_seconds=0, visibility_seconds=300)
    assert deliveries and deliveries[0].message.job_name == "root", deliveries
    worker.process(deliveries[0])

    out["release_dependents"] = pump(reader, scheduler, meters["scheduler"], once=True)
    log(f"  root finished: {edges} dependents released in {out['release_dependents']['seconds']} s")
    out["enqueue_dependents"] = pump(reader, scheduler, meters["scheduler"])
    log(f"  {edges} ready parts enqueued in {out['enqueue_dependents']['seconds']} s")

    store = services["setup"].store

    def finish(name: str) -> None:
        store.transition(
            "scale-wide", name, CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "b"}
        )
        store.transition("scale-wide", name, FINISH, fence=Fence(1, "b"), remove=["lease_owner"])

    t1 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(finish, parts))
    log(f"  (setup: {edges} parts claimed and finished directly in {time.perf_counter() - t1:.1f} s)")
    out["count_finished_deps_and_release_join"] = pump(reader, scheduler, meters["scheduler"])
    join = services["setup"].store.get_job("scale-wide", "join")
    out["join_status"] = join.status.value if join else None
    out["join_released"] = join is not None and join.status == JobStatus.READY
    log(
        f"  {edges} finished deps counted into join in "
        f"{out['count_finished_deps_and_release_join']['seconds']} s; join {out['join_status']}"
    )
    out["jobs_table"] = settings.jobs_table
    return out


def largest_items(table: str, top: int = 5) -> dict[str, Any]:
    from overseer.backends.aws import clients

    client = clients.client("dynamodb")
    sizes: list[tuple[int, str]] = []
    count = 0
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            count += 1
            sizes.append((item_size(item), item["entry"]["S"]))
    sizes.sort(reverse=True)
    return {
        "items": count,
        "largest_bytes": sizes[0][0] if sizes else 0,
        "largest": [{"entry": e, "bytes": s} for s, e in sizes[:top]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the big graph (default 100000)")
    parser.add_argument("--width", type=int, default=1000, help="jobs per layer of the big graph")
    parser.add_argument("--edges", type=int, default=10_000, help="dependents of root and deps of join")
    parser.add_argument("--tracemalloc", action="store_true", help="measure Python allocations (slower)")
    parser.add_argument("--skip-big", action="store_true", help="only the wide graph")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from overseer.backends.aws.emulator import emulator, environment

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    result: dict[str, Any] = {"item_bound_bytes": ITEM_BOUND}
    with emulator() as env, environment(env):
        if not args.skip_big:
            log(f"big graph: {args.jobs} jobs ...")
            result["big_graph"] = big_graph(args.jobs, args.width, args.tracemalloc, log)
        log(f"wide graph: root -> {args.edges} -> join ...")
        result["wide_graph"] = wide_graph(args.edges, log)
        log("scanning item sizes ...")
        tables = {k: v["jobs_table"] for k, v in result.items() if isinstance(v, dict) and "jobs_table" in v}
        result["item_sizes"] = {k: largest_items(t) for k, t in tables.items()}
    largest = max(v["largest_bytes"] for v in result["item_sizes"].values())
    result["largest_item_bytes"] = largest
    result["within_bound"] = largest < ITEM_BOUND
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
        print(
            f"\nlargest item: {largest} bytes; bound {ITEM_BOUND}: "
            + ("OK" if result["within_bound"] else "EXCEEDED")
        )
    return 0 if result["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
