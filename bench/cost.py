"""AWS requests, billing units and dollars per job, beside the theoretical minimum and Step Functions.

    python bench/cost.py                 # the six standard shapes, a table
    python bench/cost.py --json          # one JSON object {"shapes": {...}}
    python bench/cost.py --big 2000      # a smaller "big" graph (default 10,000 jobs)
    python bench/cost.py --only fanout-200-join --only expand-200-join

Shapes (no-op jobs, no artifacts):

* ``chain-50``: 50 jobs, each depending on the one before.
* ``fanout-200-join``: root -> 200 jobs -> one join depending on all 200.
* ``fanout-200-limited``: the same, the 200 jobs holding a concurrency limit (of 2; one
  worker, so a slot is always free): what holding a limit costs (``overseer.limits``).
* ``expand-200-join``: the same graph grown at run time: a root whose handler returns
  ``overseer.Expand`` of 200 items (200 no-op children), and a join depending on the root
  (so on its whole tree). 202 jobs; the items are one S3 object.
* ``layered-10x10-full``: 10 layers of 10, every job depending on the whole previous layer.
* ``layered-100x100`` (``--big N``: N/100 layers of 100): every job depends on one job of
  the previous layer, i.e. 100 independent chains released layer by layer.

How it runs: one local AWS emulator (moto server), a fresh set of tables and queues per
shape, and the engine's own code driven in this process (the ``tests/support.LocalStack``
way): the stream's new records are handed to ``Scheduler.process_stream_event`` in
Lambda-sized events of at most 100 records (one event = one Lambda invocation), then a
``Worker`` (``isolation="none"``) takes jobs one ``ReceiveMessage`` (max 1 message) at a
time until the queue is empty, as ``overseer worker`` does, deleting handled messages in
batches as its run loop does (10 at a time, or after its delete delay, counted in rounds of
the Lambda batching window); repeat until the graph is done.
Each component has its own clients (its own ``Services``), so every request is attributed:

* ``submission``: ``create_graph`` (graph item, batched job items, root releases);
* ``scheduler``: everything ``process_stream_event`` sends (the Lambda's requests);
* ``worker``: receive, claim, outcome, batched deletes;
* ``harness`` (not billed to the job): the stream's GetRecords (on AWS, Lambda's event
  source mapping reads the stream at no request charge), the driver's graph-status
  GetItem polling, and the worker's empty receives (on AWS an idle worker long-polls:
  a cost per worker-minute, not per job; see docs/cost-model.md). The worker's empty
  receives of the high- and low-priority queues (``overseer.priority``) are billed, and
  reported as ``priority_queue_checks_per_job``: what priorities cost while normal jobs flow.

Billing units are computed, not read from ``ConsumedCapacity``: moto returns a constant
``CapacityUnits`` (1.0 for writes, 0.5 for GetItem) whatever the item size, and nothing for
UpdateItem. So the script keeps the size of every item it has seen (from requests and
``ALL_NEW`` responses) and bills as DynamoDB does: a write costs ceil(max(size before,
size after) / 1 KB) write units (a failed conditional write too; twice that for each item
of a ``TransactWriteItems``; an update that returns only some attributes, or a
transaction's update, is applied to the item's known attributes), a strongly consistent
read ceil(size / 4 KB) read units (a Query sums the returned items first), items sized by
DynamoDB's rules (attribute names + values). SQS: one unit per request per 64 KB of
payload. Lambda: one invocation per event, duration estimated from the measured time of
each ``process_stream_event`` (see ``lambda_seconds``). See docs/cost-model.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import chain, fanout_join, layered_full

# -- prices: us-east-1, on demand ---------------------------------------------------------
USD_PER_WCU = 0.625e-6
USD_PER_RCU = 0.125e-6
USD_PER_SQS_REQUEST = 0.40e-6
USD_PER_LAMBDA_REQUEST = 0.20e-6
USD_PER_LAMBDA_GB_SECOND = 0.0000166667
USD_PER_S3_PUT = 5.0e-6  # PUT, COPY, POST, LIST
USD_PER_S3_GET = 0.40e-6  # GET, HEAD and all other requests
USD_PER_SFN_TRANSITION = 25.0e-6

# The scheduler Lambda as infra/scheduler.py declares it.
SCHEDULER_MEMORY_MB = 1024
# Lambda gives a function one full vCPU at 1,769 MB, proportionally less below.
FULL_VCPU_MB = 1769

LAMBDA_BATCH = 100  # infra/scheduler.py BATCH_SIZE
# infra/scheduler.py max_batching_window: on AWS, scheduler invocations of a busy graph are
# about this far apart. The driver's rounds stand for that much time (the worker's deferred
# deletes are flushed on this clock, not on the emulator's).
LAMBDA_BATCHING_WINDOW_SECONDS = 1.0
SQS_BATCH = 10
SQS_CHUNK = 64 * 1024
KEY_NAMES = ("graph_id", "entry")

S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "PostObject",
    "ListObjects",
    "ListObjectsV2",
    "ListBuckets",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
}
S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
DYNAMODB_READS = {"GetItem", "Query", "Scan"}


# -- DynamoDB item sizes ------------------------------------------------------------------
def number_size(text: str) -> int:
    """DynamoDB's size of a number: about one byte per two significant digits, plus one."""
    digits = text.lstrip("-").replace(".", "").lstrip("0").split("e")[0].split("E")[0].rstrip("0")
    return max(1, math.ceil(len(digits) / 2)) + 1


def value_size(value: dict[str, Any]) -> int:
    ((kind, x),) = value.items()
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        return number_size(x)
    if kind == "B":
        return len(x)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in x)
    if kind == "NS":
        return sum(number_size(n) for n in x)
    if kind == "BS":
        return sum(len(b) for b in x)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in x)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_size(v) for k, v in x.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: dict[str, Any]) -> int:
    """Bytes of an item in DynamoDB's wire format, as DynamoDB bills it."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _key(table: str, item: dict[str, Any]) -> tuple[str, str]:
    return table, json.dumps({k: item[k] for k in KEY_NAMES if k in item}, sort_keys=True)


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units if consistent else units / 2)


def attribute_sizes(item: dict[str, Any]) -> dict[str, int]:
    """Each attribute's bytes (name + value) of an item in DynamoDB's wire format."""
    return {name: len(name.encode()) + value_size(value) for name, value in item.items()}


def _split_top_level(text: str, separator: str = ",") -> list[str]:
    """``text`` split on ``separator`` outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


_CLAUSE = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b", re.IGNORECASE)


def updated_attributes(before: dict[str, int], params: dict[str, Any]) -> dict[str, int]:
    """The attribute sizes of an item after the ``UpdateExpression`` of ``params`` (an
    ``UpdateItem`` or a transaction's ``Update``), from its sizes before: exact for plain
    ``SET a = :v``, ``REMOVE a``, numeric ``ADD``; a set ``ADD`` counts the added elements in
    full (a duplicate is over-counted); a function or arithmetic takes its largest operand."""
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    after = dict(before)

    def top(path: str) -> str:
        first = re.split(r"[.\[]", path.strip(), maxsplit=1)[0]
        return str(names.get(first, first))

    def operand(text: str) -> int:
        refs = re.findall(r":[A-Za-z0-9_]+", text)
        paths = [top(p) for p in re.findall(r"#[A-Za-z0-9_]+", text)]
        sizes = [value_size(values[r]) for r in refs if r in values]
        sizes += [after.get(p, 0) - len(p.encode()) for p in paths if p in after]
        if text.strip().startswith("list_append"):
            return sum(sizes)
        return max(sizes, default=0)

    expression = params.get("UpdateExpression", "")
    pieces = _CLAUSE.split(expression)
    for keyword, body in zip(pieces[1::2], pieces[2::2], strict=True):
        for action in filter(str.strip, _split_top_level(body)):
            keyword = keyword.upper()
            if keyword == "SET":
                path, _, expr = action.partition("=")
                name = top(path)
                after[name] = len(name.encode()) + operand(expr)
            elif keyword == "REMOVE":
                after.pop(top(action), None)
            else:  # ADD / DELETE path :value
                path, value = action.split()
                name, added = top(path), values.get(value, {})
                kind = next(iter(added), "N")
                if kind == "N":
                    after[name] = len(name.encode()) + value_size(added)
                elif keyword == "ADD":
                    after[name] = after.get(name, len(name.encode())) + value_size(added)
                else:
                    after[name] = max(len(name.encode()), after.get(name, 0) - value_size(added))
    return after


class ItemSizes:
    """The attribute sizes of every item the meters have seen, to bill a write by its larger
    side (an ``UPDATED_NEW`` answer or a transaction's update changes only some attributes)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, int]] = {}
        self.lock = threading.Lock()

    def attributes(self, table: str, key: dict[str, Any]) -> dict[str, int]:
        with self.lock:
            known = self.items.get(_key(table, key))
            return dict(known) if known is not None else attribute_sizes(key)

    def get(self, table: str, key: dict[str, Any]) -> int:
        with self.lock:
            return sum(self.items.get(_key(table, key), {}).values())

    def put(self, table: str, item: dict[str, Any]) -> None:
        self.set(table, item, attribute_sizes(item))

    def set(self, table: str, key: dict[str, Any], attributes: dict[str, int]) -> None:
        with self.lock:
            self.items[_key(table, key)] = attributes

    def drop(self, table: str, key: dict[str, Any]) -> None:
        with self.lock:
            self.items.pop(_key(table, key), None)


# -- a meter: requests and billing units of the clients it is attached to ------------------
@dataclass
class Meter:
    name: str
    sizes: ItemSizes
    requests: Counter[str] = field(default_factory=Counter)
    empty_receives: int = 0
    # Empty receives of the high- and low-priority queues (overseer.priority): billed, the
    # price of priorities while normal jobs flow.
    priority_checks: int = 0
    wcu: float = 0.0
    rcu: float = 0.0
    sqs_units: int = 0
    s3_put: int = 0
    s3_get: int = 0
    largest_write: int = 0
    # Billing units per DynamoDB operation, to show where they go.
    wcu_by_operation: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    rcu_by_operation: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Sum over calls of the time from before-call to after-call (overlaps when threaded).
    busy_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build", self._remember_params)
        events.register("before-call", self._started)
        events.register("before-send", self._on_send)
        events.register("after-call", self._after_call)
        return client

    def _remember_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bench_params"] = params

    def _started(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _on_send(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            self.requests[f"{service}.{operation}"] += 1

    def _after_call(self, event_name: str, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        params = context.get("bench_params") or {}
        started = context.get("bench_started")
        with self._lock:
            if started is not None:
                self.busy_seconds += time.perf_counter() - started
            if service == "dynamodb":
                wcu, rcu = self.wcu, self.rcu
                self._dynamodb(operation, params, parsed)
                self.wcu_by_operation[operation] += self.wcu - wcu
                self.rcu_by_operation[operation] += self.rcu - rcu
            elif service == "sqs":
                self._sqs(operation, params, parsed)
            elif service == "s3":
                if operation in S3_PUT_CLASS:
                    self.s3_put += 1
                elif operation not in S3_FREE:
                    self.s3_get += 1

    def _sqs(self, operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        if operation == "ReceiveMessage":
            messages = parsed.get("Messages") or []
            if not messages and str(params.get("QueueUrl", "")).endswith(("-high", "-low")):
                self.priority_checks += 1
            elif not messages:
                self.empty_receives += 1
            payload = sum(len(m.get("Body", "").encode()) for m in messages)
        elif operation == "SendMessageBatch":
            payload = sum(len(e.get("MessageBody", "").encode()) for e in params.get("Entries", []))
        elif operation == "SendMessage":
            payload = len(params.get("MessageBody", "").encode())
        else:
            payload = 0
        self.sqs_units += max(1, math.ceil(payload / SQS_CHUNK))

    def _dynamodb(self, operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        table = params.get("TableName", "")
        failed = "Error" in parsed
        consistent = bool(params.get("ConsistentRead"))
        if operation == "PutItem":
            old = self.sizes.get(table, params["Item"])
            new = item_size(params["Item"])
            self._write(max(old, new) if not failed else max(old, 1))
            if not failed:
                self.sizes.put(table, params["Item"])
        elif operation == "UpdateItem":
            old = self.sizes.get(table, params["Key"])
            attributes = parsed.get("Attributes")
            if failed:
                self._write(max(old, 1))
            elif params.get("ReturnValues") == "ALL_NEW" and attributes is not None:
                self._write(max(old, item_size(attributes)))
                self.sizes.put(table, attributes)
            else:
                # Only some attributes come back (UPDATED_NEW) or none: the item after is the
                # one before with the update applied (what comes back is exact for those).
                after = updated_attributes(self.sizes.attributes(table, params["Key"]), params)
                if params.get("ReturnValues") == "UPDATED_NEW" and attributes:
                    after.update(attribute_sizes(attributes))
                self._write(max(old, sum(after.values())))
                self.sizes.set(table, params["Key"], after)
        elif operation == "DeleteItem":
            self._write(max(self.sizes.get(table, params["Key"]), 1))
            if not failed:
                self.sizes.drop(table, params["Key"])
        elif operation == "BatchWriteItem":
            for name, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        self._write(max(item_size(item), self.sizes.get(name, item)))
                        self.sizes.put(name, item)
                    elif "DeleteRequest" in request:
                        key = request["DeleteRequest"]["Key"]
                        self._write(max(self.sizes.get(name, key), 1))
                        self.sizes.drop(name, key)
        elif operation == "GetItem":
            item = parsed.get("Item")
            self.rcu += read_units(item_size(item) if item else 0, consistent)
            if item and not params.get("ProjectionExpression") and not params.get("AttributesToGet"):
                self.sizes.put(table, item)
        elif operation in ("Query", "Scan"):
            total = sum(item_size(i) for i in parsed.get("Items", []))
            self.rcu += read_units(total, consistent)
        elif operation == "BatchGetItem":
            for name, request in params.get("RequestItems", {}).items():
                strong = bool(request.get("ConsistentRead"))
                for key in request.get("Keys", []):
                    self.rcu += read_units(self.sizes.get(name, key), strong)
        elif operation == "TransactWriteItems":
            # DynamoDB bills a transaction 2 write units per KB of each item it writes, by the
            # larger of the item before and after (a ConditionCheck is billed as one here too).
            for entry in params.get("TransactItems", []):
                ((kind, body),) = entry.items()
                name = body["TableName"]
                key = body.get("Key") or body.get("Item") or {}
                before = self.sizes.get(name, key)
                written: dict[str, int] | None = None
                if kind == "Put":
                    written = attribute_sizes(body["Item"])
                elif kind == "Update":
                    written = updated_attributes(self.sizes.attributes(name, key), body)
                self._write(max(before, sum(written.values()) if written else 0, 1), transactional=True)
                if not failed and written is not None:
                    self.sizes.set(name, key, written)
                elif not failed and kind == "Delete":
                    self.sizes.drop(name, key)

    def _write(self, size: int, transactional: bool = False) -> None:
        self.largest_write = max(self.largest_write, size)
        self.wcu += (2 if transactional else 1) * write_units(size)

    def usd(self) -> dict[str, float]:
        sqs = self.sqs_units - self.empty_receives
        return {
            "dynamodb": self.wcu * USD_PER_WCU + self.rcu * USD_PER_RCU,
            "sqs": sqs * USD_PER_SQS_REQUEST,
            "s3": self.s3_put * USD_PER_S3_PUT + self.s3_get * USD_PER_S3_GET,
        }


def attach_services(meter: Meter, services: Any) -> None:
    """Attach ``meter`` to every client one ``Services`` holds."""
    meter.attach(services.queue.normal.client)
    meter.attach(services.artifacts.client)
    for model in (services.store.Graph, services.store.Job):
        meter.attach(model._get_connection().connection.client)
    rows = getattr(services, "rows", None)
    resource = getattr(rows, "resource", None) or getattr(rows, "dynamodb", None)
    if resource is not None and hasattr(resource, "meta"):
        meter.attach(resource.meta.client)


# -- Lambda --------------------------------------------------------------------------------
# Assumed round trip of one DynamoDB / SQS request from Lambda in the same region (p50).
AWS_REQUEST_SECONDS = 0.006


def lambda_seconds(
    requests: int, cpu: float, concurrency: float = 1.0, memory_mb: int = SCHEDULER_MEMORY_MB
) -> float:
    """Modelled duration of one scheduler invocation on AWS, billed in whole milliseconds.

    The CPU time measured here (one fast core) is stretched by the share of a vCPU the
    function gets (memory / 1,769 MB), plus ``AWS_REQUEST_SECONDS`` per request it made,
    divided by the concurrency measured in this invocation (the sum of the requests' times
    over the wall time: the scheduler releases a job's dependents 8 at a time). The
    measured wall time on the emulator is reported too, but not billed: moto on a loaded
    2-core machine answers in 10-100 ms.
    """
    share = min(1.0, memory_mb / FULL_VCPU_MB)
    seconds = cpu / share + requests * AWS_REQUEST_SECONDS / max(1.0, concurrency)
    return math.ceil(seconds * 1000) / 1000


# -- graph structure: levels, sinks, minimum ------------------------------------------------
def levels(jobs: dict[str, Any]) -> list[int]:
    """Jobs per level (longest path from a root): the waves that become ready together."""
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            deps = jobs[name]["deps"]
            depth[name] = 1 + max(level(d) for d in deps) if deps else 0
        return depth[name]

    sys.setrecursionlimit(max(10_000, 4 * len(jobs)))
    for name in jobs:
        level(name)
    counts = Counter(depth.values())
    return [counts[k] for k in range(max(counts) + 1)]


EXPAND_TYPE = "expand"


def expansions(jobs: dict[str, Any]) -> dict[str, int]:
    """Job name -> the children it expands into (its ``children`` arg), for ``expand`` jobs."""
    return {name: int(j["args"]["children"]) for name, j in jobs.items() if j["type"] == EXPAND_TYPE}


def grown(jobs: dict[str, Any]) -> dict[str, Any]:
    """The graph as it runs once every expansion is made: each child depends on its parent,
    and the parent's dependents on every child (they wait for its tree)."""
    out = {name: {**j, "deps": list(j["deps"])} for name, j in jobs.items()}
    for parent, count in expansions(jobs).items():
        children = [f"{parent}.{i}" for i in range(count)]
        for child in children:
            out[child] = {"type": "noop", "deps": [parent]}
        for job in jobs:
            if parent in jobs[job]["deps"]:
                out[job]["deps"] += children
    return out


def minimum(jobs: dict[str, Any]) -> dict[str, Any]:
    """The fewest billed requests any design with the same guarantees makes (docs/cost-model.md).

    ``jobs`` as submitted; ``expand`` jobs count with their children (``grown``): each
    child is created, claimed and finished (3 writes, as a job), and when its parent has
    dependents its end is recorded once for them (1 write; with one dependent that write
    can be the dependent's own counter, the last one releasing it, as for a multi-dep
    child; with m > 1, a shared counter and then one release each). The parent's commit
    is its outcome write; its items are one S3 PUT and one GET."""
    made = expansions(jobs)
    everything = grown(jobs)
    n = len(everything)
    edges = sum(len(j["deps"]) for j in jobs.values())
    tree_ends = 0
    for parent, count in made.items():
        dependents = sum(1 for j in jobs.values() if parent in j["deps"])
        if dependents:
            # The parent -> dependent edges are replaced by the children's end records.
            edges -= dependents
            tree_ends += count + (dependents if dependents > 1 else 0)
    has_dependents = {d for j in everything.values() for d in j["deps"]}
    sinks = sum(1 for name in everything if name not in has_dependents)
    waves = levels(everything)
    graph_writes = 2 + (math.ceil(sinks / LAMBDA_BATCH) if sinks > 1 else 0)
    wcu = 3 * n + edges + tree_ends + graph_writes
    sends = sum(math.ceil(w / SQS_BATCH) for w in waves)
    receives = n
    deletes = math.ceil(n / SQS_BATCH)
    invocations = sum(math.ceil(w / LAMBDA_BATCH) for w in waves)
    s3_put = s3_get = len(made)
    children = sum(made.values())
    usd = (
        wcu * USD_PER_WCU
        + (sends + receives + deletes) * USD_PER_SQS_REQUEST
        + invocations * USD_PER_LAMBDA_REQUEST
        + s3_put * USD_PER_S3_PUT
        + s3_get * USD_PER_S3_GET
    )
    submitted = len(jobs)
    # Children are written one conditional PutItem each (a batch write cannot be conditional).
    writes = math.ceil(submitted / 25) + children + 2 * n + edges + tree_ends + graph_writes
    return {
        "wcu": wcu,
        "rcu": 0,
        "sqs_requests": sends + receives + deletes,
        "lambda_invocations": invocations,
        "s3_put": s3_put,
        "s3_get": s3_get,
        "requests": writes + sends + receives + deletes + s3_put + s3_get,
        "usd": usd,
        "levels": len(waves),
        "sinks": sinks,
        "jobs": n,
    }


def step_functions(jobs: dict[str, Any], shape: str) -> dict[str, int]:
    """State transitions of a Map/Parallel-based Standard workflow running the same graph.

    Lower bound: every job is one Task state entered once (1 transition), plus one
    transition per Map state; a graph that is not a tree of Maps is cut into barriers
    (one Map per layer). Typical: each job is a Task plus one state that routes its
    outcome (a Choice/Pass that records a failure without failing the whole execution,
    which is what this engine does), so 2 per job, plus the Map states.
    """
    n = len(jobs)
    if shape.startswith("chain"):
        maps = 0
    elif shape.startswith(("fanout", "expand")):
        maps = 1  # an expansion is a Map over the items its first Task returns
    elif shape.endswith("-full"):
        maps = len(levels(jobs))
    else:  # independent chains: one Map over the chains
        maps = 1
    return {"lower_bound": n + maps, "typical": 2 * n + maps}


# -- driving a shape ------------------------------------------------------------------------
@dataclass
class ShapeRun:
    name: str
    jobs: int
    edges: int
    seconds: float
    status: str
    meters: dict[str, Meter]
    invocations: int
    records: int
    lambda_wall: float
    lambda_cpu: float
    lambda_billed_seconds: float
    largest_batch: int
    each_invocation: list[dict[str, Any]]
    minimum: dict[str, Any]
    sfn: dict[str, int]


# The concurrency limit of the ``*-limited`` shapes (``overseer.limits``).
LIMIT = "bench_api"


# Days ended graphs and jobs are kept (``retentionDays``; 0: for ever): each ending write
# then carries ``expires_at``. The stack's default; ``--retention-days`` sets it.
RETENTION_DAYS = 90


def metered_stack(
    prefix: str, components: tuple[str, ...], *, lease_seconds: int, retention_days: int = RETENTION_DAYS
) -> tuple[Any, dict[str, Any], dict[str, Meter]]:
    """A fresh stack on the emulator, and per component its own services and request meter."""
    from overseer.backends import build_services
    from overseer.backends.aws.resources import provision
    from overseer.config import Settings

    settings = provision(
        Settings(
            graphs_table=f"{prefix}-graphs",
            jobs_table=f"{prefix}-jobs",
            artifact_bucket=f"{prefix}-artifacts",
            receive_wait_seconds=0,
            lease_seconds=lease_seconds,
            isolation="none",
            limits=json.dumps({LIMIT: 2}),
            retention_days=retention_days,
        )
    )
    sizes = ItemSizes()
    meters = {c: Meter(c, sizes) for c in components}
    services = {}
    for component in components:
        services[component] = build_services(settings)
        attach_services(meters[component], services[component])
    return settings, services, meters


def run_shape(
    name: str, jobs: dict[str, Any], log: Callable[[str], None], retention_days: int = RETENTION_DAYS
) -> ShapeRun:
    from overseer.backends.aws import clients
    from overseer.backends.aws.resources import stream_arn
    from overseer.backends.aws.stream import StreamReader
    from overseer.graph import parse_graph
    from overseer.handlers import to_spec
    from overseer.scheduler import Scheduler
    from overseer.worker import Worker

    settings, services, meters = metered_stack(
        f"c{uuid.uuid4().hex[:8]}",
        ("submission", "scheduler", "worker", "harness"),
        lease_seconds=120,
        retention_days=retention_days,
    )
    reader = StreamReader(meters["harness"].attach(clients.client("dynamodbstreams")), stream_arn(settings))

    # As functions/scheduler.py builds it: the scheduler's own clients read expansions' items.
    scheduler = Scheduler.for_services(services["scheduler"])
    handlers = {
        "noop": to_spec("noop", lambda job: None),
        EXPAND_TYPE: to_spec(EXPAND_TYPE, expand_handler),
    }
    worker = Worker(services["worker"], handlers, worker_id="bench-worker")
    queue = services["worker"].queue
    harness = services["harness"].store

    graph_id = f"cost-{name}"
    spec = parse_graph({"id": graph_id, "args": {}, "jobs": jobs}, handler_types=handlers.keys())
    started = time.monotonic()
    services["submission"].store.create_graph(spec, max_attempts={})
    invocations = records_total = largest = 0
    each: list[dict[str, Any]] = []
    wall_total = cpu_total = billed = 0.0
    status = "running"
    idle_rounds = 0
    aws_seconds = first_deferred_at = 0.0
    while True:
        records = reader.poll()
        for start in range(0, len(records), LAMBDA_BATCH):
            batch = records[start : start + LAMBDA_BATCH]
            sent, busy = sum(meters["scheduler"].requests.values()), meters["scheduler"].busy_seconds
            t0, c0 = time.perf_counter(), time.process_time()
            scheduler.process_stream_event({"Records": batch})
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            sent = sum(meters["scheduler"].requests.values()) - sent
            concurrency = (meters["scheduler"].busy_seconds - busy) / max(wall, 1e-9)
            invocations += 1
            records_total += len(batch)
            largest = max(largest, len(batch))
            wall_total += wall
            cpu_total += cpu
            billed += lambda_seconds(sent, cpu, concurrency)
            each.append(
                {
                    "records": len(batch),
                    "requests": sent,
                    "cpu_ms": round(1000 * cpu, 1),
                    "concurrency": round(concurrency, 2),
                    "billed_ms": round(1000 * lambda_seconds(sent, cpu, concurrency), 1),
                }
            )
        done = 0
        while True:
            deliveries = queue.receive(max_messages=1, wait_seconds=0, visibility_seconds=120)
            if not deliveries:
                break
            for delivery in deliveries:
                if not worker.pending_deletes:
                    first_deferred_at = aws_seconds
                # As the run loop does: delete in batches of 10, or after the delete delay.
                worker.process(delivery, defer_delete=True)
                done += 1
        if records:
            aws_seconds += LAMBDA_BATCHING_WINDOW_SECONDS
        if worker.pending_deletes and aws_seconds - first_deferred_at >= worker.delete_delay:
            worker.flush_deletes()
        graph = harness.get_graph(graph_id)
        assert graph is not None
        if graph.status.terminal:
            status = graph.status.value
            worker.flush_deletes()  # the worker's next long poll comes back empty
            break
        idle_rounds = idle_rounds + 1 if not records and not done else 0
        if idle_rounds > 200:
            raise RuntimeError(f"{name}: no progress; graph {graph}")
        if not records and not done:
            time.sleep(0.01)
    seconds = time.monotonic() - started
    edges = sum(len(j["deps"]) for j in jobs.values())
    everything = grown(jobs)
    if graph.jobs_total != len(everything):
        raise RuntimeError(f"{name}: the graph counts {graph.jobs_total} jobs, expected {len(everything)}")
    log(f"  {name}: {len(everything)} jobs {status} in {seconds:.1f} s, {invocations} scheduler invocations")
    return ShapeRun(
        name=name,
        jobs=len(everything),
        edges=edges,
        seconds=seconds,
        status=status,
        meters=meters,
        invocations=invocations,
        records=records_total,
        lambda_wall=wall_total,
        lambda_cpu=cpu_total,
        lambda_billed_seconds=billed,
        largest_batch=largest,
        each_invocation=each,
        minimum=minimum(jobs),
        sfn=step_functions(everything, name),
    )


BILLED = ("submission", "scheduler", "worker")


def summarize(run: ShapeRun) -> dict[str, Any]:
    n = run.jobs
    per_million = 1e6 / n
    billed_requests: Counter[str] = Counter()
    by_component: dict[str, dict[str, float]] = {}
    units_by_component: dict[str, dict[str, float]] = {}
    usd: dict[str, float] = defaultdict(float)
    wcu = rcu = sqs_units = 0.0
    for component in BILLED:
        meter = run.meters[component]
        counts = Counter(meter.requests)
        if meter.empty_receives:
            counts["sqs.ReceiveMessage"] -= meter.empty_receives
        counts = +counts
        billed_requests.update(counts)
        by_component[component] = {op: round(c / n, 3) for op, c in sorted(counts.items())}
        units_by_component[component] = {
            f"{kind} {op}": round(units / n, 3)
            for kind, by_op in (("WCU", meter.wcu_by_operation), ("RCU", meter.rcu_by_operation))
            for op, units in sorted(by_op.items())
            if units
        }
        for service, dollars in meter.usd().items():
            usd[service] += dollars
        wcu += meter.wcu
        rcu += meter.rcu
        sqs_units += meter.sqs_units - meter.empty_receives
    gb_seconds = run.lambda_billed_seconds * SCHEDULER_MEMORY_MB / 1024
    usd["lambda_requests"] = run.invocations * USD_PER_LAMBDA_REQUEST
    usd["lambda_duration"] = gb_seconds * USD_PER_LAMBDA_GB_SECOND
    total_usd = sum(usd.values())
    harness = run.meters["harness"]
    excluded = Counter(harness.requests)
    excluded["sqs.ReceiveMessage (empty, worker idle)"] = run.meters["worker"].empty_receives
    total_requests = sum(billed_requests.values())
    out = {
        "jobs": n,
        "edges": run.edges,
        "status": run.status,
        "seconds": round(run.seconds, 2),
        "requests_per_job": round(total_requests / n, 3),
        "priority_queue_checks_per_job": round(run.meters["worker"].priority_checks / n, 3),
        "usd_per_million_jobs": round(total_usd * per_million, 3),
        "min_usd_per_million_jobs": round(run.minimum["usd"] * per_million, 3),
        "step_functions_usd_per_million_jobs": round(
            run.sfn["lower_bound"] * USD_PER_SFN_TRANSITION * per_million, 2
        ),
        "step_functions_typical_usd_per_million_jobs": round(
            run.sfn["typical"] * USD_PER_SFN_TRANSITION * per_million, 2
        ),
        "ratio_to_minimum": round(total_usd / run.minimum["usd"], 3),
        "usd_per_million_jobs_by_service": {k: round(v * per_million, 3) for k, v in sorted(usd.items())},
        "units_per_job": {
            "dynamodb_write_units": round(wcu / n, 3),
            "dynamodb_read_units": round(rcu / n, 3),
            "sqs_requests_64kb": round(sqs_units / n, 3),
            "lambda_invocations": round(run.invocations / n, 3),
            "lambda_gb_seconds": round(gb_seconds / n, 6),
            "s3_put": round(sum(run.meters[c].s3_put for c in BILLED) / n, 3),
            "s3_get_head": round(sum(run.meters[c].s3_get for c in BILLED) / n, 3),
        },
        "min_units_per_job": {
            "dynamodb_write_units": round(run.minimum["wcu"] / n, 3),
            "dynamodb_read_units": 0.0,
            "sqs_requests_64kb": round(run.minimum["sqs_requests"] / n, 3),
            "lambda_invocations": round(run.minimum["lambda_invocations"] / n, 3),
            "s3_put": round(run.minimum["s3_put"] / n, 3),
            "s3_get_head": round(run.minimum["s3_get"] / n, 3),
        },
        "min_requests_per_job": round(run.minimum["requests"] / n, 3),
        "by_operation": {
            op: round(c / n, 3) for op, c in sorted(billed_requests.items(), key=lambda kv: -kv[1])
        },
        "by_component": by_component,
        "units_by_component": units_by_component,
        "excluded_harness_requests_per_job": {op: round(c / n, 3) for op, c in sorted(excluded.items()) if c},
        "lambda": {
            "invocations": run.invocations,
            "records": run.records,
            "largest_batch": run.largest_batch,
            "measured_wall_ms_per_invocation": round(1000 * run.lambda_wall / max(1, run.invocations), 2),
            "measured_cpu_ms_per_invocation": round(1000 * run.lambda_cpu / max(1, run.invocations), 2),
            "billed_ms_per_invocation": round(1000 * run.lambda_billed_seconds / max(1, run.invocations), 2),
            "memory_mb": SCHEDULER_MEMORY_MB,
            "assumed_aws_request_ms": AWS_REQUEST_SECONDS * 1000,
            "each_invocation": run.each_invocation,
        },
        "step_functions_transitions": run.sfn,
        "largest_item_written_bytes": max(run.meters[c].largest_write for c in BILLED),
    }
    return out


def shapes(big: int) -> dict[str, Callable[[], dict[str, Any]]]:
    layers = max(1, big // 100)
    return {
        "chain-50": lambda: chain(50),
        "fanout-200-join": lambda: fanout_join(200),
        "fanout-200-limited": lambda: limited(fanout_join(200)),
        "expand-200-join": lambda: expand_join(200),
        "layered-10x10-full": lambda: layered_full(10, 10),
        f"layered-{layers}x100": lambda: layered_single(layers, 100),
    }


def limited(jobs: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` with every job but the first and the last holding the concurrency limit
    ``LIMIT`` (one worker: a slot is always free, so this is what holding a limit costs)."""
    names = list(jobs)
    return {n: {**j, "limit": LIMIT} if n not in (names[0], names[-1]) else j for n, j in jobs.items()}


def expand_join(children: int) -> dict[str, Any]:
    """A root that expands into ``children`` no-op jobs at run time, and a join depending on
    the root (so on its whole tree)."""
    return {
        "root": {"type": EXPAND_TYPE, "deps": [], "args": {"children": children}},
        "join": {"type": "noop", "deps": ["root"]},
    }


def expand_handler(job: Any) -> list[Any]:
    from overseer import Expand

    return [Expand(type="noop", items=[{"i": i} for i in range(job.args["children"])])]


def layered_single(layers: int, width: int) -> dict[str, Any]:
    """``layers`` layers of ``width``: job i of layer k depends on job i of layer k-1."""
    return {
        f"l{k:03d}-{i:03d}": {"type": "noop", "deps": [f"l{k - 1:03d}-{i:03d}"] if k else []}
        for k in range(layers)
        for i in range(width)
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print()
    header = (
        f"{'shape':<22}{'jobs':>7}{'edges':>7}{'req/job':>9}{'min req':>9}{'WCU/job':>9}"
        f"{'$/M jobs':>10}{'min $/M':>9}{'ratio':>7}{'SFN $/M':>9}{'SFN typ':>9}"
    )
    print(header)
    for name, s in results.items():
        print(
            f"{name:<22}{s['jobs']:>7}{s['edges']:>7}{s['requests_per_job']:>9.2f}"
            f"{s['min_requests_per_job']:>9.2f}{s['units_per_job']['dynamodb_write_units']:>9.2f}"
            f"{s['usd_per_million_jobs']:>10.2f}{s['min_usd_per_million_jobs']:>9.2f}"
            f"{s['ratio_to_minimum']:>7.2f}{s['step_functions_usd_per_million_jobs']:>9.2f}"
            f"{s['step_functions_typical_usd_per_million_jobs']:>9.2f}"
        )
    for name, s in results.items():
        print(f"\n{name}: $/M jobs by service {s['usd_per_million_jobs_by_service']}")
        print(f"  units/job {s['units_per_job']}")
        print(f"  minimum units/job {s['min_units_per_job']}")
        for component, ops in s["by_component"].items():
            print(f"  {component:<11} " + ", ".join(f"{op} {v:.3f}" for op, v in ops.items()))
            units = s["units_by_component"][component]
            print(f"  {'':<11} units/job: " + ", ".join(f"{op} {v:.3f}" for op, v in units.items()))
        print(f"  excluded (harness) {s['excluded_harness_requests_per_job']}")
        print(f"  lambda { {k: v for k, v in s['lambda'].items() if k != 'each_invocation'} }")
    goal = all(s["ratio_to_minimum"] <= 1.3 for s in results.values()) and all(
        s["usd_per_million_jobs"] <= 5 for n, s in results.items() if n.startswith(("chain", "fanout"))
    )
    print(
        f"\ngoal (<= 1.3x minimum everywhere, <= $5/M for chain and fan-out): {'met' if goal else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument(
        "--big", type=int, default=10_000, help="jobs in the big layered graph (default 10000)"
    )
    parser.add_argument("--only", action="append", help="run only these shapes (repeatable)")
    parser.add_argument(
        "--retention-days",
        type=int,
        default=RETENTION_DAYS,
        help=f"days ended graphs and jobs are kept (default {RETENTION_DAYS}, the stack's; 0: for ever)",
    )
    args = parser.parse_args(argv)

    from overseer.backends.aws.emulator import emulator, environment

    def log(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    available = shapes(args.big)
    names = args.only or list(available)
    unknown = set(names) - set(available)
    if unknown:
        parser.error(f"unknown shape(s) {sorted(unknown)}; choose from {sorted(available)}")
    results: dict[str, dict[str, Any]] = {}
    with emulator() as env, environment(env):
        for name in names:
            log(f"running {name} ...")
            results[name] = summarize(run_shape(name, available[name](), log, args.retention_days))
    if args.json:
        print(json.dumps({"shapes": results}))
    else:
        print_table(results)
    return 0 if all(s["status"] == "finished" for s in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
