"""OverseerStack: composes one construct per concern; the wiring and every grant live here."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.api import Api
from infra.artifacts import Artifacts
from infra.config import DeploymentConfig
from infra.dispatch import Dispatch
from infra.events_out import GraphEvents
from infra.functions import FunctionFactory
from infra.lambda_code import LAMBDA_TEMPLATES_DIR, lambda_code
from infra.monitoring import Monitoring
from infra.nag import acknowledge_findings
from infra.scheduler import Scheduler
from infra.sweep import Sweep
from infra.tables import Tables
from infra.triggers import Triggers
from infra.workers import Workers


class OverseerStack(Stack):
    """Everything Overseer needs in one account and region.

    Attributes
    ----------
    tables, dispatch, artifacts, events, workers, scheduler, sweep, api, triggers,
    monitoring:
        The constructs, one per concern.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        retention = _retention(config.log_retention_days)

        self.tables = Tables(self, "Tables")
        self.dispatch = Dispatch(self, "Dispatch", lease_seconds=config.lease_seconds)
        self.artifacts = Artifacts(
            self,
            "Artifacts",
            existing_bucket_name=config.existing_bucket_name,
            noncurrent_version_days=config.noncurrent_version_days,
        )
        self.events = GraphEvents(self, "Events", bus_name=config.event_bus_name)

        # Settings shared by the Lambdas and the worker (read by overseer.config.Settings).
        shared_env = {
            "OVERSEER_GRAPHS_TABLE": self.tables.graphs_table.table_name,
            "OVERSEER_JOBS_TABLE": self.tables.jobs_table.table_name,
            "OVERSEER_QUEUE_URL": self.dispatch.queue.queue_url,
            "OVERSEER_DEAD_LETTER_QUEUE_URL": self.dispatch.dead_letter_queue.queue_url,
            "OVERSEER_ARTIFACT_BUCKET": self.artifacts.bucket.bucket_name,
            "OVERSEER_ALLOWED_BUCKETS": ",".join(config.allowed_buckets),
            "OVERSEER_HANDLERS": config.handlers_module,
            "OVERSEER_LEASE_SECONDS": str(config.lease_seconds),
            "OVERSEER_EVENT_BUS": self.events.bus_name,
        }
        self.workers = Workers(
            self,
            "Workers",
            instance_types=config.instance_types,
            max_vcpus=config.max_vcpus,
            spot=config.spot,
            worker_vcpus=config.worker_vcpus,
            worker_memory_mib=config.worker_memory_mib,
            scratch_volume_gib=config.scratch_volume_gib,
            handlers_dir=config.handlers_dir,
            environment={
                **shared_env,
                "OVERSEER_IDLE_EXIT_SECONDS": str(config.idle_exit_seconds),
            },
            log_retention=retention,
            existing_vpc_id=config.existing_vpc_id,
        )

        factory = FunctionFactory(
            code=lambda_code(templates_dir=config.templates_dir),
            environment={
                **shared_env,
                "OVERSEER_TEMPLATES_DIR": LAMBDA_TEMPLATES_DIR,
                "OVERSEER_BATCH_JOB_QUEUE": self.workers.job_queue.job_queue_arn,
                "OVERSEER_BATCH_JOB_DEFINITION": self.workers.job_definition.job_definition_arn,
                "OVERSEER_MAX_WORKERS": str(config.max_workers),
            },
            log_retention=retention,
        )
        self.scheduler = Scheduler(
            self,
            "Scheduler",
            factory=factory,
            jobs_table=self.tables.jobs_table,
            on_failure_queue=self.dispatch.delivery_failures,
        )
        self.sweep = Sweep(self, "Sweep", factory=factory, schedule=config.sweep_schedule)
        self.api = Api(self, "Api", factory=factory, log_retention=retention)
        self.triggers = Triggers(
            self,
            "Triggers",
            factory=factory,
            triggers=config.triggers,
            dead_letter_queue=self.dispatch.delivery_failures,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            queue=self.dispatch.queue,
            dead_letter_queue=self.dispatch.dead_letter_queue,
            delivery_failures=self.dispatch.delivery_failures,
            functions=factory.functions,
            scheduler=self.scheduler.function,
        )

        self._grant()
        self._outputs()
        acknowledge_findings(self)

    def _grant(self) -> None:
        graphs, jobs = self.tables.graphs_table, self.tables.jobs_table
        queue, dlq = self.dispatch.queue, self.dispatch.dead_letter_queue
        bucket = self.artifacts.bucket

        # Worker: claims and finishes jobs, reads its graph, takes messages, stores artifacts.
        worker = self.workers.job_role
        jobs.grant_read_write_data(worker)
        graphs.grant_read_data(worker)
        queue.grant_consume_messages(worker)
        # Objects only: read job inputs, write (and abort multipart uploads of) artifacts,
        # list to tell "absent" from "forbidden" when skipping identical objects. No delete.
        worker.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects("*")],
            )
        )
        worker.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
        )
        for index, name in enumerate(self.config.allowed_buckets):
            allowed = s3.Bucket.from_bucket_name(self, f"AllowedBucket{index}", name)
            worker.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[allowed.arn_for_objects("*")],
                )
            )

        # Scheduler: moves jobs waiting -> ready, enqueues, cascades, counts graph progress.
        scheduler = self.scheduler.function
        jobs.grant_read_write_data(scheduler)
        graphs.grant_read_write_data(scheduler)
        queue.grant_send_messages(scheduler)
        self.events.bus.grant_put_events_to(scheduler)

        # Sweep: repairs jobs, re-enqueues, and submits Batch workers for the queue depth.
        sweep = self.sweep.function
        jobs.grant_read_write_data(sweep)
        graphs.grant_read_write_data(sweep)
        queue.grant_send_messages(sweep)
        queue.grant(sweep, "sqs:GetQueueAttributes")
        # It ends a graph whose last stream record was lost, and announces it.
        self.events.bus.grant_put_events_to(sweep)
        dlq.grant(sweep, "sqs:GetQueueAttributes")
        sweep.add_to_role_policy(
            iam.PolicyStatement(
                actions=["batch:SubmitJob"],
                resources=[
                    self.workers.job_queue.job_queue_arn,
                    self.workers.job_definition.job_definition_arn,
                ],
            )
        )
        # Counting the workers already queued or running: ListJobs has no resource-level
        # permissions, so its resource is "*".
        sweep.add_to_role_policy(iam.PolicyStatement(actions=["batch:ListJobs"], resources=["*"]))

        # API and triggers: submit graphs (idempotent), read state, cancel, rerun. A cancel
        # that ends a graph announces it, so the API may publish graph events too.
        for function in (self.api.function, self.triggers.function):
            graphs.grant_read_write_data(function)
            jobs.grant_read_write_data(function)
        self.events.bus.grant_put_events_to(self.api.function)

    def _outputs(self) -> None:
        outputs = {
            "ApiUrl": self.api.rest_api.url,
            "GraphsTable": self.tables.graphs_table.table_name,
            "JobsTable": self.tables.jobs_table.table_name,
            "QueueUrl": self.dispatch.queue.queue_url,
            "DeadLetterQueueUrl": self.dispatch.dead_letter_queue.queue_url,
            "ArtifactBucket": self.artifacts.bucket.bucket_name,
            "BatchJobQueue": self.workers.job_queue.job_queue_arn,
            "BatchJobDefinition": self.workers.job_definition.job_definition_arn,
            "EventBus": self.events.bus_name,
            "Dashboard": self.monitoring.dashboard.dashboard_name,
            # `overseer logs --api URL --log-group <this>` reads the workers' job logs.
            "WorkerLogGroup": self.workers.log_group.log_group_name,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)


# CloudWatch Logs retention values, in the order of logs.RetentionDays (INFINITE excluded).
_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                   1827, 2192, 2557, 2922, 3288, 3653)  # fmt: skip


def _retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention that keeps logs at least ``days`` days."""
    options = [r for r in logs.RetentionDays if r.name != "INFINITE"]
    for value, option in zip(_RETENTION_DAYS, options, strict=True):
        if value >= days:
            return option
    return options[-1]
