"""Creating the stack's tables, queues and bucket on an endpoint (the emulator, LocalStack).

The CDK stack in infra/ declares the same resources for AWS; keep the two in step.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import Any

from pynamodb.exceptions import TableError

from ...config import Settings
from ...items import EXPIRES_AT
from ...pools import Pools
from . import clients
from .jobstore import DynamoJobStore

# Messages received this often without being deleted go to the dead-letter queue.
MAX_RECEIVE_COUNT = 10


def provision(settings: Settings) -> Settings:
    """Create whatever is missing; returns settings with the queue URLs filled in."""
    store = DynamoJobStore(settings.graphs_table, settings.jobs_table)
    # The models' Meta ask for on-demand billing and, on the jobs table, a NEW_AND_OLD_IMAGES stream.
    for model in (store.Graph, store.Job):
        try:
            model.create_table(wait=True)
        except TableError as exc:
            if getattr(exc, "cause_response_code", None) != "ResourceInUseException":
                raise
    enable_time_to_live(clients.client("dynamodb"), (settings.graphs_table, settings.jobs_table))
    sqs = clients.client("sqs")
    queue_url, dlq_url = create_queues(sqs, settings.jobs_table, settings.lease_seconds)
    high_url, low_url = create_priority_queues(sqs, settings.jobs_table, dlq_url, settings.lease_seconds)
    # The scheduler's on-failure destination (Lambda's, on AWS): read by the sweep.
    failures_url = sqs.create_queue(QueueName=f"{settings.jobs_table}-stream-failures")["QueueUrl"]
    s3 = clients.client("s3")
    region = s3.meta.region_name
    # Outside us-east-1, S3 wants the bucket's region named.
    where = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region != "us-east-1" else {}
    for bucket in {settings.artifact_bucket, *settings.allowed_buckets}:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket, **where)
    # Every other worker pool's queues (overseer.pools), named after the pool.
    pools = Pools.from_settings(settings)
    provisioned = dict(pools.pools)
    for name in pools.names[1:]:
        base = f"{settings.jobs_table}-{name}"
        pool_queue, pool_dlq = create_queues(sqs, base, settings.lease_seconds)
        pool_high, pool_low = create_priority_queues(sqs, base, pool_dlq, settings.lease_seconds)
        provisioned[name] = replace(
            pools[name],
            queue_url=pool_queue,
            dead_letter_queue_url=pool_dlq,
            high_queue_url=pool_high,
            low_queue_url=pool_low,
        )
    pools = replace(pools, pools=provisioned)
    return settings.with_(
        queue_url=queue_url,
        dead_letter_queue_url=dlq_url,
        high_queue_url=high_url,
        low_queue_url=low_url,
        stream_failures_queue_url=failures_url,
        pools=pools.to_json() if settings.pools else "",
    )


def enable_time_to_live(ddb: Any, tables: tuple[str, ...]) -> None:
    """Turn on each table's time to live on ``expires_at`` (as the stack's tables have it), so
    that ended graphs and jobs expire (``overseer.items.expires_at``)."""
    for table in tables:
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            continue
        ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRES_AT}
        )


def create_queues(sqs: Any, base: str, visibility_seconds: int) -> tuple[str, str]:
    """The dispatch queue ``<base>-dispatch`` and its dead-letter queue; returns their URLs."""
    dlq_url = sqs.create_queue(QueueName=f"{base}-dead-letter")["QueueUrl"]
    return _dispatch_queue(sqs, f"{base}-dispatch", dlq_url, visibility_seconds), dlq_url


def create_priority_queues(sqs: Any, base: str, dlq_url: str, visibility_seconds: int) -> tuple[str, str]:
    """The queues of high- and low-priority jobs (``overseer.priority``), dead-lettering into
    ``dlq_url``; returns their URLs."""
    high = _dispatch_queue(sqs, f"{base}-dispatch-high", dlq_url, visibility_seconds)
    low = _dispatch_queue(sqs, f"{base}-dispatch-low", dlq_url, visibility_seconds)
    return high, low


def _dispatch_queue(sqs: Any, name: str, dlq_url: str, visibility_seconds: int) -> str:
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url: str = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    return url


def stream_arn(settings: Settings) -> str:
    ddb = clients.client("dynamodb")
    arn: str = ddb.describe_table(TableName=settings.jobs_table)["Table"]["LatestStreamArn"]
    return arn
