"""``functions.sweep.handler``: runs on an EventBridge schedule (every minute).

Accepts any event (the scheduled event's content is not used). Starts Batch workers
for the queued work (``overseer.aws.scaling``) when ``OVERSEER_BATCH_JOB_QUEUE`` and
``OVERSEER_BATCH_JOB_DEFINITION`` are set, and returns
``{"queue_depth": n, "workers_started": m}`` (also the EMF metrics QueueDepth and
WorkersStarted).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import Lazy, publish_graph_done
from overseer.aws import clients
from overseer.aws.scaling import scale_batch_workers
from overseer.services import Services
from overseer.sweep import sweep

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Overseer")

_services = Lazy(Services.from_env)
_batch = Lazy(lambda: clients.client("batch"))
_events = Lazy(lambda: clients.client("events"))


def reset() -> None:
    """Forget the clients built at cold start (tests use a fresh environment)."""
    _services.reset()
    _batch.reset()
    _events.reset()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    services = _services.get()
    settings = services.settings
    repaired = sweep(
        services,
        on_graph_done=lambda record: publish_graph_done(_events.get(), settings.event_bus, record, logger),
    )
    depth = repaired.queue_depth
    started = 0
    if settings.batch_job_queue and settings.batch_job_definition:
        started = scale_batch_workers(_batch.get(), services.queue, settings, queue_depth=depth)
    metrics.add_metric(name="QueueDepth", unit=MetricUnit.Count, value=depth)
    metrics.add_metric(name="WorkersStarted", unit=MetricUnit.Count, value=started)
    for name in (
        "leases_expired",
        "jobs_failed",
        "late_retries_sent",
        "lost_messages_resent",
        "dead_letters",
        "graphs_ended",
    ):
        metrics.add_metric(
            name=name.title().replace("_", ""), unit=MetricUnit.Count, value=getattr(repaired, name)
        )
    summary = {**vars(repaired), "workers_started": started}
    logger.info("sweep done", extra=summary)
    return summary
