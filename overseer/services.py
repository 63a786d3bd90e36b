"""Wiring: the store, queue and artifact store a process uses, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .store import ArtifactStore, DispatchQueue, JobStore, RowSink


@dataclass
class Services:
    settings: Settings
    store: JobStore
    queue: DispatchQueue
    artifacts: ArtifactStore
    rows: RowSink | None = None
    dead_letters: DispatchQueue | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """The adapters ``settings.backend`` names: AWS (configured by ``settings`` and the
        standard AWS configuration) or embedded (SQLite and files in ``settings.state_dir``)."""
        if settings.backend == "embedded":
            from pathlib import Path

            from .embedded import embedded_services

            return embedded_services(Path(settings.state_dir or ".overseer"), settings)
        from .aws import clients
        from .aws.jobstore import DynamoJobStore
        from .aws.queue import SqsDispatchQueue
        from .aws.s3 import DynamoRowSink, S3ArtifactStore

        store = DynamoJobStore(settings.graphs_table, settings.jobs_table)
        for model in (store.Graph, store.Job):  # PynamoDB builds its own botocore clients
            clients.instrument(model._get_connection().connection.client)
        return cls(
            settings=settings,
            store=store,
            queue=SqsDispatchQueue(clients.client("sqs"), settings.queue_url),
            artifacts=S3ArtifactStore(clients.client("s3")),
            rows=DynamoRowSink(clients.resource("dynamodb")),
            dead_letters=SqsDispatchQueue(clients.client("sqs"), settings.dead_letter_queue_url)
            if settings.dead_letter_queue_url
            else None,
        )

    @classmethod
    def from_env(cls) -> Services:
        return cls.from_settings(Settings.from_env())
