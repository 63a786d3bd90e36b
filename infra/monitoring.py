"""Monitoring: one CloudWatch dashboard and the alarms that say something is stuck.

The engine's own metrics come from the scheduler Lambda as EMF (namespace ``Overseer``,
dimension ``service=overseer-scheduler``): GraphsFinished / GraphsFailed / GraphsAborted,
JobsFinished / JobsFailed / JobsAborted, and per job type (dimension ``JobType``, read with
SEARCH expressions since the types are the user's) JobDuration and the job counts; the
sweep Lambda adds QueueDepth and WorkersStarted (``service=overseer-sweep``), per worker
pool WorkersRunning with the dimension ``Pool`` (``service=overseer-sweep, Pool=<name>``), and
per concurrency limit LimitRunning and LimitWaiting with the dimension ``Limit``
(``service=overseer-sweep, Limit=<name>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.function_factory import METRICS_NAMESPACE
from overseer.priority import PRIORITIES

SCHEDULER_SERVICE = "overseer-scheduler"
SWEEP_SERVICE = "overseer-sweep"
# The failed-jobs alarm: more than this many job failures in 5 minutes.
FAILED_JOBS_THRESHOLD = 0
# The oldest ready job alarm: a message of high or normal priority older than this (seconds)
# for 5 minutes. Low-priority jobs are left out: they are meant to wait behind the others.
OLDEST_MESSAGE_SECONDS = 3600
# A failed stream batch not replayed by the sweep this long after it was noted.
STREAM_FAILURE_AGE_SECONDS = 900
# Functions with an error alarm of their own (the scheduler's is SchedulerErrors).
ERROR_ALARMS = {"sweep": "SweepErrors", "api": "ApiErrors", "trigger": "TriggerErrors"}
# A dynamic label: the series' job type.
TYPE_LABEL = "${PROP('Dim.JobType')}"


@dataclass(frozen=True)
class PoolMonitoring:
    """What the dashboard shows of one worker pool."""

    # Its dispatch queues, one per priority: high, normal, low (``overseer.priority``).
    queues: Sequence[sqs.IQueue]
    dead_letter_queue: sqs.IQueue
    job_queue: batch.IJobQueue
    # Added to its alarm's construct id ("" for the default pool).
    id_suffix: str


def workers_running(pool: str) -> cw.Metric:
    """The sweep's count of a pool's Batch workers (EMF, dimension ``Pool``)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name="WorkersRunning",
        dimensions_map={"service": SWEEP_SERVICE, "Pool": pool},
        statistic="Maximum",
        period=Duration.minutes(1),
        label=f"{pool} workers running",
    )


def limit_metric(name: str, limit: str, label: str) -> cw.Metric:
    """The sweep's count of a concurrency limit's jobs (EMF, dimension ``Limit``):
    ``LimitRunning`` (holding a slot) or ``LimitWaiting`` (parked for one)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SWEEP_SERVICE, "Limit": limit},
        statistic="Maximum",
        period=Duration.minutes(1),
        label=label,
    )


def ready_jobs(queues: Sequence[sqs.IQueue], period: Duration, pool: str = "") -> list[cw.Metric]:
    """A pool's ready jobs, a line per priority (``queues``: high, normal, low)."""
    return [
        queue.metric_approximate_number_of_messages_visible(
            period=period, label=f"{pool} {priority}" if pool else priority
        )
        for priority, queue in zip(PRIORITIES, queues, strict=True)
    ]


def engine_metric(
    name: str, *, service: str = SCHEDULER_SERVICE, statistic: str = "Sum", label: str | None = None
) -> cw.Metric:
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=Duration.minutes(5),
        label=label,
    )


def by_job_type(name: str, statistic: str, label: str) -> cw.MathExpression:
    """One line per job type: a SEARCH over the JobType dimension."""
    return cw.MathExpression(
        expression=(
            f"SEARCH('{{{METRICS_NAMESPACE},JobType,service}} MetricName=\"{name}\"', '{statistic}', 300)"
        ),
        using_metrics={},
        label=label,
        period=Duration.minutes(5),
    )


class Monitoring(Construct):
    """Dashboard: graphs and jobs by status, queue depth and age of the oldest message, jobs
    running (messages in flight: one per busy worker) and workers started, job duration
    percentiles (p50 / p90 / p99) and failures by job type, dead-letter and
    delivery-failure depth, Lambda invocations / errors / duration, the scheduler's stream
    iterator age. Alarms: anything in the dead-letter queue or the delivery-failure queue,
    failed jobs, errors of the scheduler, sweep, API and trigger functions, a scheduler
    falling behind the stream, ready jobs of high or normal priority waiting over an hour, and
    a worker job blocked in RUNNABLE. Ready jobs and their age: a line per priority (a queue
    each, ``overseer.priority``); jobs running: the three queues' messages in flight.

    With worker pools (``pools`` in cdk.json), a row per pool: its ready jobs by priority
    beside its running workers, and a dead-letter alarm per pool (``DeadLetters<Pool>``).
    With concurrency limits (``limits``), a row with a graph per limit: the jobs holding it
    (a line at its size) and the jobs waiting for a slot, as the sweep counts them.

    Blocked workers: Batch sends "Batch Job Queue Blocked" when the job at the head of the
    queue cannot be placed (vCPU limit of the compute environment, a job larger than any
    instance type, no capacity, invalid compute environments), with the reason. A rule
    puts each such event for the workers' queue, reason first, into ``blocked_queue``;
    the WorkersBlocked alarm fires on its depth. Read the reason in that queue's messages.

    Attributes
    ----------
    dashboard:
        The dashboard.
    alarms:
        Name -> alarm (no actions: attach an SNS topic with ``alarm.add_alarm_action``).
    blocked_queue, blocked_rule:
        The blocked-workers events and the rule that collects them.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queues: Sequence[sqs.IQueue],
        dead_letter_queue: sqs.IQueue,
        delivery_failures: sqs.IQueue,
        stream_failures: sqs.IQueue,
        functions: Mapping[str, lambda_.IFunction],
        scheduler: lambda_.Function,
        job_queue: batch.IJobQueue,
        pools: Mapping[str, PoolMonitoring] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """``queues`` (high, normal, low), ``dead_letter_queue``, ``job_queue``: the default
        pool's; ``pools``: every pool (the default included) when the stack has pools;
        ``limits``: the concurrency limits, name -> size."""
        super().__init__(scope, construct_id)
        pools = pools or {}
        limits = limits or {}
        self.blocked_queue = sqs.Queue(
            self,
            "WorkersBlocked",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.blocked_rule = events.Rule(
            self,
            "WorkersBlockedRule",
            description="Overseer worker jobs blocked in RUNNABLE, with Batch's reason",
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job Queue Blocked"],
                detail={
                    "jobQueue": [p.job_queue.job_queue_arn for p in pools.values()]
                    or [job_queue.job_queue_arn]
                },
            ),
            targets=[
                targets.SqsQueue(
                    self.blocked_queue,
                    message=events.RuleTargetInput.from_object(
                        {
                            "statusReason": events.EventField.from_path("$.detail.statusReason"),
                            "jobId": events.EventField.from_path("$.detail.jobId"),
                            "jobQueue": events.EventField.from_path("$.detail.jobQueue"),
                            "time": events.EventField.time,
                        }
                    ),
                )
            ],
        )
        period = Duration.minutes(1)
        depths = ready_jobs(queues, period)
        # Jobs running: messages in flight in the three queues.
        in_flight = cw.MathExpression(
            expression="SUM([in_flight_high, in_flight_normal, in_flight_low])",
            using_metrics={
                f"in_flight_{priority}": queue.metric_approximate_number_of_messages_not_visible(
                    period=period
                )
                for priority, queue in zip(PRIORITIES, queues, strict=True)
            },
            label="in flight",
            period=period,
        )
        oldest = {
            priority: queue.metric_approximate_age_of_oldest_message(period=period, label=priority)
            for priority, queue in zip(PRIORITIES, queues, strict=True)
        }
        oldest_high_or_normal = cw.MathExpression(
            expression="MAX([oldest_high, oldest_normal])",
            using_metrics={"oldest_high": oldest["high"], "oldest_normal": oldest["normal"]},
            label="oldest high or normal",
            period=period,
        )
        dlq_depth = dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )
        failures_depth = delivery_failures.metric_approximate_number_of_messages_visible(
            period=period, statistic="Maximum"
        )
        iterator_age = scheduler.metric("IteratorAge", statistic="Maximum", period=period)
        # The sweep replays a failed stream batch within a minute or two and deletes its note.
        unreplayed = stream_failures.metric_approximate_age_of_oldest_message(
            period=Duration.minutes(5), statistic="Maximum"
        )

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
                alarm_description="Trigger events could not be delivered, or the trigger function "
                "failed on an event (the message holds the event and the error)",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "StreamFailures": unreplayed.create_alarm(
                self,
                "StreamFailuresAlarm",
                alarm_description="A stream batch the scheduler gave up on has waited 15 minutes for the "
                "sweep to replay it: see the sweep's log and its SweepStepFailed metric (Step "
                "stream_replay)",
                threshold=STREAM_FAILURE_AGE_SECONDS,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "FailedJobs": engine_metric("JobsFailed").create_alarm(
                self,
                "FailedJobs",
                alarm_description="Jobs failed: the failed-jobs index or `overseer jobs ID --status failed`",
                threshold=FAILED_JOBS_THRESHOLD,
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
            "OldestReadyJob": oldest_high_or_normal.create_alarm(
                self,
                "OldestReadyJob",
                alarm_description="A ready job of high or normal priority has waited over an hour for a "
                "worker",
                threshold=OLDEST_MESSAGE_SECONDS,
                evaluation_periods=5,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "WorkersBlocked": self.blocked_queue.metric_approximate_number_of_messages_visible(
                period=period, statistic="Maximum"
            ).create_alarm(
                self,
                "WorkersBlockedAlarm",
                alarm_description="A worker job is stuck in RUNNABLE: Batch's reason (statusReason) is in "
                "the messages of the WorkersBlocked queue; purge it once fixed",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        }
        for service, name in ERROR_ALARMS.items():
            self.alarms[name] = (
                functions[service]
                .metric_errors(period=Duration.minutes(5), statistic="Sum")
                .create_alarm(
                    self,
                    name,
                    alarm_description=f"The {service} Lambda failed (see its log group)",
                    threshold=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=1,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                )
            )

        for name, pool in pools.items():
            if not pool.id_suffix:  # the default pool's: DeadLetters above
                continue
            alarm_id = f"DeadLetters{pool.id_suffix}"
            self.alarms[alarm_id] = pool.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=period, statistic="Maximum"
            ).create_alarm(
                self,
                alarm_id,
                alarm_description=f"Jobs of pool {name} whose messages failed too often are in its "
                "dead-letter queue",
                threshold=0,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )

        self.dashboard = cw.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown=(
                    "## Overseer\n"
                    "Graphs and jobs by status, the dispatch queue, workers, and job durations and "
                    "failures by job type. A graph's jobs: the jobs table, `graph_id` = the id, "
                    "`entry` begins with `job#`; every failed job: its `failed-jobs` index "
                    "(`failed_on` = the day). CLI: `overseer status ID --api URL`."
                ),
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Graphs ended, by status",
                left=[
                    engine_metric(f"Graphs{s}", label=s.lower()) for s in ("Finished", "Failed", "Aborted")
                ],
                stacked=True,
                width=8,
            ),
            cw.GraphWidget(
                title="Jobs ended, by status",
                left=[engine_metric(f"Jobs{s}", label=s.lower()) for s in ("Finished", "Failed", "Aborted")],
                stacked=True,
                width=8,
            ),
            cw.GraphWidget(
                title="Jobs running (in flight) / workers started",
                left=[in_flight],
                right=[engine_metric("WorkersStarted", service=SWEEP_SERVICE)],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Job duration by type: p50 / p90 / p99 (s)",
                left=[by_job_type("JobDuration", p, f"{TYPE_LABEL} {p}") for p in ("p50", "p90", "p99")],
                width=12,
            ),
            cw.GraphWidget(
                title="Failed jobs by type",
                left=[by_job_type("JobsFailed", "Sum", TYPE_LABEL)],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Ready jobs (queue depth)", left=[*depths, in_flight], width=8),
            cw.GraphWidget(title="Age of oldest ready job (s)", left=list(oldest.values()), width=8),
            cw.GraphWidget(
                title="Dead letters / delivery failures", left=[dlq_depth, failures_depth], width=8
            ),
        )
        for name, pool in pools.items():
            self.dashboard.add_widgets(
                cw.GraphWidget(
                    title=f"Pool {name}: ready jobs / workers running",
                    left=ready_jobs(pool.queues, period, pool=name),
                    right=[workers_running(name)],
                    width=12,
                ),
                cw.GraphWidget(
                    title=f"Pool {name}: dead letters",
                    left=[
                        pool.dead_letter_queue.metric_approximate_number_of_messages_visible(
                            period=period, statistic="Maximum", label=f"{name} dead letters"
                        )
                    ],
                    width=12,
                ),
            )
        if limits:
            self.dashboard.add_widgets(
                *(
                    cw.GraphWidget(
                        title=f"Limit {name}: jobs running / waiting",
                        left=[limit_metric("LimitRunning", name, f"{name} running")],
                        left_annotations=[cw.HorizontalAnnotation(value=size, label=f"size {size}")],
                        right=[limit_metric("LimitWaiting", name, f"{name} waiting")],
                        width=max(8, 24 // len(limits)),
                    )
                    for name, size in limits.items()
                )
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
