"""The scheduler: a function of the jobs table's stream records.

It is the only component that moves jobs from waiting to ready and puts them on the
queue. Stream records arrive at least once and, between shards, out of order, so every
step is idempotent and conditional:

* a job that finished marks itself finished in each dependent (a set of indices, so
  duplicates count once), releases the dependents whose deps are all finished, and
  enqueues them in the same invocation (their "ready" records are filtered out);
* a job that became ready some other way (released by its graph's submission or a
  rerun, or ready again after a retry or an expired lease) is enqueued (a duplicate
  message is harmless: the claim is fenced by the attempt number);
* a job that failed or aborted aborts its waiting dependents with the reason, and the
  abort travels down the graph the same way;
* terminal transitions are added to the graph's counters, one write per graph per batch;
  when the counters say every job is terminal, the jobs are read once to decide the
  graph's outcome (so an over-count from a duplicated record is harmless).

Counting is deferred along chains: a finished job whose first dependent has only this one
dependency hands its count to that dependent in the write that releases it (the job's
``carried_finished``), and the dependent counts it with its own end. A chain of jobs
therefore writes the graph's counters once, at its end, instead of once per job. No count
is lost: a job is left uncounted only when that release wrote the hand-over, and the
dependent is counted (or hands over again) when it ends; so every job is counted by the
time the last one ends. The counters lag behind the jobs while chains run; ``overseer
status`` and the runners count from the jobs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import timeutil
from .expansion import Expansions
from .parallel import in_parallel, writers_of
from .states import (
    CASCADE_ABORT,
    RELEASE,
    RELEASED_BY_SCHEDULER,
    GraphStatus,
    JobStatus,
    graph_outcome,
    terminal_counts,
)
from .store import (
    MAX_SQS_DELAY,
    ArtifactStore,
    Dependent,
    GraphRecord,
    JobMessage,
    JobRecord,
    JobStore,
    MessageSender,
    PoolDispatch,
    Services,
)
from .stream import StatusChange, status_changes

log = logging.getLogger("overseer.scheduler")


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


@dataclass
class Releases:
    """What one finished job released: a message per released dependent (and whether this
    call released it), and whether its count was handed over to its first dependent."""

    messages: list[tuple[JobMessage, bool]] = field(default_factory=list)
    handed_over: bool = False


def _message(job: JobRecord) -> JobMessage:
    return JobMessage.for_job(job)


def upstream_reason(job: JobRecord) -> str:
    """Why ``job``'s dependents are aborted: the root cause travels down unchanged."""
    if job.status == JobStatus.ABORTED and job.reason and job.reason.startswith("upstream job "):
        return job.reason
    if job.status == JobStatus.FAILED:
        return f"upstream job {job.name!r} failed"
    return f"upstream job {job.name!r} aborted" + (f": {job.reason}" if job.reason else "")


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        queue: MessageSender,
        on_graph_done: GraphEvents | None = None,
        *,
        artifacts: ArtifactStore | None = None,
        expand_budget_seconds: float = 30.0,
    ) -> None:
        """``queue`` is where ready jobs are sent (``PoolDispatch``: each to its pool's queue);
        ``artifacts`` is where expansions' items are read from (``overseer.expansion``)."""
        self.store = store
        self.queue = queue
        self.on_graph_done = on_graph_done
        self.expansions = Expansions(store, artifacts, expand_budget_seconds)

    @classmethod
    def for_services(cls, services: Services, on_graph_done: GraphEvents | None = None) -> Scheduler:
        return cls(
            services.store,
            PoolDispatch(services),
            on_graph_done,
            artifacts=services.artifacts,
            expand_budget_seconds=services.settings.expand_budget_seconds,
        )

    def process_stream_event(self, event: Mapping[str, Any]) -> SchedulerReport:
        """Apply one Lambda-shaped stream event. Raises on a store error, so Lambda retries."""
        count, changes = status_changes(event)
        report = self.apply(changes)
        report.records = count
        return report

    def apply(self, changes: Iterable[StatusChange]) -> SchedulerReport:
        report = SchedulerReport()
        deadline = time.monotonic() + self.expansions.budget_seconds
        messages: list[JobMessage] = []
        deltas: dict[str, Counter[str]] = defaultdict(Counter)
        finished: list[JobRecord] = []
        expanding: list[JobRecord] = []
        ended_badly: list[JobRecord] = []
        for change in changes:
            report.changes += 1
            job = change.job
            if job.status == JobStatus.FINISHED and change.previous == JobStatus.FINISHED:
                # Not an end: a finished job's expansion moved on (children made, tree ended).
                if job.expansion is not None:
                    expanding.append(job)
                continue
            if job.status == JobStatus.READY and not self._sent_when_released(change):
                delay = int(max(0.0, timeutil.seconds_until(job.not_before)))
                # Beyond SQS's 15-minute delay the sweep sends the message when it is due.
                if delay <= MAX_SQS_DELAY:
                    messages.append(JobMessage.for_job(job, delay))
            elif job.status == JobStatus.FINISHED and job.expansion is not None:
                # Counted at its end; its dependents wait for its tree.
                deltas[job.graph_id][JobStatus.FINISHED.value] += 1 + job.carried_finished
                expanding.append(job)
            elif job.status == JobStatus.FINISHED:
                finished.append(job)
            elif job.status in (JobStatus.FAILED, JobStatus.ABORTED):
                ended_badly.append(job)
                deltas[job.graph_id][job.status.value] += 1
                deltas[job.graph_id][JobStatus.FINISHED.value] += job.carried_finished
            if job.status.terminal:
                seconds = None
                if job.started_at and job.finished_at:
                    seconds = (
                        timeutil.parse(job.finished_at) - timeutil.parse(job.started_at)
                    ).total_seconds()
                report.terminal.append((job.type, job.status.value, seconds))
            if change.previous is not None and change.previous.terminal and not job.status.terminal:
                deltas[job.graph_id][change.previous.value] -= 1
        unique = {job.id: job for job in expanding}.values()
        trees_done = [tree for job in unique if (tree := self.expansions.advance(job, deadline))]
        for job, releases in zip(finished, self.release_dependents(finished), strict=True):
            for message, fresh in releases.messages:
                report.released += fresh
                messages.append(message)
            if not releases.handed_over:
                deltas[job.graph_id][JobStatus.FINISHED.value] += 1 + job.carried_finished
        for releases in self.release_dependents(trees_done):
            for message, fresh in releases.messages:
                report.released += fresh
                messages.append(message)
        in_parallel(
            self.expansions.child_done,
            [job for job in finished + trees_done if job.parent],
            writers=writers_of(self.store),
        )
        for job in ended_badly:
            report.aborted += self.abort_dependents(job)
        if messages:
            self.queue.send(messages)
            report.enqueued = len(messages)
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

    @staticmethod
    def _sent_when_released(change: StatusChange) -> bool:
        """Whether the scheduler enqueued this job when it released it (so its "ready"
        record, delivered where the stream filter is not applied, needs nothing)."""
        return change.previous == JobStatus.WAITING and change.job.released_by == RELEASED_BY_SCHEDULER

    def release_dependents(self, finished: Sequence[JobRecord]) -> list[Releases]:
        """Count each finished job as finished in each of its dependents and release those
        now complete, all of an invocation's writes in one pool. A job's first dependent,
        when it depends on that job only, is released with the job's count handed over."""
        work: list[tuple[int, JobRecord, Dependent, int]] = []
        for i, job in enumerate(finished):
            for k, dep in enumerate(self.store.dependents(job)):
                # A job that expanded was counted at its own end: nothing to hand over.
                carry = 1 + job.carried_finished if k == 0 and dep.count == 1 and job.expansion is None else 0
                work.append((i, job, dep, carry))

        def release(task: tuple[int, JobRecord, Dependent, int]) -> tuple[JobRecord | None, bool]:
            _, job, dep, carry = task
            if dep.count > 1:
                counted = self.store.record_finished_dependency(
                    job.graph_id, dep.child, dep.index, dep_finished_at=job.done_at
                )
                if counted is None or counted < dep.count:
                    return None, False
            return self._release(job.graph_id, dep.child, carry, job.done_at)

        releases = [Releases() for _ in finished]
        for (i, _, _, carry), (child, fresh) in zip(
            work, in_parallel(release, work, writers=writers_of(self.store)), strict=True
        ):
            if child is None:
                continue
            # Released before (a duplicate record, or this batch retried after the write):
            # the count went with that write if the child still holds it, from this very end
            # of the job (not from its end before a rerun).
            if carry and (
                fresh
                or (
                    child.released_by == RELEASED_BY_SCHEDULER
                    and child.carried_finished == carry
                    and child.carried_from == finished[i].done_at
                )
            ):
                releases[i].handed_over = True
            if child.status == JobStatus.READY:
                releases[i].messages.append((_message(child), fresh))
        return releases

    def _release(
        self, graph_id: str, name: str, carry: int = 0, dep_finished_at: str | None = None
    ) -> tuple[JobRecord | None, bool]:
        """Release a waiting job, for the end of its dependency at ``dep_finished_at``: (its
        record after the release, True), or when it was not waiting (its record as it is,
        False). A job released already, by a duplicate of this record or by this very batch
        before the invocation died without sending, is sent again while it is still ready: a
        second message is harmless, the claim is fenced by the attempt number. A record of an
        end from before the job was rerun releases nothing (the rerun counted that end)."""
        changes: dict[str, Any] = {"released_by": RELEASED_BY_SCHEDULER}
        if carry:
            changes["carried_finished"] = carry
            changes["carried_from"] = dep_finished_at
        job = self.store.transition(graph_id, name, RELEASE, changes=changes, dep_finished_at=dep_finished_at)
        if job is not None:
            return job, True
        return self.store.get_job(graph_id, name), False

    def abort_dependents(self, job: JobRecord) -> int:
        """Abort the waiting dependents of a job that failed or was aborted and, for a child
        of an expansion, those of its parent and every ancestor (their trees cannot end)."""
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

        aborted = sum(in_parallel(abort, self.store.dependents(current), writers=writers_of(self.store)))
        ancestor = current.parent
        while ancestor is not None and (record := self.store.get_job(job.graph_id, ancestor)) is not None:
            aborted += sum(in_parallel(abort, self.store.dependents(record), writers=writers_of(self.store)))
            ancestor = record.parent
        return aborted

    def finalize_graph(self, graph_id: str) -> GraphRecord | None:
        return finalize_graph(self.store, graph_id, self.on_graph_done)


def finalize_graph(
    store: JobStore, graph_id: str, on_graph_done: GraphEvents | None = None
) -> GraphRecord | None:
    """Read every job once; if all are terminal, record the graph's outcome (from running
    only, so of the scheduler and the sweep one records it and ``on_graph_done`` is
    called once)."""
    # A job whose children are not all made yet has not ended, for its graph.
    statuses = [
        JobStatus.WAITING if job.children_pending else job.status for job in store.list_jobs(graph_id)
    ]
    outcome = graph_outcome(Counter(statuses))
    if outcome is None:
        return None
    graph = store.set_graph_status(
        graph_id, outcome, sources=[GraphStatus.RUNNING], counts=terminal_counts(statuses)
    )
    if graph is not None:
        log.info("graph %s %s", graph_id, outcome.value)
        if on_graph_done is not None:
            on_graph_done(graph)
    return graph
