"""The sweep: repairs what at-least-once delivery and dying workers can lose.

Run on a schedule (a Lambda every minute in AWS, a loop in ``overseer run``). Its steps
run in this order, each isolated: a step that raises is logged with its name and kept in
``SweepReport.failures``, and the next step still runs (``SweepReport.raise_if_failed``
lets a caller fail loudly at the end, as the sweep Lambda does):

1. ``queue_depth``: each worker pool's dispatch queue's depth (messages waiting, delayed
   or in flight; ``overseer.pools``: every per-queue check below is per pool);
2. ``scale_workers``: when the caller passes ``scale`` (the sweep Lambda starts Batch
   workers), it gets each pool's depth before any repair runs, so no repair can keep the
   queued work from getting workers;
3. ``repairs``: what needs repair is looked up in two sparse indexes (``overseer.items``),
   so a sweep's cost grows with what is wrong, not with the jobs in flight (no scan, no
   read of every job; bench/sweep_cost.py, docs/cost-model.md):

   * **deadlines**: a running graph whose ``deadline_at`` (its ``timeout`` from the
     submission) has passed is aborted as ``operations.cancel_graph`` aborts it, with
     the reason "deadline of N s passed" on the graph and its jobs;
   * **unfinished graphs whose jobs have all ended**: the running graphs come from the
     active-graphs index, each with its counters. A graph whose counters say every job
     ended is still running when the scheduler's invocation counted the last job and died
     before ending the graph: the sweep reads that graph's jobs (only that graph's) and
     records its outcome (``on_graph_done`` is called as the scheduler would). A record
     the scheduler gave up on is replayed from the stream instead (``stream_replay``);
   * the **sweep index** holds each running job under the minute its lease expires (at the
     latest), each ready job under the minute it became due, and each late retry under the
     minute its message may be sent, in ``SWEEP_SHARDS`` partitions per kind. The sweep
     asks, per kind and shard, for the minutes already past; healthy jobs are never
     returned (their minutes lie ahead). The jobs returned are read as they are now and
     checked exactly:
   * **expired leases**: a running job whose lease expired more than
     ``clock_skew_seconds`` ago (its worker died: SIGKILL, lost host) goes back to ready
     for its next attempt, or fails past its max attempts. The write is fenced by the
     job's attempt and lease owner, so a worker that was only slow can never have its
     outcome overwritten, nor overwrite the new owner's. A claim indexes the job under
     its expiry's minute; a heartbeat moves it only when the new expiry passes that
     minute, and then ``LEASE_BUCKET_AHEAD_SECONDS`` (4 min) further, so most heartbeats
     write nothing to the index and a worker that dies after such a move is found up to
     that much later;
   * **lost hosts keep the attempt** (step ``host_lookup``): a worker on AWS Batch
     leases as ``batch:<Batch job id>:<pid>:<nonce>`` (``overseer.worker.
     default_worker_id``). A Spot reclaim kills the instance without a word to the
     container, so the job's lease just expires. With ``host_terminations``, the Batch
     jobs behind the sweep's expired leases are looked up in one call, and a job whose
     Batch job ended with ``Host EC2 ...`` (its instance was terminated) goes back to
     ready without counting the attempt, as a worker stopped by SIGTERM releases it.
     Any other reason, no Batch job, or a failed lookup: the attempt counts;
   * **late retries**: a faulted job whose backoff is longer than SQS's 15-minute delay
     got no message from the scheduler; it is sent once the remaining delay fits;
   * **lost messages**: when a pool's queue is empty (nothing waiting, delayed or in
     flight) yet a job of that pool has been ready and due for longer than
     ``stale_ready_seconds``, its message was lost and is sent again (a duplicate would be
     harmless: claims are fenced; an unknown depth never passes for an empty queue). The
     due jobs are only looked up when some pool's queue is empty;
   * **bounded work**: a sweep reads at most ``max_index_pages`` pages of the index and
     repairs about ``max_repairs`` jobs at most; then it stops (``report.stopped_early``),
     keeps where it stopped in the store's sweep cursor, and the next sweep goes on from
     there, so a backlog spreads over several minutes instead of timing out the Lambda;

4. ``stream_replay`` (when ``services.stream_failures`` is set): each stream batch the
   scheduler gave up on after its retries (Lambda's on-failure record: shard and sequence
   range; on the embedded backend the loop's note of a skipped batch) is read again from
   the stream and applied through ``Scheduler.process_stream_event`` (idempotent), so its
   dependents are released or aborted exactly as they would have been; then its note is
   deleted. ``stream_repair``: a batch that cannot be read again (past the stream's 24-hour
   retention) or that failed ``MAX_REPLAYS`` replays has its effect rebuilt from the jobs:
   in the running graphs created before its last record, waiting jobs whose deps all
   finished are released and those with a failed or aborted dep aborted, by applying
   those deps' ends through the same scheduler code (``_repair_stranded``);
5. ``creating_graphs``: a graph still ``creating`` ``creating_timeout_seconds`` after its
   submission began (it stopped between the graph item and its jobs) is rolled back, so
   its id can be submitted again (a resubmission completes it before then);
6. ``dead_letters``: messages that reached a pool's dead-letter queue become failed jobs
   with a clear error;
7. ``limits``: for each concurrency limit (``overseer.limits``), its holders whose lease is
   still running and the jobs waiting for it (``report.limits``); as many waiters as there
   are free slots are woken (a holder whose worker died frees its slot when its lease
   passes, and a wake-up that a waiter missed is made up for here).

One sweep at a time: ``sweep`` first takes the store's lease ``SWEEP_LEASE`` (a
conditional write with an expiry, ``one_sweep_at_a_time``) and gives it back at the end;
a sweep that finds it held returns at once, its report saying so
(``lease_held_elsewhere``).

Clocks: the only comparison of a worker's clock with the sweep's is the lease expiry,
which is given ``clock_skew_seconds`` of slack; keep hosts' clocks within that bound (NTP
keeps them within milliseconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec

from . import timeutil
from .errors import StreamRecordsGone, SweepFailed
from .items import DUE, LATE, LEASE, SWEEP_SHARDS, error_history, minute
from .limits import limit_states, live_holders, parse_limits, wake
from .operations import cancel_graph
from .pools import DEFAULT_POOL
from .scheduler import GraphEvents, Scheduler, finalize_graph
from .states import (
    DEAD_LETTER,
    EXPIRE,
    EXPIRE_FAIL,
    REDISPATCH,
    SHUTDOWN_RELEASE,
    GraphStatus,
    JobStatus,
    gave_up,
)
from .store import (
    MAX_SQS_DELAY,
    DispatchQueue,
    FailedBatch,
    Fence,
    JobMessage,
    JobRecord,
    JobStore,
    PoolDispatch,
    Services,
    StreamFailures,
)
from .stream import StatusChange

log = logging.getLogger("overseer.sweep")
P = ParamSpec("P")
BATCH_OWNER_PREFIX = "batch:"

# Starts workers of a pool for its queue depth: (workers started, workers active before).
ScaleWorkers = Callable[[str, int], tuple[int, int]]
# Given Batch job ids, the ones whose instance was terminated under them, with Batch's
# reason (``overseer.backends.aws.scaling.host_terminations``).
HostTerminations = Callable[[Sequence[str]], Mapping[str, str]]

# The work one sweep does at most: index pages (of PAGE_SIZE jobs) read, and jobs repaired.
# A sweep that reaches either stops there, and the next one (a minute later) goes on.
PAGE_SIZE = 100
MAX_INDEX_PAGES = 40
MAX_REPAIRS = 500


@dataclass
class SweepReport:
    graphs: int = 0
    graphs_ended: int = 0
    leases_expired: int = 0
    hosts_reclaimed: int = 0
    jobs_failed: int = 0
    late_retries_sent: int = 0
    lost_messages_resent: int = 0
    dead_letters: int = 0
    queue_depth: int = 0
    workers_started: int = 0
    # By worker pool (``overseer.pools``): its queue's depth, and its workers active (when
    # the sweep scales workers).
    queue_depths: dict[str, int] = field(default_factory=dict)
    workers_active: dict[str, int] = field(default_factory=dict)
    # 1 when another sweep held the lease: this one did nothing.
    lease_held_elsewhere: int = 0
    # Stream batches the scheduler gave up on, read again from the stream and applied.
    stream_batches_replayed: int = 0
    stream_records_replayed: int = 0
    # Failed batches that could not be read again (past the stream's retention): their
    # graphs were repaired from the jobs instead (waiting jobs released or aborted).
    stream_batches_past_retention: int = 0
    stranded_graphs_repaired: int = 0
    stranded_jobs_released: int = 0
    stranded_jobs_aborted: int = 0
    # Graphs left `creating` by a submission that stopped half-way, rolled back.
    creating_graphs_rolled_back: int = 0
    # Graphs aborted because their deadline (``timeout``) passed.
    graphs_past_deadline: int = 0
    # Pages of the sweep index read, and 1 when the work budget ran out before the end.
    index_pages: int = 0
    stopped_early: int = 0
    # By concurrency limit: its size, how many hold it (lease running) and wait for it, and
    # how many waiters this sweep woke (``overseer.limits``).
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    # The steps that raised, by name, with the first exception each raised.
    failures: dict[str, Exception] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The report's counters by name (what the sweep Lambda turns into metrics)."""
        return {name: value for name, value in vars(self).items() if isinstance(value, int)}

    def raise_if_failed(self) -> None:
        """Raise ``SweepFailed`` naming the failed steps, if any (chained to the first error)."""
        if self.failures:
            names = ", ".join(self.failures)
            first = next(iter(self.failures.values()))
            raise SweepFailed(
                f"sweep steps failed: {names} (first: {type(first).__name__}: {first}); the other "
                "steps ran; see the log for each traceback"
            ) from first


@contextlib.contextmanager
def _step(report: SweepReport, name: str, detail: str = "") -> Iterator[None]:
    """Run one step: an exception is logged and recorded, and the sweep goes on."""
    try:
        yield
    except Exception as exc:
        log.exception("sweep step %s failed%s; the other steps go on", name, detail)
        report.failures.setdefault(name, exc)


def batch_job_of(owner: str | None) -> str | None:
    """The Batch job id in a lease owner ``batch:<job id>:<pid>:<nonce>``, else None.

    >>> batch_job_of("batch:4c1d-77:12:a1b2c3"), batch_job_of("host:12:a1b2c3")
    ('4c1d-77', None)
    """
    if not owner or not owner.startswith(BATCH_OWNER_PREFIX):
        return None
    # rsplit: an array child's job id has a colon of its own ("<id>:<index>").
    parts = owner[len(BATCH_OWNER_PREFIX) :].rsplit(":", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def _age(text: str | None, now: dt.datetime) -> float:
    return (now - timeutil.parse(text)).total_seconds() if text else 0.0


SWEEP_LEASE = "sweep"  # held for ``settings.sweep_lease_seconds`` at most
# Notes of failed stream batches handled per sweep, and how often one is tried before its
# graphs are repaired from the jobs as if its records were gone (a record the scheduler
# fails on every time).
MAX_FAILED_BATCHES = 50
MAX_REPLAYS = 5


def one_sweep_at_a_time(
    run: Callable[Concatenate[Services, P], SweepReport],
) -> Callable[Concatenate[Services, P], SweepReport]:
    """Run ``run(services, ...)`` only while holding the store's ``SWEEP_LEASE`` (one
    conditional write); a sweep that finds it held returns at once, its report saying so
    (``lease_held_elsewhere``). The lease is given back at the end."""

    @functools.wraps(run)
    def guarded(services: Services, *args: P.args, **options: P.kwargs) -> SweepReport:
        owner = f"sweep:{uuid.uuid4().hex}"
        store = services.store
        taken = False
        refused = SweepReport()
        with _step(refused, "lease"):  # a store error is a failed step: no other step runs
            taken = store.acquire_lease(SWEEP_LEASE, owner, seconds=services.settings.sweep_lease_seconds)
        if not taken:
            if not refused.failures:
                refused.lease_held_elsewhere = 1
                log.info("another sweep holds the lease: nothing to do")
            return refused
        try:
            return run(services, *args, **options)
        finally:
            try:
                store.release_lease(SWEEP_LEASE, owner)
            except Exception:
                log.warning("could not give the sweep lease back; it expires by itself", exc_info=True)

    return guarded


@one_sweep_at_a_time
def sweep(
    services: Services,
    *,
    dead_letters: DispatchQueue | None = None,
    clock_skew_seconds: float | None = None,
    stale_ready_seconds: float | None = None,
    on_graph_done: GraphEvents | None = None,
    scale: ScaleWorkers | None = None,
    host_terminations: HostTerminations | None = None,
    max_index_pages: int = MAX_INDEX_PAGES,
    max_repairs: int = MAX_REPAIRS,
) -> SweepReport:
    """One sweep (the steps are in the module docstring). Never raises for a step: check
    ``report.failures`` or call ``report.raise_if_failed()``. It reads at most
    ``max_index_pages`` pages of the sweep index and repairs at most about ``max_repairs``
    jobs (a page's worth more at most), then stops; the next sweep goes on from there."""
    settings = services.settings
    skew = settings.clock_skew_seconds if clock_skew_seconds is None else clock_skew_seconds
    stale = settings.lease_seconds if stale_ready_seconds is None else stale_ready_seconds
    report = SweepReport()
    # A pool whose depth is unknown never passes for one with an empty queue.
    with _step(report, "queue_depth"):
        for pool, queue in services.queues().items():
            report.queue_depths[pool] = queue.depth()
        report.queue_depth = sum(report.queue_depths.values())
    if scale is not None:
        with _step(report, "scale_workers"):
            for pool, depth in report.queue_depths.items():
                started, active = scale(pool, depth)
                report.workers_started += started
                report.workers_active[pool] = active
    empty = {pool for pool, depth in report.queue_depths.items() if depth == 0}
    with _step(report, "repairs"):
        budget = Budget(max_index_pages, max_repairs)
        _repair_graphs(services, report, skew, stale, empty, on_graph_done, host_terminations, budget)
    if services.stream_failures is not None:
        with _step(report, "stream_replay"):
            _replay_failed_batches(services, services.stream_failures, report, on_graph_done)
    with _step(report, "creating_graphs"):
        report.creating_graphs_rolled_back = _roll_back_creating(services)
    dead_letter_queues = [dead_letters] if dead_letters else list(services.dead_letter_queues().values())
    for queue in dead_letter_queues:
        with _step(report, "dead_letters"):
            report.dead_letters += _fail_dead_letters(services, queue)
    with _step(report, "limits"):
        report.limits = _wake_waiters(services)
    return report


def _wake_waiters(services: Services) -> dict[str, dict[str, int]]:
    """Each limit's holders and waiters; wakes as many waiters as there are free slots."""
    out: dict[str, dict[str, int]] = {}
    for state in limit_states(services.store, parse_limits(services.settings.limits)):
        running = len(live_holders(state.holders))
        free = state.size - running
        woken = len(wake(services.store, state.name, free)) if free > 0 and state.waiting else 0
        out[state.name] = {"size": state.size, "running": running, "waiting": state.waiting, "woken": woken}
    return out


def _repair_graphs(
    services: Services,
    report: SweepReport,
    skew: float,
    stale: float,
    empty_pools: set[str],
    on_graph_done: GraphEvents | None,
    host_terminations: HostTerminations | None,
    budget: Budget,
) -> None:
    store = services.store
    now = timeutil.now()
    _end_graphs(services, report, now, on_graph_done)
    # What the index is asked, kind by kind: leases expired (give or take the clock skew),
    # late retries whose minute came, and, only when a pool's queue is empty, ready jobs due
    # (of that pool: a job of a pool whose queue holds messages has one).
    until = {
        LEASE: minute(now - dt.timedelta(seconds=skew)),
        LATE: minute(now),
        DUE: minute(now - dt.timedelta(seconds=stale)),
    }
    kinds = [LEASE, LATE, DUE] if empty_pools else [LEASE, LATE]
    queries = [(f"{kind}#{shard}", until[kind]) for kind in kinds for shard in range(SWEEP_SHARDS)]
    to_send: list[JobMessage] = []
    expired: list[JobRecord] = []
    for page in _index_pages(store, queries, report, budget):
        for job in page:
            if job.status == JobStatus.RUNNING:
                if job.lease_expires_at and _age(job.lease_expires_at, now) > skew:
                    expired.append(job)
                    budget.repairs += 1
            elif job.status == JobStatus.READY:
                due = _due_message(job, now, (job.pool or DEFAULT_POOL) in empty_pools, stale)
                if due is None:
                    continue
                message, late = due
                with _step(report, "repairs", f" on job {job.id}"):
                    marked = store.transition(
                        job.graph_id,
                        job.name,
                        REDISPATCH,
                        fence=Fence(job.attempts),
                        changes={"dispatched_at": timeutil.iso()},
                    )
                    if marked is not None:
                        budget.repairs += 1
                        to_send.append(message)
                        if late:
                            report.late_retries_sent += 1
                        else:
                            report.lost_messages_resent += 1
    report.index_pages = budget.pages_read
    if to_send:
        with _step(report, "repairs", " sending messages"):
            PoolDispatch(services).send(to_send)
    lost_hosts = _lost_hosts(expired, host_terminations, report)
    for job in expired:
        with _step(report, "repairs", f" on job {job.id}"):
            lost_host = lost_hosts.get(batch_job_of(job.lease_owner) or "")
            if lost_host:
                _release_lost_host(services, job, lost_host, report)
            else:
                _expire(services, job, report)


def _end_graphs(
    services: Services, report: SweepReport, now: dt.datetime, on_graph_done: GraphEvents | None
) -> None:
    """End the running graphs past their deadline (aborted, as a cancel does, with the
    reason "deadline of N s passed"), and those whose counters say every job ended (the
    scheduler counted the last job but did not get to end the graph). Only those graphs'
    jobs are read."""
    store = services.store
    for graph in store.running_graphs():
        report.graphs += 1
        if graph.deadline_at and timeutil.parse(graph.deadline_at) <= now:
            with _step(report, "repairs", f" on graph {graph.graph_id}"):
                reason = f"deadline of {graph.timeout_seconds} s passed"
                change = cancel_graph(services, graph.graph_id, on_graph_done=on_graph_done, reason=reason)
                if change.graph.status == GraphStatus.ABORTED:
                    log.warning("graph %s: %s; %d jobs aborted", graph.graph_id, reason, change.jobs_changed)
                    report.graphs_past_deadline += 1
            continue
        if sum(graph.counts.values()) < graph.jobs_total:
            continue
        with _step(report, "repairs", f" on graph {graph.graph_id}"):
            done = finalize_graph(store, graph.graph_id, on_graph_done)
            if done is not None:
                log.warning("graph %s: every job had ended; recorded it %s", graph.graph_id, done.status)
                report.graphs_ended += 1


@dataclass
class Budget:
    """The work one sweep may do: index pages read and jobs repaired (see ``sweep``)."""

    pages: int = MAX_INDEX_PAGES
    repairs_allowed: int = MAX_REPAIRS
    pages_read: int = 0
    repairs: int = 0

    @property
    def spent(self) -> bool:
        return self.pages_read >= self.pages or self.repairs >= self.repairs_allowed


def _index_pages(
    store: JobStore, queries: Sequence[tuple[str, str]], report: SweepReport, budget: Budget
) -> Iterator[list[JobRecord]]:
    """Pages of the sweep index for ``queries`` ((sweep key, until minute) each), starting
    where the last sweep stopped. When the budget is spent, the position is kept in the
    store's sweep cursor (and ``report.stopped_early`` set) for the next sweep to go on from;
    once every query has been read to its end, the cursor is cleared."""
    cursor = store.get_sweep_cursor() or {}
    keys = [key for key, _ in queries]
    first = keys.index(cursor["key"]) if cursor.get("key") in keys else 0
    order = [*queries[first:], *queries[:first]]
    start: str | None = cursor.get("start") if cursor.get("key") in keys else None
    for key, until in order:
        while True:
            if budget.spent:
                report.stopped_early = 1
                log.warning(
                    "sweep stopped early (%d index pages, %d repairs); the next sweep goes on at %s",
                    budget.pages_read,
                    budget.repairs,
                    key,
                )
                store.put_sweep_cursor({"key": key, "start": start})
                return
            page, start = store.sweep_page(key, until, start=start, limit=PAGE_SIZE)
            budget.pages_read += 1
            yield page
            if start is None:
                break
    if cursor:
        store.put_sweep_cursor(None)


def _lost_hosts(
    expired: Sequence[JobRecord], host_terminations: HostTerminations | None, report: SweepReport
) -> Mapping[str, str]:
    """The Batch jobs behind ``expired`` whose instance was terminated, with the reason
    (one lookup for all; a failed lookup counts every attempt, as without Batch)."""
    batch_jobs = sorted({b for b in map(batch_job_of, (job.lease_owner for job in expired)) if b})
    if host_terminations is None or not batch_jobs:
        return {}
    with _step(report, "host_lookup"):
        return host_terminations(batch_jobs)
    return {}


def _due_message(
    job: JobRecord, now: dt.datetime, queue_empty: bool, stale: float
) -> tuple[JobMessage, bool] | None:
    """The message to send for a ready job that has none, and whether it is a late retry."""
    due_in = -_age(job.not_before, now) if job.not_before else 0.0
    if due_in > MAX_SQS_DELAY:
        return None  # a late retry, still too far off for SQS's delay
    became_ready = timeutil.parse(job.updated_at) if job.updated_at else now
    scheduled_late = (
        job.not_before and (timeutil.parse(job.not_before) - became_ready).total_seconds() > MAX_SQS_DELAY
    )
    if scheduled_late and not job.dispatched_at:
        return JobMessage.for_job(job, int(max(0.0, due_in))), True
    if queue_empty and due_in <= 0 and _age(job.updated_at, now) > stale:
        return JobMessage.for_job(job), False
    return None


def _release_lost_host(services: Services, job: JobRecord, reason: str, report: SweepReport) -> None:
    """Back to ready without counting the attempt: the worker's instance was terminated
    (a Spot reclaim), the handler did not fail. Fenced as an expiry is."""
    done = services.store.transition(
        job.graph_id,
        job.name,
        SHUTDOWN_RELEASE,
        fence=Fence(job.attempts, job.lease_owner),
        changes={
            "attempts": job.attempts - 1,
            "reason": f"worker {job.lease_owner} lost its host ({reason}); the attempt is not counted",
        },
        remove=["lease_owner", "lease_expires_at", "not_before"],
    )
    if done is not None:
        report.hosts_reclaimed += 1
        log.warning("%s: %s", job.id, done.reason)


def _expire(services: Services, job: JobRecord, report: SweepReport) -> None:
    settings = services.settings
    max_attempts = job.max_attempts or settings.default_max_attempts
    error = {
        "type": "LeaseExpired",
        "message": f"worker {job.lease_owner} stopped heartbeating; its lease expired at "
        f"{job.lease_expires_at}",
    }
    fence = Fence(job.attempts, job.lease_owner)
    remove = ["lease_owner", "lease_expires_at"]
    if job.attempts >= max_attempts:
        error["message"] = gave_up(error["message"], job.attempts)
    # The attempt's error joins the job's history, as a worker's failed attempt does.
    changes = {"error": error, "errors": error_history(job.errors, job.attempts, error)}
    if job.attempts >= max_attempts:
        done = services.store.transition(
            job.graph_id, job.name, EXPIRE_FAIL, fence=fence, changes=changes, remove=remove
        )
        if done is not None:
            report.jobs_failed += 1
    else:
        done = services.store.transition(
            job.graph_id,
            job.name,
            EXPIRE,
            fence=fence,
            changes=changes,
            remove=[*remove, "not_before"],
        )
        if done is not None:
            report.leases_expired += 1
    if done is not None:
        log.warning("%s: %s", job.id, error["message"])


def _fail_dead_letters(services: Services, dead_letters: DispatchQueue, limit: int = 100) -> int:
    failed = 0
    for _ in range(limit // 10):
        deliveries = dead_letters.receive(max_messages=10, wait_seconds=0)
        if not deliveries:
            break
        for delivery in deliveries:
            message = delivery.message
            error = {
                "type": "DeadLettered",
                "message": f"its message was received {delivery.receive_count} times without an "
                "outcome: a worker crashed on it each time (see the worker logs)",
            }
            # The job keeps this error in its history too, as a worker's failed attempt does.
            job = services.store.get_job(message.graph_id, message.job_name)
            if job is None or job.status not in DEAD_LETTER.sources:
                continue
            history = error_history(job.errors, job.attempts, error)
            changes = {"error": error, "errors": history}
            if services.store.transition(job.graph_id, job.name, DEAD_LETTER, changes=changes) is not None:
                failed += 1
        dead_letters.delete([d.receipt for d in deliveries])
    return failed


def _replay_failed_batches(
    services: Services, failures: StreamFailures, report: SweepReport, on_graph_done: GraphEvents | None
) -> None:
    """Read each failed stream batch again and apply it through the scheduler (idempotent,
    so dependents are released or aborted exactly as they would have been); then forget
    its note. Batches that cannot be read again have their graphs repaired from the jobs."""
    scheduler = Scheduler.for_services(services, on_graph_done)
    gone: list[FailedBatch] = []
    seen: set[str] = set()
    while len(seen) < MAX_FAILED_BATCHES:
        batches = [b for b in failures.receive(max_batches=10) if b.receipt not in seen]
        if not batches:
            break
        for batch in batches:
            seen.add(batch.receipt)
            span = f" of shard {batch.shard} {batch.first_sequence}..{batch.last_sequence}"
            with _step(report, "stream_replay", span):
                if batch.receive_count > MAX_REPLAYS:
                    log.error("stream batch%s failed %d replays: repairing its graphs", span, MAX_REPLAYS)
                    gone.append(batch)
                    continue
                try:
                    records = failures.records(batch)
                except StreamRecordsGone as exc:
                    log.warning("stream batch%s cannot be read again (%s): repairing its graphs", span, exc)
                    gone.append(batch)
                    continue
                scheduler.process_stream_event({"Records": records})
                failures.delete(batch)
                report.stream_batches_replayed += 1
                report.stream_records_replayed += len(records)
                log.warning("replayed the stream batch%s (%d records)", span, len(records))
    if gone:
        with _step(report, "stream_repair"):
            arrivals = [b.last_arrival for b in gone]
            latest = None if None in arrivals else max(a for a in arrivals if a)
            _repair_stranded(services, scheduler, report, created_before=latest)
            for batch in gone:
                failures.delete(batch)
                report.stream_batches_past_retention += 1


def _repair_stranded(
    services: Services, scheduler: Scheduler, report: SweepReport, created_before: str | None
) -> None:
    """Without the lost records, find their effect in the jobs: in every running graph
    created before the last lost record (``created_before``; None = any), a waiting job
    whose deps all finished, or one of whose deps failed or was aborted, is stranded. Its
    deps' ends are applied through the scheduler as their stream records would have been
    (a dep already counted is counted again: harmless, the graph's end is decided from
    the jobs). So are the ends of an expansion's children its parent's tree has not counted,
    and the finish of a job whose children are not all made. A graph whose jobs have all
    ended gets its outcome recorded. Reads every job of those graphs: the price of records
    lost for good."""
    store = services.store
    for graph in store.running_graphs():
        if created_before is not None and (graph.created_at or "") > created_before:
            continue
        jobs = {job.name: job for job in store.list_jobs(graph.graph_id)}
        if all(job.status.terminal for job in jobs.values()):
            # The lost records held the last jobs' ends: the graph's outcome was never recorded.
            if scheduler.finalize_graph(graph.graph_id) is not None:
                report.graphs_ended += 1
            continue
        ends: dict[str, JobRecord] = {}
        for job in jobs.values():
            if job.status != JobStatus.WAITING or not job.deps_count:
                continue
            deps = [jobs[name] for name in store.dependencies(job) if name in jobs]
            ended_badly = [d for d in deps if d.status in (JobStatus.FAILED, JobStatus.ABORTED)]
            if ended_badly:
                ends.setdefault(ended_badly[0].name, ended_badly[0])
            elif deps and all(d.status == JobStatus.FINISHED for d in deps):
                ends.update((d.name, d) for d in deps)
        for job in jobs.values():
            # Expansions (overseer.expansion): children not all made, and children whose end
            # their parent's tree has not counted (an end lost with its record).
            parent = jobs.get(job.parent) if job.parent else None
            ended = job.tree_done or job.status in (JobStatus.FAILED, JobStatus.ABORTED)
            if job.children_pending or (parent is not None and not parent.tree_done and ended):
                ends.setdefault(job.name, job)
        if not ends:
            continue
        applied = scheduler.apply([StatusChange(None, job) for job in ends.values()])
        report.stranded_graphs_repaired += 1
        report.stranded_jobs_released += applied.released
        report.stranded_jobs_aborted += applied.aborted
        log.warning(
            "graph %s: stream records lost for good; released %d and aborted %d waiting jobs "
            "from the ends of %d jobs",
            graph.graph_id,
            applied.released,
            applied.aborted,
            len(ends),
        )


def _roll_back_creating(services: Services) -> int:
    """Roll back the graphs still ``creating`` ``creating_timeout_seconds`` after their
    submission began: it stopped between the graph and its jobs, and the sweep does not
    have the graph's definition to complete it (submitting it again does that)."""
    cutoff = timeutil.iso_in(-services.settings.creating_timeout_seconds)
    rolled_back = 0
    for graph in list(services.store.creating_graphs(cutoff)):
        if services.store.roll_back_graph(graph):
            rolled_back += 1
            log.warning(
                "graph %s: its submission stopped half-way at %s; rolled back (submit it again)",
                graph.graph_id,
                graph.created_at,
            )
    return rolled_back
