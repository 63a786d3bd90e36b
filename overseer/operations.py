"""What users do to graphs, as plain functions over ``Services``.

The API, the triggers and the CLI call these; they use only the ``JobStore`` interface
(every job write is a ``states`` transition, i.e. one conditional write), so they work on
any backend. Each is safe to call again: a repeated call does nothing more.

Example
-------
>>> services = build_services()
>>> graph, created = submit_graph(services, {"id": "g1", "jobs": {"a": [], "b": ["a"]}})
>>> cancel_graph(services, "g1").jobs_changed
2
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GraphNotFound
from .graph import parse_graph
from .parallel import in_parallel
from .states import (
    CANCEL_RUNNING,
    CASCADE_ABORT,
    RELEASE,
    RELEASED_BY_RERUN,
    RERUN,
    GraphStatus,
    JobStatus,
    terminal_counts,
)
from .store import GraphRecord, JobRecord, JobStore, Services
from .templates import fan_out, render_template

CANCEL_REASON = "graph cancelled"
# Conditional writes in flight at once when cancelling or rerunning many jobs.
# A job that keeps moving while it is being cancelled is re-read this many times.
_CANCEL_TRIES = 5
_TERMINAL_GRAPH = (GraphStatus.FINISHED, GraphStatus.FAILED, GraphStatus.ABORTED)

GraphEvents = Callable[[GraphRecord], None]


@dataclass(frozen=True)
class GraphChange:
    """The graph after a cancel or rerun, and how many jobs that call moved."""

    graph: GraphRecord
    jobs_changed: int


def submit_graph(
    services: Services,
    document: str | Path | Mapping[str, Any],
    *,
    graph_id: str | None = None,
    max_attempts: Mapping[str, int] | None = None,
) -> tuple[GraphRecord, bool]:
    """Validate a graph document and store it; its jobs without deps become ready.

    Raises ``InvalidGraph`` (nothing written) for a bad document. Job types are not
    checked against a handlers module (the caller may not have one, e.g. a Lambda); a
    job whose type has no handler fails when a worker runs it. Idempotent on the graph
    id: when the graph exists, nothing is written and ``(existing, False)`` is returned.
    """
    spec = parse_graph(document, handler_types=None, graph_id=graph_id)
    return services.store.create_graph(spec, max_attempts=max_attempts or {})


def submit_template(
    services: Services,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    graph_id: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[GraphRecord, bool]:
    """Start template ``name`` (see ``overseer.templates``) with ``args``; as ``submit_graph``.

    Raises ``UnknownTemplate`` / ``TemplateError`` when the template cannot be rendered.
    """
    document = render_template(services.settings.templates_dir, name, args, defaults=defaults)
    return submit_graph(services, document, graph_id=graph_id)


def trigger_template(
    services: Services,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    event_time: dt.datetime | None = None,
) -> list[tuple[GraphRecord, bool]]:
    """Start template ``name`` once per argument set of ``fan_out(args)`` (e.g. per company).

    Every graph gets ``date`` (the event's UTC date, ``YYYY-MM-DD``) unless the template
    or ``args`` set it, so a daily rule redelivered the same day starts no new graphs.
    Every argument set is rendered before any graph is written, so a bad template or
    argument writes nothing.
    """
    moment = event_time or dt.datetime.now(dt.UTC)
    defaults = {"date": moment.astimezone(dt.UTC).date().isoformat()}
    documents = [
        render_template(services.settings.templates_dir, name, one, defaults=defaults)
        for one in fan_out(args)
    ]
    specs = [parse_graph(document) for document in documents]
    return [services.store.create_graph(spec, max_attempts={}) for spec in specs]


def get_graph(services: Services, graph_id: str) -> GraphRecord:
    """The graph's current record. Raises ``GraphNotFound``."""
    graph = services.store.get_graph(graph_id)
    if graph is None:
        raise GraphNotFound(f"no graph {graph_id!r}: check the id, or submit the graph first")
    return graph


def job_status(value: str | JobStatus | None) -> JobStatus | None:
    """``value`` as a job status; raises ``ValueError`` naming the valid ones."""
    if value is None or isinstance(value, JobStatus):
        return value
    try:
        return JobStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in JobStatus)
        raise ValueError(f"unknown job status {value!r}; use one of: {valid}") from None


def list_jobs(
    services: Services,
    graph_id: str,
    status: str | JobStatus | None = None,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[JobRecord]:
    """The graph's jobs in name order, optionally only those in ``status``.

    ``after`` and ``limit`` page through a large graph: the jobs whose names sort after
    ``after``, at most ``limit`` of them. Raises ``GraphNotFound``, and ``ValueError``
    for an unknown status.
    """
    wanted = job_status(status)
    get_graph(services, graph_id)
    jobs: list[JobRecord] = []
    for job in services.store.list_jobs(graph_id):
        if after is not None and job.name <= after:
            continue
        if wanted is not None and job.status != wanted:
            continue
        jobs.append(job)
        if limit is not None and len(jobs) >= limit:
            break
    return jobs


def _stop_job(store: JobStore, job: JobRecord) -> bool:
    """Move one job to aborted, following it if it moves meanwhile. True if this call moved it."""
    current: JobRecord | None = job
    for _ in range(_CANCEL_TRIES):
        if current is None or current.status.terminal:
            return False
        transition = CANCEL_RUNNING if current.status == JobStatus.RUNNING else CASCADE_ABORT
        moved = store.transition(job.graph_id, job.name, transition, changes={"reason": CANCEL_REASON})
        if moved is not None:
            return True
        current = store.get_job(job.graph_id, job.name)
    return False


def job_view(services: Services, job: JobRecord) -> dict[str, Any]:
    """A job as the CLI and the API show it: its summary and its deps, in declared order."""
    return {**job.summary(), "deps": services.store.dependencies(job)}


def cancel_graph(
    services: Services, graph_id: str, *, on_graph_done: GraphEvents | None = None
) -> GraphChange:
    """Abort every job that has not ended, then mark the graph aborted.

    Waiting and ready jobs are aborted (``CASCADE_ABORT``), running ones too
    (``CANCEL_RUNNING``): their worker's outcome is then refused by the fence and the
    job stays aborted. Every job gets the reason "graph cancelled". Finished, failed and
    aborted jobs are left as they are. The graph goes from running to aborted
    (``on_graph_done`` is called with it); a graph that already ended keeps its status.
    Its counters are set from the jobs as they are then (the scheduler counts only running
    graphs). Raises ``GraphNotFound``.
    """
    store = services.store
    get_graph(services, graph_id)
    open_jobs = [job for job in store.list_jobs(graph_id) if not job.status.terminal]
    changed = sum(in_parallel(lambda job: _stop_job(store, job), open_jobs))
    exact = terminal_counts(job.status for job in store.list_jobs(graph_id))
    done = store.set_graph_status(graph_id, GraphStatus.ABORTED, sources=[GraphStatus.RUNNING], counts=exact)
    if done is not None and on_graph_done is not None:
        on_graph_done(done)
    return GraphChange(done or get_graph(services, graph_id), changed)


# What a rerun job forgets of its previous run.
_CLEARED_ON_RERUN = [
    "error", "reason", "finished_at", "not_before", "lease_owner", "lease_expires_at", "released_by",
    "carried_finished",
]  # fmt: skip


def rerun_graph(services: Services, graph_id: str) -> GraphChange:
    """Run the graph's failed and aborted jobs again; finished jobs are kept.

    Each failed or aborted job goes back to waiting (``RERUN``) with its error, reason,
    attempts and end time cleared; then the finished dependencies of each are recorded
    and those whose deps have all finished are released, so the scheduler carries on as
    for a new graph. Every job is moved to waiting before any is released, so no job can
    finish before its dependents wait for it. An ended graph goes back to running with
    its counters recomputed from the jobs; a running graph's counters are corrected by
    the jobs taken back. Raises ``GraphNotFound``.
    """
    store = services.store
    graph = get_graph(services, graph_id)
    jobs = {job.name: job for job in store.list_jobs(graph_id)}
    targets = [job for job in jobs.values() if job.status in (JobStatus.FAILED, JobStatus.ABORTED)]
    if not targets:
        return GraphChange(graph, 0)

    def rerun(job: JobRecord) -> JobRecord | None:
        return store.transition(
            graph_id,
            job.name,
            RERUN,
            changes={"attempts": 0},
            remove=_CLEARED_ON_RERUN,
        )

    moved = [(old, new) for old, new in zip(targets, in_parallel(rerun, targets), strict=True) if new]
    if not moved:
        return GraphChange(get_graph(services, graph_id), 0)

    taken_back: dict[str, int] = {}
    for old, _ in moved:
        taken_back[old.status.value] = taken_back.get(old.status.value, 0) - 1
    if graph.status.terminal:
        counts = terminal_counts(job.status for job in jobs.values())
        for status, n in taken_back.items():
            counts[status] += n
        reopened = store.set_graph_status(
            graph_id, GraphStatus.RUNNING, sources=_TERMINAL_GRAPH, counts=counts
        )
        if reopened is None:  # it was running again already (a concurrent rerun)
            store.add_graph_progress(graph_id, taken_back)
    else:
        store.add_graph_progress(graph_id, taken_back)

    finished = {name for name, job in jobs.items() if job.status == JobStatus.FINISHED}

    def release_if_ready(job: JobRecord) -> bool:
        deps = store.dependencies(job)
        done = [index for index, dep in enumerate(deps) if dep in finished]
        counted = len(done)
        if len(deps) > 1 and job.finished_deps < len(done):
            # Deps that finished after this job was aborted were never counted in it. The
            # last writer (this call or the scheduler) sees the full count and releases.
            for index in done:
                counted = store.record_finished_dependency(graph_id, job.name, index) or 0
        if counted < len(deps):
            return False
        released = store.transition(graph_id, job.name, RELEASE, changes={"released_by": RELEASED_BY_RERUN})
        return released is not None

    in_parallel(release_if_ready, [new for _, new in moved])
    return GraphChange(get_graph(services, graph_id), len(moved))
