"""Triggers: EventBridge rules from the ``triggers`` context that start named graph templates."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import Trigger
from infra.function_factory import FunctionFactory

# EventBridge allows at most 5 targets per rule; a trigger with more argument sets gets
# several rules with the same schedule or pattern.
TARGETS_PER_RULE = 5


def trigger_input(trigger: Trigger, args: dict) -> events.RuleTargetInput:
    """What the trigger function receives: the template, its args and the event envelope.

    ``{"template": NAME, "args": {...}, "event": {"id", "time", "source", "detail-type",
    "detail"}}``. ``event.time`` (the scheduled time for a cron rule) lets the function
    derive a deterministic graph id, so a redelivered event creates the graph once; with
    ``eventArgs`` and ``graphIdFrom`` (``functions.trigger.event_data``) it reads the
    event's data into the args and ends each graph id with the event's id (or an arg).
    """
    carried: dict[str, object] = {}
    if trigger.event_args:
        carried["eventArgs"] = dict(trigger.event_args)
    if trigger.graph_id_from:
        carried["graphIdFrom"] = trigger.graph_id_from
    return events.RuleTargetInput.from_object(
        {
            "template": trigger.template,
            "args": args,
            "trigger": trigger.name,
            **carried,
            "event": {
                "id": events.EventField.event_id,
                "time": events.EventField.time,
                "source": events.EventField.source,
                "detail-type": events.EventField.detail_type,
                "detail": events.EventField.from_path("$.detail"),
            },
        }
    )


def _construct_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name.title()) or "Trigger"


class Triggers(Construct):
    """``functions.trigger.handler`` and one rule per configured trigger (or per 5 argument
    sets). A cron trigger fires on its schedule; an event-pattern trigger on matching events
    of the account's default bus. Events that cannot be delivered after retries, and those
    the function failed on three times, go to ``dead_letter_queue``.

    Attributes
    ----------
    function:
        The trigger Lambda.
    rules:
        Trigger name -> its rules.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        factory: FunctionFactory,
        triggers: Sequence[Trigger],
        dead_letter_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.build(
            self,
            "Function",
            handler="functions.trigger.handler",
            service="trigger",
            description="Overseer trigger: starts a graph template from an EventBridge rule",
        )
        # EventBridge invokes asynchronously: its retries and DLQ cover failed deliveries,
        # these cover the function failing (Lambda retries twice, then the event with the
        # error goes to the same queue).
        self.function.configure_async_invoke(
            retry_attempts=2,
            max_event_age=Duration.hours(6),
            on_failure=destinations.SqsDestination(dead_letter_queue),
        )
        self.rules: dict[str, list[events.Rule]] = {}
        for trigger in triggers:
            base = _construct_name(trigger.name)
            rules = []
            for start in range(0, len(trigger.args), TARGETS_PER_RULE):
                chunk = trigger.args[start : start + TARGETS_PER_RULE]
                suffix = "" if start == 0 else str(start // TARGETS_PER_RULE + 1)
                rule = events.Rule(
                    self,
                    f"{base}{suffix}",
                    description=(
                        trigger.description
                        or f"Overseer trigger {trigger.name}: starts template {trigger.template}"
                    )[:512],
                    schedule=(events.Schedule.expression(trigger.schedule) if trigger.schedule else None),
                    event_pattern=(_event_pattern(trigger.event_pattern) if trigger.event_pattern else None),
                )
                for args in chunk:
                    rule.add_target(
                        targets.LambdaFunction(
                            self.function,
                            event=trigger_input(trigger, dict(args)),
                            retry_attempts=4,
                            max_event_age=Duration.hours(6),
                            dead_letter_queue=dead_letter_queue,
                        )
                    )
                rules.append(rule)
            self.rules[trigger.name] = rules


_PATTERN_KEYS = {
    "source": "source",
    "detail-type": "detail_type",
    "detail": "detail",
    "account": "account",
    "region": "region",
    "resources": "resources",
    "id": "id",
    "version": "version",
    "time": "time",
}


def _event_pattern(pattern: dict) -> events.EventPattern:
    unknown = set(pattern) - set(_PATTERN_KEYS)
    if unknown:
        raise ValueError(f"eventPattern: unknown top-level keys {sorted(unknown)}")
    return events.EventPattern(**{_PATTERN_KEYS[k]: v for k, v in pattern.items()})
