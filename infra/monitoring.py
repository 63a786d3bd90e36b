"""Monitoring: one CloudWatch dashboard and the alarms that say something is stuck."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct


class Monitoring(Construct):
    """Dashboard: queue depth, age of the oldest ready job, dead-letter and delivery-failure
    depth, Lambda invocations / errors / duration, the scheduler's stream iterator age.
    Alarms: anything in the dead-letter queue or the delivery-failure queue, scheduler
    errors, a scheduler falling behind the stream, ready jobs waiting over an hour.

    Attributes
    ----------
    dashboard:
        The dashboard.
    alarms:
        Name -> alarm (no actions: attach an SNS topic with ``alarm.add_alarm_action``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        delivery_failures: sqs.IQueue,
        functions: Mapping[str, lambda_.IFunction],
        scheduler: lambda_.Function,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.minutes(1)
        depth = queue.metric_approximate_number_of_messages_visible(period=period)
        in_flight = queue.metric_approximate_number_of_messages_not_visible(period=period)
        oldest = queue.metric_approximate_age_of_oldest_message(period=period)
        dlq_depth = dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )
        failures_depth = delivery_failures.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )
        iterator_age = scheduler.metric("IteratorAge", statistic="Maximum", period=period)

        self.alarms: dict[str, cw.Alarm] = {
            "DeadLetters": dlq_depth.create_alarm(
                self,
                "DeadLetters",
                alarm_description="Jobs whose messages failed too often are in the dead-letter queue",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "DeliveryFailures": failures_depth.create_alarm(
                self,
                "DeliveryFailuresAlarm",
                alarm_description="Stream batches or trigger events could not be delivered",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "SchedulerErrors": scheduler.metric_errors(period=Duration.minutes(5)).create_alarm(
                self,
                "SchedulerErrors",
                alarm_description="The scheduler Lambda fails",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "SchedulerBehind": iterator_age.create_alarm(
                self,
                "SchedulerBehind",
                alarm_description="The scheduler is more than 5 minutes behind the jobs stream",
                threshold=300_000,
                evaluation_periods=5,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "OldestReadyJob": oldest.create_alarm(
                self,
                "OldestReadyJob",
                alarm_description="A ready job has waited over an hour for a worker",
                threshold=3600,
                evaluation_periods=5,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        }

        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Ready jobs (queue depth)", left=[depth, in_flight], width=8),
            cw.GraphWidget(title="Age of oldest ready job (s)", left=[oldest], width=8),
            cw.GraphWidget(
                title="Dead letters / delivery failures", left=[dlq_depth, failures_depth], width=8
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda errors",
                left=[fn.metric_errors(period=period, label=name) for name, fn in functions.items()],
                width=8,
            ),
            cw.GraphWidget(
                title="Lambda invocations",
                left=[fn.metric_invocations(period=period, label=name) for name, fn in functions.items()],
                width=8,
            ),
            cw.GraphWidget(
                title="Lambda duration p99 (ms)",
                left=[
                    fn.metric_duration(period=period, statistic="p99", label=name)
                    for name, fn in functions.items()
                ],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Scheduler stream iterator age (ms)", left=[iterator_age], width=12),
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=12),
        )
