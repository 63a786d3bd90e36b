"""``functions.sweep.handler``: runs on an EventBridge schedule (every minute).

Accepts any event (the scheduled event's content is not used). Runs the engine's sweep
(``overseer.sweep``), whose steps go in this order, each isolated from the others:
read the queue depth, start Batch workers for it (``overseer.backends.aws.scaling``, when
``OVERSEER_BATCH_JOB_QUEUE`` and ``OVERSEER_BATCH_JOB_DEFINITION`` are set), repair
what the sweep's indexes name (expired leases, where a worker whose Batch job lost its
host to a Spot reclaim keeps the job's attempt; lost and late messages; graphs whose
counters say every job ended), at most a bounded amount per invocation (the rest in the
next; ``StoppedEarly`` = 1 then), replay the stream batches the scheduler gave up on (read
again from the jobs stream; the queue is ``OVERSEER_STREAM_FAILURES_QUEUE_URL``, wired by
``overseer.backends.build_services``), roll back graphs left ``creating``, then fail the
dead-lettered jobs. Only one sweep runs at a time (a lease item in the graphs table): an
invocation that finds it held returns ``{"lease_held_elsewhere": 1, ...}`` at once.

Every counter of the report is an EMF metric (QueueDepth, WorkersStarted, LeasesExpired,
HostsReclaimed, StreamBatchesReplayed, StreamBatchesPastRetention, CreatingGraphsRolledBack,
LeaseHeldElsewhere, GraphsPastDeadline, ...). A step that raised is logged with its name and counted as
``SweepStepFailed`` (dimension ``Step``); once every step has run, the invocation fails
with ``SweepFailed`` naming the failed steps, so the function's Errors metric and alarm
see it (the schedule's invocations are not retried). Otherwise it returns the counters,
e.g. ``{"queue_depth": n, "workers_started": m, ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import Lazy, publish_graph_done
from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.scaling import host_terminations, scale_pool
from overseer.pools import Pools
from overseer.sweep import sweep

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Overseer")

_services = Lazy(build_services)
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
    on_batch = bool(settings.batch_job_queue and settings.batch_job_definition)

    pools = Pools.from_settings(settings)

    def scale(pool: str, depth: int) -> tuple[int, int]:
        return scale_pool(_batch.get(), pools[pool], depth)

    def hosts_lost(job_ids: Sequence[str]) -> dict[str, str]:
        return host_terminations(_batch.get(), job_ids)

    report = sweep(
        services,
        on_graph_done=lambda record: publish_graph_done(_events.get(), settings.event_bus, record, logger),
        scale=scale if on_batch else None,
        host_terminations=hosts_lost if on_batch else None,
    )
    counts = report.counts()
    for name, value in counts.items():
        metrics.add_metric(name=name.title().replace("_", ""), unit=MetricUnit.Count, value=value)
    # Per worker pool, for the dashboard: its queue's depth and its active workers.
    for per_pool, metric_name in (
        (report.queue_depths, "QueueDepth"),
        (report.workers_active, "WorkersRunning"),
    ):
        for pool, value in per_pool.items():
            with single_metric(
                name=metric_name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace
            ) as metric:
                metric.add_dimension(name="Pool", value=pool)
    # Per concurrency limit: jobs holding it (running) and waiting for it.
    for limit, numbers in report.limits.items():
        for metric_name, key in (("LimitRunning", "running"), ("LimitWaiting", "waiting")):
            value = numbers[key]
            with single_metric(
                name=metric_name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace
            ) as metric:
                metric.add_dimension(name="Limit", value=limit)
    for step, exc in report.failures.items():
        logger.error("sweep step %s failed", step, exc_info=exc, extra={"step": step})
        with single_metric(
            name="SweepStepFailed", unit=MetricUnit.Count, value=1, namespace=metrics.namespace
        ) as metric:
            metric.add_dimension(name="Step", value=step)
    summary = {
        **counts,
        "queue_depths": report.queue_depths,
        "workers_active": report.workers_active,
        "limits": report.limits,
        "failed_steps": list(report.failures),
    }
    logger.info("sweep done", extra=summary)
    report.raise_if_failed()
    return summary
