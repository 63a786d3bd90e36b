"""OverseerStack: composes one construct per concern; the wiring and every grant live here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import jsii
from aws_cdk import Annotations, CfnOutput, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IValidation

from infra.api import Api
from infra.artifacts import EXPANSION_ITEMS_PREFIX, Artifacts
from infra.config import DeploymentConfig, PoolConfig
from infra.dispatch import Dispatch
from infra.events_out import GraphEvents
from infra.function_factory import FunctionFactory
from infra.lambda_code import LAMBDA_TEMPLATES_DIR, lambda_code
from infra.monitoring import Monitoring, PoolMonitoring
from infra.nag import acknowledge_findings
from infra.pool_plan import plan_pools
from infra.scheduler import Scheduler
from infra.sweep import Sweep
from infra.tables import Tables
from infra.triggers import Triggers
from infra.workers import WorkerPool, Workers
from overseer.pools import DEFAULT_POOL, Pool, Pools


class OverseerStack(Stack):
    """Everything Overseer needs in one account and region.

    Attributes
    ----------
    tables, dispatch, artifacts, events, workers, scheduler, sweep, api, triggers,
    monitoring:
        The constructs, one per concern (``workers``: the default pool's, and the VPC).
    pools:
        Pool name -> its workers (``workers`` for the default pool).
    plan:
        What each pool serves, the routes of job types and each pool's Batch timeout
        (``infra.pool_plan``).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        # Manifests, routes, fit and timeout checks (ConfigError before any resource).
        self.plan = plan_pools(config)
        for warning in self.plan.warnings:
            Annotations.of(self).add_warning_v2("overseer:pool-instance-types", warning)
        if self.plan.limits_warning:
            Annotations.of(self).add_warning_v2("overseer:limits-unchecked", self.plan.limits_warning)
        retention = _retention(config.log_retention_days)
        default = config.default_pool

        self.tables = Tables(self, "Tables")
        self.dispatch = Dispatch(
            self,
            "Dispatch",
            lease_seconds=config.lease_seconds,
            pool_ids={name: pool.id_suffix for name, pool in config.pools.items()},
        )
        self.artifacts = Artifacts(
            self,
            "Artifacts",
            existing_bucket_name=config.existing_bucket_name,
            noncurrent_version_days=config.noncurrent_version_days,
            expiration_days=config.artifact_expiration_days,
        )
        self.events = GraphEvents(self, "Events", bus_name=config.event_bus_name)

        # Settings shared by the Lambdas and the worker (read by overseer.config.Settings).
        # The queue URLs are the default pool's; a worker of another pool finds its own
        # queue in OVERSEER_POOLS under its OVERSEER_POOL.
        shared_env = {
            "OVERSEER_GRAPHS_TABLE": self.tables.graphs_table.table_name,
            "OVERSEER_JOBS_TABLE": self.tables.jobs_table.table_name,
            "OVERSEER_QUEUE_URL": self.dispatch.queue.queue_url,
            "OVERSEER_DEAD_LETTER_QUEUE_URL": self.dispatch.dead_letter_queue.queue_url,
            "OVERSEER_ARTIFACT_BUCKET": self.artifacts.bucket.bucket_name,
            "OVERSEER_ALLOWED_BUCKETS": ",".join(config.allowed_buckets),
            "OVERSEER_HANDLERS": default.handlers_module,
            "OVERSEER_LEASE_SECONDS": str(config.lease_seconds),
            "OVERSEER_EVENT_BUS": self.events.bus_name,
            "OVERSEER_RETENTION_DAYS": str(config.retention_days),
        }
        # The default pool's queues of high- and low-priority jobs: for every process that
        # sends or receives jobs (workers, scheduler, sweep), not the API and the trigger.
        priority_env = {
            "OVERSEER_HIGH_QUEUE_URL": self.dispatch.high_queue.queue_url,
            "OVERSEER_LOW_QUEUE_URL": self.dispatch.low_queue.queue_url,
        }
        # Concurrency limits (overseer.limits), as compact JSON: for the processes that take
        # and give back slots (workers), wake waiters (sweep), and refuse a graph naming a
        # limit the stack does not have (API, trigger). Not the scheduler: a job's message
        # carries the limit stored on the job. No limits: no variable at all.
        limits_json = json.dumps(dict(config.limits), separators=(",", ":"))
        limits_env = {"OVERSEER_LIMITS": limits_json} if config.limits else {}
        worker_env = {
            **shared_env,
            **priority_env,
            **limits_env,
            "OVERSEER_IDLE_EXIT_SECONDS": str(config.idle_exit_seconds),
            # The caps of a handler's Expand, checked by the worker before it commits one.
            "OVERSEER_MAX_EXPAND_ITEMS": str(config.max_expand_items),
            "OVERSEER_MAX_EXPAND_BYTES": str(config.max_expand_bytes),
        }
        # Every pool's queues; no Batch names: a job definition cannot name itself, and
        # workers start no workers (the sweep does).
        workers_pools = self._pools_json(queues=True, batch=False) if config.pools_declared else None
        self.workers = Workers(
            self,
            "Workers",
            pool=default,
            batch_timeout_seconds=self.plan.pools[DEFAULT_POOL].batch_timeout_seconds,
            environment=self._worker_env(worker_env, DEFAULT_POOL, workers_pools),
            log_retention=retention,
            existing_vpc_id=config.existing_vpc_id,
            egress=config.worker_egress,
        )
        # Pool name -> its workers, the default first. Pools of the same instance needs
        # share a compute environment, pools of the same handlersDir an image.
        self.pools: dict[str, Workers | WorkerPool] = {DEFAULT_POOL: self.workers}
        computes = {default.instance_needs: self.workers.compute}
        images = {default.handlers_dir: self.workers.image}
        for name, pool in config.pools.items():
            if pool.is_default:
                continue
            workers = WorkerPool(
                self,
                f"Workers{pool.id_suffix}",
                pool=pool,
                batch_timeout_seconds=self.plan.pools[name].batch_timeout_seconds,
                environment=self._worker_env(worker_env, name, workers_pools),
                network=self.workers,
                compute=computes.get(pool.instance_needs),
                image=images.get(pool.handlers_dir),
            )
            computes.setdefault(pool.instance_needs, workers.compute)
            images.setdefault(pool.handlers_dir, workers.image)
            self.pools[name] = workers

        lambda_env = {
            **shared_env,
            "OVERSEER_TEMPLATES_DIR": LAMBDA_TEMPLATES_DIR,
            "OVERSEER_BATCH_JOB_QUEUE": self.workers.job_queue.job_queue_arn,
            "OVERSEER_BATCH_JOB_DEFINITION": self.workers.job_definition.job_definition_arn,
            "OVERSEER_MAX_WORKERS": str(default.max_workers),
            "OVERSEER_JOBS_PER_WORKER": str(default.backlog_per_worker),
        }
        factory = FunctionFactory(
            code=lambda_code(templates_dir=config.templates_dir),
            environment=lambda_env,
            log_retention=retention,
        )
        self.scheduler = Scheduler(
            self,
            "Scheduler",
            factory=factory,
            jobs_table=self.tables.jobs_table,
            on_failure_queue=self.dispatch.stream_failures,
        )
        self.sweep = Sweep(
            self,
            "Sweep",
            factory=factory,
            schedule=config.sweep_schedule,
            stream_failures=self.dispatch.stream_failures,
        )
        for function in (self.scheduler.function, self.sweep.function):
            for name, value in priority_env.items():
                function.add_environment(name, value)
        self.api = Api(
            self, "Api", factory=factory, log_retention=retention, manage_account=config.api_gateway_account
        )
        self.triggers = Triggers(
            self,
            "Triggers",
            factory=factory,
            triggers=config.triggers,
            dead_letter_queue=self.dispatch.delivery_failures,
        )
        # GET .../logs reads the workers' log group.
        self.api.function.add_environment("OVERSEER_WORKER_LOG_GROUP", self.workers.log_group.log_group_name)
        for function in (self.api.function, self.triggers.function, self.sweep.function):
            for name, value in limits_env.items():
                function.add_environment(name, value)
        if config.pools_declared:
            # What each function uses of the pools (Lambda allows 4 KB of variables in
            # all): the API and the trigger route jobs (types, routes); the scheduler sends
            # them to their pools' queues, the sweep also starts each pool's workers: neither
            # routes a job, so neither gets the types.
            routes_only = self._pools_json(queues=False, batch=False)
            self.scheduler.function.add_environment(
                "OVERSEER_POOLS", self._pools_json(queues=True, batch=False, types=False)
            )
            self.sweep.function.add_environment(
                "OVERSEER_POOLS", self._pools_json(queues=True, batch=True, types=False)
            )
            self.api.function.add_environment("OVERSEER_POOLS", routes_only)
            self.triggers.function.add_environment("OVERSEER_POOLS", routes_only)
        if config.pools_declared or config.limits:
            for service, function in factory.functions.items():
                function.node.add_validation(EnvironmentSize(service, function))
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            queues=self.dispatch.pool_queues[DEFAULT_POOL].dispatch_queues,
            dead_letter_queue=self.dispatch.dead_letter_queue,
            delivery_failures=self.dispatch.delivery_failures,
            stream_failures=self.dispatch.stream_failures,
            functions=factory.functions,
            scheduler=self.scheduler.function,
            job_queue=self.workers.job_queue,
            pools=(
                {
                    name: PoolMonitoring(
                        queues=self.dispatch.pool_queues[name].dispatch_queues,
                        dead_letter_queue=self.dispatch.pool_queues[name].dead_letter_queue,
                        job_queue=workers.job_queue,
                        id_suffix=workers.pool.id_suffix,
                    )
                    for name, workers in self.pools.items()
                }
                if config.pools_declared
                else {}
            ),
            limits=config.limits,
        )

        self._grant()
        self._outputs()
        acknowledge_findings(self)

    def _worker_env(self, base: dict[str, str], pool: str, pools_json: str | None) -> dict[str, str]:
        """A worker's settings: ``base``, its pool, handlers, lifetime and deadline."""
        plan = self.plan.pools[pool]
        env = {
            **base,
            "OVERSEER_POOL": pool,
            "OVERSEER_HANDLERS": plan.config.handlers_module,
            "OVERSEER_WORKER_LIFETIME_SECONDS": str(plan.config.worker_lifetime_seconds),
            "OVERSEER_WORKER_DEADLINE_SECONDS": str(plan.deadline_seconds),
        }
        if pools_json is not None:
            env["OVERSEER_POOLS"] = pools_json
        return env

    def _pools_json(self, *, queues: bool, batch: bool, types: bool = True) -> str:
        """``OVERSEER_POOLS``: ``overseer.pools.Pools.to_json()`` of every pool (types, scaling,
        and the routes), with each pool's queue URLs (its three priorities and its DLQ) when
        ``queues`` and Batch job queue and job definition when ``batch`` (the default pool's
        are OVERSEER_QUEUE_URL, OVERSEER_HIGH_QUEUE_URL, OVERSEER_BATCH_JOB_QUEUE and the
        like), without the types and routes unless ``types``, as a CloudFormation value (its
        tokens resolved at deploy)."""
        pools = {}
        for name, plan in self.plan.pools.items():
            other = name != DEFAULT_POOL
            pool_queues = self.dispatch.pool_queues[name] if queues and other else None
            workers = self.pools[name] if batch and other else None
            pools[name] = Pool(
                name,
                queue_url=pool_queues.queue.queue_url if pool_queues else "",
                dead_letter_queue_url=pool_queues.dead_letter_queue.queue_url if pool_queues else "",
                high_queue_url=pool_queues.high_queue.queue_url if pool_queues else "",
                low_queue_url=pool_queues.low_queue.queue_url if pool_queues else "",
                batch_job_queue=workers.job_queue.job_queue_arn if workers else "",
                batch_job_definition=workers.job_definition.job_definition_arn if workers else "",
                max_workers=plan.config.max_workers,
                backlog_per_worker=plan.config.backlog_per_worker,
                types=plan.types if types else None,
            )
        document = json.loads(Pools(pools, dict(self.plan.routes) if types else {}).to_json())
        return self.to_json_string(document)

    def _grant(self) -> None:
        """Each role gets exactly the calls its code makes; the comments name the code path.

        Table grants name the table ARN only, except the sweep's Query of its two indexes
        (nothing but people in the console reads the failed-jobs index). The store's calls:
        ``create_graph`` PutItem (graph), BatchWriteItem (jobs), UpdateItem; ``get_graph`` /
        ``get_job`` GetItem; ``running_graphs`` Query (graphs' active-graphs index) and
        BatchGetItem; ``sweep_page`` Query (jobs' sweep index) and BatchGetItem;
        ``get_sweep_cursor`` GetItem, ``put_sweep_cursor`` UpdateItem (graphs);
        ``list_jobs`` / ``dependencies`` /
        ``dependents`` Query (jobs); ``outputs`` BatchGetItem (jobs); ``transition``,
        ``renew_lease``, ``record_finished_dependency`` (GetItem after a no-op),
        ``add_graph_progress`` (GetItem when empty), ``set_graph_status`` UpdateItem.
        Expansions (``overseer.expansion``): a ``transition`` with ``add_jobs`` is a
        TransactWriteItems of two UpdateItems (the job, the graph's ``jobs_total``), which
        IAM authorizes as those UpdateItems; ``put_children`` PutItem (jobs);
        ``advance_expansion``, ``complete_expansion``, ``count_done`` UpdateItem (jobs).
        Concurrency limits (``overseer.limits``): ``acquire_slot`` UpdateItem, and GetItem
        (consistent) when the limit is full, ``renew_slot`` / ``release_slot`` UpdateItem
        (graphs); ``slot_holders`` GetItem (graphs); ``count_waiting`` Query (jobs' sweep
        index); ``wake``: ``sweep_page`` and a ``transition``.
        """
        graphs, jobs = self.tables.graphs_table, self.tables.jobs_table
        pool_queues = self.dispatch.pool_queues
        bucket = self.artifacts.bucket
        buckets = [bucket] + [
            s3.Bucket.from_bucket_name(self, f"AllowedBucket{index}", name)
            for index, name in enumerate(self.config.allowed_buckets)
        ]
        for name, workers in self.pools.items():
            self._grant_worker(workers.job_role, workers.pool, pool_queues[name].dispatch_queues, buckets)

        # Scheduler (overseer.scheduler): releases dependents (Query for edge chunks,
        # UpdateItem, GetItem of a job not released by this call), aborts dependents
        # (GetItem, UpdateItem), counts graph progress and ends graphs (UpdateItem, Query
        # in finalize_graph; GetItem when there is nothing to count). Expansions
        # (overseer.expansion): the parent and its graph (GetItem), its children (PutItem,
        # conditional), how many exist and when its tree ended (UpdateItem), the counter
        # items of ended children (UpdateItem).
        scheduler = self.scheduler.function
        _allow(scheduler, jobs, "GetItem", "Query", "UpdateItem", "PutItem")
        _allow(scheduler, graphs, "GetItem", "UpdateItem")
        # The committed items (GetObject), and the items files of attempts that did not
        # commit (DeleteObject): under the expansions prefix only, never an artifact.
        _allow_expansion_items(scheduler, bucket)
        # SendMessageBatch of released jobs, to their pools' queues of their priorities.
        for queues in pool_queues.values():
            for queue in queues.dispatch_queues:
                queue.grant(scheduler, "sqs:SendMessage")
        self.events.bus.grant_put_events_to(scheduler)  # Graph Finished / Failed / Aborted

        # Sweep (overseer.sweep): its lease (PutItem, DeleteItem under a reserved key) and
        # cursor (GetItem, UpdateItem); running and creating graphs (Query of active-graphs,
        # BatchGetItem); the jobs the sweep index names (Query of the index, BatchGetItem);
        # expired leases, re-sent messages, dead letters (UpdateItem); a graph whose
        # counters say it ended (finalize_graph: Query of its jobs, set_graph_status:
        # UpdateItem, announced with PutEvents). Replaying a failed stream batch runs the
        # scheduler's calls (GetItem of jobs and graphs; an expansion's children: PutItem,
        # and its items, as the scheduler's). Graphs left creating are rolled back
        # (DeleteItem of the graph and its jobs). Concurrency limits: each limit's slots
        # (GetItem of its item in the graphs table), its waiting jobs counted and the oldest
        # woken (Query of the sweep index, BatchGetItem, UpdateItem). No Scan.
        sweep = self.sweep.function
        _allow(sweep, jobs, "GetItem", "Query", "UpdateItem", "DeleteItem", "BatchGetItem", "PutItem")
        _allow_expansion_items(sweep, bucket)
        _allow(sweep, graphs, "GetItem", "UpdateItem", "PutItem", "DeleteItem", "BatchGetItem")
        _allow_index(sweep, jobs, self.tables.SWEEP_INDEX, "Query")
        _allow_index(sweep, graphs, self.tables.ACTIVE_GRAPHS_INDEX, "Query")
        for queues in pool_queues.values():
            # Every pool's, every priority's: re-send (to the job's priority); queue depth
            # (a pool's is the sum of its three).
            for queue in queues.dispatch_queues:
                queue.grant(sweep, "sqs:SendMessage", "sqs:GetQueueAttributes")
            # _fail_dead_letters: receive, fail the job, delete (DeleteMessageBatch).
            queues.dead_letter_queue.grant(sweep, "sqs:ReceiveMessage", "sqs:DeleteMessage")
        # _replay_failed_batches: the notes of failed stream batches, and the batches read
        # again from the jobs stream (GetShardIterator AT_SEQUENCE_NUMBER, GetRecords).
        self.dispatch.stream_failures.grant(sweep, "sqs:ReceiveMessage", "sqs:DeleteMessage")
        assert jobs.table_stream_arn is not None
        sweep.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetShardIterator", "dynamodb:GetRecords"],
                resources=[jobs.table_stream_arn],
            )
        )
        self.events.bus.grant_put_events_to(sweep)
        # Starting workers: each pool's job definition on its job queue.
        sweep.add_to_role_policy(
            iam.PolicyStatement(
                actions=["batch:SubmitJob"],
                resources=[
                    arn
                    for workers in self.pools.values()
                    for arn in (workers.job_queue.job_queue_arn, workers.job_definition.job_definition_arn)
                ],
            )
        )
        # Counting active workers (ListJobs) and telling a Spot reclaim of a lease owner's
        # Batch job from a crash (DescribeJobs): neither has resource-level permissions.
        sweep.add_to_role_policy(
            iam.PolicyStatement(actions=["batch:ListJobs", "batch:DescribeJobs"], resources=["*"])
        )

        # API (overseer.operations): submit (create_graph), status (GetItem), jobs (Query),
        # cancel (Query, UpdateItem, GetItem of a job that moved, set_graph_status), rerun
        # (Query, UpdateItem, add_graph_progress / set_graph_status). A cancel that ends a
        # graph announces it. Limits (GET /limits): each limit's slots (GetItem of its item)
        # and its waiting jobs counted (Query of the sweep index), with limits configured.
        api = self.api.function
        _allow(api, graphs, "PutItem", "GetItem", "UpdateItem", "BatchGetItem")
        _allow(api, jobs, "BatchWriteItem", "GetItem", "Query", "UpdateItem")
        # GET /graphs: the graphs-by-day index (Query), then the graphs found (BatchGetItem).
        _allow_index(api, graphs, self.tables.GRAPHS_BY_DAY_INDEX, "Query")
        if self.config.limits:
            _allow_index(api, jobs, self.tables.SWEEP_INDEX, "Query")
        self.events.bus.grant_put_events_to(api)
        # A job's log lines (GET .../logs): FilterLogEvents on the workers' log group. Its
        # artifacts (GET .../artifacts): URLs presigned with the API's role, so whoever
        # holds one GETs the object as that role: objects only, read only.
        api.add_to_role_policy(
            iam.PolicyStatement(
                actions=["logs:FilterLogEvents"], resources=[self.workers.log_group.log_group_arn]
            )
        )
        api.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[b.arn_for_objects("*") for b in buckets])
        )

        # Trigger (operations.trigger_template): create_graph only; GetItem of the graph
        # (after writing it, or when a redelivered event finds it there already); a
        # redelivered event completing a submission that stopped half-way lists the jobs
        # written (Query).
        trigger = self.triggers.function
        _allow(trigger, graphs, "PutItem", "GetItem", "UpdateItem")
        _allow(trigger, jobs, "BatchWriteItem", "UpdateItem", "Query")

    def _grant_worker(
        self, worker: iam.Role, pool: PoolConfig, queues: Sequence[sqs.IQueue], buckets: list[s3.IBucket]
    ) -> None:
        """A worker role of ``pool``: runs user code, so no delete and no scan, and its own
        pool's queues only (``queues``: one per priority)."""
        # Jobs: claim / heartbeat / outcome (UpdateItem), inputs: dependencies (Query) and
        # their outputs, with every child of an expansion (BatchGetItem), the handler
        # process re-reading its job (GetItem). Graphs: only the finish that commits an
        # expansion, which adds its children to the graph's jobs_total in the same
        # transaction (UpdateItem); no read, no put.
        graphs, jobs = self.tables.graphs_table, self.tables.jobs_table
        _allow(worker, jobs, "GetItem", "Query", "BatchGetItem", "UpdateItem")
        _allow(worker, graphs, "UpdateItem")
        if self.config.limits:
            # Concurrency limits (overseer.limits): a limit's slots are one item of the graphs
            # table, taken, renewed and given back with conditional UpdateItems and read
            # (consistent GetItem) when it is full; a job parked for a slot (UpdateItem) is
            # woken by the worker giving one back: the oldest in the sweep index's
            # ``limit#<name>`` partition (Query of the index, BatchGetItem, UpdateItem).
            _allow(worker, graphs, "GetItem")
            _allow_index(worker, jobs, self.tables.SWEEP_INDEX, "Query")
        # PriorityQueues.receive from each priority's queue, delete (DeleteMessageBatch) and
        # extend / release (ChangeMessageVisibility) on the queue the receipt names.
        for queue in queues:
            queue.grant(worker, "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
        # Objects only: read job inputs, write (and abort multipart uploads of) artifacts;
        # HeadObject before each put skips identical objects: it needs GetObject, and
        # ListBucket to answer 404 rather than 403 for a new key. An expansion's items are
        # a PutObject in the artifact bucket too. No delete.
        for each in buckets:
            worker.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[each.arn_for_objects("*")],
                )
            )
            worker.add_to_principal_policy(
                iam.PolicyStatement(actions=["s3:ListBucket"], resources=[each.bucket_arn])
            )
        # overseer.Rows: boto3's batch_writer sends BatchWriteItem, to these tables only.
        if self.config.rows_tables:
            worker.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["dynamodb:BatchWriteItem"],
                    resources=[
                        self.format_arn(service="dynamodb", resource="table", resource_name=name)
                        for name in self.config.rows_tables
                    ],
                )
            )
        # The user's own additions (the pool's workerPolicies / workerManagedPolicies).
        for extra in pool.worker_policies:
            worker.add_to_principal_policy(
                iam.PolicyStatement(actions=list(extra.actions), resources=list(extra.resources))
            )
        for index, arn in enumerate(pool.worker_managed_policies):
            worker.add_managed_policy(
                iam.ManagedPolicy.from_managed_policy_arn(self, f"WorkerPolicy{pool.id_suffix}{index}", arn)
            )

    def _outputs(self) -> None:
        outputs = {
            "ApiUrl": self.api.rest_api.url,
            "GraphsTable": self.tables.graphs_table.table_name,
            "JobsTable": self.tables.jobs_table.table_name,
            "QueueUrl": self.dispatch.queue.queue_url,
            "HighQueueUrl": self.dispatch.high_queue.queue_url,
            "LowQueueUrl": self.dispatch.low_queue.queue_url,
            "DeadLetterQueueUrl": self.dispatch.dead_letter_queue.queue_url,
            "ArtifactBucket": self.artifacts.bucket.bucket_name,
            "BatchJobQueue": self.workers.job_queue.job_queue_arn,
            "BatchJobDefinition": self.workers.job_definition.job_definition_arn,
            "EventBus": self.events.bus_name,
            "Dashboard": self.monitoring.dashboard.dashboard_name,
            # Where job logs are: `overseer logs --stack NAME` and GET .../logs read it.
            "WorkerLogGroup": self.workers.log_group.log_group_name,
        }
        for workers in self.pools.values():
            pool = workers.pool
            if pool.is_default:
                continue
            queues = self.dispatch.pool_queues[pool.name]
            outputs[f"{pool.id_suffix}QueueUrl"] = queues.queue.queue_url
            outputs[f"{pool.id_suffix}HighQueueUrl"] = queues.high_queue.queue_url
            outputs[f"{pool.id_suffix}LowQueueUrl"] = queues.low_queue.queue_url
            outputs[f"{pool.id_suffix}BatchJobQueue"] = workers.job_queue.job_queue_arn
            outputs[f"{pool.id_suffix}BatchJobDefinition"] = workers.job_definition.job_definition_arn
        # What `overseer --stack NAME` needs besides the names: how jobs are routed to pools
        # (with each pool's queues, for their depths), and the limits a graph may name.
        if self.config.pools_declared:
            outputs["Pools"] = self._pools_json(queues=True, batch=False)
        if self.config.limits:
            outputs["Limits"] = json.dumps(dict(self.config.limits), separators=(",", ":"))
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)


def _allow(principal: iam.IGrantable, table: dynamodb.ITable, *operations: str) -> None:
    """Allow ``dynamodb:<operation>`` on ``table`` itself (not its indexes)."""
    principal.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=[f"dynamodb:{op}" for op in operations], resources=[table.table_arn])
    )


def _allow_expansion_items(principal: iam.IGrantable, bucket: s3.IBucket) -> None:
    """Allow reading and deleting the expansions' items files (``EXPANSION_ITEMS_PREFIX``)."""
    principal.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{EXPANSION_ITEMS_PREFIX}*")],
        )
    )


def _allow_index(principal: iam.IGrantable, table: dynamodb.ITable, index: str, *operations: str) -> None:
    """Allow ``dynamodb:<operation>`` on one index of ``table``."""
    principal.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(
            actions=[f"dynamodb:{op}" for op in operations], resources=[f"{table.table_arn}/index/{index}"]
        )
    )


# Lambda's limit on a function's environment variables, names and values together.
LAMBDA_ENVIRONMENT_BYTES = 4096
# A name or ARN known only at deploy: CloudFormation names a resource
# "<stack>-<logical id>-<13 characters>", and a queue URL or an ARN puts up to this much
# before it ("https://sqs.ap-southeast-2.amazonaws.com/123456789012/", "arn:aws:batch:...").
DEPLOY_TIME_PREFIX_BYTES = 70


@jsii.implements(IValidation)
class EnvironmentSize:
    """Fails synthesis when a function's variables would exceed Lambda's 4 KB (checked once
    the function's environment is rendered; names and ARNs of resources are estimated from
    the stack name and their logical ids)."""

    def __init__(self, service: str, function: lambda_.Function) -> None:
        self.service = service
        self.function = function

    def validate(self) -> list[str]:
        stack = Stack.of(self.function)
        cfn = self.function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        # The L1's properties as synthesis renders them (the environment is lazy until then).
        properties = stack.resolve(cfn._cfn_properties)
        variables = properties.get("environment", {}).get("variables", {})
        size = sum(
            len(name) + _estimated_length(value, stack.stack_name) for name, value in variables.items()
        )
        if size <= LAMBDA_ENVIRONMENT_BYTES:
            return []
        keys, causes, remedies = [], [], []
        if "OVERSEER_POOLS" in variables:
            keys.append("pools")
            causes.append("OVERSEER_POOLS lists every pool's job types and queues")
            remedies.append("fewer pools, or fewer job types in the handlers modules of several pools")
        if "OVERSEER_LIMITS" in variables:
            keys.append("limits")
            causes.append("OVERSEER_LIMITS every concurrency limit")
            remedies.append("fewer concurrency limits, or shorter names")
        return [
            f"{' and '.join(keys)}: the {self.service} function's environment would be about {size} "
            f"bytes, over Lambda's {LAMBDA_ENVIRONMENT_BYTES} ({'; '.join(causes)}): use "
            f"{'; or '.join(remedies)}"
        ]


def _estimated_length(value: Any, stack_name: str) -> int:
    """The length of a resolved CloudFormation string value once deployed (estimated)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_estimated_length(v, stack_name) for v in value)
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return len(separator) * max(len(parts) - 1, 0) + _estimated_length(parts, stack_name)
    logical_id = value.get("Ref") or value.get("Fn::GetAtt", [""])[0]
    return DEPLOY_TIME_PREFIX_BYTES + len(stack_name) + len(str(logical_id))


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
