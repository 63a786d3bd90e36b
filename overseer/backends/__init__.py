"""The backends, and the composition root: the one place that builds the store, queue and
artifact store a process runs on (``build_services``), once at start-up.

``aws``: DynamoDB (+ its stream), SQS, S3. ``embedded``: SQLite and a directory. The core
(scheduler, sweep, worker, operations) sees only the ports of ``overseer.store``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DEFAULT_STATE_DIR, Settings
from ..pools import Pools
from ..priority import by_priority
from ..store import Services


def build_services(settings: Settings | None = None) -> Services:
    """The adapters ``settings.backend`` names (default: ``Settings.from_env()``): AWS
    (configured by ``settings`` and the standard AWS configuration) or embedded (SQLite
    and files in ``settings.state_dir``)."""
    settings = settings or Settings.from_env()
    if settings.backend == "embedded":
        from .embedded import embedded_services

        return embedded_services(Path(settings.state_dir or DEFAULT_STATE_DIR), settings)
    from .aws import clients
    from .aws.jobstore import DynamoJobStore
    from .aws.logs import CloudWatchJobLogs
    from .aws.queue import SqsDispatchQueue
    from .aws.s3 import DynamoRowSink, S3ArtifactStore
    from .aws.stream import StreamFailureQueue

    store = DynamoJobStore(settings.graphs_table, settings.jobs_table, retention_days=settings.retention_days)
    for model in (store.Graph, store.Job):  # PynamoDB builds its own botocore clients
        clients.instrument(model._get_connection().connection.client)
    pools = Pools.from_settings(settings)
    if settings.pool not in pools:
        raise ValueError(f"this process's pool {settings.pool!r} is not among the pools {pools.names}")
    sqs = clients.client("sqs")
    queues = {
        name: by_priority(
            {
                priority: SqsDispatchQueue(sqs, url)
                for priority, url in (
                    ("high", pool.high_queue_url),
                    ("normal", pool.queue_url),
                    ("low", pool.low_queue_url),
                )
                if url or priority == "normal"
            }
        )
        for name, pool in pools.pools.items()
    }
    dead_letters = {
        name: SqsDispatchQueue(sqs, pool.dead_letter_queue_url)
        for name, pool in pools.pools.items()
        if pool.dead_letter_queue_url
    }
    return Services(
        settings=settings,
        store=store,
        queue=queues[settings.pool],
        artifacts=S3ArtifactStore(clients.client("s3")),
        rows=DynamoRowSink(clients.resource("dynamodb")),
        logs=CloudWatchJobLogs(lambda: clients.client("logs"), settings.worker_log_group),
        dead_letters=dead_letters.get(settings.pool),
        pool_queues=queues,
        pool_dead_letters=dead_letters,
        stream_failures=StreamFailureQueue(
            clients.client("sqs"), settings.stream_failures_queue_url, clients.client("dynamodbstreams")
        )
        if settings.stream_failures_queue_url
        else None,
    )
