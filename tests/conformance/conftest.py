"""One fixture, two backend sets: ``embedded`` (SQLite + a directory) and ``aws`` (the AWS
adapters on the emulator). Every test taking ``backend`` runs on both."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from overseer.config import Settings
from overseer.store import JobMessage
from tests.support import give_up_on_batch

from .driver import SETTINGS, Backend, Interrupted

WRITES = frozenset({"PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})


@contextlib.contextmanager
def _interrupt_embedded(store: Any, at: int) -> Iterator[None]:
    """The ``at``-th item written by ``store`` (graph or job) raises instead."""
    count = 0
    originals = {name: getattr(store, name) for name in ("_put", "_put_graph")}

    def counting(name: str) -> Any:
        def write(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            if count == at:
                raise Interrupted(f"write {at} ({name})")
            return originals[name](*args, **kwargs)

        return write

    for name in originals:
        setattr(store, name, counting(name))
    try:
        yield
    finally:
        for name in originals:
            delattr(store, name)


@contextlib.contextmanager
def _interrupt_aws(store: Any, at: int) -> Iterator[None]:
    """The ``at``-th write request of ``store``'s DynamoDB clients raises before it is sent."""
    count = 0

    def before_call(model: Any, **_: Any) -> None:
        nonlocal count
        if model.name in WRITES:
            count += 1
            if count == at:
                raise Interrupted(f"write {at} ({model.name})")

    clients = {id(c): c for c in (m._get_connection().connection.client for m in (store.Graph, store.Job))}
    for client in clients.values():
        client.meta.events.register("before-call.dynamodb", before_call, unique_id="interrupt")
    try:
        yield
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-call.dynamodb", unique_id="interrupt")


def embedded_backend(directory: Path, **overrides: object) -> Backend:
    from overseer.backends.embedded import embedded_services, feed_reader

    settings = Settings(artifact_bucket="artifacts", allowed_buckets=("extra",), **{**SETTINGS, **overrides})  # type: ignore[arg-type]
    services = embedded_services(directory, settings)

    def dead_letters() -> list[JobMessage]:
        dlq = services.dead_letters
        assert dlq is not None
        got = dlq.receive(max_messages=10, wait_seconds=0)
        dlq.delete([d.receipt for d in got])
        return [d.message for d in got]

    reader = feed_reader(directory)
    return Backend(
        "embedded",
        settings,
        services,
        reader,
        dead_letters,
        give_up=lambda records: reader.give_up(records, "the test's scheduler gave up"),
        interrupt_writes=lambda at: _interrupt_embedded(services.store, at),
    )


@dataclass
class SharedAwsStack:
    """One provisioned stack for the session: provisioning costs seconds on the emulator."""

    settings: Settings
    services: Any
    sqs: Any
    streams: Any
    count: int = 0
    # Where the stream has been read up to: each test's reader starts there, so a test reads
    # only the records written since (the stream holds every earlier test's records).
    stream_end: Any = None


def _drained_reader(shared: SharedAwsStack) -> Any:
    """A stream reader positioned after every record written so far."""
    from overseer.backends.aws.resources import stream_arn
    from overseer.backends.aws.stream import StreamReader

    if shared.stream_end is None:
        shared.stream_end = StreamReader(shared.streams, stream_arn(shared.settings))
    end = shared.stream_end
    end._discover()  # any shard not met yet, from its start
    for shard, iterator in list(end.iterators.items()):
        while iterator is not None:
            response = end.client.get_records(ShardIterator=iterator, Limit=1000)
            end.iterators[shard] = iterator = response.get("NextShardIterator")
            if not response.get("Records"):
                break
    reader = StreamReader(shared.streams, end.stream_arn)
    reader.iterators = dict(end.iterators)
    return reader


def aws_backend(shared: SharedAwsStack) -> Backend:
    shared.count += 1
    settings = shared.settings
    from overseer.backends.aws.queue import SqsDispatchQueue
    from overseer.backends.aws.resources import MAX_RECEIVE_COUNT, create_priority_queues
    from overseer.backends.aws.stream import StreamFailureQueue
    from overseer.priority import by_priority
    from overseer.store import Services

    # A fresh queue and dead-letter queue per test (cheap), with the stack's redrive policy.
    sqs = shared.sqs
    base = f"{settings.jobs_table}-{shared.count:03d}"
    dlq_url = sqs.create_queue(QueueName=f"{base}-dead-letter")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=f"{base}-dispatch",
        Attributes={
            "VisibilityTimeout": str(settings.lease_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    high_url, low_url = create_priority_queues(sqs, base, dlq_url, settings.lease_seconds)
    settings = settings.with_(
        queue_url=queue_url, dead_letter_queue_url=dlq_url, high_queue_url=high_url, low_queue_url=low_url
    )
    failures_url = sqs.create_queue(QueueName=f"{base}-stream-failures")["QueueUrl"]
    settings = settings.with_(stream_failures_queue_url=failures_url)
    base_services = shared.services
    services = Services(
        settings=settings,
        store=base_services.store,
        queue=by_priority(
            {
                "high": SqsDispatchQueue(sqs, high_url),
                "normal": SqsDispatchQueue(sqs, queue_url),
                "low": SqsDispatchQueue(sqs, low_url),
            }
        ),
        artifacts=base_services.artifacts,
        rows=base_services.rows,
        stream_failures=StreamFailureQueue(sqs, failures_url, shared.streams),
    )

    def dead_letters() -> list[JobMessage]:
        out = []
        while True:
            got = sqs.receive_message(
                QueueUrl=settings.dead_letter_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not got:
                return out
            for raw in got:
                out.append(JobMessage.from_json(raw["Body"]))
                sqs.delete_message(
                    QueueUrl=settings.dead_letter_queue_url, ReceiptHandle=raw["ReceiptHandle"]
                )

    reader = _drained_reader(shared)

    def give_up(records: list[dict[str, Any]]) -> None:
        give_up_on_batch(sqs, failures_url, shared.streams, records)

    return Backend(
        "aws",
        settings,
        services,
        reader,
        dead_letters,
        give_up=give_up,
        interrupt_writes=lambda at: _interrupt_aws(services.store, at),
        namespace=f"t{shared.count:03d}-",
    )


@pytest.fixture(scope="session")
def aws_shared(aws_env: dict[str, str]) -> SharedAwsStack:
    from overseer.backends import build_services
    from overseer.backends.aws.resources import provision

    name = f"c{uuid.uuid4().hex[:10]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        allowed_buckets=(f"{name}-extra",),
        **SETTINGS,  # type: ignore[arg-type]
    )
    configured = provision(settings)
    from overseer.backends.aws import clients

    services = build_services(configured)
    return SharedAwsStack(configured, services, clients.client("sqs"), clients.client("dynamodbstreams"))


@pytest.fixture(params=["embedded", pytest.param("aws", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "aws":
        yield aws_backend(request.getfixturevalue("aws_shared"))
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
