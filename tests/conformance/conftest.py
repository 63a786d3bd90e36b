"""One fixture, two backend sets: ``embedded`` (SQLite + a directory) and ``aws`` (the AWS
adapters on the emulator). Every test taking ``backend`` runs on both."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from overseer.config import Settings
from overseer.store import JobMessage

from .driver import SETTINGS, Backend


def embedded_backend(directory: Path, **overrides: object) -> Backend:
    from overseer.embedded import embedded_services, feed_reader

    settings = Settings(artifact_bucket="artifacts", allowed_buckets=("extra",), **{**SETTINGS, **overrides})  # type: ignore[arg-type]
    services = embedded_services(directory, settings)

    def dead_letters() -> list[JobMessage]:
        return [d["message"] for d in services.queue.dead_letters()]  # type: ignore[attr-defined]

    return Backend(
        "embedded",
        settings,
        services,
        feed_reader(directory),
        lambda: feed_reader(directory, name=f"r{uuid.uuid4().hex[:6]}"),
        dead_letters,
    )


def aws_backend() -> Backend:
    from overseer.aws import clients
    from overseer.aws.resources import stream_arn
    from overseer.aws.stream import StreamReader
    from tests.support import LocalStack

    name = f"c{uuid.uuid4().hex[:10]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        allowed_buckets=(f"{name}-extra",),
        **SETTINGS,  # type: ignore[arg-type]
    )
    stack = LocalStack.provisioned(settings)
    sqs = clients.client("sqs")

    def dead_letters() -> list[JobMessage]:
        out = []
        while True:
            got = sqs.receive_message(
                QueueUrl=stack.settings.dead_letter_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return out
            for raw in got:
                out.append(JobMessage.from_json(raw["Body"]))
                sqs.delete_message(
                    QueueUrl=stack.settings.dead_letter_queue_url, ReceiptHandle=raw["ReceiptHandle"]
                )

    return Backend(
        "aws",
        stack.settings,
        stack.services,
        stack.reader,
        lambda: StreamReader(clients.client("dynamodbstreams"), stream_arn(stack.settings)),
        dead_letters,
    )


@pytest.fixture(params=["embedded", pytest.param("aws", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "aws":
        request.getfixturevalue("aws_env")
        yield aws_backend()
    else:
        yield embedded_backend(tmp_path / "stack")


def plain(image: dict[str, object]) -> dict[str, object]:
    """A DynamoDB-JSON image as plain values (for comparing backends)."""
    from boto3.dynamodb.types import TypeDeserializer

    d = TypeDeserializer()
    return json.loads(json.dumps({k: d.deserialize(v) for k, v in image.items()}, default=_default))


def _default(value: object) -> object:
    if isinstance(value, set):
        return sorted(value)  # type: ignore[type-var]
    return int(value) if str(value).lstrip("-").isdigit() else float(value)  # type: ignore[arg-type]
