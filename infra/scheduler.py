"""Scheduler: the Lambda on the jobs table's stream, with a filter that passes only the
records it acts on."""

from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.function_factory import FunctionFactory
from overseer.stream import STREAM_FILTER_PATTERNS


def stream_filters() -> list[dict]:
    """The event source mapping filters (a record passing any one is delivered): job items
    (entry ``job#...``), inserted or modified, that ended (finished, failed, aborted) or
    became ready other than by the scheduler's own release (it enqueues those itself).

    They are the engine's own ``STREAM_FILTER_PATTERNS``, so the filters and the scheduler
    code cannot drift apart.
    """
    return [{"pattern": json.dumps(pattern)} for pattern in STREAM_FILTER_PATTERNS]


class Scheduler(Construct):
    """``functions.scheduler.handler`` on the jobs stream.

    Batches of up to 100 records; a failing batch is split in two until the bad record is
    isolated (bisect on error), retried at most ``RETRY_ATTEMPTS`` times, then sent to
    ``on_failure_queue`` so the shard does not stall. The sweep reads the batch again from
    the stream and replays it (``overseer.sweep``).

    Attributes
    ----------
    function:
        The scheduler Lambda.
    """

    BATCH_SIZE = 100
    RETRY_ATTEMPTS = 5

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        factory: FunctionFactory,
        jobs_table: dynamodb.ITable,
        on_failure_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.build(
            self,
            "Function",
            handler="functions.scheduler.handler",
            service="scheduler",
            description="Overseer scheduler: releases dependents, enqueues ready jobs, "
            "cascades aborts, counts graph progress",
            timeout_seconds=120,
            memory_size=1024,
        )
        self.function.add_event_source(
            sources.DynamoEventSource(
                jobs_table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=self.BATCH_SIZE,
                max_batching_window=Duration.seconds(1),
                bisect_batch_on_error=True,
                retry_attempts=self.RETRY_ATTEMPTS,
                max_record_age=Duration.hours(6),
                on_failure=sources.SqsDlq(on_failure_queue),
                filters=stream_filters(),
            )
        )
