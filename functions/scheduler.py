"""``functions.scheduler.handler``: the jobs table's stream -> ``Scheduler.process_stream_event``.

Accepts the DynamoDB stream event Lambda delivers (``{"Records": [...]}``, NEW_AND_OLD
images, filtered by ``overseer.stream.STREAM_FILTER_PATTERNS``). Returns the report,
e.g. ``{"records": 3, "changes": 3, "enqueued": 2, "released": 2, "aborted": 0,
"graphs_done": []}``, and emits the EMF metrics Enqueued, Released, Aborted, GraphsDone,
GraphsFinished / GraphsFailed / GraphsAborted, and JobsFinished / JobsFailed / JobsAborted
in total and, with a ``JobType`` dimension, per job type together with JobDuration
(seconds from a job's start to its end; the dashboard shows its percentiles).
A store error is raised, so Lambda retries the batch (every step is idempotent).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import Lazy
from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.events import EventBridgePublisher
from overseer.scheduler import Scheduler
from overseer.store import GraphRecord

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Overseer")


JOB_METRICS = {"finished": "JobsFinished", "failed": "JobsFailed", "aborted": "JobsAborted"}
# Most job types given their own metrics per batch (each is one EMF document).
MAX_JOB_TYPES_PER_BATCH = 50


def _count_graph(record: GraphRecord) -> None:
    metrics.add_metric(name=f"Graphs{str(record.status).title()}", unit=MetricUnit.Count, value=1)


def emit_job_metrics(terminal: list[tuple[str, str, float | None]], namespace: str | None = None) -> None:
    """Per job type: JobsFinished / JobsFailed / JobsAborted and JobDuration, with a
    ``JobType`` dimension (one EMF document per type); totals without it."""
    from aws_lambda_powertools.metrics import EphemeralMetrics

    by_type: dict[str, list[tuple[str, float | None]]] = {}
    for job_type, status, seconds in terminal:
        by_type.setdefault(job_type, []).append((status, seconds))
    totals = {name: 0 for name in JOB_METRICS.values()}
    for status, _seconds in (item for items in by_type.values() for item in items):
        if status in JOB_METRICS:
            totals[JOB_METRICS[status]] += 1
    for name, value in totals.items():
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for job_type in sorted(by_type)[:MAX_JOB_TYPES_PER_BATCH]:
        per_type = EphemeralMetrics(namespace=namespace or metrics.namespace)
        per_type.add_dimension(name="JobType", value=job_type[:250] or "-")
        counts = {name: 0 for name in JOB_METRICS.values()}
        for status, seconds in by_type[job_type]:
            if status in JOB_METRICS:
                counts[JOB_METRICS[status]] += 1
            if seconds is not None and status == "finished":
                per_type.add_metric(name="JobDuration", unit=MetricUnit.Seconds, value=max(0.0, seconds))
        for name, value in counts.items():
            per_type.add_metric(name=name, unit=MetricUnit.Count, value=value)
        per_type.flush_metrics()


def _announce(publisher: EventBridgePublisher) -> Callable[[GraphRecord], None]:
    def graph_done(record: GraphRecord) -> None:
        _count_graph(record)
        # The graph's outcome is already stored: failing the batch would not publish the
        # event again (the retry finds the graph ended), so log it and count it instead.
        try:
            publisher.graph_done(record)
        except Exception:
            logger.exception("could not publish the end of graph %s", record.graph_id)
            metrics.add_metric(name="GraphEventsFailed", unit=MetricUnit.Count, value=1)

    return graph_done


def _build_scheduler() -> Scheduler:
    services = build_services()
    bus = services.settings.event_bus
    on_graph_done = _announce(EventBridgePublisher(clients.client("events"), bus)) if bus else _count_graph
    return Scheduler.for_services(services, on_graph_done)


_scheduler = Lazy(_build_scheduler)


def reset() -> None:
    """Forget the clients built at cold start (tests use a fresh environment)."""
    _scheduler.reset()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = _scheduler.get().process_stream_event(event)
    metrics.add_metric(name="Enqueued", unit=MetricUnit.Count, value=report.enqueued)
    metrics.add_metric(name="Released", unit=MetricUnit.Count, value=report.released)
    metrics.add_metric(name="Aborted", unit=MetricUnit.Count, value=report.aborted)
    metrics.add_metric(name="GraphsDone", unit=MetricUnit.Count, value=len(report.graphs_done))
    emit_job_metrics(report.terminal)
    summary = dataclasses.asdict(report)
    logger.info("stream batch applied", extra=summary)
    return summary
