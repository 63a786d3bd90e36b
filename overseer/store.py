"""The three small interfaces the engine runs on, and the plain records they exchange.

The backends implement them (``overseer.backends``: ``aws`` on DynamoDB + its stream, SQS
and S3; ``embedded`` on SQLite and a directory), and ``overseer.backends.build_services``
picks one; the scheduler, sweep and worker only ever see these interfaces.

Item layout of the jobs store (one partition per graph)::

    graph_id  entry            what
    g1        job#<name>       one job: status, attempts, lease, error, artifact manifest,
                               its deps and dependents inline while they are few
    g1        in#<name>#0003   a chunk of a job's deps when it has many (fan-in)
    g1        out#<name>#0003  a chunk of a job's dependents when it has many (fan-out)

so no item grows with the size of the graph: a job item holds at most
``INLINE_EDGES`` edges each way, and a chunk at most ``EDGE_CHUNK`` edges. Job items
also carry their place in the sweep index while they are running or ready, and graph
items theirs in the active-graphs index while not terminal (``overseer.items``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import Settings
from .graph import GraphSpec
from .limits import Admission, Holder
from .pools import DEFAULT_POOL
from .states import GraphStatus, JobStatus, Transition

INLINE_EDGES = 100
EDGE_CHUNK = 500
# Bound of an artifact manifest stored on a job item (JSON bytes).
MAX_MANIFEST_BYTES = 96 * 1024
# SQS's longest message delay (15 minutes): a job due later is sent by the sweep when due.
MAX_SQS_DELAY = 900
# How far back a listing of graphs looks when it is given no start.
LIST_DAYS = 30


@dataclass(frozen=True)
class Dependent:
    """An edge seen from the parent: ``child`` has ``count`` deps, this parent is ``index``."""

    child: str
    index: int
    count: int


@dataclass
class JobRecord:
    graph_id: str
    name: str
    type: str
    status: JobStatus
    args: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    max_attempts: int | None = None
    timeout_seconds: int | None = None
    # Exception names the graph gives this job (see ``overseer.handlers.retry_matches``).
    retry_on: list[str] = field(default_factory=list)
    # The worker pool that runs it (None: the default pool), and the id and pool of the
    # worker that claimed it last (kept after it ends: which machine ran it).
    pool: str | None = None
    worker: str | None = None
    worker_pool: str | None = None
    # Its graph's priority (None: normal; ``overseer.priority``).
    priority: str | None = None
    # The concurrency limit the graph gives it (None: its handler's, if any), and while it
    # waits for a slot of a limit, outside the queue: that limit and since when
    # (``overseer.limits``).
    limit: str | None = None
    limit_wait: str | None = None
    limit_since: str | None = None
    # The version of the handler code that ran its last attempt (``Settings.code_version``).
    code_version: str | None = None
    deps_count: int = 0
    # None when the edges are kept in chunk items (see ``JobStore.dependencies``).
    deps: list[str] | None = field(default_factory=list)
    dependents: list[Dependent] | None = field(default_factory=list)
    finished_deps: int = 0
    error: dict[str, Any] | None = None
    # Every attempt's error, oldest first: [{"attempt", "type", "message", "at"}] (bounded).
    errors: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    heartbeat_at: str | None = None
    not_before: str | None = None
    dispatched_at: str | None = None
    released_by: str | None = None
    # Finished jobs upstream that the graph's counters have not counted yet: they are
    # counted with this job's own end (see ``overseer.scheduler``).
    carried_finished: int = 0
    # Which end of its one dependency the count came with (that job's ``finished_at``), so a
    # repeated record of that end is told apart from the end of a rerun of it.
    carried_from: str | None = None
    # When a rerun last took the job back (or took a dependency of it back): ends of its
    # dependencies from before then release nothing (the rerun counted them itself).
    rerun_at: str | None = None
    # A child of an expansion (``overseer.expansion``): its parent, its index among the
    # parent's children and how many children the parent has.
    parent: str | None = None
    child_index: int | None = None
    siblings: int | None = None
    # The expansion its finish committed ({"type", "count", "sha256", "bucket", "key"}), how
    # many of its children exist so far, and when the last of its tree ended (finished).
    expansion: dict[str, Any] | None = None
    expand_made: int = 0
    expand_done_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def id(self) -> str:
        return f"{self.graph_id}/{self.name}"

    @property
    def children_pending(self) -> bool:
        """It expanded and not all its children exist yet: not ended, for its graph."""
        return self.expansion is not None and self.expand_made < int(self.expansion["count"])

    @property
    def tree_done(self) -> bool:
        """Finished, and so is every job of its expansion's tree (if it expanded): what its
        dependents wait for."""
        if self.status != JobStatus.FINISHED:
            return False
        return self.expansion is None or self.expand_done_at is not None

    @property
    def done_at(self) -> str | None:
        """When its dependents' wait ended: its end, or its tree's when that came later."""
        return max(filter(None, (self.finished_at, self.expand_done_at)), default=None)

    def summary(self) -> dict[str, Any]:
        """The job as ``overseer run --json`` prints it."""
        out: dict[str, Any] = {
            "type": self.type,
            "status": str(self.status),
            "pool": self.pool or DEFAULT_POOL,
            "attempts": self.attempts,
            "error": self.error_text(),
            "artifacts": self.artifacts,
        }
        if self.priority:
            out["priority"] = self.priority
        if self.limit:
            out["limit"] = self.limit
        if self.limit_wait and self.status == JobStatus.READY:
            out["waiting_for_limit"] = {"limit": self.limit_wait, "since": self.limit_since}
        if self.worker_pool:  # which worker ran it last, of which pool
            out["worker"] = {"id": self.worker, "pool": self.worker_pool}
        if self.code_version:
            out["code_version"] = self.code_version
        if self.rows:
            out["rows"] = self.rows
        if self.errors:
            out["errors"] = self.errors
        if self.expansion is not None:
            out["expansion"] = {
                "type": self.expansion["type"],
                "count": int(self.expansion["count"]),
                "done": self.expand_done_at is not None,
            }
        if self.parent is not None:
            out["parent"] = self.parent
        if self.started_at:
            out["started_at"] = self.started_at
        if self.finished_at:
            out["finished_at"] = self.finished_at
        return out

    def error_text(self) -> str | None:
        if self.error:
            return f"{self.error.get('type', 'Error')}: {self.error.get('message', '')}"
        return self.reason


@dataclass(frozen=True)
class JobOutputs:
    """What a job leaves its dependents: its artifact manifest, and how many children its
    expansion has (0: it did not expand)."""

    artifacts: list[dict[str, Any]]
    children: int = 0


@dataclass
class GraphRecord:
    graph_id: str
    status: GraphStatus
    jobs_total: int
    args: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    definition_sha256: str | None = None
    # The graph's timeout and the moment it passes (from its submission), when it has one.
    timeout_seconds: int | None = None
    deadline_at: str | None = None
    # Why it ended as it did, when not by its jobs (e.g. "deadline of 3 s passed").
    reason: str | None = None
    # high, normal or low (``overseer.priority``).
    priority: str = "normal"

    def summary(self) -> dict[str, Any]:
        optional = {
            "deadline_at": self.deadline_at,
            "reason": self.reason,
            "priority": self.priority if self.priority != "normal" else None,
        }
        return {
            "graph_id": self.graph_id,
            "status": str(self.status),
            "jobs_total": self.jobs_total,
            "counts": self.counts,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            **{key: value for key, value in optional.items() if value},
        }


@dataclass(frozen=True)
class Fence:
    """The owner of an attempt: fenced transitions only succeed for it.

    ``owner=None`` checks the attempts count alone (a claim: the message names the
    attempt it was sent for, so a stale or duplicated message claims nothing).
    """

    attempts: int
    owner: str | None = None


@dataclass(frozen=True)
class JobMessage:
    """What the dispatch queue carries: which job, and which attempt it is for."""

    graph_id: str
    job_name: str
    attempts: int  # the job's attempts count when it became ready
    delay_seconds: int = 0
    # The job's worker pool and priority: which queue it is sent to (not in the message body).
    pool: str | None = None
    priority: str | None = None
    # Its type and the limit its graph gives it, and since when it waits for that limit (a
    # job woken to try again): a worker takes the limit's slot before it claims the job
    # (``overseer.limits``). None in a message from a sender that predates limits.
    job_type: str | None = None
    limit: str | None = None
    waiting_since: str | None = None

    @classmethod
    def for_job(cls, job: JobRecord, delay_seconds: int = 0) -> JobMessage:
        return cls(
            job.graph_id,
            job.name,
            job.attempts,
            delay_seconds,
            job.pool,
            job.priority,
            job.type,
            job.limit,
            job.limit_since,
        )

    def to_json(self) -> str:
        body: dict[str, Any] = {"g": self.graph_id, "j": self.job_name, "a": self.attempts}
        for key, value in (("t", self.job_type), ("l", self.limit), ("s", self.waiting_since)):
            if value:
                body[key] = value
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> JobMessage:
        data = json.loads(body)
        return cls(
            str(data["g"]),
            str(data["j"]),
            int(data["a"]),
            job_type=data.get("t"),
            limit=data.get("l"),
            waiting_since=data.get("s"),
        )


@dataclass(frozen=True)
class Delivery:
    message: JobMessage
    receipt: str
    receive_count: int = 1


@dataclass(frozen=True)
class FailedBatch:
    """A batch of stream records the scheduler gave up on after its retries (Lambda's
    on-failure record, or the embedded loop's): the shard and the sequence range it
    covered (inclusive), how many records it held, when its last record arrived, and how
    often this note was received (``receipt`` deletes it)."""

    receipt: str
    shard: str
    first_sequence: str
    last_sequence: str
    size: int
    last_arrival: str | None = None
    receive_count: int = 1


class StreamFailures(Protocol):
    """The notes of stream batches the scheduler gave up on, and the stream to read them
    again from (``overseer.sweep`` replays them)."""

    def receive(self, max_batches: int = 10) -> list[FailedBatch]:
        """Up to ``max_batches`` notes, oldest first (hidden from other readers for a while)."""
        ...

    def records(self, batch: FailedBatch) -> list[dict[str, Any]]:
        """The batch's records read again from the stream, Lambda-shaped and filtered with the
        scheduler's filters (``overseer.stream``). Raises ``StreamRecordsGone`` when they
        cannot all be read any more (past the stream's retention)."""
        ...

    def delete(self, batch: FailedBatch) -> None:
        """Forget the note (the batch was replayed or repaired). Deleting twice is harmless."""
        ...


class JobStore(Protocol):
    """Graphs and jobs. Every status change is one conditional write (see ``states``)."""

    def create_graph(self, spec: GraphSpec, *, max_attempts: Mapping[str, int]) -> tuple[GraphRecord, bool]:
        """Write the graph and all its jobs, then release the jobs without deps.

        Idempotent on the graph id: when the graph exists, nothing is written and the
        existing record is returned with ``False``. Jobs are written as ``waiting`` before
        any is released, so no job can run before the whole graph is stored.
        ``max_attempts`` gives the default per job type (the job's own setting wins).
        """
        ...

    def get_graph(self, graph_id: str) -> GraphRecord | None:
        """The graph's current record (strongly consistent), or None."""
        ...

    def list_graphs(
        self,
        *,
        status: GraphStatus | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> tuple[list[GraphRecord], str | None]:
        """Graphs newest first (by submission), submitted at ``since`` or later and before
        ``until`` (ISO times; ``since`` defaults to ``LIST_DAYS`` days before ``until``), in
        ``status`` if given: a page of at most ``limit``, and where the next page starts
        (an opaque string) or None after the last. On DynamoDB a query per day of the
        graphs-by-day index (keys only) and a batched read of the graphs found, no scan."""
        ...

    def running_graphs(self) -> Iterator[GraphRecord]:
        """Every graph whose status is running, from the active-graphs index (graphs that
        ended are not in it; the counters may lag behind by a moment)."""
        ...

    def sweep_page(
        self, sweep_key: str, until: str, *, start: str | None = None, limit: int = 100
    ) -> tuple[list[JobRecord], str | None]:
        """One page of the sweep index (``overseer.items``): the jobs whose ``sweep_key`` is
        ``sweep_key`` and whose ``sweep_at`` minute is at most ``until``, in ``sweep_at``
        order, each read as it is now (strongly consistent), at most ``limit`` of them;
        and where the next page starts (an opaque string), or None after the last page."""
        ...

    def get_sweep_cursor(self) -> dict[str, Any] | None:
        """Where the last sweep stopped when it ran out of work budget, or None."""
        ...

    def put_sweep_cursor(self, cursor: Mapping[str, Any] | None) -> None:
        """Keep where this sweep stopped (None: it went through everything)."""
        ...

    def creating_graphs(self, created_before: str) -> Iterator[GraphRecord]:
        """The graphs still ``creating`` (a submission stopped between the graph and its jobs)
        created before the ISO time ``created_before`` (a sparse index, not a scan)."""
        ...

    def roll_back_graph(self, graph: GraphRecord) -> bool:
        """Delete a ``creating`` graph and the items its submission wrote, if it is still
        creating and was created at ``graph.created_at`` (a newer submission of the same id
        is left alone). False when the condition did not hold."""
        ...

    def acquire_lease(self, name: str, owner: str, *, seconds: float) -> bool:
        """Take the named lease for ``owner`` until ``seconds`` from now if it is free or its
        holder's time ran out (one conditional write); False while someone else holds it."""
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back, if ``owner`` still holds it."""
        ...

    def acquire_slot(self, limit: str, size: int, job: str, holder: Holder) -> Admission:
        """Take one of the ``size`` slots of ``limit`` for the job id ``job`` (``overseer.limits``):
        one conditional write while a slot is free; else the item is read, the holders whose
        lease passed are left out and the rest written back on the item's version (retried
        when another write came first). HELD, FULL, or TAKEN when another worker holds the
        job's attempt."""
        ...

    def renew_slot(self, limit: str, job: str, fence: Fence, *, until: str) -> bool:
        """Extend the slot ``job`` holds for the attempt and owner of ``fence`` to ``until``;
        False when that attempt's owner holds none any more."""
        ...

    def release_slot(self, limit: str, job: str, fence: Fence) -> bool:
        """Give back the slot ``job`` holds for the attempt and owner of ``fence``; False when
        it held none (nothing changes: a late release of an attempt that lost its slot)."""
        ...

    def slot_holders(self, limit: str) -> dict[str, Holder]:
        """The limit's holders (strongly consistent), lapsed leases included: job id -> holder."""
        ...

    def count_waiting(self, limit: str) -> int:
        """How many jobs wait for ``limit`` (from the sweep index's ``limit#<name>`` partition)."""
        ...

    def get_job(self, graph_id: str, name: str) -> JobRecord | None:
        """One job's current record (strongly consistent), or None."""
        ...

    def list_jobs(self, graph_id: str, *, changed_since: str | None = None) -> Iterator[JobRecord]:
        """Every job of the graph, in name order, paginated underneath; with ``changed_since``
        (an ISO time) only those written (``updated_at``) at or after it."""
        ...

    def dependencies(self, job: JobRecord) -> list[str]:
        """The job's deps, in the order the graph declared them (inline or from chunks)."""
        ...

    def dependents(self, job: JobRecord) -> list[Dependent]:
        """The jobs that depend on ``job`` (inline or from chunks)."""
        ...

    def outputs(self, graph_id: str, names: Sequence[str]) -> dict[str, JobOutputs]:
        """name -> what each named job left for its dependents (batched reads)."""
        ...

    def transition(
        self,
        graph_id: str,
        name: str,
        transition: Transition,
        *,
        fence: Fence | None = None,
        changes: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        dep_finished_at: str | None = None,
        add_jobs: int = 0,
    ) -> JobRecord | None:
        """Move the job along ``transition`` in one conditional write.

        Succeeds only if the job's status is one of ``transition.sources`` and, when
        ``fence`` is given, its attempts and lease owner match. ``changes`` sets other
        attributes (``attempts`` may be set; JobRecord field names), ``remove`` clears
        them. With ``dep_finished_at`` (a release for the end of a dependency at that
        time), also only if the job was not rerun since (its ``rerun_at`` is absent or
        earlier): a stream record of an end from before a rerun releases nothing. With
        ``add_jobs``, the graph's ``jobs_total`` grows by that many in the same atomic write
        (a finish that commits an expansion). Returns the new record, or None when the
        condition did not hold (someone else moved the job first; the caller treats that
        as "nothing to do").
        """
        ...

    def put_children(self, graph_id: str, items: Sequence[Mapping[str, Any]]) -> int:
        """Write the job items of an expansion's children (``overseer.items.child_item``),
        each only if no job of its name exists (so a child is never written twice); returns
        how many were written."""
        ...

    def advance_expansion(self, graph_id: str, name: str, made: int) -> bool:
        """Record that the first ``made`` children of the job's expansion exist (only
        forward: False when it said as many already)."""
        ...

    def complete_expansion(self, graph_id: str, name: str) -> bool:
        """Set the job's ``expand_done_at`` (its whole tree ended), once: False when it was set."""
        ...

    def count_done(self, graph_id: str, entry: str, index: int) -> int:
        """Add ``index`` to the done set of the counter item ``entry`` (created when absent;
        ``overseer.items.expansion_entry``); returns how many distinct indices it holds."""
        ...

    def record_finished_dependency(
        self, graph_id: str, name: str, index: int, *, dep_finished_at: str | None = None
    ) -> int | None:
        """Note that dependency number ``index`` of a waiting job finished (at
        ``dep_finished_at``: not if the job was rerun since, as for ``transition``).

        Idempotent (a set of indices): returns how many distinct deps are now finished,
        or None when the job is no longer waiting (or was rerun since that end).
        """
        ...

    def forget_finished_dependency(self, graph_id: str, name: str, index: int, *, rerun_at: str) -> bool:
        """Take dependency number ``index`` out of a waiting job's finished ones (that
        dependency runs again) and set its ``rerun_at``. False when it is no longer waiting."""
        ...

    def renew_lease(
        self,
        graph_id: str,
        name: str,
        fence: Fence,
        *,
        lease_expires_at: str,
        heartbeat_at: str,
        lease_bucket: str | None = None,
    ) -> bool:
        """Extend the running job's lease; False when the fence no longer holds.

        ``lease_bucket`` (``overseer.items.next_lease_bucket``) moves the job in the sweep
        index too; None leaves it where it is (most renewals: no index write)."""
        ...

    def add_graph_progress(self, graph_id: str, deltas: Mapping[str, int]) -> GraphRecord | None:
        """Add ``deltas`` (status -> n) to a *running* graph's counters in one write; returns the
        record, or None when the graph is not running (a replayed record of a finished graph
        changes nothing: its counts were set exactly when it finished)."""
        ...

    def set_graph_status(
        self,
        graph_id: str,
        status: GraphStatus,
        *,
        sources: Iterable[GraphStatus],
        counts: Mapping[str, int] | None = None,
        reason: str | None = None,
        deadline_at: str | None = None,
    ) -> GraphRecord | None:
        """Conditionally set the graph's status (only from ``sources``), its counters from
        ``counts``, its ``reason`` (cleared when None: it explains the latest change) and,
        when given, a new ``deadline_at``; None if the condition did not hold."""
        ...


class DispatchQueue(Protocol):
    """At-least-once delivery of job messages."""

    def send(self, messages: Sequence[JobMessage]) -> None:
        """Enqueue, in batches; each message becomes visible after its delay (at most 15 min)."""
        ...

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ) -> list[Delivery]:
        """Long-poll for messages; each is hidden from others for the visibility timeout."""
        ...

    def delete(self, receipts: Sequence[str]) -> None:
        """Remove delivered messages (in batches). Deleting twice is harmless."""
        ...

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        """Keep a message hidden ``seconds`` longer (heartbeat), or 0 to release it now."""
        ...

    def depth(self) -> int:
        """Approximate number of messages waiting or in flight."""
        ...


class MessageSender(Protocol):
    def send(self, messages: Sequence[JobMessage]) -> None: ...


class PoolDispatch:
    """Sends each message to its job's pool's dispatch queue (``Services.queue_for``)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def send(self, messages: Sequence[JobMessage]) -> None:
        by_pool: dict[str | None, list[JobMessage]] = {}
        for message in messages:
            by_pool.setdefault(message.pool, []).append(message)
        for pool, batch in by_pool.items():
            self.services.queue_for(pool).send(batch)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None


class ArtifactStore(Protocol):
    """Objects by bucket and key."""

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """Size and recorded SHA-256 of an object, or None if it does not exist."""
        ...

    def put_bytes(
        self, bucket: str, key: str, data: bytes, *, sha256: str, content_type: str | None = None
    ) -> None:
        """Store ``data``, recording its SHA-256. Overwrites."""
        ...

    def put_file(
        self, bucket: str, key: str, path: Path, *, sha256: str, content_type: str | None = None
    ) -> None:
        """Store a local file (multipart and parallel when large), recording its SHA-256."""
        ...

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The object's bytes."""
        ...

    def download(self, bucket: str, key: str, path: Path) -> None:
        """Write the object to a local file."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove the object (nothing when it does not exist)."""
        ...

    def download_url(self, bucket: str, key: str, *, expires_seconds: int) -> str:
        """A URL that fetches the object without credentials for ``expires_seconds``: a
        presigned GET on S3, the stored file's ``file://`` URL on the embedded backend."""
        ...


@dataclass(frozen=True)
class LogPage:
    """Some of a job's log lines, oldest first: (attempt, line) pairs, and where the next
    page starts (None: no more lines now)."""

    lines: list[tuple[int, str]]
    next: str | None = None


class JobLogs(Protocol):
    """What jobs' handlers printed and logged: files of a local stack, CloudWatch Logs on AWS."""

    def page(
        self,
        graph_id: str,
        job: str,
        *,
        attempt: int | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> LogPage:
        """At most ``limit`` lines of the job (only ``attempt``'s, when given) after ``after``
        (the ``next`` of the previous page)."""
        ...


class RowSink(Protocol):
    """Items into the user's own tables."""

    def put_rows(self, table: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Put every item (overwriting same-key items), batched."""
        ...


@dataclass
class Services:
    """The ports one process runs on, built once at start-up by ``overseer.backends``."""

    settings: Settings
    store: JobStore
    queue: DispatchQueue
    artifacts: ArtifactStore
    rows: RowSink | None = None
    logs: JobLogs | None = None
    dead_letters: DispatchQueue | None = None
    stream_failures: StreamFailures | None = None
    # Every worker pool's dispatch and dead-letter queues (``overseer.pools``), the
    # default's included; ``queue`` and ``dead_letters`` are this process's own pool's.
    pool_queues: Mapping[str, DispatchQueue] = field(default_factory=dict)
    pool_dead_letters: Mapping[str, DispatchQueue] = field(default_factory=dict)

    def queue_for(self, pool: str | None) -> DispatchQueue:
        """The dispatch queue of ``pool`` (None: the default pool). A pool no longer
        configured (the pools changed after the job was stored) falls back to the default's."""
        queues = self.queues()
        return queues.get(pool or DEFAULT_POOL) or queues.get(DEFAULT_POOL) or self.queue

    def queues(self) -> Mapping[str, DispatchQueue]:
        """Every pool's dispatch queue, by pool (this process's own pool's is ``queue``)."""
        return {**self.pool_queues, self.settings.pool: self.queue}

    def dead_letter_queues(self) -> Mapping[str, DispatchQueue]:
        """Every pool's dead-letter queue, by pool (this process's own pool's is ``dead_letters``)."""
        own = {self.settings.pool: self.dead_letters} if self.dead_letters is not None else {}
        return {**self.pool_dead_letters, **own}
