"""Sweep: the Lambda that runs on a schedule, repairs what at-least-once delivery can lose
(expired leases, lost messages, late retries, stream batches the scheduler gave up on,
half-created graphs) and starts Batch workers for the queue depth."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.function_factory import FunctionFactory


class Sweep(Construct):
    """``functions.sweep.handler`` on an EventBridge schedule (default every minute).

    Attributes
    ----------
    function, rule:
        The sweep Lambda and its schedule rule.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        factory: FunctionFactory,
        schedule: str,
        stream_failures: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.build(
            self,
            "Function",
            handler="functions.sweep.handler",
            service="sweep",
            description="Overseer sweep: expired leases, lost messages, late retries, failed "
            "stream batches, half-created graphs, Batch workers for the queue depth",
            timeout_seconds=55,
        )
        # Stream batches the scheduler gave up on, replayed by the sweep.
        self.function.add_environment("OVERSEER_STREAM_FAILURES_QUEUE_URL", stream_failures.queue_url)
        # A failed or throttled sweep is not retried: a late sweep is worth nothing, the
        # next one comes on schedule.
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.minutes(2))
        self.rule = events.Rule(
            self,
            "Schedule",
            description="Runs the Overseer sweep",
            schedule=events.Schedule.expression(schedule),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )
