"""Expansions at scale: one job that grows into 10,000 children at run time, on the AWS code path.

    python bench/expand_scale.py                    # 10,000 children (OVERSEER_MAX_EXPAND_ITEMS)
    python bench/expand_scale.py --children 1000
    python bench/expand_scale.py --workers 4 --json

The graph: ``root``, whose handler returns ``overseer.Expand`` of N items (``{"i": i}``: N
no-op children ``root.0`` ... ``root.<N-1>``), and ``join``, which depends on ``root`` and
so waits for its whole tree. N + 2 jobs.

How it runs, as bench/cost.py does (same emulator, stack and meters): one local AWS
emulator (moto server), a fresh set of tables, queues and bucket, and the engine's own code
in this process. The stream's new records go to ``Scheduler.for_services(...)`` in
Lambda-sized events of at most 100 records (one ``process_stream_event`` = one Lambda
invocation, with the default 30 s budget for making children); then ``--workers``
in-process workers (threads, ``isolation="none"``, each with its own clients) take jobs
one ``ReceiveMessage`` of 1 at a time until the queue is empty, deleting handled messages
in batches as the run loop does; repeat until the graph ends. Requests and DynamoDB write
units are counted per component (submission, scheduler, worker); the harness (stream
reads, the driver's polling of the root, the join and the graph, the checks) is counted
apart and billed to nobody.

Printed: the timeline (submitting; the root run and its expansion committed; every child
made, with the scheduler invocations and pages of 100 it took; every child run; the root's
tree ended; the join released; the join run and the graph finished), each segment with its
wall time and requests; requests and write units per child by component; the largest item
written and the largest items stored (the counter items ``exp#root...``).

Checks (exit status 1 when one fails): every child exists exactly once (N ``job#root.<i>``
items, each run once), each finished with attempts 1; the graph finished with
``jobs_total`` N + 2 and N + 2 jobs counted finished; the join's ``job.inputs`` holds N + 1
names, ``root`` then its children in item order; every counter item fits in one write unit
(1 KB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import (
    LAMBDA_BATCH,
    LAMBDA_BATCHING_WINDOW_SECONDS,
    Meter,
    attach_services,
    item_size,
    metered_stack,
)

GRAPH_ID = "expand-scale"
BILLED = ("submission", "scheduler", "worker")
COMPONENTS = (*BILLED, "harness")
LEASE_SECONDS = 300
MAX_CHILDREN = 10_000  # OVERSEER_MAX_EXPAND_ITEMS's default
COUNTER_ITEM_LIMIT = 1024  # one write unit
IDLE_ROUNDS_LIMIT = 300


class Handlers:
    """The graph's handlers: ``root`` expands, children only count their runs, ``join``
    keeps the names its ``job.inputs`` holds."""

    def __init__(self, children: int) -> None:
        self.children = children
        self.runs: Counter[str] = Counter()
        self.joined: list[str] = []
        self._lock = threading.Lock()

    def _ran(self, name: str) -> None:
        with self._lock:
            self.runs[name] += 1

    def expand(self, job: Any) -> list[Any]:
        from overseer import Expand

        self._ran(job.name)
        return [Expand(type="noop", items=[{"i": i} for i in range(self.children)])]

    def noop(self, job: Any) -> None:
        self._ran(job.name)

    def join(self, job: Any) -> None:
        self._ran(job.name)
        self.joined = list(job.inputs)

    def specs(self) -> dict[str, Any]:
        from overseer.handlers import to_spec

        return {
            "expand": to_spec("expand", self.expand),
            "noop": to_spec("noop", self.noop),
            "join": to_spec("join", self.join),
        }


class RawRecords:
    """How many records the last GetRecords returned before the scheduler's filter: the
    reader returns only those that pass it, so an empty poll is not an idle stream."""

    def __init__(self) -> None:
        self.last = 0

    def count(self, parsed: dict[str, Any], **_: Any) -> None:
        self.last = len(parsed.get("Records") or [])


class Timing:
    """Calls and seconds per operation of the clients it is attached to (the emulator's
    answer time as the caller sees it), to say where the time goes."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.slowest: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call", self._started)
        client.meta.events.register("after-call", self._ended)
        return client

    def _started(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_timing_started"] = time.perf_counter()

    def _ended(self, event_name: str, context: dict[str, Any], **_: Any) -> None:
        started = context.get("bench_timing_started")
        if started is None:
            return
        seconds = time.perf_counter() - started
        service, operation = event_name.split(".", 2)[1:]
        name = f"{service}.{operation}"
        with self._lock:
            self.calls[name] += 1
            self.seconds[name] += seconds
            self.slowest[name] = max(self.slowest[name], seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per operation, the most time first: calls, seconds, mean and slowest ms."""
        return {
            name: {
                "calls": self.calls[name],
                "seconds": round(self.seconds[name], 1),
                "mean_ms": round(1000 * self.seconds[name] / self.calls[name], 1),
                "slowest_ms": round(1000 * self.slowest[name], 1),
            }
            for name in sorted(self.seconds, key=lambda n: -self.seconds[n])
        }


@dataclass
class Lane:
    """One in-process worker with its own clients; ``deferred_since`` is when (on the
    driver's clock) its oldest message waiting for a batched delete was handled."""

    worker: Any
    queue: Any
    deferred_since: float = 0.0


def drain(lane: Lane, clock: float) -> list[Any]:
    """Let the worker take jobs until the queue is empty, as its run loop does."""
    outcomes: list[Any] = []
    while True:
        deliveries = lane.queue.receive(max_messages=1, wait_seconds=0, visibility_seconds=LEASE_SECONDS)
        if not deliveries:
            return outcomes
        for delivery in deliveries:
            if not lane.worker.pending_deletes:
                lane.deferred_since = clock
            outcomes.append(lane.worker.process(delivery, defer_delete=True))


@dataclass
class Mark:
    name: str
    seconds: float
    invocations: int
    jobs_run: int
    requests: dict[str, int]
    write_units: dict[str, float]


@dataclass
class Timeline:
    """Milestones of the run, each with the meters' totals then: consecutive marks bound a
    segment of the run."""

    meters: dict[str, Meter]
    started: float = field(default_factory=time.perf_counter)
    marks: list[Mark] = field(default_factory=list)

    def mark(self, name: str, invocations: int, jobs_run: int) -> None:
        self.marks.append(
            Mark(
                name,
                time.perf_counter() - self.started,
                invocations,
                jobs_run,
                {c: sum(m.requests.values()) for c, m in self.meters.items()},
                {c: m.wcu for c, m in self.meters.items()},
            )
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def segments(self) -> list[dict[str, Any]]:
        out = []
        for before, after in zip(self.marks, self.marks[1:], strict=False):
            out.append(
                {
                    "segment": after.name,
                    "at_seconds": round(after.seconds, 1),
                    "seconds": round(after.seconds - before.seconds, 1),
                    "scheduler_invocations": after.invocations - before.invocations,
                    "jobs_run": after.jobs_run - before.jobs_run,
                    "requests": {c: after.requests[c] - before.requests[c] for c in COMPONENTS},
                    "write_units": {
                        c: round(after.write_units[c] - before.write_units[c], 1) for c in BILLED
                    },
                }
            )
        return out


def run(children: int, workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    from overseer.backends import build_services
    from overseer.backends.aws import clients
    from overseer.backends.aws.resources import stream_arn
    from overseer.backends.aws.stream import StreamReader
    from overseer.expansion import PAGE
    from overseer.graph import parse_graph
    from overseer.scheduler import Scheduler
    from overseer.states import JobStatus
    from overseer.worker import Worker

    settings, services, meters = metered_stack(
        f"x{uuid.uuid4().hex[:8]}", COMPONENTS, lease_seconds=LEASE_SECONDS
    )
    timings = {c: Timing() for c in COMPONENTS}
    for component in COMPONENTS:
        attach_services(timings[component], services[component])  # type: ignore[arg-type]
    raw = RawRecords()
    streams = timings["harness"].attach(meters["harness"].attach(clients.client("dynamodbstreams")))
    streams.meta.events.register("after-call.dynamodbstreams.GetRecords", raw.count)
    reader = StreamReader(streams, stream_arn(settings))
    harness = services["harness"].store

    # As functions/scheduler.py builds it: the scheduler's own clients read the items.
    scheduler = Scheduler.for_services(services["scheduler"])
    handlers = Handlers(children)
    specs = handlers.specs()
    lanes = []
    for k in range(workers):
        own = services["worker"] if k == 0 else build_services(settings)
        if k:
            attach_services(meters["worker"], own)
            attach_services(timings["worker"], own)  # type: ignore[arg-type]
        lanes.append(Lane(Worker(own, specs, worker_id=f"bench-worker-{k}"), own.queue))

    document = {
        "id": GRAPH_ID,
        "args": {},
        "jobs": {"root": {"type": "expand", "deps": []}, "join": {"type": "join", "deps": ["root"]}},
    }
    spec = parse_graph(document, handler_types=specs.keys())
    timeline = Timeline(meters)
    invocations = jobs_run = children_run = idle_rounds = 0
    timeline.mark("start", 0, 0)
    services["submission"].store.create_graph(spec, max_attempts={})
    timeline.mark("submitted (create_graph)", 0, 0)
    log(f"  submitted; load average {os.getloadavg()[0]:.1f}")

    made = 0
    committed = all_made = all_run = tree_done = join_released = False
    make_invocations: list[dict[str, Any]] = []
    each_invocation: list[dict[str, Any]] = []
    loads = [os.getloadavg()[0]]
    clock = 0.0  # the driver's clock: one Lambda batching window per round with records
    graph = None
    pool = ThreadPoolExecutor(workers)
    try:
        while True:
            records = reader.poll()
            for start in range(0, len(records), LAMBDA_BATCH):
                event = {"Records": records[start : start + LAMBDA_BATCH]}
                sent = sum(meters["scheduler"].requests.values())
                t0 = time.perf_counter()
                scheduler.process_stream_event(event)
                seconds = time.perf_counter() - t0
                invocations += 1
                each_invocation.append(
                    {
                        "records": len(event["Records"]),
                        "seconds": round(seconds, 2),
                        "requests": sum(meters["scheduler"].requests.values()) - sent,
                    }
                )
                if not tree_done:
                    root = harness.get_job(GRAPH_ID, "root")
                    if root is not None and root.expand_made > made:
                        make_invocations.append(
                            {
                                "invocation": invocations,
                                "seconds": round(seconds, 1),
                                "children_made": root.expand_made - made,
                                "pages": math.ceil((root.expand_made - made) / PAGE),
                                "made_so_far": root.expand_made,
                            }
                        )
                        made = root.expand_made
                        log(f"  invocation {invocations}: {made:,} of {children:,} made ({seconds:.1f} s)")
                    if not all_made and made == children:
                        all_made = True
                        timeline.mark(f"all {children:,} children made", invocations, jobs_run)
                    if root is not None and root.tree_done:
                        tree_done = True
                        timeline.mark("the root's tree ended (expand_done_at)", invocations, jobs_run)
                        log(f"  the root's tree ended at invocation {invocations}")
                elif not join_released:
                    join = harness.get_job(GRAPH_ID, "join")
                    if join is not None and join.status != JobStatus.WAITING:
                        join_released = True
                        timeline.mark("the join released", invocations, jobs_run)
            rounds = pool.map(drain, lanes, [clock] * len(lanes))
            outcomes = [outcome for found in rounds for outcome in found]
            jobs_run += len(outcomes)
            if records:
                clock += LAMBDA_BATCHING_WINDOW_SECONDS
            for lane in lanes:
                if lane.worker.pending_deletes and clock - lane.deferred_since >= lane.worker.delete_delay:
                    lane.worker.flush_deletes()
            before = children_run
            children_run += sum(o.kind == "finished" and o.job_name.startswith("root.") for o in outcomes)
            if children_run * 10 // children > before * 10 // children and children_run < children:
                log(f"  {children_run:,} children run ({timeline.elapsed():.0f} s)")
            if not committed and any(o.job_name == "root" for o in outcomes):
                committed = True
                timeline.mark("the root run, its expansion committed", invocations, jobs_run)
                log(f"  the root committed its expansion of {children:,}")
            if not all_run and children_run >= children:
                all_run = True
                timeline.mark(f"all {children:,} children run", invocations, jobs_run)
                log(f"  all {children:,} children run")
            graph = harness.get_graph(GRAPH_ID)
            assert graph is not None
            if graph.status.terminal:
                for lane in lanes:
                    lane.worker.flush_deletes()  # the workers' next long poll comes back empty
                timeline.mark("the join run, the graph ended", invocations, jobs_run)
                break
            loads.append(os.getloadavg()[0])
            idle_rounds = idle_rounds + 1 if not raw.last and not records and not outcomes else 0
            if idle_rounds > IDLE_ROUNDS_LIMIT:
                raise RuntimeError(
                    f"no progress for {IDLE_ROUNDS_LIMIT} rounds: graph {graph}; "
                    f"{made} children made, {children_run} run, {invocations} invocations"
                )
            if not records and not outcomes:
                time.sleep(0.01)
    finally:
        pool.shutdown()
    loads.append(os.getloadavg()[0])

    log("  checking ...")
    checks, stored = verify(children, handlers, services["harness"], meters["harness"], settings)
    return {
        "children": children,
        "workers": workers,
        "load_average": {
            "start": round(loads[0], 1),
            "max": round(max(loads), 1),
            "end": round(loads[-1], 1),
        },
        "graph": graph.summary() if graph else None,
        "seconds": round(timeline.marks[-1].seconds, 1),
        "timeline": timeline.segments(),
        "making_children": {
            "invocations": len(make_invocations),
            **scheduler_span(each_invocation, make_invocations),
            "pages": sum(m["pages"] for m in make_invocations),
            "budget_seconds": scheduler.expansions.budget_seconds,
            "each": make_invocations,
        },
        "scheduler": {
            "invocations": invocations,
            "records": sum(e["records"] for e in each_invocation),
            "slowest_seconds": max((e["seconds"] for e in each_invocation), default=0.0),
        },
        "per_child": per_child(meters, children),
        "time_by_operation": {c: timings[c].summary() for c in BILLED},
        "largest_item_written_bytes": {c: meters[c].largest_write for c in BILLED},
        "stored": stored,
        "checks": checks,
    }


def scheduler_span(each_invocation: list[dict[str, Any]], makes: list[dict[str, Any]]) -> dict[str, Any]:
    """The scheduler's own time from the first invocation that made children to the last:
    the making's wall time where workers run beside the scheduler (on AWS), not between
    its invocations (this driver). The stream is one shard, in order: the parent's next
    record lies behind the "ready" records of the children made before it."""
    if not makes:
        return {"span_invocations": 0, "span_scheduler_seconds": 0.0}
    span = each_invocation[makes[0]["invocation"] - 1 : makes[-1]["invocation"]]
    return {
        "span_invocations": len(span),
        "span_scheduler_seconds": round(sum(e["seconds"] for e in span), 1),
    }


def per_child(meters: dict[str, Meter], children: int) -> dict[str, Any]:
    """Requests, write and read units per child by component (and by operation)."""
    out: dict[str, Any] = {}
    for component in COMPONENTS:
        meter = meters[component]
        requests = Counter(meter.requests)
        if meter.empty_receives:
            # An idle worker's empty receives are the harness's: on AWS a long poll per
            # worker-minute, not per job.
            requests["sqs.ReceiveMessage"] -= meter.empty_receives
        requests = +requests
        out[component] = {
            "requests": round(sum(requests.values()) / children, 3),
            "write_units": round(meter.wcu / children, 3),
            "read_units": round(meter.rcu / children, 3),
            "empty_receives": meter.empty_receives,
            "requests_by_operation": {op: round(n / children, 3) for op, n in sorted(requests.items())},
            "write_units_by_operation": {
                op: round(units / children, 3)
                for op, units in sorted(meter.wcu_by_operation.items())
                if units
            },
        }
    out["billed"] = {
        "requests": round(sum(out[c]["requests"] for c in BILLED), 3),
        "write_units": round(sum(out[c]["write_units"] for c in BILLED), 3),
        "read_units": round(sum(out[c]["read_units"] for c in BILLED), 3),
    }
    return out


def verify(
    children: int, handlers: Handlers, services: Any, meter: Meter, settings: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checks (name -> {"ok", "detail"}) and what the jobs table holds (item sizes,
    counter items), read with the harness's clients."""
    from overseer.backends.aws import clients
    from overseer.expansion import GROUP
    from overseer.items import EXPANSION_PREFIX, JOB_PREFIX
    from overseer.states import GraphStatus, JobStatus

    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool, detail: str) -> None:
        checks[name] = {"ok": bool(ok), "detail": detail}

    store = services.store
    expected = [f"root.{i}" for i in range(children)]
    jobs = list(store.list_jobs(GRAPH_ID))
    names = Counter(job.name for job in jobs)
    child_names = Counter(n for n in names.elements() if n.startswith("root."))
    check(
        "every child exists exactly once",
        child_names == Counter(expected),
        f"{sum(child_names.values()):,} job#root.<i> items, {len(child_names):,} names; "
        f"missing {len(set(expected) - set(child_names)):,}, "
        f"extra {len(set(child_names) - set(expected)):,}, "
        f"more than once {sum(1 for c in child_names.values() if c > 1):,}",
    )
    ran = [handlers.runs[n] for n in expected]
    check(
        "every child ran once",
        ran.count(1) == children,
        f"ran once {ran.count(1):,}, never {ran.count(0):,}, more than once {sum(1 for r in ran if r > 1):,}",
    )
    states = Counter((job.status.value, job.attempts) for job in jobs if job.name.startswith("root."))
    check(
        "every child finished with attempts 1",
        states == Counter({(JobStatus.FINISHED.value, 1): children}),
        f"(status, attempts): {dict(states)}",
    )
    graph = store.get_graph(GRAPH_ID)
    total = children + 2
    check(
        "the graph finished, its jobs_total and counts exact",
        graph is not None
        and graph.status == GraphStatus.FINISHED
        and graph.jobs_total == total
        and graph.counts == {**{k: 0 for k in graph.counts}, "finished": total}
        and len(jobs) == total,
        f"status {graph.status.value if graph else None}, jobs_total {graph.jobs_total if graph else None}, "
        f"counts {graph.counts if graph else None}, job items {len(jobs):,} (expected {total:,})",
    )
    root = next((job for job in jobs if job.name == "root"), None)
    summary = root.summary().get("expansion") if root else None
    check(
        "the root's expansion is made and done",
        summary == {"type": "noop", "count": children, "done": True},
        f"{summary}",
    )
    wanted = ["root", *expected]
    pairs = enumerate(zip(handlers.joined, wanted, strict=False))
    first_wrong = next((i for i, (got, want) in pairs if got != want), None)
    order = "in order" if first_wrong is None else f"first out of order at {first_wrong}"
    check(
        "the join's inputs: root and every child, in item order",
        handlers.joined == wanted,
        f"{len(handlers.joined):,} names (expected {len(wanted):,}); " + order,
    )

    # The whole jobs table, sized by DynamoDB's rules.
    client = meter.attach(clients.client("dynamodb"))
    sizes: list[tuple[int, str]] = []
    counters: dict[str, int] = {}
    for page in client.get_paginator("query").paginate(
        TableName=settings.jobs_table,
        KeyConditionExpression="graph_id = :g",
        ExpressionAttributeValues={":g": {"S": GRAPH_ID}},
        ConsistentRead=True,
    ):
        for item in page["Items"]:
            entry = item["entry"]["S"]
            sizes.append((item_size(item), entry))
            if entry.startswith(EXPANSION_PREFIX):
                counters[entry] = len(item.get("done", {}).get("NS", ()))
    groups = math.ceil(children / GROUP)
    group_counts = [n for entry, n in counters.items() if entry.count("#") == 2]
    top = counters.get(f"{EXPANSION_PREFIX}root")
    check(
        "the counter items count every child once",
        len(group_counts) == groups and sum(group_counts) == children and top == groups,
        f"{len(group_counts)} group items holding {sum(group_counts):,} indices (expected {groups}, "
        f"{children:,}); the top item holds {top} groups",
    )
    counter_sizes = sorted((s for s in sizes if s[1].startswith(EXPANSION_PREFIX)), reverse=True)
    job_sizes = sorted((s for s in sizes if s[1].startswith(JOB_PREFIX)), reverse=True)
    largest_counter = counter_sizes[0][0] if counter_sizes else 0
    check(
        "every counter item fits in one write unit",
        0 < largest_counter <= COUNTER_ITEM_LIMIT,
        f"largest {largest_counter} bytes (limit {COUNTER_ITEM_LIMIT})",
    )
    sizes.sort(reverse=True)
    stored = {
        "items": len(sizes),
        "largest": [{"entry": e, "bytes": s} for s, e in sizes[:3]],
        "largest_job_item": {"entry": job_sizes[0][1], "bytes": job_sizes[0][0]} if job_sizes else None,
        "counter_items": len(counter_sizes),
        "largest_counter_items": [{"entry": e, "bytes": s} for s, e in counter_sizes[:3]],
        "smallest_counter_item_bytes": counter_sizes[-1][0] if counter_sizes else 0,
    }
    return checks, stored


def print_report(result: dict[str, Any]) -> None:
    n = result["children"]
    load = result["load_average"]
    print(
        f"\nroot -> {n:,} children (Expand), join on root: {n + 2:,} jobs, {result['workers']} worker(s); "
        f"{result['seconds']} s; load average {load['start']} at start, {load['max']} at most, "
        f"{load['end']} at end"
    )
    print(
        f"\n{'segment (ends when)':<44}{'at s':>8}{'s':>8}{'invoc.':>8}{'jobs':>7}"
        "  requests (scheduler/worker/harness)"
    )
    for s in result["timeline"]:
        r = s["requests"]
        print(
            f"{s['segment']:<44}{s['at_seconds']:>8}{s['seconds']:>8}{s['scheduler_invocations']:>8}"
            f"{s['jobs_run']:>7}  {r['scheduler']}/{r['worker']}/{r['harness']}"
            + (f" (submission {r['submission']})" if r["submission"] else "")
        )
    making = result["making_children"]
    print(
        f"\nmaking the children: {making['invocations']} scheduler invocation(s), {making['pages']} pages of "
        f"100, budget {making['budget_seconds']} s each"
    )
    for m in making["each"]:
        print(
            f"  invocation {m['invocation']}: {m['children_made']:,} children ({m['pages']} pages) in "
            f"{m['seconds']} s, {m['made_so_far']:,} made"
        )
    print(
        f"  from the first to the last: {making['span_invocations']} invocations, "
        f"{making['span_scheduler_seconds']} s of scheduler time (the others enqueue children made before)"
    )
    sched = result["scheduler"]
    print(
        f"scheduler: {sched['invocations']} invocations, {sched['records']:,} records, "
        f"slowest {sched['slowest_seconds']} s"
    )
    print("\nper child (requests, write units, read units):")
    for component, figures in result["per_child"].items():
        if component == "billed":
            continue
        print(
            f"  {component:<11}{figures['requests']:>8.3f} req{figures['write_units']:>8.3f} WU"
            f"{figures['read_units']:>8.3f} RU   "
            + ", ".join(f"{op} {v}" for op, v in figures["requests_by_operation"].items())
        )
        if figures["write_units_by_operation"]:
            print(
                f"  {'':<11}WU by operation: "
                + ", ".join(f"{op} {v}" for op, v in figures["write_units_by_operation"].items())
            )
    billed = result["per_child"]["billed"]
    print(
        f"  billed     {billed['requests']:>8.3f} req{billed['write_units']:>8.3f} WU"
        f"{billed['read_units']:>8.3f} RU"
        " (submission + scheduler + worker)"
    )
    print("\nwhere the time goes (the emulator's answers as each component saw them; threads overlap):")
    for component, operations in result["time_by_operation"].items():
        for op, t in list(operations.items())[:5]:
            print(
                f"  {component:<11}{op:<34}{t['calls']:>8,} calls{t['seconds']:>9} s"
                f"  mean {t['mean_ms']} ms, slowest {t['slowest_ms']} ms"
            )
    stored = result["stored"]
    print(f"\nlargest item written: {result['largest_item_written_bytes']} bytes by component")
    print(
        f"stored: {stored['items']:,} items; largest {stored['largest']}; "
        f"{stored['counter_items']} counter items, {stored['smallest_counter_item_bytes']}-"
        f"{stored['largest_counter_items'][0]['bytes'] if stored['largest_counter_items'] else 0} bytes "
        f"(largest {stored['largest_counter_items']})"
    )
    print("\nchecks:")
    for name, c in result["checks"].items():
        print(f"  {'ok    ' if c['ok'] else 'FAILED'} {name}: {c['detail']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=MAX_CHILDREN, help="items of the root's Expand")
    parser.add_argument("--workers", type=int, default=4, help="in-process workers (threads)")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument("--save", type=Path, help="also write the whole result (JSON) to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.children <= MAX_CHILDREN:
        parser.error(f"--children must be 1-{MAX_CHILDREN:,} (OVERSEER_MAX_EXPAND_ITEMS's default)")

    from overseer.backends.aws.emulator import emulator, environment

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    log(f"root -> {args.children:,} children -> join, {args.workers} worker(s) ...")
    with emulator() as env, environment(env):
        result = run(args.children, args.workers, log)
    if args.save:
        args.save.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    failed = [name for name, c in result["checks"].items() if not c["ok"]]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nall checks passed", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
