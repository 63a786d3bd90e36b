"""``functions.scheduler.handler``: the jobs table's stream -> ``Scheduler.process_stream_event``.

Accepts the DynamoDB stream event Lambda delivers (``{"Records": [...]}``, NEW_AND_OLD
images, filtered by ``overseer.scheduler.STREAM_FILTER_PATTERN``). Returns the report,
e.g. ``{"records": 3, "changes": 3, "enqueued": 2, "released": 2, "aborted": 0,
"graphs_done": []}``, and emits the EMF metrics Enqueued, Released, Aborted, GraphsDone.
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
from overseer.aws import clients
from overseer.aws.events import EventBridgePublisher
from overseer.scheduler import Scheduler
from overseer.services import Services
from overseer.store import GraphRecord

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Overseer")


def _announce(publisher: EventBridgePublisher) -> Callable[[GraphRecord], None]:
    def graph_done(record: GraphRecord) -> None:
        # The graph's outcome is already stored: failing the batch would not publish the
        # event again (the retry finds the graph ended), so log it and count it instead.
        try:
            publisher.graph_done(record)
        except Exception:
            logger.exception("could not publish the end of graph %s", record.graph_id)
            metrics.add_metric(name="GraphEventsFailed", unit=MetricUnit.Count, value=1)

    return graph_done


def _build_scheduler() -> Scheduler:
    services = Services.from_env()
    bus = services.settings.event_bus
    on_graph_done = _announce(EventBridgePublisher(clients.client("events"), bus)) if bus else None
    return Scheduler(services.store, services.queue, on_graph_done=on_graph_done)


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
    summary = dataclasses.asdict(report)
    logger.info("stream batch applied", extra=summary)
    return summary
