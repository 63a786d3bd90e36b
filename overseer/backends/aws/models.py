"""PynamoDB models of the graphs and jobs tables.

Fresh model classes are built per store by ``graph_model`` / ``job_model`` (each holds its
own connection), so the same code
points at AWS, the emulator or LocalStack: endpoint and region come from the standard
AWS configuration (``AWS_ENDPOINT_URL``, ``AWS_REGION``), which botocore reads itself.
Attribute names are meant to be read in the DynamoDB console.
"""

from __future__ import annotations

from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    NumberSetAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model


class ActiveGraphsIndex(GlobalSecondaryIndex):
    """The graphs not yet terminal, by status: sparse, since only they carry ``active_status``.
    Keys only, so the counters' writes never touch it."""

    class Meta:
        index_name = "active-graphs"
        projection = KeysOnlyProjection()
        billing_mode = "PAY_PER_REQUEST"

    active_status = UnicodeAttribute(hash_key=True)
    graph_id = UnicodeAttribute(range_key=True)


class GraphsByDayIndex(GlobalSecondaryIndex):
    """Every graph by the day it was submitted, newest last in each day (``list_graphs``).
    Keys only: the counters' writes never touch it."""

    class Meta:
        index_name = "graphs-by-day"
        projection = KeysOnlyProjection()
        billing_mode = "PAY_PER_REQUEST"

    created_on = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class GraphItemBase(Model):
    graph_id = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute()
    # The status while not terminal (creating, running): the active-graphs index.
    active_status = UnicodeAttribute(null=True)
    active_graphs = ActiveGraphsIndex()
    jobs_total = NumberAttribute()
    args = UnicodeAttribute(default="{}")  # JSON
    count_finished = NumberAttribute(default=0)
    count_failed = NumberAttribute(default=0)
    count_aborted = NumberAttribute(default=0)
    definition_sha256 = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    # The day it was submitted (YYYY-MM-DD): the graphs-by-day index, to list graphs.
    created_on = UnicodeAttribute(null=True)
    graphs_by_day = GraphsByDayIndex()
    updated_at = UnicodeAttribute()
    finished_at = UnicodeAttribute(null=True)
    # A graph with a timeout: the moment it passes (the sweep aborts the graph then).
    timeout_seconds = NumberAttribute(null=True)
    deadline_at = UnicodeAttribute(null=True)
    # "high" or "low" (absent: normal), as its jobs.
    priority = UnicodeAttribute(null=True)
    # Why the graph ended as it did, when not by its jobs (a deadline).
    reason = UnicodeAttribute(null=True)
    # Epoch seconds after which DynamoDB's time to live deletes the ended graph (retention;
    # ``overseer.items.expires_at``); absent while it runs or with no retention.
    expires_at = NumberAttribute(null=True)


class LeaseItemBase(Model):
    """A lease (``JobStore.acquire_lease``), kept in the graphs table under a reserved key:
    ``#lease#<name>`` (a graph id starts with a letter or a digit)."""

    graph_id = UnicodeAttribute(hash_key=True)
    lease_owner = UnicodeAttribute()
    lease_expires_at = UnicodeAttribute()


class FailedJobsIndex(GlobalSecondaryIndex):
    """All failed jobs, by day: sparse, since only failed jobs carry ``failed_on``."""

    class Meta:
        index_name = "failed-jobs"
        projection = AllProjection()
        billing_mode = "PAY_PER_REQUEST"

    failed_on = UnicodeAttribute(hash_key=True)
    finished_at = UnicodeAttribute(range_key=True)


class SweepIndex(GlobalSecondaryIndex):
    """What the sweep may have to repair (``overseer.items``): running jobs by the minute
    their lease expires, ready jobs by the minute they are due (or their late retry may be
    sent), each kind in ``SWEEP_SHARDS`` partitions. Sparse and keys only: a heartbeat that
    does not move the job's minute writes nothing to it."""

    class Meta:
        index_name = "sweep"
        projection = KeysOnlyProjection()
        billing_mode = "PAY_PER_REQUEST"

    sweep_key = UnicodeAttribute(hash_key=True)
    sweep_at = UnicodeAttribute(range_key=True)


class JobItemBase(Model):
    graph_id = UnicodeAttribute(hash_key=True)
    # "job#<name>", or "in#<name>#<chunk>" / "out#<name>#<chunk>" for edge chunks.
    entry = UnicodeAttribute(range_key=True)
    job_name = UnicodeAttribute(null=True)
    job_type = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    args = UnicodeAttribute(null=True)  # JSON
    attempts = NumberAttribute(default=0)
    max_attempts = NumberAttribute(null=True)
    timeout_seconds = NumberAttribute(null=True)
    # Exception names that retry this job (from the graph); absent: the handler's.
    retry_on = ListAttribute(of=UnicodeAttribute, null=True)
    # The worker pool that runs it (absent: default); the worker that claimed it last, and its pool.
    pool = UnicodeAttribute(null=True)
    # Its graph's priority: "high" or "low" (absent: normal).
    priority = UnicodeAttribute(null=True)
    # The concurrency limit the graph gives it; while it waits for a slot: that limit, and
    # since when (overseer.limits).
    limit = UnicodeAttribute(null=True)
    limit_wait = UnicodeAttribute(null=True)
    limit_since = UnicodeAttribute(null=True)
    # The version of the handler code that ran its last attempt (the worker image's, on AWS).
    code_version = UnicodeAttribute(null=True)
    worker = UnicodeAttribute(null=True)
    worker_pool = UnicodeAttribute(null=True)
    deps_count = NumberAttribute(default=0)
    # Inline edges while few; absent when kept in chunk items.
    deps = ListAttribute(of=UnicodeAttribute, null=True)
    # [[child, index of this job in child's deps, child's number of deps], ...]
    dependents = ListAttribute(null=True)  # type: ignore[var-annotated]
    finished_deps = NumberSetAttribute(null=True)
    error_type = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    error_traceback = UnicodeAttribute(null=True)
    # JSON: every attempt's error [{"attempt", "type", "message", "at"}], the last 10.
    errors = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    artifacts = UnicodeAttribute(null=True)  # JSON manifest
    rows = UnicodeAttribute(null=True)  # JSON manifest of Rows artifacts
    lease_owner = UnicodeAttribute(null=True)
    lease_expires_at = UnicodeAttribute(null=True)
    heartbeat_at = UnicodeAttribute(null=True)
    not_before = UnicodeAttribute(null=True)
    # The day a job failed (YYYY-MM-DD), set only while it is failed: the failed-jobs index.
    failed_on = UnicodeAttribute(null=True)
    failed_jobs = FailedJobsIndex()
    # "<kind>#<shard>" and a minute while the sweep may have to repair the job: the sweep index.
    sweep_key = UnicodeAttribute(null=True)
    sweep_at = UnicodeAttribute(null=True)
    sweep_index = SweepIndex()
    dispatched_at = UnicodeAttribute(null=True)
    # Who moved the job from waiting to ready: "submission", "rerun" or "scheduler" (which
    # enqueues what it releases itself; the stream filter leaves its releases out).
    released_by = UnicodeAttribute(null=True)
    # Finished jobs upstream not yet in the graph's counters, counted when this job ends.
    carried_finished = NumberAttribute(null=True)
    # The finished_at of the dependency whose count it carries (see JobRecord.carried_from).
    carried_from = UnicodeAttribute(null=True)
    # When a rerun last took it (or one of its deps) back: older ends of its deps release nothing.
    rerun_at = UnicodeAttribute(null=True)
    # A child of an expansion: its parent job, its index, and how many children the parent has.
    parent = UnicodeAttribute(null=True)
    child_index = NumberAttribute(null=True)
    siblings = NumberAttribute(null=True)
    # JSON: the expansion the job's finish committed {"type", "count", "sha256", "bucket", "key"};
    # how many of its children exist; when its whole tree ended.
    expansion = UnicodeAttribute(null=True)
    expand_made = NumberAttribute(null=True)
    expand_done_at = UnicodeAttribute(null=True)
    # On an expansion's counter items ("exp#<parent>[#<group>]"): the indices that ended.
    done = NumberSetAttribute(null=True)
    created_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute(null=True)
    started_at = UnicodeAttribute(null=True)
    finished_at = UnicodeAttribute(null=True)
    # Epoch seconds after which DynamoDB's time to live deletes the item (retention; set when
    # the job ends, ``overseer.items.expires_at``); absent while it may still run.
    expires_at = NumberAttribute(null=True)


# PynamoDB retries throttling and 5xx itself; as many tries as the boto3 clients get.
MAX_RETRY_ATTEMPTS = 8


def graph_model(table_name: str) -> type[GraphItemBase]:
    meta = type(
        "Meta",
        (),
        {
            "table_name": table_name,
            "billing_mode": "PAY_PER_REQUEST",
            "max_retry_attempts": MAX_RETRY_ATTEMPTS,
        },
    )
    return type("GraphItem", (GraphItemBase,), {"Meta": meta})


def lease_model(table_name: str) -> type[LeaseItemBase]:
    meta = type("Meta", (), {"table_name": table_name, "max_retry_attempts": MAX_RETRY_ATTEMPTS})
    return type("LeaseItem", (LeaseItemBase,), {"Meta": meta})


def job_model(table_name: str) -> type[JobItemBase]:
    meta = type(
        "Meta",
        (),
        {
            "table_name": table_name,
            "billing_mode": "PAY_PER_REQUEST",
            "stream_view_type": "NEW_AND_OLD_IMAGES",
            "max_retry_attempts": MAX_RETRY_ATTEMPTS,
        },
    )
    return type("JobItem", (JobItemBase,), {"Meta": meta})
