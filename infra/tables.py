"""Tables: the graphs table and the jobs table (with the stream that feeds the scheduler)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct


class Tables(Construct):
    """Both DynamoDB tables: on demand, point-in-time recovery, encrypted, kept on delete,
    with time to live on ``expires_at`` (DynamoDB deletes an ended graph's items some time,
    usually within days, after the epoch second they carry; no item without it expires).

    Attributes
    ----------
    graphs_table:
        One item per graph (partition key ``graph_id``), the sweep's lease (``#lease#sweep``)
        and its cursor item (``#sweep-cursor``). Its sparse index ``active-graphs``
        (``active_status``, ``graph_id``; keys only) holds the graphs not yet terminal: the
        sweep's running graphs, and the submissions that stopped half-way (``creating``).
    jobs_table:
        One item per job (``entry`` = ``job#<name>``) plus edge chunks (``out#...`` /
        ``in#...``), keyed ``graph_id`` + ``entry``; its stream carries new and old images.
        Its sparse index ``failed-jobs`` (``failed_on`` = the day, ``finished_at``) holds
        only the jobs that are failed now: every failed job, by day, in the console. Its
        sparse index ``sweep`` (``sweep_key`` = ``<kind>#<shard>``, ``sweep_at`` = a minute;
        keys only) holds the running and ready jobs by the minute the sweep should look at
        them (``overseer.items``): the sweep asks it for past minutes only.
    """

    FAILED_JOBS_INDEX = "failed-jobs"
    SWEEP_INDEX = "sweep"
    ACTIVE_GRAPHS_INDEX = "active-graphs"
    GRAPHS_BY_DAY_INDEX = "graphs-by-day"
    # Both tables' time to live: ended graphs and jobs carry it when the stack has a
    # retention (``retentionDays``; ``overseer.items.expires_at``), epoch seconds.
    EXPIRES_AT = "expires_at"

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        common = {
            "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
            "encryption": dynamodb.TableEncryption.AWS_MANAGED,
            "point_in_time_recovery_specification": dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            "removal_policy": RemovalPolicy.RETAIN,
            "deletion_protection": True,
            "time_to_live_attribute": self.EXPIRES_AT,
        }
        self.graphs_table = dynamodb.Table(
            self,
            "Graphs",
            partition_key=dynamodb.Attribute(name="graph_id", type=dynamodb.AttributeType.STRING),
            **common,
        )
        self.jobs_table = dynamodb.Table(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="graph_id", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="entry", type=dynamodb.AttributeType.STRING),
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            **common,
        )
        # The engine sets failed_on (YYYY-MM-DD) only while a job is failed (see
        # overseer.backends.aws.models.FailedJobsIndex), so the index stays as small as the failures.
        self.jobs_table.add_global_secondary_index(
            index_name=self.FAILED_JOBS_INDEX,
            partition_key=dynamodb.Attribute(name="failed_on", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="finished_at", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        # Keys only: a heartbeat that keeps its job's minute writes nothing to the index,
        # and the counters' writes nothing to active-graphs (overseer.backends.aws.models).
        self.jobs_table.add_global_secondary_index(
            index_name=self.SWEEP_INDEX,
            partition_key=dynamodb.Attribute(name="sweep_key", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sweep_at", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        # Every graph by the day it was submitted (keys only): `overseer graphs`, newest first.
        self.graphs_table.add_global_secondary_index(
            index_name=self.GRAPHS_BY_DAY_INDEX,
            partition_key=dynamodb.Attribute(name="created_on", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="created_at", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.graphs_table.add_global_secondary_index(
            index_name=self.ACTIVE_GRAPHS_INDEX,
            partition_key=dynamodb.Attribute(name="active_status", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="graph_id", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
