"""Sweep: the Lambda that runs on a schedule, repairs what at-least-once delivery can lose
(expired leases, lost messages, late retries) and starts Batch workers for the queue depth."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
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
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.build(
            self,
            "Function",
            handler="functions.sweep.handler",
            service="sweep",
            description="Overseer sweep: expired leases, lost messages, late retries, "
            "Batch workers for the queue depth",
            timeout_seconds=55,
        )
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
