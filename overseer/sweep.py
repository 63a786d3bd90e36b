"""The sweep: repairs what at-least-once delivery and dying workers can lose.

Run on a schedule (a Lambda every minute in AWS, a loop in ``overseer run``). For every
running graph it reads the jobs once and:

* **expired leases**: a running job whose lease expired more than ``clock_skew_seconds``
  ago (its worker died: SIGKILL, lost host) goes back to ready for its next attempt, or
  fails past its max attempts. The write is fenced by the job's attempt and lease owner,
  so a worker that was only slow can never have its outcome overwritten, nor overwrite
  the new owner's;
* **late retries**: a faulted job whose backoff is longer than SQS's 15-minute delay got
  no message from the scheduler; it is sent once the remaining delay fits;
* **lost messages**: when the queue is empty (nothing waiting, delayed or in flight)
  yet a job has been ready and due for longer than ``stale_ready_seconds``, its message
  was lost and is sent again (a duplicate would be harmless: claims are fenced);
* **unfinished graphs whose jobs have all ended**: the scheduler ends a graph when its
  counters say every job is terminal; if a stream record was never processed (Lambda
  gave up on it after its retries), the sweep sees the ended jobs and records the
  graph's outcome (``on_graph_done`` is called as the scheduler would);

and it turns messages that reached the dead-letter queue into failed jobs with a clear
error. Clocks: the only comparison of a worker's clock with the sweep's is the lease
expiry, which is given ``clock_skew_seconds`` of slack; keep hosts' clocks within that
bound (NTP keeps them within milliseconds).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from . import timeutil
from .scheduler import GraphEvents, finalize_graph
from .services import Services
from .states import DEAD_LETTER, EXPIRE, EXPIRE_FAIL, REDISPATCH, JobStatus
from .store import DispatchQueue, Fence, JobMessage, JobRecord

log = logging.getLogger("overseer.sweep")
MAX_SQS_DELAY = 900


@dataclass
class SweepReport:
    graphs: int = 0
    graphs_ended: int = 0
    leases_expired: int = 0
    jobs_failed: int = 0
    late_retries_sent: int = 0
    lost_messages_resent: int = 0
    dead_letters: int = 0
    queue_depth: int = 0


def _age(text: str | None, now: dt.datetime) -> float:
    return (now - timeutil.parse(text)).total_seconds() if text else 0.0


def sweep(
    services: Services,
    *,
    dead_letters: DispatchQueue | None = None,
    clock_skew_seconds: float | None = None,
    stale_ready_seconds: float | None = None,
    on_graph_done: GraphEvents | None = None,
) -> SweepReport:
    settings = services.settings
    skew = settings.clock_skew_seconds if clock_skew_seconds is None else clock_skew_seconds
    stale = settings.lease_seconds if stale_ready_seconds is None else stale_ready_seconds
    store, queue = services.store, services.queue
    now = timeutil.now()
    report = SweepReport(queue_depth=queue.depth())
    to_send: list[JobMessage] = []

    for graph in store.running_graphs():
        report.graphs += 1
        ended = 0
        for job in store.list_jobs(graph.graph_id):
            if job.status.terminal:
                ended += 1
            elif job.status == JobStatus.RUNNING:
                expired = job.lease_expires_at and _age(job.lease_expires_at, now) > skew
                if expired:
                    _expire(services, job, report)
            elif job.status == JobStatus.READY:
                due = _due_message(job, now, report.queue_depth == 0, stale)
                if due is None:
                    continue
                message, late = due
                marked = store.transition(
                    job.graph_id,
                    job.name,
                    REDISPATCH,
                    fence=Fence(job.attempts),
                    changes={"dispatched_at": timeutil.iso()},
                )
                if marked is not None:
                    to_send.append(message)
                    if late:
                        report.late_retries_sent += 1
                    else:
                        report.lost_messages_resent += 1
        if ended == graph.jobs_total:
            done = finalize_graph(store, graph.graph_id, on_graph_done)
            if done is not None:
                log.warning("graph %s: every job had ended; recorded it %s", graph.graph_id, done.status)
                report.graphs_ended += 1
    if to_send:
        queue.send(to_send)
    dead_letters = dead_letters or services.dead_letters
    if dead_letters is not None:
        report.dead_letters = _fail_dead_letters(services, dead_letters)
    return report


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
        return JobMessage(job.graph_id, job.name, job.attempts, int(max(0.0, due_in))), True
    if queue_empty and due_in <= 0 and _age(job.updated_at, now) > stale:
        return JobMessage(job.graph_id, job.name, job.attempts, 0), False
    return None


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
        error["message"] += f" (gave up after {job.attempts} attempts)"
        done = services.store.transition(
            job.graph_id, job.name, EXPIRE_FAIL, fence=fence, changes={"error": error}, remove=remove
        )
        if done is not None:
            report.jobs_failed += 1
    else:
        done = services.store.transition(
            job.graph_id,
            job.name,
            EXPIRE,
            fence=fence,
            changes={"error": error},
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
            if (
                services.store.transition(
                    message.graph_id, message.job_name, DEAD_LETTER, changes={"error": error}
                )
                is not None
            ):
                failed += 1
        dead_letters.delete([d.receipt for d in deliveries])
    return failed
