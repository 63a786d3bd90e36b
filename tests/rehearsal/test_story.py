"""The rehearsal's story: the synthesized stack, as deployed, runs graphs end to end.

One stack per module (tests run in order): a dead-lettered job failed by the sweep; a graph
submitted through API Gateway and the API function; the nightly rule starting one report
per company; a worker container killed mid-job, and one lost to a Spot reclaim; a graph
that grows at run time (an expansion and its join); stream batches the scheduler gave up
on, replayed by the sweep (one of them an expansion's). Every AWS call of every component
is checked against its synthesized role as it happens; the last tests read the record of
those calls: nothing was denied, and every statement of every role is needed by some call
(or says why the rehearsal cannot exercise it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.conftest import ALLOWED_BUCKET, ROWS_TABLE
from tests.rehearsal.iam import evaluate
from tests.rehearsal.world import Rehearsal

pytestmark = pytest.mark.rehearsal

GRAPH_TIMEOUT = 240


@pytest.fixture(scope="module")
def rehearsal(synthesized: Path) -> Iterator[Rehearsal]:
    world = Rehearsal.start(synthesized)
    # The user's own resources that the stack is configured to write to.
    world.client("s3").create_bucket(Bucket=ALLOWED_BUCKET)
    world.client("dynamodb").create_table(
        TableName=ROWS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    try:
        yield world
    finally:
        record = os.environ.get("OVERSEER_REHEARSAL_RECORD")
        if record:  # every call and the permissions it needed, for reading after the run
            Path(record).write_text(json.dumps([
                {"principal": c.principal, "role": c.role, "operation": c.operation,
                 "permissions": [[k.permission.action, k.permission.resource] for k in c.checks]}
                for c in world.gateway.calls
            ], indent=1))  # fmt: skip
        world.close()


def api(world: Rehearsal, method: str, path: str, body: Any = None) -> Any:
    status, answer = world.api.request(method, path, body, caller=world.operator)
    assert status < 300, f"{method} {path}: {status} {answer}"
    return answer


def graph_status(world: Rehearsal, graph_id: str) -> str:
    return str(api(world, "GET", f"/graphs/{graph_id}")["status"])


def jobs(world: Rehearsal, graph_id: str) -> dict[str, dict[str, Any]]:
    return dict(api(world, "GET", f"/graphs/{graph_id}/jobs")["jobs"])


def wait_until_ended(world: Rehearsal, graph_id: str) -> str:
    return str(
        world.wait_for(
            lambda: (s := graph_status(world, graph_id)) in ("finished", "failed", "aborted") and s,
            timeout=GRAPH_TIMEOUT,
            what=f"graph {graph_id} to end",
        )
    )


def objects(world: Rehearsal, bucket: str, prefix: str) -> list[str]:
    listing = world.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _dispatch_queue_id(rehearsal: Rehearsal) -> str:
    """The default pool's normal-priority queue: the stack's ``QueueUrl`` output names it."""
    return str(rehearsal.template.body["Outputs"]["QueueUrl"]["Value"]["Ref"])


def _dispatch_queue_url(rehearsal: Rehearsal) -> str:
    return str(rehearsal.template.ref(_dispatch_queue_id(rehearsal)))


def _receive(rehearsal: Rehearsal, count: int, *, delete: bool) -> None:
    """Take ``count`` deliveries off the dispatch queue, as a worker that dies would."""
    sqs, url = rehearsal.client("sqs"), _dispatch_queue_url(rehearsal)
    received = 0

    def receive_once() -> bool:
        nonlocal received
        got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=1).get("Messages", [])
        for message in got if delete else []:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        received += len(got)
        return received >= count

    rehearsal.wait_for(receive_once, timeout=60, what=f"{count} deliveries", every=0.1)


def test_a_dead_lettered_job_is_failed_by_the_sweep(rehearsal: Rehearsal) -> None:
    # No worker runs yet. First a message is lost (deleted without an outcome); the sweep
    # sends it again later (test_a_lost_message_is_sent_again_by_the_sweep).
    api(rehearsal, "POST", "/graphs", {"graph": {"id": "lost-message", "jobs": {"write_artifact": []}}})
    _receive(rehearsal, 1, delete=True)
    # Then a job's message is received ten times without an outcome (as when a worker
    # crashes on it each time); the queue's redrive policy moves it to the dead-letter
    # queue, and the sweep fails the job with the reason.
    answer = api(
        rehearsal, "POST", "/graphs", {"graph": {"id": "dead-letter", "jobs": {"write_artifact": []}}}
    )
    assert answer["graph_id"] == "dead-letter"
    redrive = rehearsal.template.resolve(rehearsal.template.props(_dispatch_queue_id(rehearsal)))[
        "RedrivePolicy"
    ]
    _receive(rehearsal, int(redrive["maxReceiveCount"]), delete=False)
    sqs = rehearsal.client("sqs")
    assert (
        sqs.receive_message(QueueUrl=_dispatch_queue_url(rehearsal), WaitTimeSeconds=1).get("Messages", [])
        == []
    )

    (sweep,) = rehearsal.fire_rule(rehearsal.rule_targeting(rehearsal.functions["sweep"])[0])

    assert sweep.error is None, sweep.error
    assert sweep.payload["dead_letters"] == 1
    assert wait_until_ended(rehearsal, "dead-letter") == "failed"
    job = jobs(rehearsal, "dead-letter")["write_artifact"]
    assert job["status"] == "failed"
    assert "received" in str(job["error"]) and "times" in str(job["error"])
    assert rehearsal.functions["sweep"].errors == []


def test_a_graph_submitted_through_the_api_runs_to_the_end(rehearsal: Rehearsal) -> None:
    rehearsal.start_sweep_schedule()
    graph = {
        "id": "deployment-check",
        "args": {"bucket": ALLOWED_BUCKET, "table": ROWS_TABLE},
        "jobs": {
            "write_artifact": [],
            "read_inputs": ["write_artifact"],
            "write_elsewhere": [],
            "write_rows": [],
        },
    }
    answer = api(rehearsal, "POST", "/graphs", {"graph": graph})
    assert answer["graph_id"] == "deployment-check"

    assert wait_until_ended(rehearsal, "deployment-check") == "finished", jobs(rehearsal, "deployment-check")

    bucket = rehearsal.template.ref(next(iter(rehearsal.template.of_type("AWS::S3::Bucket"))))
    assert objects(rehearsal, bucket, "deployment-check/") == [
        "deployment-check/read_inputs.txt",
        "deployment-check/write_artifact.bin",
    ]
    assert objects(rehearsal, ALLOWED_BUCKET, "deployment-check/") == ["deployment-check/write_elsewhere.txt"]
    row = rehearsal.client("dynamodb").get_item(
        TableName=ROWS_TABLE, Key={"id": {"S": "deployment-check/write_rows"}}
    )
    assert row["Item"]["attempt"] == {"N": "1"}
    assert rehearsal.batch.jobs, "the sweep started no Batch worker"

    # Operated through the API alone: a job, its log lines (the worker containers' output
    # in the workers' log group, as the awslogs driver puts it) and its artifacts, downloaded
    # by URLs the API presigned with its role (no credentials sent).
    job = api(rehearsal, "GET", "/graphs/deployment-check/jobs/read_inputs")
    assert (job["name"], job["status"], job["deps"]) == ("read_inputs", "finished", ["write_artifact"])
    assert rehearsal.batch.ship_logs(rehearsal.client("logs"))
    lines = api(rehearsal, "GET", "/graphs/deployment-check/jobs/read_inputs/logs")["lines"]
    # (with the log records of the libraries the job used, e.g. botocore's)
    assert {"attempt": 1, "line": "read 1 inputs of sizes [64]"} in lines, lines
    assert {line["attempt"] for line in lines} == {1}
    for name, written_to in (("write_artifact", bucket), ("write_elsewhere", ALLOWED_BUCKET)):
        (artifact,) = api(rehearsal, "GET", f"/graphs/deployment-check/jobs/{name}/artifacts")["artifacts"]
        assert artifact["bucket"] == written_to
        with urllib.request.urlopen(artifact["url"], timeout=30) as response:
            data = response.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (artifact["size"], artifact["sha256"])
        assert rehearsal.gateway.calls_needing("api", "s3:GetObject", artifact["key"])


def test_a_lost_message_is_sent_again_by_the_sweep(rehearsal: Rehearsal) -> None:
    # Its job stayed ready with no message for longer than a lease, the queue empty.
    assert wait_until_ended(rehearsal, "lost-message") == "finished"
    sweep_sends = [c for c in rehearsal.gateway.calls_of("sweep") if "SendMessage" in c.operation]
    assert sweep_sends and all(c.allowed for c in sweep_sends)


def test_the_nightly_rule_starts_one_report_per_company(rehearsal: Rehearsal) -> None:
    rule_id, _ = rehearsal.rule_targeting(rehearsal.functions["trigger"])
    now = dt.datetime.now(dt.UTC)

    (result,) = rehearsal.fire_rule(rule_id)

    assert result.error is None, result.error
    date = now.strftime("%Y-%m-%d")
    graph_ids = [f"daily-report-{date}-company-{company}" for company in (1, 2, 3)]
    for graph_id in graph_ids:
        assert wait_until_ended(rehearsal, graph_id) == "finished", jobs(rehearsal, graph_id)
    bucket = rehearsal.template.ref(next(iter(rehearsal.template.of_type("AWS::S3::Bucket"))))
    reports = [key for key in objects(rehearsal, bucket, "") if key.endswith(".html")]
    assert len(reports) >= 3, reports


def _running_worker_of(rehearsal: Rehearsal, graph_id: str, name: str) -> str:
    """The Batch job id of the worker holding the job's lease."""

    table = rehearsal.template.ref(
        rehearsal.template.find("AWS::DynamoDB::Table", lambda p: "StreamSpecification" in p)
    )

    def holder() -> str | None:
        # As an operator would, in the console: the job's item names its lease owner.
        item = (
            rehearsal.client("dynamodb")
            .get_item(
                TableName=table,
                Key={"graph_id": {"S": graph_id}, "entry": {"S": f"job#{name}"}},
                ConsistentRead=True,
            )
            .get("Item", {})
        )
        owner = item.get("lease_owner", {}).get("S", "")
        if item.get("status", {}).get("S") != "running" or not owner:
            return None
        return next((j.job_id for j in rehearsal.batch.running() if j.job_id in owner), None)

    return str(
        rehearsal.wait_for(holder, timeout=120, what=f"{graph_id}/{name} to run on a Batch worker", every=0.3)
    )


def test_a_worker_killed_mid_job_is_recovered(rehearsal: Rehearsal) -> None:
    graph = {"id": "killed-worker", "jobs": {"slow": {"type": "wait", "args": {"seconds": 8}}}}
    # High priority: its messages go through the default pool's high-priority queue.
    assert api(rehearsal, "POST", "/graphs", {"graph": graph, "priority": "high"})["priority"] == "high"
    batch_job = _running_worker_of(rehearsal, "killed-worker", "slow")

    rehearsal.batch.jobs[batch_job].attempts[-1].container.kill()

    assert wait_until_ended(rehearsal, "killed-worker") == "finished"
    job = jobs(rehearsal, "killed-worker")["slow"]
    assert job["attempts"] == 2  # a crash counts


def test_a_job_whose_worker_was_lost_to_a_spot_reclaim_keeps_its_attempt(rehearsal: Rehearsal) -> None:
    graph = {
        "id": "spot-reclaim",
        "priority": "low",
        "jobs": {"slow": {"type": "wait", "args": {"seconds": 8}}},
    }
    api(rehearsal, "POST", "/graphs", {"graph": graph})  # low priority: through the low-priority queue
    batch_job = _running_worker_of(rehearsal, "spot-reclaim", "slow")

    rehearsal.batch.reclaim(batch_job)

    assert wait_until_ended(rehearsal, "spot-reclaim") == "finished"
    assert jobs(rehearsal, "spot-reclaim")["slow"]["attempts"] == 1


def test_a_graph_cancelled_through_the_api_stops_and_ends_aborted(rehearsal: Rehearsal) -> None:
    graph = {
        "id": "cancelled",
        "jobs": {
            "slow": {"type": "wait", "args": {"seconds": 20}},
            "after": {"type": "write_artifact", "deps": ["slow"]},
        },
    }
    api(rehearsal, "POST", "/graphs", {"graph": graph})
    _running_worker_of(rehearsal, "cancelled", "slow")

    answer = api(rehearsal, "POST", "/graphs/cancelled/cancel")

    assert answer["status"] == "aborted"
    assert {name: job["status"] for name, job in jobs(rehearsal, "cancelled").items()} == {
        "slow": "aborted",
        "after": "aborted",
    }


def _artifact_bucket(rehearsal: Rehearsal) -> str:
    return str(rehearsal.template.ref(next(iter(rehearsal.template.of_type("AWS::S3::Bucket")))))


def _text(rehearsal: Rehearsal, bucket: str, key: str) -> str:
    return str(rehearsal.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def test_a_graph_that_expands_runs_its_children_and_its_join_as_deployed(rehearsal: Rehearsal) -> None:
    # fan_out's first attempt fails and is retried; its second returns an Expand of three
    # items: the worker stores them and commits the expansion with the graph's new job count,
    # the scheduler writes the children, and join waits for all three.
    graph = {
        "id": "expands",
        "jobs": {
            "fan_out": {"type": "fan_out", "args": {"items": ["north", "south", "east"], "fail_first": True}},
            "join": {"type": "list_inputs", "deps": ["fan_out"]},
        },
    }
    api(rehearsal, "POST", "/graphs", {"graph": graph})

    assert wait_until_ended(rehearsal, "expands") == "finished", jobs(rehearsal, "expands")
    listed = jobs(rehearsal, "expands")
    assert {name: job["status"] for name, job in listed.items()} == {
        "fan_out": "finished",
        "fan_out.0": "finished",
        "fan_out.1": "finished",
        "fan_out.2": "finished",
        "join": "finished",
    }
    assert listed["fan_out"]["attempts"] == 2
    assert listed["fan_out"]["expansion"] == {"type": "write_item", "count": 3, "done": True}
    assert [listed[f"fan_out.{i}"]["parent"] for i in range(3)] == ["fan_out"] * 3
    assert api(rehearsal, "GET", "/graphs/expands")["jobs_total"] == 5
    # The graphs newest first (the graphs-by-day index, then the graphs found), as deployed.
    newest = api(rehearsal, "GET", "/graphs")["graphs"]
    assert ("expands", "finished") in [(g["graph_id"], g["status"]) for g in newest]
    bucket = _artifact_bucket(rehearsal)
    assert objects(rehearsal, bucket, "expands/") == [
        "expands/fan_out.0.txt",
        "expands/fan_out.1.txt",
        "expands/fan_out.2.txt",
        "expands/fan_out.json",
        "expands/join.json",
    ]
    assert [_text(rehearsal, bucket, f"expands/fan_out.{i}.txt") for i in range(3)] == [
        "north",
        "south",
        "east",
    ]
    # The join got the parent's artifact, then each child's in item order.
    listing = json.loads(_text(rehearsal, bucket, "expands/join.json"))
    assert [entry["job"] for entry in listing] == ["fan_out", "fan_out.0", "fan_out.1", "fan_out.2"]
    assert [entry["artifacts"] for entry in listing[1:]] == [["north"], ["south"], ["east"]]
    # Only the committed attempt's items stay; the scheduler deleted the first attempt's
    # (it failed before storing any: the delete finds nothing, as S3 allows).
    assert objects(rehearsal, bucket, "_overseer/expansions/expands/") == [
        "_overseer/expansions/expands/fan_out/attempt-2.json"
    ]
    assert rehearsal.gateway.calls_needing("scheduler", "s3:DeleteObject", "expands/fan_out/attempt-1.json")
    # The worker's finish grew the graph's job count in the same transaction.
    assert any(
        "TransactWriteItems" in call.operation
        for call in rehearsal.gateway.calls_needing("worker", "dynamodb:UpdateItem", "TablesGraphs")
    )


def _table(rehearsal: Rehearsal, *, with_sort_key: bool) -> str:
    logical_id = rehearsal.template.find(
        "AWS::DynamoDB::Table", lambda props: (len(props["KeySchema"]) == 2) == with_sort_key
    )
    return str(rehearsal.template.ref(logical_id))


STAMP = "2026-11-29T00:00:00.000Z"


def _put_running_graph(rehearsal: Rehearsal, graph_id: str, *, jobs_total: int) -> None:
    """A running graph's item, written straight into the graphs table, nothing counted yet."""
    rehearsal.client("dynamodb").put_item(
        TableName=_table(rehearsal, with_sort_key=False),
        Item={
            "graph_id": {"S": graph_id}, "status": {"S": "running"}, "jobs_total": {"N": str(jobs_total)},
            "args": {"S": "{}"}, "count_finished": {"N": "0"}, "count_failed": {"N": "0"},
            "count_aborted": {"N": "0"}, "created_at": {"S": STAMP}, "updated_at": {"S": STAMP},
        },
    )  # fmt: skip


def _wait_for_given_up_records(rehearsal: Rehearsal, failures_before: int, records: int, what: str) -> None:
    rehearsal.wait_for(
        lambda: (
            sum(
                f["record"]["DDBStreamBatchInfo"]["batchSize"]
                for f in rehearsal.poller.failures[failures_before:]
            )
            >= records
        ),
        timeout=120,
        what=what,
        every=0.1,
    )


def test_a_stream_batch_the_scheduler_gave_up_on_is_replayed_by_the_sweep(rehearsal: Rehearsal) -> None:
    # A graph written straight into the tables: a and b finished, c waits for both. c's
    # set of finished deps has the wrong type (a corrupt item), so the scheduler fails on
    # a's and b's records until Lambda gives up and sends them to the on-failure queue.
    ddb, graph_id, stamp = rehearsal.client("dynamodb"), "replayed", STAMP
    _put_running_graph(rehearsal, graph_id, jobs_total=3)
    jobs_table = _table(rehearsal, with_sort_key=True)

    def job(name: str, status: str, deps: list[str], dependents: list[Any], **more: Any) -> None:
        item = {
            "graph_id": {"S": graph_id}, "entry": {"S": f"job#{name}"}, "job_name": {"S": name},
            "job_type": {"S": "write_artifact"}, "status": {"S": status}, "args": {"S": "{}"},
            "attempts": {"N": "1" if status == "finished" else "0"}, "deps_count": {"N": str(len(deps))},
            "deps": {"L": [{"S": d} for d in deps]},
            "dependents": {"L": [{"L": [{"S": c}, {"N": str(i)}, {"N": str(n)}]} for c, i, n in dependents]},
            "created_at": {"S": stamp}, "updated_at": {"S": stamp}, **more,
        }  # fmt: skip
        ddb.put_item(TableName=jobs_table, Item=item)

    job("c", "waiting", ["a", "b"], [], finished_deps={"SS": ["corrupt"]})
    before = len(rehearsal.poller.failures)
    job("a", "finished", [], [("c", 0, 2)])
    job("b", "finished", [], [("c", 1, 2)])
    _wait_for_given_up_records(rehearsal, before, 2, "the scheduler to give up on a's and b's records")
    # The item is repaired; the records are only in the stream now: the sweep replays them.
    ddb.update_item(
        TableName=jobs_table,
        Key={"graph_id": {"S": graph_id}, "entry": {"S": "job#c"}},
        UpdateExpression="REMOVE finished_deps",
    )

    assert wait_until_ended(rehearsal, graph_id) == "finished", jobs(rehearsal, graph_id)
    assert jobs(rehearsal, graph_id)["c"]["attempts"] == 1
    operations = {c.operation for c in rehearsal.gateway.calls_of("sweep")}
    assert {"dynamodb:GetShardIterator", "dynamodb:GetRecords"} <= operations


def test_an_expansion_in_a_stream_batch_the_scheduler_gave_up_on_is_made_by_the_sweep(
    rehearsal: Rehearsal,
) -> None:
    # A job written straight into the jobs table as its second attempt's finish left it:
    # an expansion of two items committed, no child made yet. Its first attempt's items
    # file stayed behind (it lost its lease after storing them). The committed expansion is
    # written without its count, so the scheduler fails on the job's record until Lambda
    # gives up.
    graph_id, bucket = "replayed-expansion", _artifact_bucket(rehearsal)
    prefix = f"_overseer/expansions/{graph_id}/fan_out/"
    items = {"type": "write_item", "args": {}, "items": [{"item": "west"}, {"item": "east"}]}
    committed = json.dumps(items, sort_keys=True, separators=(",", ":")).encode()
    s3 = rehearsal.client("s3")
    s3.put_object(Bucket=bucket, Key=f"{prefix}attempt-1.json", Body=committed)
    s3.put_object(Bucket=bucket, Key=f"{prefix}attempt-2.json", Body=committed)
    _put_running_graph(rehearsal, graph_id, jobs_total=3)
    expansion = {
        "type": "write_item", "count": 2, "sha256": hashlib.sha256(committed).hexdigest(),
        "bucket": bucket, "key": f"{prefix}attempt-2.json",
    }  # fmt: skip
    before = len(rehearsal.poller.failures)
    rehearsal.client("dynamodb").put_item(
        TableName=_table(rehearsal, with_sort_key=True),
        Item={
            "graph_id": {"S": graph_id}, "entry": {"S": "job#fan_out"}, "job_name": {"S": "fan_out"},
            "job_type": {"S": "fan_out"}, "status": {"S": "finished"}, "args": {"S": "{}"},
            "attempts": {"N": "2"}, "deps_count": {"N": "0"}, "deps": {"L": []}, "dependents": {"L": []},
            "artifacts": {"S": "[]"}, "expand_made": {"N": "0"},
            "expansion": {"S": json.dumps({k: v for k, v in expansion.items() if k != "count"})},
            "created_at": {"S": STAMP}, "updated_at": {"S": STAMP}, "finished_at": {"S": STAMP},
        },
    )  # fmt: skip
    _wait_for_given_up_records(rehearsal, before, 1, "the scheduler to give up on fan_out's record")
    # The expansion is repaired; the record is only in the stream now: the sweep's replay
    # makes the children (from the job as it is now) and deletes the first attempt's items.
    rehearsal.client("dynamodb").update_item(
        TableName=_table(rehearsal, with_sort_key=True),
        Key={"graph_id": {"S": graph_id}, "entry": {"S": "job#fan_out"}},
        UpdateExpression="SET expansion = :e",
        ExpressionAttributeValues={":e": {"S": json.dumps(expansion)}},
    )

    assert wait_until_ended(rehearsal, graph_id) == "finished", jobs(rehearsal, graph_id)
    listed = jobs(rehearsal, graph_id)
    assert {name: job["status"] for name, job in listed.items()} == {
        "fan_out": "finished",
        "fan_out.0": "finished",
        "fan_out.1": "finished",
    }
    assert [_text(rehearsal, bucket, f"{graph_id}/fan_out.{i}.txt") for i in range(2)] == ["west", "east"]
    assert objects(rehearsal, bucket, prefix) == [f"{prefix}attempt-2.json"]
    assert rehearsal.gateway.calls_needing("sweep", "dynamodb:PutItem", "TablesJobs")
    assert rehearsal.gateway.calls_needing("sweep", "s3:DeleteObject", f"{prefix}attempt-1.json")


def test_every_call_of_every_component_was_allowed(rehearsal: Rehearsal) -> None:
    time.sleep(0.5)
    denied = [call.describe_denial() for call in rehearsal.gateway.denied()]
    assert denied == []
    made = {call.principal for call in rehearsal.gateway.calls}
    assert {"api", "scheduler", "sweep", "trigger", "worker"} <= made


# Grants no call of the story needs, each with the reason the rehearsal cannot exercise it.
# Keyed by (role fragment, action prefix, resource fragment); anything else no call needs fails.
NOT_EXERCISED = {
    ("", "logs:CreateLogStream", ""): "Lambda and the awslogs driver write the logs, not the code "
    "(test_static_permissions checks each role writes only to its own log group)",
    ("", "logs:PutLogEvents", ""): "(as above)",
    ("", "xray:", ""): "X-Ray segments go to the daemon over UDP, not through the SDK",
    ("", "ecr:", ""): "the ECS agent pulls the image with the execution role (checked statically)",
    (
        "Scheduler",
        "dynamodb:ListStreams",
        "",
    ): "Lambda's poller may list streams; the rehearsal's knows its stream",
    ("", "sqs:", "DeliveryFailures"): "the on-failure destinations are written only when a stream batch or "
    "a trigger invocation fails for good; the story's do not",
    ("", "s3:AbortMultipartUpload", ""): "only an upload that fails half-way aborts its parts",
    ("Sweep", "events:PutEvents", ""): "announces a graph the sweep ended (its counters say every job "
    "ended, or its last stream records were lost); the story's graphs end through the scheduler",
    ("Sweep", "dynamodb:DeleteItem", "TablesJobs"): "rolls back the jobs of a graph left creating "
    "by a submission that stopped half-way; the story's submissions complete",
    ("Sweep", "dynamodb:Query", "TablesJobs"): "reads the jobs of a graph whose counters say it ended "
    "(the scheduler died before ending it); the sweep index's Query is exercised",
    ("Scheduler", "sqs:GetQueueAttributes", "StreamFailures"): "granted with SendMessage by the "
    "on-failure destination; Lambda's poller sends the record, the rehearsal's does not read the queue",
    ("Trigger", "dynamodb:Query", "TablesJobs"): "a redelivered trigger event completing a "
    "submission that stopped half-way; the story's triggers complete theirs",
    ("Api", "dynamodb:GetItem", "TablesJobs"): "a cancel or rerun re-reads a job that moved under it",
    ("Workers", "dynamodb:Query", "TablesJobs"): "inputs of a job with more dependencies than one read holds",
    ("Workers", "sqs:ChangeMessageVisibility", ""): "extends the message of a job running longer than the "
    "lease, or releases it on SIGTERM; the story's jobs are shorter and workers end idle",
    ("Sweep", "sqs:SendMessage", "DispatchQueueHigh"): "re-sends a lost or late message of a high-priority "
    "job; the story loses a normal one (tests/conformance/test_priority.py routes them on both backends)",
    ("Sweep", "sqs:SendMessage", "DispatchQueueLow"): "re-sends a lost or late message of a low-priority job "
    "(as above)",
}


def _exempt(role: str, action: str, resource: str) -> str | None:
    for (role_fragment, prefix, fragment), reason in NOT_EXERCISED.items():
        if role_fragment in role and action.startswith(prefix) and fragment in resource:
            return reason
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _without_grant(
    documents: list[dict[str, Any]], doc: int, index: int, action: str, resource: str
) -> list[Any]:
    """The documents with one (action, resource) pair taken out of one statement."""
    copy = json.loads(json.dumps(documents))
    statements = _as_list(copy[doc]["Statement"])
    statement = statements.pop(index)
    actions, resources = _as_list(statement["Action"]), _as_list(statement["Resource"])
    rest_actions = [a for a in actions if a != action]
    rest_resources = [r for r in resources if r != resource]
    if rest_actions:
        statements.append({**statement, "Action": rest_actions, "Resource": resources})
    if rest_resources:
        statements.append({**statement, "Action": [action], "Resource": rest_resources})
    copy[doc]["Statement"] = statements
    return copy


def _grants(documents: list[dict[str, Any]]) -> Iterator[tuple[int, int, str, str]]:
    """(document, statement, action, resource) of every allowed pair of every statement."""
    for doc, document in enumerate(documents):
        for index, statement in enumerate(_as_list(document["Statement"])):
            if statement.get("Effect") == "Allow":
                for action in _as_list(statement["Action"]):
                    for resource in _as_list(statement["Resource"]):
                        yield doc, index, action, resource


def _allows(documents: list[Any], permission: Any) -> bool:
    return evaluate(documents, permission.action, permission.resource).allowed


def removal_report(
    rehearsal: Rehearsal,
    exempt: Callable[[str, str, str], str | None] = _exempt,
    considered: Callable[[str, str, str], bool] = lambda role, action, resource: True,
) -> tuple[dict[str, str], list[str]]:
    """Every (role, statement, action, resource) grant -> the first call that removing it
    alone would deny, replayed in the order the story made them; and the grants no call
    needs for which ``exempt(role, action, resource)`` gives no reason. Only the grants
    ``considered`` are looked at."""
    needed: dict[str, str] = {}
    unneeded: list[str] = []
    for principal in rehearsal.gateway.principals.values():
        if principal.name == "operator":
            continue
        checks = [
            (call, check) for call in rehearsal.gateway.calls_of(principal.name) for check in call.checks
        ]
        for doc, index, action, resource in _grants(principal.documents):
            if not considered(principal.role, action, resource):
                continue
            label = f"{principal.role} [{principal.document_names[doc]}#{index}] {action} on {resource}"
            reduced = _without_grant(principal.documents, doc, index, action, resource)
            lost = (
                call for call, check in checks if check.allowed and not _allows(reduced, check.permission)
            )
            denied = next(lost, None)
            if denied is not None:
                needed[label] = f"{denied.principal} {denied.operation}"
            elif exempt(principal.role, action, resource) is None:
                unneeded.append(label)
    return needed, unneeded


def test_every_granted_permission_is_needed_by_a_call_or_says_why_not(rehearsal: Rehearsal) -> None:
    needed, unneeded = removal_report(rehearsal)
    print("\n".join(f"{grant}\n    -> denies {call}" for grant, call in sorted(needed.items())))
    assert unneeded == [], "granted but used by no call of the rehearsal:\n" + "\n".join(unneeded)
    assert len(needed) >= 20


def test_without_its_dead_letter_grant_the_sweep_is_denied_receiving_from_the_dead_letter_queue(
    rehearsal: Rehearsal,
) -> None:
    # The defect found by reading the stack: the sweep could only GetQueueAttributes on the DLQ.
    sweep = next(p for p in rehearsal.gateway.principals.values() if p.name == "sweep")
    queue_id = next(k for k in rehearsal.template.of_type("AWS::SQS::Queue") if "DeadLetter" in k)
    dead_letter_arn = rehearsal.template.get_att(queue_id, "Arn")
    before_fix = [
        {
            "Statement": [
                {
                    **s,
                    "Action": [
                        a
                        for a in _as_list(s["Action"])
                        if not (a.startswith("sqs:") and a != "sqs:GetQueueAttributes")
                    ],
                }
                if dead_letter_arn in _as_list(s["Resource"])
                else s
                for s in _as_list(d["Statement"])
            ]
        }
        for d in sweep.documents
    ]
    # (Its statement also names the stream-failures queue: only the dead-letter queue's calls count.)
    first = next(
        call
        for call in rehearsal.gateway.calls_of("sweep")
        for check in call.checks
        if check.permission.resource == dead_letter_arn
        and not evaluate(before_fix, check.permission.action, check.permission.resource).allowed
    )
    message = f"{first.principal} (role {sweep.role}) would be denied " + ", ".join(
        f"{c.permission.action} on {c.permission.resource}"
        for c in first.checks
        if not evaluate(before_fix, c.permission.action, c.permission.resource).allowed
    )
    print(message)
    assert "SweepFunctionRole" in message and "sqs:ReceiveMessage" in message and dead_letter_arn in message
