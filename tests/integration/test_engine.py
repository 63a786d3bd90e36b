"""The engine on the emulator: order, failure, retries, duplicates, artifacts, requests."""

from __future__ import annotations

import hashlib
from typing import Any

import boto3
import pytest

import overseer
from overseer.states import GraphStatus, JobStatus

pytestmark = pytest.mark.integration


def write(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=f"{job.name}".encode())]


def join(job: overseer.Job) -> list[overseer.Artifact]:
    parts = sorted(a.read().decode() for arts in job.inputs.values() for a in arts)
    return [overseer.Artifact(key=f"{job.graph_id}/join.txt", data="+".join(parts).encode())]


def test_diamond_runs_in_dependency_order_and_the_join_sees_both_inputs(stack):
    handlers = {"write": write, "join": join}
    graph = stack.run(
        {
            "id": "diamond",
            "jobs": {
                "top": {"type": "write"},
                "left": {"type": "write", "deps": ["top"]},
                "right": {"type": "write", "deps": ["top"]},
                "join": ["left", "right"],
            },
        },
        handlers,
    )
    assert graph.status == GraphStatus.FINISHED
    assert graph.counts == {"finished": 4, "failed": 0, "aborted": 0}
    jobs = stack.jobs("diamond")
    assert jobs["top"].finished_at <= jobs["left"].started_at
    assert jobs["top"].finished_at <= jobs["right"].started_at
    assert max(jobs["left"].finished_at, jobs["right"].finished_at) <= jobs["join"].started_at
    joined = stack.services.artifacts.get_bytes(stack.settings.artifact_bucket, "diamond/join.txt")
    assert joined == b"left+right"


def test_a_job_that_faults_twice_then_succeeds_finishes_with_three_attempts(stack):
    def flaky(job: overseer.Job) -> None:
        if job.attempt < 3:
            overseer.fault(f"service unavailable on attempt {job.attempt}")

    graph = stack.run({"id": "flaky", "jobs": {"flaky": []}}, {"flaky": flaky})
    job = stack.jobs("flaky")["flaky"]
    assert graph.status == GraphStatus.FINISHED
    assert (job.status, job.attempts, job.error) == (JobStatus.FINISHED, 3, None)


def test_a_job_that_always_faults_fails_after_its_max_attempts(stack):
    def down(job: overseer.Job) -> None:
        overseer.fault("still down")

    graph = stack.run({"id": "down", "jobs": {"down": {"max_attempts": 2}}}, {"down": down})
    job = stack.jobs("down")["down"]
    assert graph.status == GraphStatus.FAILED
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert job.error_text() == "Fault: still down (gave up after 2 attempts)"


def test_an_exception_fails_the_job_and_aborts_descendants_while_an_independent_branch_finishes(stack):
    def broken(job: overseer.Job) -> None:
        raise ValueError("bad row 17")

    graph = stack.run(
        {
            "id": "failing",
            "jobs": {
                "start": {"type": "write"},
                "broken": {"type": "broken", "deps": ["start"]},
                "child": {"type": "write", "deps": ["broken"]},
                "grandchild": {"type": "write", "deps": ["child"]},
                "independent": {"type": "write", "deps": ["start"]},
            },
        },
        {"write": write, "broken": broken},
    )
    jobs = stack.jobs("failing")
    assert graph.status == GraphStatus.FAILED
    assert jobs["broken"].status == JobStatus.FAILED
    assert jobs["broken"].error["type"] == "ValueError"
    assert jobs["broken"].error["message"] == "bad row 17"
    assert "raise ValueError" in jobs["broken"].error["traceback"]
    for name in ("child", "grandchild"):
        assert jobs[name].status == JobStatus.ABORTED
        assert jobs[name].reason == "upstream job 'broken' failed"
        assert jobs[name].attempts == 0
    assert jobs["independent"].status == JobStatus.FINISHED
    assert jobs["start"].status == JobStatus.FINISHED
    # Every failed job of the day is listed by the sparse failed-jobs index.
    failed = list(stack.store.Job.failed_jobs.query(jobs["broken"].finished_at[:10]))
    assert [(f.graph_id, f.job_name, f.error_type) for f in failed] == [("failing", "broken", "ValueError")]


def test_abort_aborts_the_job_and_its_descendants_only(stack):
    def stop(job: overseer.Job) -> None:
        overseer.abort("company 42 has no data for this date")

    graph = stack.run(
        {
            "id": "aborting",
            "jobs": {
                "start": {"type": "write"},
                "stop": {"type": "stop", "deps": ["start"]},
                "after": {"type": "write", "deps": ["stop"]},
                "sibling": {"type": "write", "deps": ["start"]},
            },
        },
        {"write": write, "stop": stop},
    )
    jobs = stack.jobs("aborting")
    assert graph.status == GraphStatus.ABORTED
    assert (jobs["stop"].status, jobs["stop"].reason) == (
        JobStatus.ABORTED,
        "company 42 has no data for this date",
    )
    assert jobs["after"].status == JobStatus.ABORTED
    assert jobs["after"].reason == "upstream job 'stop' aborted: company 42 has no data for this date"
    assert jobs["start"].status == jobs["sibling"].status == JobStatus.FINISHED


def test_duplicated_messages_and_stream_records_change_nothing(stack):
    runs: list[str] = []

    def counted(job: overseer.Job) -> list[overseer.Artifact]:
        runs.append(job.name)
        return write(job)

    handlers = {"counted": counted}
    stack.submit(
        {"id": "dupes", "jobs": {"a": {"type": "counted"}, "b": {"type": "counted", "deps": ["a"]}}}, handlers
    )
    stack.pump()
    # Every message delivered twice: the second claim is refused by the attempt fence.
    queue = stack.services.queue
    deliveries = queue.receive(max_messages=10, wait_seconds=0)
    assert [d.message.job_name for d in deliveries] == ["a"]
    queue.send([deliveries[0].message])
    worker = stack.worker(handlers)
    outcomes = [worker.process(deliveries[0])]
    outcomes += [worker.process(d) for d in queue.receive(max_messages=10, wait_seconds=0)]
    assert [o.kind for o in outcomes] == ["finished", "skipped"]

    graph = stack.drive("dupes", handlers)
    assert graph.status == GraphStatus.FINISHED
    before = {n: vars(j) for n, j in stack.jobs("dupes").items()}
    graph_before = stack.store.get_graph("dupes")

    # The whole stream again, twice, and out of order: no job changes, no job runs again.
    for event in stack.events + list(reversed(stack.events)):
        stack.scheduler.process_stream_event(event)
    stack.drive("dupes", handlers)
    assert {n: vars(j) for n, j in stack.jobs("dupes").items()} == before
    assert stack.store.get_graph("dupes").status == graph_before.status
    assert sorted(runs) == ["a", "b"]


def test_artifacts_carry_checksums_and_identical_uploads_are_skipped(stack):
    payload = b"revenue,42\n" * 1000

    def report(job: overseer.Job) -> list[overseer.Artifact]:
        path = job.scratch / "report.csv"
        path.write_bytes(payload)
        return [
            overseer.Artifact(key="reports/42.csv", file=path),
            overseer.Artifact(key="reports/42.txt", data=b"ok", bucket=stack.settings.allowed_buckets[0]),
        ]

    stack.run({"id": "art-1", "jobs": {"report": []}}, {"report": report})
    job = stack.jobs("art-1")["report"]
    assert job.artifacts == [
        {
            "bucket": stack.settings.artifact_bucket,
            "key": "reports/42.csv",
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        },
        {
            "bucket": stack.settings.allowed_buckets[0],
            "key": "reports/42.txt",
            "size": 2,
            "sha256": hashlib.sha256(b"ok").hexdigest(),
        },
    ]
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=stack.settings.artifact_bucket, Key="reports/42.csv")
    assert head["Metadata"]["sha256"] == hashlib.sha256(payload).hexdigest()

    counter = stack.count_requests()
    stack.run({"id": "art-2", "jobs": {"report": []}}, {"report": report})
    assert counter.counts["s3.PutObject"] == 0  # both objects were already there, identical
    assert counter.counts["s3.HeadObject"] == 2


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        (dict(key="/etc/passwd", data=b"x"), "is absolute"),
        (dict(key="reports/../../secret", data=b"x"), "traverses"),
        (dict(key="reports/x", data=b"x", bucket="someone-elses-bucket"), "is not allowed"),
        (dict(key="reports/x"), "exactly one of data= or file="),
        (dict(key="reports/x", data="text"), "data must be bytes"),
    ],
)
def test_an_invalid_artifact_fails_the_job_and_stores_nothing(stack, artifact: dict[str, Any], message):
    def bad(job: overseer.Job) -> list[overseer.Artifact]:
        return [overseer.Artifact(key="reports/good.txt", data=b"fine"), overseer.Artifact(**artifact)]

    graph = stack.run({"id": "bad-art", "jobs": {"bad": []}}, {"bad": bad})
    job = stack.jobs("bad-art")["bad"]
    assert graph.status == GraphStatus.FAILED
    assert job.error["type"] == "InvalidArtifact"
    assert message in job.error["message"]
    listed = boto3.client("s3").list_objects_v2(Bucket=stack.settings.artifact_bucket)
    assert listed.get("KeyCount", 0) == 0


def test_rows_artifacts_land_in_the_users_table(stack):
    table = f"{stack.settings.jobs_table}-metrics"
    boto3.client("dynamodb").create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "company_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "company_id", "AttributeType": "N"}],
    )

    def metrics(job: overseer.Job) -> overseer.Rows:
        return overseer.Rows(table=table, items=[{"company_id": 42, "revenue": 1234.5}])

    stack.run({"id": "rows", "jobs": {"metrics": []}}, {"metrics": metrics})
    job = stack.jobs("rows")["metrics"]
    assert job.status == JobStatus.FINISHED
    assert job.rows[0]["table"] == table and job.rows[0]["items"] == 1
    item = boto3.resource("dynamodb").Table(table).get_item(Key={"company_id": 42})["Item"]
    assert float(item["revenue"]) == 1234.5


def test_job_random_gives_identical_artifacts_when_the_same_graph_id_runs_again(stack, aws_env):
    from tests.support import LocalStack

    def sample(job: overseer.Job) -> list[overseer.Artifact]:
        values = [job.random.random() for _ in range(100)]
        return [overseer.Artifact(key=f"{job.name}.txt", data=repr(values).encode())]

    document = {"id": "seeded", "jobs": {"one": {"type": "sample"}, "two": {"type": "sample"}}}
    stack.run(document, {"sample": sample})
    other = LocalStack.provisioned(
        stack.settings.with_(
            graphs_table=stack.settings.graphs_table + "-2", jobs_table=stack.settings.jobs_table + "-2"
        )
    )
    other.run(document, {"sample": sample})
    first = {n: j.artifacts for n, j in stack.jobs("seeded").items()}
    second = {n: j.artifacts for n, j in other.jobs("seeded").items()}
    assert first == second
    assert first["one"][0]["sha256"] != first["two"][0]["sha256"]


def test_submitting_an_existing_graph_id_creates_nothing(stack):
    handlers = {"write": write}
    graph = stack.run({"id": "once", "jobs": {"a": {"type": "write"}}}, handlers)
    again = stack.submit({"id": "once", "jobs": {"a": {"type": "write"}, "b": {"type": "write"}}}, handlers)
    assert again.jobs_total == 1 and again.status == graph.status == GraphStatus.FINISHED
    assert list(stack.jobs("once")) == ["a"]


def test_requests_per_job_of_a_chain_stay_within_budget(stack):
    """A change that doubles the AWS requests a job costs must show up here."""
    handlers = {"noop": lambda job: None}
    jobs = {f"j{i:02d}": {"type": "noop", "deps": [f"j{i - 1:02d}"] if i else []} for i in range(20)}
    counter = stack.count_requests()
    stack.run({"id": "chain", "jobs": jobs}, handlers)
    counts = counter.counts
    per_job = {op: n / 20 for op, n in counts.items()}
    # Updates a job costs: its release (which carries the graph's count down the chain:
    # the counters are written once, at the end), claim and outcome; plus, per graph, the
    # roots' release, its status and the final count.
    assert per_job["dynamodb.UpdateItem"] <= 3.3
    # One send per released job, by the scheduler that released it (one invocation).
    assert per_job["sqs.SendMessageBatch"] <= 1.0
    # Here the queue is empty between two links, so the worker's deferred deletes are
    # flushed one by one; on AWS a worker's 20 s long poll batches them (bench/cost.py).
    assert per_job["sqs.DeleteMessageBatch"] <= 1.0
    # The harness polls the stream and the graph item; Lambda and the runner pay for those.
    engine_ops = {
        k: v
        for k, v in counts.items()
        if not k.startswith("dynamodb-streams.") and k not in ("sqs.ReceiveMessage", "dynamodb.GetItem")
    }
    assert sum(engine_ops.values()) / 20 <= 5.5, counts
