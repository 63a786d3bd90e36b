"""The rehearsal's two-pool story: a stack with a second worker pool runs a graph whose jobs
run on both pools, as deployed.

The stack (``synthesized_with_pools``) has the pool ``large`` besides the default one: its
own Batch job queue and job definition, job role, dispatch and dead-letter queues, and
handlers module (``examples.pools.handlers``, in the default pool's image). The graph goes
in through API Gateway; the scheduler sends each job to its pool's queue; the sweep reads
each pool's depth and submits each pool's job definition to its job queue; Batch starts the
container that job definition describes, as its job role; each worker takes jobs from its
own pool's queue. Every AWS call is checked against the caller's role as it happens.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.rehearsal.sources import client_for
from tests.rehearsal.template import ACCOUNT, REGION
from tests.rehearsal.test_story import api, jobs, objects, removal_report, wait_until_ended
from tests.rehearsal.world import Rehearsal

pytestmark = pytest.mark.rehearsal

GRAPH_ID = "two-pools"
GRAPH = {
    "id": GRAPH_ID,
    "jobs": {
        # The default pool's handlers (the deployment check): an artifact holding its item.
        "start": {"type": "write_item", "args": {"item": "written on the default pool"}},
        # The large pool's: the graph asks for it; aggregate's handler spec names it.
        "fetch": {"deps": ["start"], "pool": "large"},
        "aggregate": ["fetch"],
        # Back on the default pool: a join reading both pools' artifacts.
        "join": {"type": "list_inputs", "deps": ["start", "aggregate"]},
    },
}
POOL_OF_JOB = {"start": "default", "fetch": "large", "aggregate": "large", "join": "default"}
# What `aws cloudformation describe-stacks` shows of each pool (infra/stack.py's outputs).
OUTPUTS = {
    "default": {
        "queue": "QueueUrl",
        "high": "HighQueueUrl",
        "low": "LowQueueUrl",
        "job_queue": "BatchJobQueue",
        "job_definition": "BatchJobDefinition",
    },
    "large": {
        "queue": "LargeQueueUrl",
        "high": "LargeHighQueueUrl",
        "low": "LargeLowQueueUrl",
        "job_queue": "LargeBatchJobQueue",
        "job_definition": "LargeBatchJobDefinition",
    },
}


@pytest.fixture(scope="module")
def rehearsal(synthesized_with_pools: Path) -> Iterator[Rehearsal]:
    world = Rehearsal.start(synthesized_with_pools)
    try:
        yield world
    finally:
        world.close()


def output(rehearsal: Rehearsal, pool: str, what: str) -> str:
    return str(rehearsal.template.output(OUTPUTS[pool][what]))


def queue_arn(rehearsal: Rehearsal, pool: str, priority: str = "queue") -> str:
    """The ARN of ``pool``'s queue of normal priority ("queue"), or "high" or "low"."""
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{output(rehearsal, pool, priority).rsplit('/', 1)[-1]}"


def pool_queue_arns(rehearsal: Rehearsal, pool: str) -> set[str]:
    """Its three queues: a worker asks each of them (``overseer.priority``)."""
    return {queue_arn(rehearsal, pool, priority) for priority in ("queue", "high", "low")}


def queue_messages(rehearsal: Rehearsal) -> dict[str, int]:
    """Each pool's queue as the SQS console shows it: available + in flight + delayed."""
    sqs = rehearsal.client("sqs")
    counts = {}
    for pool in OUTPUTS:
        attributes = sqs.get_queue_attributes(
            QueueUrl=output(rehearsal, pool, "queue"),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        counts[pool] = sum(int(value) for value in attributes.values())
    return counts


def batch_jobs_by_pool(rehearsal: Rehearsal) -> dict[str, int]:
    """The Batch jobs in each pool's job queue, as the Batch console lists them."""
    pool_of_queue = {output(rehearsal, pool, "job_queue"): pool for pool in OUTPUTS}
    return dict(Counter(pool_of_queue[job.queue] for job in rehearsal.batch.jobs.values()))


def sweep_now(rehearsal: Rehearsal) -> Any:
    """One run of the sweep's schedule rule (the schedule itself is not started yet)."""
    (result,) = rehearsal.fire_rule(rehearsal.rule_targeting(rehearsal.functions["sweep"])[0])
    assert result.error is None, result.error
    return result


def metric_by(logs: str, name: str, dimension: str = "Pool") -> dict[str, float]:
    """The metric ``name`` by its ``dimension``, from the CloudWatch embedded metric format
    lines of a function's log (what the dashboard's per-pool and per-limit rows read)."""
    values = {}
    for line in logs.splitlines():
        start = line.find("{")
        try:
            record = json.loads(line[start:]) if start >= 0 else None
        except ValueError:
            continue
        if not isinstance(record, dict) or "_aws" not in record or dimension not in record:
            continue
        if name in record:
            value = record[name]
            values[record[dimension]] = value[0] if isinstance(value, list) else value
    return values


def test_a_two_pool_graph_runs_each_job_on_its_pools_workers(rehearsal: Rehearsal) -> None:
    answer = api(rehearsal, "POST", "/graphs", {"graph": GRAPH})
    assert answer["graph_id"] == GRAPH_ID
    # Each job's pool was decided at submission.
    assert {name: job["pool"] for name, job in jobs(rehearsal, GRAPH_ID).items()} == POOL_OF_JOB

    # Only start can run: the scheduler sent it to the default pool's queue. The sweep reads
    # each pool's depth and, no worker running yet, starts one default worker.
    rehearsal.wait_for(
        lambda: queue_messages(rehearsal) == {"default": 1, "large": 0}, timeout=60, what="start's message"
    )
    first = sweep_now(rehearsal)
    assert first.payload["queue_depths"] == {"default": 1, "large": 0}
    assert first.payload["workers_started"] == 1
    assert batch_jobs_by_pool(rehearsal) == {"default": 1}

    # start ran on it; fetch waits in the large pool's queue, which no worker reads yet, and
    # the next sweep starts a large worker.
    rehearsal.wait_for(
        lambda: queue_messages(rehearsal) == {"default": 0, "large": 1},
        timeout=120,
        what="fetch's message in the large pool's queue",
    )
    second = sweep_now(rehearsal)
    assert second.payload["queue_depths"] == {"default": 0, "large": 1}
    assert second.payload["workers_active"] == {"default": 1, "large": 0}
    assert second.payload["workers_started"] == 1
    assert metric_by(second.logs, "QueueDepth") == {"default": 0, "large": 1}
    assert metric_by(second.logs, "WorkersRunning") == {"default": 1, "large": 0}
    assert batch_jobs_by_pool(rehearsal) == {"default": 1, "large": 1}

    rehearsal.start_sweep_schedule()  # from here on, as deployed
    assert wait_until_ended(rehearsal, GRAPH_ID) == "finished", jobs(rehearsal, GRAPH_ID)
    # Each worker deletes its handled messages in batches, at the latest when its queue is
    # empty: then both queues are.
    rehearsal.wait_for(
        lambda: queue_messages(rehearsal) == {"default": 0, "large": 0},
        timeout=60,
        what="every message deleted",
    )


def test_each_job_ran_on_a_worker_of_its_pool_and_left_its_artifacts(rehearsal: Rehearsal) -> None:
    # As an operator reads the jobs table in the console: each job's pool (absent: the
    # default), and the worker that claimed it, of which pool, in which Batch job.
    table = rehearsal.template.output("JobsTable")
    items = rehearsal.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="graph_id = :g AND begins_with(entry, :j)",
        ExpressionAttributeValues={":g": {"S": GRAPH_ID}, ":j": {"S": "job#"}},
    )["Items"]
    records = {item["job_name"]["S"]: item for item in items}
    assert {
        name: (item.get("pool", {}).get("S", "default"), item["worker_pool"]["S"])
        for name, item in records.items()
    } == {name: (pool, pool) for name, pool in POOL_OF_JOB.items()}
    for name, item in records.items():
        pool = POOL_OF_JOB[name]
        (batch_job,) = [j for j in rehearsal.batch.jobs.values() if j.job_id in item["worker"]["S"]]
        assert (batch_job.queue, batch_job.definition.arn) == (
            output(rehearsal, pool, "job_queue"),
            output(rehearsal, pool, "job_definition"),
        ), name

    bucket = str(rehearsal.template.output("ArtifactBucket"))
    assert objects(rehearsal, bucket, f"{GRAPH_ID}/") == [f"{GRAPH_ID}/join.json", f"{GRAPH_ID}/start.txt"]
    # The large pool's handlers module writes which pool's worker ran each job (OVERSEER_POOL).
    s3 = rehearsal.client("s3")

    def read(key: str) -> str:
        return str(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())

    assert objects(rehearsal, bucket, f"pools/{GRAPH_ID}/") == [
        f"pools/{GRAPH_ID}/aggregate.json",
        f"pools/{GRAPH_ID}/fetch.json",
    ]
    fetched = json.loads(read(f"pools/{GRAPH_ID}/fetch.json"))
    aggregated = read(f"pools/{GRAPH_ID}/aggregate.json")
    assert (fetched["pool"], json.loads(aggregated)) == (
        "large",
        {"job": "aggregate", "pool": "large", "total": sum(fetched["rows"])},
    )
    # The default pool's join read both pools' artifacts.
    listing = {entry["job"]: entry["artifacts"] for entry in json.loads(read(f"{GRAPH_ID}/join.json"))}
    assert listing == {"start": ["written on the default pool"], "aggregate": [aggregated]}


def _resources(rehearsal: Rehearsal, principal: str, action: str) -> set[str]:
    """The resources of the principal's calls that needed ``action`` (its CloudTrail)."""
    return {
        check.permission.resource
        for call in rehearsal.gateway.calls_of(principal)
        for check in call.checks
        if check.permission.action == action
    }


def test_each_pools_worker_ran_as_its_own_role_on_its_own_queue(rehearsal: Rehearsal) -> None:
    assert [call.describe_denial() for call in rehearsal.gateway.denied()] == []
    default, large = queue_arn(rehearsal, "default"), queue_arn(rehearsal, "large")
    assert _resources(rehearsal, "worker", "sqs:ReceiveMessage") == pool_queue_arns(rehearsal, "default")
    assert _resources(rehearsal, "worker-large", "sqs:ReceiveMessage") == pool_queue_arns(rehearsal, "large")
    assert _resources(rehearsal, "worker-large", "sqs:DeleteMessage") == {large}
    assert _resources(rehearsal, "scheduler", "sqs:SendMessage") == {default, large}
    assert {default, large} <= _resources(rehearsal, "sweep", "sqs:GetQueueAttributes")
    # Each SubmitJob of the sweep named one pool's job queue with that pool's job definition.
    submitted = {
        tuple(check.permission.resource for check in call.checks)
        for call in rehearsal.gateway.calls_of("sweep")
        if call.operation == "batch:SubmitJob"
    }
    assert submitted == {
        (output(rehearsal, pool, "job_queue"), output(rehearsal, pool, "job_definition")) for pool in OUTPUTS
    }

    # The large pool's role may not take the default pool's jobs: such a call is denied.
    worker = next(p for p in rehearsal.gateway.principals.values() if p.name == "worker-large")
    assert worker.role != next(p for p in rehearsal.gateway.principals.values() if p.name == "worker").role
    sqs = client_for(worker, "sqs", rehearsal.gateway.url)
    with pytest.raises(ClientError) as denied:
        sqs.receive_message(QueueUrl=output(rehearsal, "default", "queue"), WaitTimeSeconds=0)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert f"not authorized to perform: sqs:ReceiveMessage on resource: {default}" in str(denied.value)
    assert [call.principal for call in rehearsal.gateway.denied()] == ["worker-large"]


# The grants naming a resource of the large pool (its queues, Batch job queue and job
# definition) that no call of this story needs, each with the reason. The stack makes a
# pool's grants as it makes the default pool's, whose calls test_story makes.
LARGE_POOL_NOT_EXERCISED = {
    ("Sweep", "sqs:SendMessage", "DispatchQueueLarge"): "re-sends a lost message (test_story: the "
    "default pool's)",
    ("Sweep", "sqs:DeleteMessage", "DispatchDeadLetterQueueLarge"): "deletes a dead letter once its job is "
    "failed (test_story: the default pool's)",
    ("WorkersLarge", "sqs:ChangeMessageVisibility", "DispatchQueueLarge"): "extends the message of a job "
    "running longer than the lease, or releases it on SIGTERM (not exercised for the default pool either)",
    ("Scheduler", "sqs:SendMessage", "DispatchQueueLargeHigh"): "sends a high-priority job of the pool; the "
    "two-pool graph is of normal priority (test_story: the default pool's high and low jobs)",
    (
        "Scheduler",
        "sqs:SendMessage",
        "DispatchQueueLargeLow",
    ): "sends a low-priority job of the pool (as above)",
    ("WorkersLarge", "sqs:DeleteMessage", "DispatchQueueLargeHigh"): "deletes a high-priority job's message "
    "(as above)",
    ("WorkersLarge", "sqs:DeleteMessage", "DispatchQueueLargeLow"): "deletes a low-priority job's message "
    "(as above)",
}


def test_every_grant_on_the_large_pools_resources_is_needed_by_a_call_or_says_why_not(
    rehearsal: Rehearsal,
) -> None:
    exempted: set[tuple[str, str, str]] = set()

    def exemption(role: str, action: str, resource: str) -> str | None:
        for key, reason in LARGE_POOL_NOT_EXERCISED.items():
            role_fragment, exempt_action, fragment = key
            if role_fragment in role and action == exempt_action and fragment in resource:
                exempted.add(key)
                return reason
        return None

    needed, unneeded = removal_report(
        rehearsal, exempt=exemption, considered=lambda role, action, resource: "Large" in resource
    )
    print("\n".join(f"{grant}\n    -> denies {call}" for grant, call in sorted(needed.items())))
    assert unneeded == [], "granted but used by no call of the two-pool story:\n" + "\n".join(unneeded)
    stale = set(LARGE_POOL_NOT_EXERCISED) - exempted
    assert not stale, f"exempt, yet needed by a call of the story (or no longer granted): {stale}"
    # The calls that needed them: the scheduler's sends, the sweep's depth, dead letters and
    # workers, the large worker's receives and deletes.
    assert sorted(needed.values()) == [
        "scheduler sqs:SendMessageBatch",
        "sweep batch:SubmitJob",  # the job queue
        "sweep batch:SubmitJob",  # the job definition
        *["sweep sqs:GetQueueAttributes"] * 3,  # its three queues (normal, high, low)
        "sweep sqs:ReceiveMessage",  # the dead-letter queue
        "worker-large sqs:DeleteMessageBatch",
        *["worker-large sqs:ReceiveMessage"] * 3,  # it asks each of its three queues
    ]
