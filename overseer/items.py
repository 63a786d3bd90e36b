"""The item codec every backend shares: the graph and job items a submission writes
(with edge chunks), item -> record, and the attributes a transition writes.

Backends only store what this module builds (DynamoDB through PynamoDB models, SQLite as
JSON objects with the same attribute names). Stream records (and the embedded change
feed) carry images in this shape, so the scheduler reads them without knowing the backend.

The sweep's indexes live here too (both backends write what these functions build):

* **sweep index** (jobs): a job that needs watching carries ``sweep_key`` =
  ``<kind>#<shard>`` and ``sweep_at`` = a minute (``YYYY-MM-DDTHH:MM``, UTC). Kinds:
  ``lease`` (running: the minute its lease expires, at the latest), ``late`` (ready with
  a retry further off than SQS's delay: the minute its message can be sent) and ``due``
  (ready: the minute it became due). The shard (``SWEEP_SHARDS`` of them, from the job's
  id) spreads the writes of each kind over several index partitions. Waiting and ended
  jobs carry neither attribute, so the index holds only what the sweep may have to repair,
  and the sweep asks it for ``sweep_at <= <a past minute>`` per kind and shard.
* **active graphs** (graphs): ``active_status`` = the graph's status while it is not
  terminal (creating, running), absent after: the sweep's running graphs, and the
  submissions that stopped half-way (``creating``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import timeutil
from .graph import GraphSpec, definition_digest
from .limits import wait_key
from .states import RELEASED_BY_EXPANSION, GraphStatus, JobStatus, Transition
from .store import EDGE_CHUNK, INLINE_EDGES, LIST_DAYS, MAX_SQS_DELAY, Dependent, GraphRecord, JobRecord

JOB_PREFIX = "job#"


def job_entry(name: str) -> str:
    return JOB_PREFIX + name


def chunk_entry(kind: str, name: str, chunk: int) -> str:
    return f"{kind}#{name}#{chunk:05d}"


# The graph item's counters: count_<status> for each terminal job status.
COUNTERS = tuple(status.value for status in JobStatus if status.terminal)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def graph_item(spec: GraphSpec, stamp: str) -> dict[str, Any]:
    """The graph's item as submitted: ``creating`` until its jobs are written."""
    return {
        "graph_id": spec.id,
        "status": GraphStatus.CREATING.value,
        "jobs_total": len(spec.jobs),
        "args": _json(spec.args),
        **{f"count_{status}": 0 for status in COUNTERS},
        "definition_sha256": definition_digest(spec),
        "created_at": stamp,
        # The day it was submitted: its partition of the graphs-by-day index (listing).
        "created_on": stamp[:10],
        "updated_at": stamp,
        **graph_index_values(GraphStatus.CREATING),
        **_deadline(spec.timeout_seconds, stamp),
        **({"priority": spec.priority} if spec.priority != "normal" else {}),
    }


def _deadline(timeout_seconds: int | None, stamp: str) -> dict[str, Any]:
    if not timeout_seconds:
        return {}
    deadline = timeutil.parse(stamp) + dt.timedelta(seconds=timeout_seconds)
    return {"timeout_seconds": timeout_seconds, "deadline_at": timeutil.iso(deadline)}


def listing_window(since: str | None, until: str | None) -> tuple[str, str]:
    """(until, since) of a listing of graphs: ``until`` defaults to now, ``since`` to
    ``LIST_DAYS`` days before it."""
    end = until or timeutil.iso()
    start = since or timeutil.iso(timeutil.parse(end) - dt.timedelta(days=LIST_DAYS))
    return end, start


def graph_record(item: Mapping[str, Any]) -> GraphRecord:
    """A GraphRecord from a graph item's attributes."""
    return GraphRecord(
        graph_id=item["graph_id"],
        status=GraphStatus(item["status"]),
        jobs_total=int(item["jobs_total"]),
        args=json.loads(item.get("args") or "{}"),
        counts={s: int(item.get(f"count_{s}") or 0) for s in COUNTERS},
        created_at=item.get("created_at"),
        updated_at=item.get("updated_at"),
        finished_at=item.get("finished_at"),
        definition_sha256=item.get("definition_sha256"),
        timeout_seconds=_int(item.get("timeout_seconds"), 0) or None,
        deadline_at=item.get("deadline_at"),
        reason=item.get("reason"),
        priority=item.get("priority") or "normal",
    )


def job_items(spec: GraphSpec, max_attempts: Mapping[str, int], stamp: str) -> Iterator[dict[str, Any]]:
    """Every item of the graph's jobs, in the graph's order: each job ``waiting`` (absent
    attributes left out), then its edge chunk items when it has more than ``INLINE_EDGES``
    deps or dependents (``in#``/``out#`` entries of ``EDGE_CHUNK`` edges each)."""
    dependents = spec.dependents()
    for name in spec.order:
        job = spec.jobs[name]
        out = [[child, index, count] for child, index, count in dependents[name]]
        item = {
            "graph_id": spec.id,
            "entry": job_entry(name),
            "job_name": name,
            "job_type": job.type,
            "status": JobStatus.WAITING.value,
            "args": _json(job.args),
            "attempts": 0,
            "max_attempts": job.max_attempts or max_attempts.get(job.type),
            "timeout_seconds": job.timeout_seconds,
            "retry_on": list(job.retry_on) or None,
            # Absent for the default pool (overseer.pools) and for normal priority.
            "pool": job.pool,
            "priority": spec.priority if spec.priority != "normal" else None,
            "limit": job.limit,
            "deps_count": len(job.deps),
            "deps": list(job.deps) if len(job.deps) <= INLINE_EDGES else None,
            "dependents": out if len(out) <= INLINE_EDGES else None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        yield {k: v for k, v in item.items() if v is not None}
        for kind, attr, edges in (("in", "deps", list(job.deps)), ("out", "dependents", out)):
            if len(edges) > INLINE_EDGES:
                for chunk, start in enumerate(range(0, len(edges), EDGE_CHUNK)):
                    # attempts and deps_count: the job model's defaults, on chunk items too.
                    yield {
                        "graph_id": spec.id,
                        "entry": chunk_entry(kind, name, chunk),
                        "attempts": 0,
                        "deps_count": 0,
                        attr: edges[start : start + EDGE_CHUNK],
                        # Which submission wrote it: a rollback deletes only that one's items.
                        "created_at": stamp,
                    }


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def record_from_item(values: Mapping[str, Any]) -> JobRecord:
    """A JobRecord from an item's attributes (a PynamoDB model's or a stream image's)."""
    error = None
    if values.get("error_type") or values.get("error_message"):
        error = {
            "type": values.get("error_type"),
            "message": values.get("error_message"),
            "traceback": values.get("error_traceback"),
        }
    dependents = values.get("dependents")
    deps = values.get("deps")
    finished = values.get("finished_deps")
    return JobRecord(
        graph_id=values["graph_id"],
        name=values.get("job_name") or values["entry"][len(JOB_PREFIX) :],
        type=values.get("job_type") or "",
        status=JobStatus(values.get("status") or "waiting"),
        args=json.loads(values.get("args") or "{}"),
        attempts=_int(values.get("attempts")),
        max_attempts=_int(values.get("max_attempts"), 0) or None,
        timeout_seconds=_int(values.get("timeout_seconds"), 0) or None,
        retry_on=[str(name) for name in values.get("retry_on") or ()],
        pool=values.get("pool"),
        priority=values.get("priority"),
        limit=values.get("limit"),
        limit_wait=values.get("limit_wait"),
        limit_since=values.get("limit_since"),
        code_version=values.get("code_version"),
        worker=values.get("worker"),
        worker_pool=values.get("worker_pool"),
        deps_count=_int(values.get("deps_count")),
        deps=list(deps) if deps is not None else None,
        dependents=[Dependent(str(c), int(i), int(n)) for c, i, n in dependents]
        if dependents is not None
        else None,
        finished_deps=len(finished) if finished else 0,
        error=error,
        errors=json.loads(values.get("errors") or "[]"),
        reason=values.get("reason"),
        artifacts=json.loads(values.get("artifacts") or "[]"),
        rows=json.loads(values.get("rows") or "[]"),
        lease_owner=values.get("lease_owner"),
        lease_expires_at=values.get("lease_expires_at"),
        heartbeat_at=values.get("heartbeat_at"),
        not_before=values.get("not_before"),
        dispatched_at=values.get("dispatched_at"),
        released_by=values.get("released_by"),
        carried_finished=_int(values.get("carried_finished")),
        carried_from=values.get("carried_from"),
        rerun_at=values.get("rerun_at"),
        parent=values.get("parent"),
        child_index=_optional_int(values.get("child_index")),
        siblings=_optional_int(values.get("siblings")),
        expansion=json.loads(values["expansion"]) if values.get("expansion") else None,
        expand_made=_int(values.get("expand_made")),
        expand_done_at=values.get("expand_done_at"),
        created_at=values.get("created_at"),
        updated_at=values.get("updated_at"),
        started_at=values.get("started_at"),
        finished_at=values.get("finished_at"),
    )


JSON_FIELDS = ("args", "artifacts", "rows", "errors", "expansion")
ERROR_FIELDS = ("error_type", "error_message", "error_traceback")
# A job's error history (``errors``): the last MAX_ERRORS_KEPT attempts' errors, each
# message cut to ERROR_MESSAGE_KEPT characters (at most about 8 KB on the item).
MAX_ERRORS_KEPT = 10
ERROR_MESSAGE_KEPT = 500


def error_history(
    history: Iterable[Mapping[str, Any]], attempt: int, error: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``history`` with the error of attempt number ``attempt`` added (bounded in size): what a
    job keeps so every attempt's error stays visible after a retry."""
    entry = {
        "attempt": attempt,
        "type": str(error.get("type") or "Error")[:256],
        "message": str(error.get("message") or "")[:ERROR_MESSAGE_KEPT],
        "at": timeutil.iso(),
    }
    kept = [dict(e) for e in history if e.get("attempt") != attempt]
    return [*kept, entry][-MAX_ERRORS_KEPT:]


# -- the sweep index -----------------------------------------------------------------------
SWEEP_SHARDS = 8
LEASE, LATE, DUE = "lease", "late", "due"
SWEEP_KINDS = (LEASE, LATE, DUE)
# A heartbeat moves its job's lease bucket only when the new expiry is past the bucket's
# end, and then this far beyond the new expiry, so that it moves once every few beats
# (see docs/cost-model.md): a dead worker's job is found at most this much later.
LEASE_BUCKET_AHEAD_SECONDS = 240


def minute(moment: dt.datetime | str) -> str:
    """The minute of ``moment`` (UTC), as the sweep index keys it: ``YYYY-MM-DDTHH:MM``.

    >>> minute("2026-11-29T21:43:59.999Z")
    '2026-11-29T21:43'
    """
    when = timeutil.parse(moment) if isinstance(moment, str) else moment
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def sweep_shard_key(kind: str, graph_id: str, name: str) -> str:
    """``<kind>#<shard>``: the job's partition of the sweep index for ``kind``."""
    return f"{kind}#{zlib.crc32(f'{graph_id}/{name}'.encode()) % SWEEP_SHARDS}"


def next_lease_bucket(current: str | None, lease_expires_at: str) -> str | None:
    """The lease bucket a renewal to ``lease_expires_at`` writes, or None when ``current``
    still ends after the new expiry (the renewal then writes nothing to the index).

    >>> next_lease_bucket("2026-11-29T21:45", "2026-11-29T21:45:30.000Z") is None
    True
    >>> next_lease_bucket("2026-11-29T21:45", "2026-11-29T21:46:10.000Z")
    '2026-11-29T21:50'
    """
    expires = timeutil.parse(lease_expires_at)
    if current is not None and expires < timeutil.parse(current + ":00Z") + dt.timedelta(seconds=60):
        return None
    return minute(expires + dt.timedelta(seconds=LEASE_BUCKET_AHEAD_SECONDS))


def sweep_index_values(
    graph_id: str, name: str, status: JobStatus, changes: Mapping[str, Any], now: dt.datetime
) -> dict[str, str | None]:
    """``sweep_key`` and ``sweep_at`` of a job that moves to ``status`` with ``changes``
    (None = remove): running with a lease, the minute it expires; ready, the minute its late
    retry may be sent or the minute it became due; waiting for a concurrency limit, the
    limit's partition and since when, to the millisecond (the oldest is woken first);
    otherwise out of the index."""
    kind: str | None = None
    at: dt.datetime | str | None = None
    if status == JobStatus.READY and changes.get("limit_wait"):
        since = str(changes.get("limit_since") or timeutil.iso(now))
        return {"sweep_key": wait_key(str(changes["limit_wait"])), "sweep_at": since}
    if status == JobStatus.RUNNING and changes.get("lease_expires_at"):
        kind, at = LEASE, str(changes["lease_expires_at"])
    elif status == JobStatus.READY:
        not_before = changes.get("not_before")
        due = timeutil.parse(not_before) if not_before else now
        if (due - now).total_seconds() > MAX_SQS_DELAY and not changes.get("dispatched_at"):
            kind, at = LATE, due - dt.timedelta(seconds=MAX_SQS_DELAY)
        else:
            kind, at = DUE, max(due, now)
    if kind is None or at is None:
        return {"sweep_key": None, "sweep_at": None}
    return {"sweep_key": sweep_shard_key(kind, graph_id, name), "sweep_at": minute(at)}


def graph_index_values(status: GraphStatus) -> dict[str, str | None]:
    """``active_status`` of a graph in ``status``: its status while not terminal, else None."""
    return {"active_status": None if status.terminal else status.value}


# -- retention ------------------------------------------------------------------------------
# An ended item carries ``expires_at`` (epoch seconds, a number: DynamoDB's time to live
# attribute), written in the write that ends it, never in a write of its own:
#
# * a job: when it ends (finished, failed, aborted): its end + the retention;
# * a graph: when it ends (``set_graph_status`` to a terminal status): its end + the retention;
# * an edge chunk item (``in#``/``out#``, written once at submission): the submission +
#   ``CHUNK_RETENTION_FACTOR`` x the retention, so it outlives its jobs for any graph that ends
#   within the retention of its submission;
# * an expansion's counter item (``exp#``): its last count + the retention.
#
# A rerun that brings a job or a graph back removes it in the write that brings it back. A
# graph still running (or rerun) more than the retention after its early jobs ended may lose
# their items: the retention is meant to be longer than any graph runs (docs/operations.md).
EXPIRES_AT = "expires_at"
CHUNK_RETENTION_FACTOR = 2
DAY_SECONDS = 86_400


def expires_at(moment: dt.datetime | str, retention_days: int) -> int | None:
    """Epoch seconds ``retention_days`` after ``moment``, or None when kept for ever (0).

    >>> expires_at("2026-01-01T00:00:00.000Z", 1)
    1767312000
    >>> expires_at("2026-01-01T00:00:00.000Z", 0) is None
    True
    """
    if retention_days <= 0:
        return None
    when = timeutil.parse(moment) if isinstance(moment, str) else moment
    return int(when.timestamp()) + retention_days * DAY_SECONDS


def transition_values(
    transition: Transition,
    changes: Mapping[str, Any] | None,
    remove: Iterable[str],
    *,
    fenced: bool,
    graph_id: str,
    name: str,
    retention_days: int = 0,
) -> tuple[dict[str, Any], list[str]]:
    """The attributes a transition sets (None = remove) and the ones it removes, as every
    backend writes them: status, ISO timestamps, the error split into readable fields,
    ``failed_on`` (the day a job failed, the key of the failed-jobs index) while it is failed,
    the job's place in the sweep index (``sweep_index_values``), and ``expires_at`` (set when
    the job ends and ``retention_days`` is not 0, removed when a rerun brings it back).
    ``fenced`` says whether the caller holds a fence; a fenced transition requires one."""
    if transition.fenced and not fenced:
        raise ValueError(f"transition {transition.name!r} needs a fence")
    moment = timeutil.now()
    stamp = timeutil.iso(moment)
    values: dict[str, Any] = {"status": transition.target.value, "updated_at": stamp}
    values.update(sweep_index_values(graph_id, name, transition.target, changes or {}, moment))
    if transition.target.terminal:
        values["finished_at"] = stamp
        expiry = expires_at(moment, retention_days)
        if expiry is not None:
            values[EXPIRES_AT] = expiry
    values["failed_on"] = stamp[:10] if transition.target == JobStatus.FAILED else None
    for key, value in (changes or {}).items():
        if key == "error":
            values["error_type"] = str(value.get("type") or "Error")[:256]
            values["error_message"] = str(value.get("message") or "")[:4096]
            values["error_traceback"] = str(value.get("traceback") or "")[-4096:] or None
        elif key in JSON_FIELDS:
            values[key] = _json(value)
        else:
            values[key] = value
    removed: list[str] = []
    # Only a job parked by its concurrency limit carries limit_wait, and only a ready one
    # its limit_since (kept while it is woken, so that it waits in its old place again).
    if "limit_wait" not in values:
        removed.append("limit_wait")
    if transition.target != JobStatus.READY and "limit_since" not in values:
        removed.append("limit_since")
    if not transition.target.terminal and any(source.terminal for source in transition.sources):
        removed.append(EXPIRES_AT)  # a rerun: the job is not ended any more
    for key in remove:
        if key == "error":
            removed += [f for f in ERROR_FIELDS if f not in values]
        elif key not in values and key not in removed:
            removed.append(key)
    return values, removed


# -- expansions ----------------------------------------------------------------------------
EXPANSION_PREFIX = "exp#"


def expansion_entry(parent: str, group: int | None = None) -> str:
    """The counter item of ``parent``'s children: ``exp#<parent>#<group>`` holds the indices
    (within the group) of the children whose tree ended, ``exp#<parent>`` the groups that
    are complete (``overseer.expansion``). Not ``job#`` items: never listed as jobs."""
    top = f"{EXPANSION_PREFIX}{parent}"
    return top if group is None else f"{top}#{group:05d}"


def child_name(parent: str, index: int) -> str:
    return f"{parent}.{index}"


def natural_order(name: str) -> list[tuple[int, int | str]]:
    """A sort key that puts numbers in number order: ``p``, ``p.2``, ``p.10``, ``q``.

    >>> sorted(["p.10", "q", "p.2", "p"], key=natural_order)
    ['p', 'p.2', 'p.10', 'q']
    """
    return [(1, int(part)) if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name) if part]


def child_item(
    parent: JobRecord,
    index: int,
    job_type: str,
    args: Mapping[str, Any],
    *,
    aborted_reason: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The item of child ``index`` of ``parent``'s expansion as first written: ready (its one
    dependency, the parent, has finished), or aborted with ``aborted_reason`` (its graph
    was cancelled before the child was made)."""
    moment = now or timeutil.now()
    stamp = timeutil.iso(moment)
    name = child_name(parent.name, index)
    assert parent.expansion is not None
    item: dict[str, Any] = {
        "graph_id": parent.graph_id,
        "entry": job_entry(name),
        "job_name": name,
        "job_type": job_type,
        "args": _json(dict(args)),
        "attempts": 0,
        "deps_count": 1,
        "deps": [parent.name],
        # Its parent's dependents wait for it through the parent's tree: none of its own.
        "dependents": [],
        "parent": parent.name,
        "child_index": index,
        "siblings": int(parent.expansion["count"]),
        "created_at": stamp,
        "updated_at": stamp,
    }
    if parent.expansion.get("pool"):
        item["pool"] = parent.expansion["pool"]
    if parent.priority:
        item["priority"] = parent.priority
    if aborted_reason is None:
        item.update(status=JobStatus.READY.value, released_by=RELEASED_BY_EXPANSION)
        item.update(sweep_index_values(parent.graph_id, name, JobStatus.READY, {}, moment))
    else:
        item.update(status=JobStatus.ABORTED.value, reason=aborted_reason, finished_at=stamp)
    return item
