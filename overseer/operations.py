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
import hashlib
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import timeutil
from .errors import GraphNotFound, InvalidGraph, RerunRefused
from .graph import GraphSpec, load_document, parse_graph
from .limits import parse_limits
from .parallel import in_parallel, writers_of
from .pools import Pools
from .scheduler import upstream_reason
from .states import (
    CANCEL_RUNNING,
    CASCADE_ABORT,
    RELEASE,
    RELEASED_BY_RERUN,
    RERUN,
    RERUN_JOB,
    GraphStatus,
    JobStatus,
    terminal_counts,
)
from .store import GraphRecord, JobRecord, JobStore, LogPage, Services
from .templates import fan_out, render_template

CANCEL_REASON = "graph cancelled"
# How long an artifact's download URL works (a presigned S3 GET).
ARTIFACT_URL_SECONDS = 900
# Conditional writes in flight at once when cancelling or rerunning many jobs.
# A job that keeps moving while it is being cancelled is re-read this many times.
_CANCEL_TRIES = 5
_TERMINAL_GRAPH = (GraphStatus.FINISHED, GraphStatus.FAILED, GraphStatus.ABORTED)
_ENDED_BADLY = (JobStatus.FAILED, JobStatus.ABORTED)

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
    priority: str | None = None,
) -> tuple[GraphRecord, bool]:
    """Validate a graph document and store it; its jobs without deps become ready.

    Raises ``InvalidGraph`` (nothing written) for a bad document. Each job's worker pool is
    decided here (``route_jobs``); job types are checked against the pools' manifests when
    they are known (a stack with pools), not against a handlers module (the caller may not
    have one, e.g. a Lambda): a job whose type has no handler fails when a worker runs it.
    Idempotent on the graph
    id: when the graph exists, nothing is written and ``(existing, False)`` is returned.
    """
    if priority is not None:  # the submission's priority, over the document's
        document = {**load_document(document), "priority": priority}
    spec = route_jobs(services, parse_graph(document, handler_types=None, graph_id=graph_id))
    return services.store.create_graph(spec, max_attempts=max_attempts or {})


def route_jobs(services: Services, spec: GraphSpec) -> GraphSpec:
    """``spec`` with each job's worker pool decided (``overseer.pools``). Raises
    ``InvalidGraph`` naming the pools when a job asks for an unknown pool or its type is
    served by none, and naming the limits when a job holds a concurrency limit that is not
    configured (``overseer.limits``)."""
    limits = parse_limits(services.settings.limits)
    unknown = sorted({job.limit for job in spec.jobs.values() if job.limit and job.limit not in limits})
    if unknown:
        users = sorted(job.name for job in spec.jobs.values() if job.limit in unknown)[:5]
        raise InvalidGraph(
            f"invalid graph: job(s) {users} hold the concurrency limit(s) {unknown}, which are not "
            f"configured; limits: {sorted(limits) or 'none'} (set them in cdk.json 'limits', or "
            "--limit NAME=N for a local run)"
        )
    return Pools.from_settings(services.settings).assign(spec)


def submit_template(
    services: Services,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    graph_id: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    priority: str | None = None,
) -> tuple[GraphRecord, bool]:
    """Start template ``name`` (see ``overseer.templates``) with ``args``; as ``submit_graph``.

    Raises ``UnknownTemplate`` / ``TemplateError`` when the template cannot be rendered.
    """
    document = render_template(services.settings.templates_dir, name, args, defaults=defaults)
    return submit_graph(services, document, graph_id=graph_id, priority=priority)


def trigger_template(
    services: Services,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    event_time: dt.datetime | None = None,
    id_suffix: str | None = None,
) -> list[tuple[GraphRecord, bool]]:
    """Start template ``name`` once per argument set of ``fan_out(args)`` (e.g. per company).

    Every graph gets ``date`` (the event's UTC date, ``YYYY-MM-DD``) unless the template
    or ``args`` set it, so a daily rule redelivered the same day starts no new graphs.
    With ``id_suffix`` (an event's id, or a value the rule chose from it), each graph id
    ends with it (``graph_id_with``): two events are two graphs, the same event delivered
    twice is one. Every argument set is rendered before any graph is written, so a bad
    template or argument writes nothing.
    """
    moment = event_time or dt.datetime.now(dt.UTC)
    defaults = {"date": moment.astimezone(dt.UTC).date().isoformat()}
    documents = [
        render_template(services.settings.templates_dir, name, one, defaults=defaults)
        for one in fan_out(args)
    ]
    if id_suffix:
        # One graph per event (or per key the rule chose), whatever the template's id says.
        documents = [
            {**document, "id": graph_id_with(str(document["id"]), id_suffix)} for document in documents
        ]
    specs = [route_jobs(services, parse_graph(document)) for document in documents]
    return [services.store.create_graph(spec, max_attempts={}) for spec in specs]


def graph_id_with(graph_id: str, suffix: str) -> str:
    """``<graph_id>-<suffix>``, the suffix made safe for a graph id: characters a graph id
    cannot hold become ``-``, and then (so that two values stay two ids) the first 8 hex
    digits of the value's SHA-256 follow; the whole is cut to the 128 characters an id may
    have, keeping the suffix's end.

    >>> graph_id_with("ingest-2026-11-30", "5f2c1d3e-aaaa")
    'ingest-2026-11-30-5f2c1d3e-aaaa'
    >>> graph_id_with("ingest", "uploads/2026/a b.csv")
    'ingest-uploads-2026-a-b.csv-ec253590'
    """
    safe = re.sub(r"[^A-Za-z0-9._:=+@-]", "-", suffix).strip("-") or "event"
    if safe != suffix:
        safe += "-" + hashlib.sha256(suffix.encode()).hexdigest()[:8]
    whole = f"{graph_id}-{safe}"
    return whole if len(whole) <= 128 else f"{graph_id[: max(1, 127 - len(safe[-100:]))]}-{safe[-100:]}"


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
    changed_since: str | None = None,
) -> list[JobRecord]:
    """The graph's jobs in name order, optionally only those in ``status``.

    ``after`` and ``limit`` page through a large graph: the jobs whose names sort after
    ``after``, at most ``limit`` of them; ``changed_since`` (an ISO time) keeps the jobs
    written at or after it (a page's refresh). Raises ``GraphNotFound``, and ``ValueError``
    for an unknown status or a ``changed_since`` that is not a time.
    """
    wanted = job_status(status)
    if changed_since is not None:
        try:
            changed_since = timeutil.iso(timeutil.parse(changed_since))  # as the store writes times
        except ValueError:
            raise ValueError(f"'changed_since' must be an ISO time, got {changed_since!r}") from None
    get_graph(services, graph_id)
    jobs: list[JobRecord] = []
    for job in services.store.list_jobs(graph_id, changed_since=changed_since):
        if after is not None and job.name <= after:
            continue
        if wanted is not None and job.status != wanted:
            continue
        jobs.append(job)
        if limit is not None and len(jobs) >= limit:
            break
    return jobs


def _stop_job(store: JobStore, job: JobRecord, reason: str) -> bool:
    """Move one job to aborted, following it if it moves meanwhile. True if this call moved it."""
    current: JobRecord | None = job
    for _ in range(_CANCEL_TRIES):
        if current is None or current.status.terminal:
            return False
        transition = CANCEL_RUNNING if current.status == JobStatus.RUNNING else CASCADE_ABORT
        moved = store.transition(job.graph_id, job.name, transition, changes={"reason": reason})
        if moved is not None:
            return True
        current = store.get_job(job.graph_id, job.name)
    return False


def job_view(services: Services, job: JobRecord) -> dict[str, Any]:
    """A job as the CLI and the API show it: its summary and its deps, in declared order."""
    return {**job.summary(), "deps": services.store.dependencies(job)}


def job_detail(services: Services, job: JobRecord) -> dict[str, Any]:
    """Everything known of one job (the API's ``GET /graphs/{id}/jobs/{job}``, the page's
    job): its view, its args, its dependents and its last error with the traceback."""
    detail = {
        "graph_id": job.graph_id,
        "name": job.name,
        **job_view(services, job),
        "args": job.args,
        "max_attempts": job.max_attempts,
        "dependents": sorted({dependent.child for dependent in services.store.dependents(job)}),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }
    if job.error:
        detail["error_detail"] = job.error  # type, message and traceback
    return detail


def get_job(services: Services, graph_id: str, name: str) -> JobRecord:
    """The job's current record. Raises ``GraphNotFound`` for an unknown graph or job."""
    job = services.store.get_job(graph_id, name)
    if job is None:
        get_graph(services, graph_id)
        raise GraphNotFound(f"graph {graph_id!r} has no job {name!r}")
    return job


def job_logs(
    services: Services,
    graph_id: str,
    name: str,
    *,
    attempt: int | None = None,
    after: str | None = None,
    limit: int = 1000,
) -> LogPage:
    """A page of the job's log lines (``after``: the previous page's ``next``). Raises
    ``GraphNotFound``, and ``ValueError`` for an ``after`` that is not a page's ``next``."""
    get_job(services, graph_id, name)
    if services.logs is None:
        return LogPage([])
    return services.logs.page(graph_id, name, attempt=attempt, after=after, limit=limit)


def job_artifacts(
    services: Services, graph_id: str, name: str, *, expires_seconds: int = ARTIFACT_URL_SECONDS
) -> list[dict[str, Any]]:
    """The job's artifacts as its record lists them, each with a ``url`` that downloads it
    without credentials for ``expires_seconds`` (``ArtifactStore.download_url``; no request
    is made). Raises ``GraphNotFound``."""
    artifacts = services.artifacts
    return [
        {**meta, "url": artifacts.download_url(meta["bucket"], meta["key"], expires_seconds=expires_seconds)}
        for meta in get_job(services, graph_id, name).artifacts
    ]


def cancel_graph(
    services: Services,
    graph_id: str,
    *,
    on_graph_done: GraphEvents | None = None,
    reason: str = CANCEL_REASON,
) -> GraphChange:
    """Abort every job that has not ended, then mark the graph aborted.

    Waiting and ready jobs are aborted (``CASCADE_ABORT``), running ones too
    (``CANCEL_RUNNING``): their worker's outcome is then refused by the fence and the
    job stays aborted (its worker stops the handler at its next heartbeat). Every job and
    the graph get ``reason`` (default "graph cancelled"). Finished, failed and
    aborted jobs are left as they are. The graph goes from running to aborted
    (``on_graph_done`` is called with it); a graph that already ended keeps its status.
    Its counters are set from the jobs as they are then (the scheduler counts only running
    graphs). Raises ``GraphNotFound``.
    """
    store = services.store
    get_graph(services, graph_id)
    open_jobs = [job for job in store.list_jobs(graph_id) if not job.status.terminal]
    changed = sum(
        in_parallel(lambda job: _stop_job(store, job, reason), open_jobs, writers=writers_of(store))
    )
    exact = terminal_counts(job.status for job in store.list_jobs(graph_id))
    done = store.set_graph_status(
        graph_id, GraphStatus.ABORTED, sources=[GraphStatus.RUNNING], counts=exact, reason=reason
    )
    if done is not None and on_graph_done is not None:
        on_graph_done(done)
    return GraphChange(done or get_graph(services, graph_id), changed)


# What a rerun job forgets of its previous run (its finished deps are counted again).
_CLEARED_ON_RERUN = [
    "error", "errors", "reason", "finished_at", "not_before", "lease_owner", "lease_expires_at",
    "released_by", "carried_finished", "carried_from", "finished_deps",
]  # fmt: skip


def downstream_of(store: JobStore, jobs: Mapping[str, JobRecord], name: str) -> list[str]:
    """``name`` and every job that depends on it, directly or not (breadth first)."""
    seen = {name: None}
    todo = deque([name])
    while todo:
        for dep in store.dependents(jobs[todo.popleft()]):
            if dep.child not in seen:
                seen[dep.child] = None
                todo.append(dep.child)
    return list(seen)


def _rerun_selection(
    store: JobStore, graph_id: str, jobs: Mapping[str, JobRecord], job: str, downstream: bool
) -> list[JobRecord]:
    """The jobs a rerun of ``job`` (and its downstream) moves back to waiting; raises
    ``GraphNotFound`` for an unknown job and ``RerunRefused`` while any of them runs."""
    if job not in jobs:
        raise GraphNotFound(f"graph {graph_id!r} has no job {job!r}: `overseer jobs {graph_id}` lists them")
    names = downstream_of(store, jobs, job) if downstream else [job]
    running = [n for n in names if jobs[n].status == JobStatus.RUNNING]
    if running:
        shown = ", ".join(repr(n) for n in running[:10]) + (" ..." if len(running) > 10 else "")
        raise RerunRefused(
            f"cannot rerun {job!r}{' with its downstream' if downstream else ''} in graph {graph_id!r}: "
            f"{len(running)} of those jobs {'is' if len(running) == 1 else 'are'} running ({shown}); "
            "wait for them to end (overseer status --watch), or cancel the graph, then rerun"
        )
    # A waiting job is waiting already; with the downstream, one released already waits again.
    movable = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.READY}
    return [jobs[n] for n in names if jobs[n].status in movable and (n != job or jobs[n].status.terminal)]


def rerun_graph(
    services: Services, graph_id: str, *, job: str | None = None, downstream: bool = False
) -> GraphChange:
    """Run the graph's failed and aborted jobs again; finished jobs are kept. With ``job``:
    run that job again, finished or not, and with ``downstream`` every job that depends on
    it; every other job keeps its status, attempts and artifacts.

    Each job taken back goes to waiting (``RERUN``, or ``RERUN_JOB`` for a job) with its
    error, reason, attempts, end time and counted deps cleared; then the finished
    dependencies of each are recorded and those whose deps have all finished are released,
    so the scheduler carries on as for a new graph. Every job is moved to waiting before
    any is released, so no job can finish before its dependents wait for it; a finished
    job taken back is also taken out of the finished deps of its waiting dependents.
    An ended graph goes back to running with its counters recomputed from the jobs; a
    running graph's counters are corrected by the jobs taken back (and by the counts the
    ones released already carried, see ``overseer.scheduler``). Raises ``GraphNotFound``,
    and ``RerunRefused`` when a job to rerun is running.
    """
    store = services.store
    # Ends of dependencies before this moment are counted here; the scheduler's records of
    # them release nothing of the jobs taken back (``rerun_at``).
    start = timeutil.iso()
    graph = get_graph(services, graph_id)
    jobs = {record.name: record for record in store.list_jobs(graph_id)}
    if job is None:
        transition = RERUN
        targets = [j for j in jobs.values() if j.status in (JobStatus.FAILED, JobStatus.ABORTED)]
    else:
        transition = RERUN_JOB
        targets = _rerun_selection(store, graph_id, jobs, job, downstream)
    if not targets:
        return GraphChange(graph, 0)

    def rerun(record: JobRecord) -> JobRecord | None:
        return store.transition(
            graph_id,
            record.name,
            transition,
            changes={"attempts": 0, "rerun_at": start},
            remove=_CLEARED_ON_RERUN,
        )

    moved = [
        (old, new)
        for old, new in zip(targets, in_parallel(rerun, targets, writers=writers_of(store)), strict=True)
        if new
    ]
    if not moved:
        return GraphChange(get_graph(services, graph_id), 0)

    # A job taken back from an end was counted (or is carried to be counted): uncount it. One
    # taken back from ready carried finished jobs upstream, to be counted at its end: count them now.
    taken_back: dict[str, int] = {}
    for old, _ in moved:
        status = old.status.value if old.status.terminal else JobStatus.FINISHED.value
        n = -1 if old.status.terminal else old.carried_finished
        taken_back[status] = taken_back.get(status, 0) + n
    if graph.status.terminal:
        counts = terminal_counts(j.status for j in jobs.values())
        for status, n in taken_back.items():
            counts[status] += n
        # A graph with a timeout gets it afresh: the rerun is a new run against the clock.
        deadline = timeutil.iso_in(graph.timeout_seconds) if graph.timeout_seconds else None
        reopened = store.set_graph_status(
            graph_id, GraphStatus.RUNNING, sources=_TERMINAL_GRAPH, counts=counts, deadline_at=deadline
        )
        if reopened is None:  # it was running again already (a concurrent rerun)
            store.add_graph_progress(graph_id, taken_back)
    else:
        store.add_graph_progress(graph_id, taken_back)

    moved_names = {old.name for old, _ in moved}
    finished = {n for n, j in jobs.items() if j.status == JobStatus.FINISHED and n not in moved_names}

    def satisfied(record: JobRecord, dep: str) -> bool:
        """Whether ``dep`` no longer holds ``record`` back: it finished and, unless it is the
        record's own parent, so did its expansion's tree (``overseer.expansion``)."""
        return dep in finished and (dep == record.parent or jobs[dep].tree_done)

    # The waiting jobs that counted a finished job now taken back forget it, and count their
    # other finished deps here (as the jobs taken back do).
    forget = [
        (dep.child, dep.index)
        for old, _ in moved
        if old.status == JobStatus.FINISHED
        for dep in store.dependents(old)
        if dep.count > 1 and dep.child not in moved_names and jobs[dep.child].status == JobStatus.WAITING
    ]
    in_parallel(
        lambda edge: store.forget_finished_dependency(graph_id, *edge, rerun_at=start),
        forget,
        writers=writers_of(store),
    )
    recount = [
        (name, index)
        for name in dict.fromkeys(name for name, _ in forget)
        for index, dep in enumerate(store.dependencies(jobs[name]))
        if satisfied(jobs[name], dep)
    ]
    in_parallel(
        lambda edge: store.record_finished_dependency(graph_id, *edge), recount, writers=writers_of(store)
    )

    def release_if_ready(record: JobRecord) -> bool:
        deps = store.dependencies(record)
        ended_badly = [
            jobs[dep] for dep in deps if dep not in moved_names and jobs[dep].status in _ENDED_BADLY
        ]
        if ended_badly:
            # A dep that failed and is not rerun: this job is aborted again, and its downstream.
            reason = upstream_reason(ended_badly[0])
            store.transition(graph_id, record.name, CASCADE_ABORT, changes={"reason": reason})
            return False
        done = [index for index, dep in enumerate(deps) if satisfied(record, dep)]
        counted = len(done)
        if len(deps) > 1:
            # Its counted deps were cleared: count the finished ones. The last writer (this
            # call or the scheduler, for a dep finishing now) sees the full count and releases.
            for index in done:
                counted = store.record_finished_dependency(graph_id, record.name, index) or 0
        if counted < len(deps):
            return False
        released = store.transition(
            graph_id, record.name, RELEASE, changes={"released_by": RELEASED_BY_RERUN}
        )
        return released is not None

    in_parallel(release_if_ready, [new for _, new in moved], writers=writers_of(store))
    return GraphChange(get_graph(services, graph_id), len(moved))
