"""The scheduler: a function of the jobs table's stream records.

It is the only component that moves jobs from waiting to ready and puts them on the
queue. Stream records arrive at least once and, between shards, out of order, so every
step is idempotent and conditional:

* a job that became ready is enqueued (a duplicate message is harmless: the claim is
  fenced by the attempt number);
* a job that finished marks itself finished in each dependent (a set of indices, so
  duplicates count once) and releases the dependents whose deps are all finished;
* a job that failed or aborted aborts its waiting dependents with the reason, and the
  abort travels down the graph the same way;
* terminal transitions are added to the graph's counters, one write per graph per batch;
  when the counters say every job is terminal, the jobs are read once to decide the
  graph's outcome (so an over-count from a duplicated record is harmless).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecordEventName,
)

from . import timeutil
from .items import JOB_PREFIX, record_from_item
from .states import CASCADE_ABORT, RELEASE, GraphStatus, JobStatus, graph_outcome
from .store import Dependent, DispatchQueue, GraphRecord, JobMessage, JobRecord, JobStore

log = logging.getLogger("overseer.scheduler")

# The records the scheduler acts on, as a Lambda event source mapping filter. Every other
# change (claims, heartbeats, dependency counts) never invokes it.
ACTED_ON = ("ready", "finished", "failed", "aborted")
STREAM_FILTER_PATTERN: dict[str, Any] = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {
        "Keys": {"entry": {"S": [{"prefix": JOB_PREFIX}]}},
        "NewImage": {"status": {"S": list(ACTED_ON)}},
    },
}
_PARALLEL_RELEASES = 8
MAX_SQS_DELAY = 900

GraphEvents = Callable[[GraphRecord], None]


@dataclass
class SchedulerReport:
    records: int = 0
    changes: int = 0
    enqueued: int = 0
    released: int = 0
    aborted: int = 0
    graphs_done: list[str] = field(default_factory=list)
    # (job type, terminal status, seconds from start to end or None) for metrics by job type.
    terminal: list[tuple[str, str, float | None]] = field(default_factory=list)


@dataclass(frozen=True)
class StatusChange:
    previous: JobStatus | None
    job: JobRecord


def status_changes(event: Mapping[str, Any]) -> tuple[int, list[StatusChange]]:
    """The job status changes in a Lambda DynamoDB stream event, in record order."""
    stream = DynamoDBStreamEvent(dict(event))
    changes: list[StatusChange] = []
    count = 0
    for record in stream.records:
        count += 1
        if record.event_name == DynamoDBRecordEventName.REMOVE or record.dynamodb is None:
            continue
        new = record.dynamodb.new_image
        if not new or not str(new.get("entry", "")).startswith(JOB_PREFIX):
            continue
        old = record.dynamodb.old_image or {}
        if old.get("status") == new.get("status"):
            continue
        previous = JobStatus(old["status"]) if old.get("status") else None
        changes.append(StatusChange(previous, record_from_item(new)))
    return count, changes


def upstream_reason(job: JobRecord) -> str:
    """Why ``job``'s dependents are aborted: the root cause travels down unchanged."""
    if job.status == JobStatus.ABORTED and job.reason and job.reason.startswith("upstream job "):
        return job.reason
    if job.status == JobStatus.FAILED:
        return f"upstream job {job.name!r} failed"
    return f"upstream job {job.name!r} aborted" + (f": {job.reason}" if job.reason else "")


class Scheduler:
    def __init__(
        self, store: JobStore, queue: DispatchQueue, on_graph_done: GraphEvents | None = None
    ) -> None:
        self.store = store
        self.queue = queue
        self.on_graph_done = on_graph_done

    def process_stream_event(self, event: Mapping[str, Any]) -> SchedulerReport:
        """Apply one Lambda-shaped stream event. Raises on a store error, so Lambda retries."""
        count, changes = status_changes(event)
        report = self.apply(changes)
        report.records = count
        return report

    def apply(self, changes: Iterable[StatusChange]) -> SchedulerReport:
        report = SchedulerReport()
        ready: list[JobMessage] = []
        deltas: dict[str, Counter[str]] = defaultdict(Counter)
        follow_ups: list[Callable[[], int]] = []
        for change in changes:
            report.changes += 1
            job = change.job
            if job.status == JobStatus.READY:
                delay = int(max(0.0, timeutil.seconds_until(job.not_before)))
                # Beyond SQS's 15-minute delay the sweep sends the message when it is due.
                if delay <= MAX_SQS_DELAY:
                    ready.append(JobMessage(job.graph_id, job.name, job.attempts, delay))
            elif job.status == JobStatus.FINISHED:
                follow_ups.append(partial(self.release_dependents, job))
            elif job.status in (JobStatus.FAILED, JobStatus.ABORTED):
                follow_ups.append(partial(self._abort_dependents_negated, job))
            if job.status.terminal:
                deltas[job.graph_id][job.status.value] += 1
                seconds = None
                if job.started_at and job.finished_at:
                    seconds = (
                        timeutil.parse(job.finished_at) - timeutil.parse(job.started_at)
                    ).total_seconds()
                report.terminal.append((job.type, job.status.value, seconds))
            if change.previous is not None and change.previous.terminal and not job.status.terminal:
                deltas[job.graph_id][change.previous.value] -= 1
        if ready:
            self.queue.send(ready)
            report.enqueued = len(ready)
        for follow_up in follow_ups:
            n = follow_up()
            if n >= 0:
                report.released += n
            else:
                report.aborted -= n
        for graph_id, delta in deltas.items():
            graph = self.store.add_graph_progress(graph_id, delta)
            if (
                graph is not None
                and graph.status == GraphStatus.RUNNING
                and sum(graph.counts.values()) >= graph.jobs_total
            ):
                done = self.finalize_graph(graph_id)
                if done is not None:
                    report.graphs_done.append(graph_id)
        return report

    def _each_dependent(self, job: JobRecord, act: Callable[[Dependent], bool]) -> int:
        dependents = self.store.dependents(job)
        if len(dependents) <= 2:
            return sum(act(d) for d in dependents)
        with ThreadPoolExecutor(_PARALLEL_RELEASES) as pool:
            return sum(pool.map(act, dependents))

    def release_dependents(self, job: JobRecord) -> int:
        """Count ``job`` as finished in each dependent; release those now complete."""

        def release(dep: Dependent) -> bool:
            if dep.count > 1:
                finished = self.store.record_finished_dependency(job.graph_id, dep.child, dep.index)
                if finished is None or finished < dep.count:
                    return False
            return self.store.transition(job.graph_id, dep.child, RELEASE) is not None

        return self._each_dependent(job, release)

    def _abort_dependents_negated(self, job: JobRecord) -> int:
        return -self.abort_dependents(job)

    def abort_dependents(self, job: JobRecord) -> int:
        # A stale record (the job was rerun since) must not abort the rerun's jobs.
        current = self.store.get_job(job.graph_id, job.name)
        if current is None or current.status not in (JobStatus.FAILED, JobStatus.ABORTED):
            return 0
        reason = upstream_reason(current)

        def abort(dep: Dependent) -> bool:
            changed = self.store.transition(
                job.graph_id, dep.child, CASCADE_ABORT, changes={"reason": reason}
            )
            return changed is not None

        return self._each_dependent(job, abort)

    def finalize_graph(self, graph_id: str) -> GraphRecord | None:
        """Read every job once; if all are terminal, record the graph's outcome."""
        counts = Counter(job.status for job in self.store.list_jobs(graph_id))
        outcome = graph_outcome(counts)
        if outcome is None:
            return None
        graph = self.store.set_graph_status(
            graph_id,
            outcome,
            sources=[GraphStatus.RUNNING],
            counts={
                s.value: counts.get(s, 0) for s in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED)
            },
        )
        if graph is not None:
            log.info("graph %s %s", graph_id, outcome.value)
            if self.on_graph_done is not None:
                self.on_graph_done(graph)
        return graph
