"""Sweep cost: one sweep's requests and read units for graphs of 1,000 to 100,000 running jobs.

    python bench/sweep_cost.py                    # sizes 1000, 10000, 100000
    python bench/sweep_cost.py --sizes 1000 5000
    python bench/sweep_cost.py --json             # prints, last, one JSON object

For each size, a fresh stack on one local AWS emulator (moto server) gets one running
graph of that many jobs, written directly (``BatchWriteItem``, 25 items a request, four
threads; not measured) in the shape the engine writes (``overseer.items``): 90% of the
jobs ``running`` with a live lease (expiring in an hour: writing 100,000 items to moto
takes longer than a 120 s lease), 10% ``ready``, with
messages waiting in the dispatch queue (for the first ``MESSAGES`` of them: the sweep only
reads the queue's depth, and moto's SQS slows down with tens of thousands of messages).
Nothing is wrong, so there is nothing to repair. Then ONE sweep (``overseer.sweep.sweep``,
the sweep Lambda's code) runs, and is measured:

* ``requests``: AWS requests of the sweep's clients (``overseer.backends.aws.clients.
  RequestCounter``; retries included);
* ``read_units``: DynamoDB read units **computed from the items read** (bench/cost.py's
  meter: a Query bills the summed size of the items it returns, a strongly consistent read
  1 unit per 4 KB, an eventually consistent one half; an empty Query still 0.5). moto's
  ``ReturnConsumedCapacity`` is a constant whatever the size, so it is not used;
* ``seconds``: the sweep's wall time on the emulator (moto on a shared 2-core machine:
  indicative only).

Also printed: a heartbeat's write cost (``heartbeat``): the write units of one lease
renewal of a running job item as the engine writes it (1 KB units of the item), and what the
sweep index adds: a renewal moves the job in the index only when its new expiry passes
the end of its lease minute (``overseer.items.next_lease_bucket``), and a move writes the
keys-only index item twice (delete + put, 1 unit each). The share of renewals that move
is counted over a simulated two hours of renewals every ``lease_seconds / 3``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import Meter, item_size, metered_stack, write_units

LEASE_SECONDS = 120
# The written jobs' leases: live during the whole set-up and the sweep.
SETUP_LEASE_SECONDS = 3600
READY_SHARE = 10  # one job in ten is ready
MESSAGES = 1000  # messages queued for the first ready jobs


def job_items(graph_id: str, size: int, now: dt.datetime) -> list[dict[str, Any]]:
    """The job items of a running graph, in DynamoDB's JSON, as the engine writes them."""
    from overseer import timeutil
    from overseer.items import job_entry, minute, sweep_index_values
    from overseer.states import JobStatus

    stamp = timeutil.iso(now)
    expires = timeutil.iso(now + dt.timedelta(seconds=SETUP_LEASE_SECONDS))
    items = []
    for n in range(size):
        name = f"job-{n:06d}"
        item: dict[str, Any] = {
            "graph_id": graph_id,
            "entry": job_entry(name),
            "job_name": name,
            "job_type": "work",
            "args": "{}",
            "deps_count": 0,
            "deps": [],
            "dependents": [],
            "created_at": stamp,
            "updated_at": stamp,
            "released_by": "submission",
        }
        if n % READY_SHARE == 0:
            item.update(status=JobStatus.READY.value, attempts=0)
            index = sweep_index_values(graph_id, name, JobStatus.READY, {}, now)
        else:
            item.update(
                status=JobStatus.RUNNING.value,
                attempts=1,
                lease_owner=f"batch:{uuid.uuid4()}:1:abc123",
                lease_expires_at=expires,
                heartbeat_at=stamp,
                started_at=stamp,
            )
            changes = {"lease_expires_at": expires}
            index = sweep_index_values(graph_id, name, JobStatus.RUNNING, changes, now)
            assert index["sweep_at"] == minute(expires)
        item.update(index)
        items.append(_dynamo_json(item))
    return items


def _dynamo_json(item: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, str):
            return {"S": v}
        if isinstance(v, bool | int | float):
            return {"N": str(v)}
        if isinstance(v, list):
            return {"L": [value(x) for x in v]}
        raise TypeError(type(v))

    return {k: value(v) for k, v in item.items() if v is not None}


def write_graph(settings: Any, graph_id: str, size: int) -> tuple[list[str], dict[str, Any]]:
    """The graph item and its jobs; returns the ready jobs' names and one running job item."""
    from overseer import timeutil
    from overseer.backends.aws import clients
    from overseer.states import GraphStatus

    ddb = clients.client("dynamodb")
    now = timeutil.now()
    stamp = timeutil.iso(now)
    graph = {
        "graph_id": graph_id,
        "status": GraphStatus.RUNNING.value,
        "active_status": GraphStatus.RUNNING.value,
        "jobs_total": size,
        "args": "{}",
        "count_finished": 0,
        "count_failed": 0,
        "count_aborted": 0,
        "created_at": stamp,
        "updated_at": stamp,
    }
    ddb.put_item(TableName=settings.graphs_table, Item=_dynamo_json(graph))
    items = job_items(graph_id, size, now)
    batches = [items[i : i + 25] for i in range(0, len(items), 25)]

    def write(batch: list[dict[str, Any]]) -> None:
        request = {settings.jobs_table: [{"PutRequest": {"Item": item}} for item in batch]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, batches))
    ready = [i["job_name"]["S"] for i in items if i["status"]["S"] == "ready"]
    running = next(i for i in items if i["status"]["S"] == "running")
    return ready, running


def measure_size(size: int, log: Any) -> dict[str, Any]:
    from overseer.backends.aws.clients import RequestCounter
    from overseer.store import JobMessage
    from overseer.sweep import sweep

    prefix = f"s{uuid.uuid4().hex[:8]}"
    settings, services, meters = metered_stack(prefix, ("sweep",), lease_seconds=LEASE_SECONDS)
    services = services["sweep"]
    graph_id = f"sweep-cost-{size}"
    started = time.monotonic()
    ready, _ = write_graph(settings, graph_id, size)
    services.queue.send([JobMessage(graph_id, name, 0) for name in ready[:MESSAGES]])
    queued = min(len(ready), MESSAGES)
    log(f"  {size} jobs written, {queued} messages queued ({time.monotonic() - started:.0f} s)")

    counter = RequestCounter()
    # Every client the sweep calls: the dispatch queue (depth), the dead-letter queue and
    # the stream-failures queue (one receive each), and below, the store's tables.
    for client in (services.queue.normal.client, services.dead_letters.client, services.stream_failures.sqs):
        counter.attach(client)
    # Every model the store writes through: graphs, jobs, and the sweep's lease item.
    for model in (services.store.Graph, services.store.Job, services.store.Lease):
        counter.attach(model._get_connection().connection.client)
    meter: Meter = meters["sweep"]
    meter.requests.clear()
    meter.rcu = 0.0
    began = time.perf_counter()
    report = sweep(services)
    seconds = time.perf_counter() - began
    if report.failures or report.leases_expired or report.lost_messages_resent or report.graphs != 1:
        raise SystemExit(f"the sweep found something to repair or failed: {report}")
    total = counter.total()
    log(f"  sweep: {total} requests {dict(counter.counts)}, {meter.rcu} read units, {seconds:.2f} s")
    return {"requests": counter.total(), "read_units": meter.rcu, "seconds": round(seconds, 3)}


def heartbeat_cost(job_item: dict[str, Any]) -> dict[str, Any]:
    """Write units of one renewal, before and after the sweep index (see the docstring)."""
    from overseer import timeutil
    from overseer.items import LEASE_BUCKET_AHEAD_SECONDS, minute, next_lease_bucket

    # The renewal writes the item (its size after the update: two timestamps change).
    plain = {k: v for k, v in job_item.items() if k not in ("sweep_key", "sweep_at")}
    table_units = write_units(item_size(job_item))
    table_units_before = write_units(item_size(plain))
    beat = LEASE_SECONDS / 3
    claimed = timeutil.now().replace(second=17, microsecond=0)
    bucket = minute(claimed + dt.timedelta(seconds=LEASE_SECONDS))
    renewals = moves = 0
    for n in range(1, int(2 * 3600 / beat) + 1):
        expires = timeutil.iso(claimed + dt.timedelta(seconds=n * beat + LEASE_SECONDS))
        renewals += 1
        moved = next_lease_bucket(bucket, expires)
        if moved is not None:
            moves += 1
            bucket = moved
    index_units = 2 * moves / renewals
    return {
        "lease_seconds": LEASE_SECONDS,
        "renewal_every_seconds": beat,
        "bucket_ahead_seconds": LEASE_BUCKET_AHEAD_SECONDS,
        "renewals": renewals,
        "renewals_that_move_the_index": moves,
        "write_units_before": table_units_before,
        "write_units_after": round(table_units + index_units, 3),
        "table_write_units": table_units,
        "index_write_units": round(index_units, 3),
        "item_bytes": item_size(job_item),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args(argv)

    from overseer.backends.aws.emulator import emulator, environment

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    sizes: dict[str, Any] = {}
    with emulator() as env, environment(env):
        running_item: dict[str, Any] = {}
        for size in args.sizes:
            log(f"graph of {size} jobs ...")
            sizes[str(size)] = measure_size(size, log)
        settings, _, _ = metered_stack(f"h{uuid.uuid4().hex[:8]}", ("x",), lease_seconds=LEASE_SECONDS)
        _, running_item = write_graph(settings, "heartbeat", 10)
    heartbeat = heartbeat_cost(running_item)
    smallest, largest = sizes[str(min(args.sizes))], sizes[str(max(args.sizes))]
    within = all(largest[k] <= 1.5 * smallest[k] for k in ("requests", "read_units"))
    log(
        f"heartbeat: {heartbeat['write_units_before']} write unit(s) per renewal before the sweep "
        f"index, {heartbeat['write_units_after']} after ({heartbeat['renewals_that_move_the_index']} "
        f"of {heartbeat['renewals']} renewals move the job in the index, 2 units each)"
    )
    log(f"largest / smallest size within 1.5x (requests, read units): {within}")
    result = {"sizes": sizes, "heartbeat": heartbeat, "within_1_5x": within}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
