"""Whole graphs through the scheduler and a worker, and the feed / stream contract."""

from __future__ import annotations

from typing import Any

import pytest

import overseer
from overseer import operations
from overseer.states import CLAIM, FINISH, RETRY, GraphStatus, JobStatus
from overseer.store import Fence
from overseer.worker import Worker

from .conftest import plain
from .driver import Backend


def write(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]


def join(job: overseer.Job) -> list[overseer.Artifact]:
    parts = sorted(a.read().decode() for arts in job.inputs.values() for a in arts)
    return [overseer.Artifact(key=f"{job.graph_id}/join.txt", data="+".join(parts).encode())]


def test_diamond_runs_in_order_and_the_join_reads_both_inputs(backend: Backend) -> None:
    g = backend.gid("diamond")
    document = {
        "id": g,
        "jobs": {
            "top": {"type": "write"},
            "left": {"type": "write", "deps": ["top"]},
            "right": {"type": "write", "deps": ["top"]},
            "join": ["left", "right"],
        },
    }
    graph = backend.run(document, {"write": write, "join": join})
    assert graph.status == GraphStatus.FINISHED
    assert graph.counts == {"finished": 4, "failed": 0, "aborted": 0}
    jobs = backend.jobs(g)
    assert jobs["top"].finished_at <= jobs["left"].started_at
    assert max(jobs["left"].finished_at, jobs["right"].finished_at) <= jobs["join"].started_at
    bucket = backend.settings.artifact_bucket
    assert backend.services.artifacts.get_bytes(bucket, f"{g}/join.txt") == b"left+right"
    assert jobs["join"].artifacts[0]["size"] == len(b"left+right")
    info = backend.services.artifacts.stat(bucket, f"{g}/join.txt")
    assert (info.size, info.sha256) == (10, jobs["join"].artifacts[0]["sha256"])
    assert backend.services.artifacts.stat(bucket, f"{g}/nothing.txt") is None


def test_a_job_that_faults_twice_then_succeeds_finishes_on_its_third_attempt(backend: Backend) -> None:
    def flaky(job: overseer.Job) -> None:
        if job.attempt < 3:
            overseer.fault(f"unavailable on attempt {job.attempt}")

    g = backend.gid("flaky")
    graph = backend.run(
        {"id": g, "jobs": {"flaky": [], "after": {"type": "write", "deps": ["flaky"]}}},
        {"flaky": flaky, "write": write},
    )
    job = backend.jobs(g)["flaky"]
    assert graph.status == GraphStatus.FINISHED
    assert (job.status, job.attempts, job.error) == (JobStatus.FINISHED, 3, None)
    assert [o.kind for o in backend.outcomes] == ["retry", "retry", "finished", "finished"]


def test_retry_on_from_the_graph_retries_what_it_names_and_keeps_every_attempt_s_error(
    backend: Backend,
) -> None:
    def flaky(job: overseer.Job) -> None:
        if job.attempt < 3:
            raise ConnectionRefusedError(f"refused on attempt {job.attempt}")

    def picky(job: overseer.Job) -> None:
        raise ValueError("bad row 7")

    g = backend.gid("retry-on")
    retry = {"retry_on": ["ConnectionError"], "max_attempts": 3}
    graph = backend.run(
        {"id": g, "jobs": {"fetch": {"type": "flaky", **retry}, "parse": {"type": "picky", **retry}}},
        {"flaky": flaky, "picky": picky},
    )
    jobs = backend.jobs(g)
    assert graph.status == GraphStatus.FAILED
    assert jobs["fetch"].retry_on == ["ConnectionError"]
    fetch = jobs["fetch"]
    assert (fetch.status, fetch.attempts, fetch.error) == (JobStatus.FINISHED, 3, None)
    assert [(e["attempt"], e["type"], e["message"]) for e in jobs["fetch"].errors] == [
        (1, "ConnectionRefusedError", "refused on attempt 1"),
        (2, "ConnectionRefusedError", "refused on attempt 2"),
    ]
    assert (jobs["parse"].status, jobs["parse"].attempts) == (JobStatus.FAILED, 1)
    assert jobs["parse"].error_text() == "ValueError: bad row 7"
    assert [e["attempt"] for e in jobs["parse"].errors] == [1]


def test_a_failure_aborts_every_descendant_and_the_graph_fails(backend: Backend) -> None:
    def broken(job: overseer.Job) -> None:
        raise ValueError("bad row 17")

    g = backend.gid("cascade")
    graph = backend.run(
        {
            "id": g,
            "jobs": {
                "start": {"type": "write"},
                "broken": {"type": "broken", "deps": ["start"]},
                "child": {"type": "write", "deps": ["broken"]},
                "grandchild": {"type": "write", "deps": ["child", "independent"]},
                "independent": {"type": "write", "deps": ["start"]},
            },
        },
        {"write": write, "broken": broken},
    )
    jobs = backend.jobs(g)
    assert graph.status == GraphStatus.FAILED
    assert graph.counts == {"finished": 2, "failed": 1, "aborted": 2}
    assert (jobs["broken"].status, jobs["broken"].error["type"]) == (JobStatus.FAILED, "ValueError")
    for name in ("child", "grandchild"):
        assert jobs[name].status == JobStatus.ABORTED
        assert jobs[name].reason == "upstream job 'broken' failed"
        assert jobs[name].attempts == 0
    assert jobs["independent"].status == JobStatus.FINISHED


def test_duplicated_and_reordered_feed_records_change_nothing(backend: Backend) -> None:
    runs: list[str] = []

    def counted(job: overseer.Job) -> list[overseer.Artifact]:
        runs.append(job.name)
        return write(job)

    g = backend.gid("dupes")
    handlers = {"counted": counted}
    jobs = {
        "a": {"type": "counted"},
        "b": {"type": "counted", "deps": ["a"]},
        "c": {"type": "counted", "deps": ["a"]},
    }
    jobs["d"] = {"type": "counted", "deps": ["b", "c"]}
    graph = backend.run({"id": g, "jobs": jobs}, handlers)
    assert graph.status == GraphStatus.FINISHED
    before = {n: vars(j) for n, j in backend.jobs(g).items()}
    counts = backend.store.get_graph(g).counts
    events = list(backend.events)
    for event in events + list(reversed(events)) + events:
        backend.scheduler.process_stream_event(event)
    # Every record again, one by one and backwards.
    for record in reversed([r for e in events for r in e["Records"]]):
        backend.scheduler.process_stream_event({"Records": [record, record]})
    backend.drive(g, handlers)
    assert {n: vars(j) for n, j in backend.jobs(g).items()} == before
    assert backend.store.get_graph(g).status == GraphStatus.FINISHED
    assert sorted(runs) == ["a", "b", "c", "d"]
    # The counters may over-count (the outcome was decided from the jobs); the status holds.
    assert backend.store.get_graph(g).counts["finished"] >= counts["finished"]


def test_feed_records_are_lambda_shaped_and_filtered(backend: Backend) -> None:
    g = backend.gid("shape")
    backend.submit({"id": g, "jobs": {"a": [], "b": ["a"]}})
    store = backend.store
    store.transition(g, "a", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "w"})
    store.record_finished_dependency(g, "b", 0)
    store.renew_lease(g, "a", Fence(1, "w"), lease_expires_at="x", heartbeat_at="y")
    store.transition(g, "a", FINISH, fence=Fence(1, "w"), remove=["lease_owner"])
    records = backend.reader.poll()
    # Claims, heartbeats and dependency counts never reach the scheduler.
    assert [(r["eventName"], plain(r["dynamodb"]["NewImage"])["status"]) for r in records] == [
        ("MODIFY", "ready"),
        ("MODIFY", "finished"),
    ]
    for record in records:
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventSourceARN"]
        body = record["dynamodb"]
        assert body["Keys"] == {"graph_id": {"S": g}, "entry": {"S": "job#a"}}
        assert body["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert int(body["SequenceNumber"]) > 0 and body["SizeBytes"] > 0
        assert isinstance(body["ApproximateCreationDateTime"], float | int)
    assert int(records[0]["dynamodb"]["SequenceNumber"]) < int(records[1]["dynamodb"]["SequenceNumber"])
    old = plain(records[1]["dynamodb"]["OldImage"])
    new = plain(records[1]["dynamodb"]["NewImage"])
    assert (old["status"], old["lease_owner"], old["lease_expires_at"], old["attempts"]) == (
        "running",
        "w",
        "x",
        1,
    )
    assert "lease_owner" not in new and new["finished_at"]
    assert backend.reader.poll() == []

    # The scheduler sends the job it releases itself: that "ready" record is left out.
    report = backend.scheduler.process_stream_event({"Records": records})
    assert (report.released, report.enqueued) == (1, 2)
    taken = backend.queue.receive(max_messages=10, wait_seconds=0)
    assert sorted((d.message.job_name, d.message.attempts) for d in taken if d.message.graph_id == g) == [
        ("a", 0),
        ("b", 0),
    ]
    backend.queue.delete([d.receipt for d in taken])
    assert store.get_job(g, "b").released_by == "scheduler"
    assert backend.reader.poll() == []
    # Ready again after running (a retry): that record is delivered.
    store.transition(g, "b", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "w"})
    store.transition(g, "b", RETRY, fence=Fence(1, "w"))
    (retried,) = backend.reader.poll()
    assert plain(retried["dynamodb"]["NewImage"])["status"] == "ready"
    assert plain(retried["dynamodb"]["OldImage"])["status"] == "running"


def _scripted(backend: Backend) -> list[tuple[str, str, str, dict]]:
    """The same operations on a backend; the feed records as comparable tuples."""
    g = backend.gid("same")
    backend.submit({"id": g, "jobs": {"a": [], "b": ["a"], "c": ["a", "b"]}})
    store = backend.store
    store.transition(g, "a", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "w"})
    store.transition(g, "a", FINISH, fence=Fence(1, "w"), changes={"artifacts": []}, remove=["lease_owner"])
    store.record_finished_dependency(g, "c", 0)
    store.record_finished_dependency(g, "c", 0)
    records = backend.reader.poll()
    out = []
    # sweep_at is a minute; the sweep key's shard comes from the (namespaced) graph id.
    volatile = {"created_at", "updated_at", "finished_at", "graph_id", "sweep_at"}
    for r in records:
        new = plain(r["dynamodb"]["NewImage"])
        if "sweep_key" in new:
            new["sweep_key"] = new["sweep_key"].split("#")[0]
        keys = {k: v["S"].removeprefix(backend.namespace) for k, v in r["dynamodb"]["Keys"].items()}
        out.append(
            (
                r["eventName"],
                keys["entry"],
                new["status"],
                {k: v for k, v in new.items() if k not in volatile},
            )
        )
    return out


@pytest.mark.integration
def test_both_backends_write_the_same_records_for_the_same_operations(tmp_path, aws_shared) -> None:
    from .conftest import aws_backend, embedded_backend

    embedded = _scripted(embedded_backend(tmp_path / "stack"))
    aws = _scripted(aws_backend(aws_shared))
    assert (
        [r[:3] for r in embedded]
        == [r[:3] for r in aws]
        == [
            ("MODIFY", "job#a", "ready"),
            ("MODIFY", "job#a", "finished"),
        ]
    )
    assert embedded == aws  # the same attributes, the same values (timestamps aside)


def chain_of_three(middle: str = "write") -> dict[str, Any]:
    return {
        "a": {"type": "write"},
        "b": {"type": middle, "deps": ["a"]},
        "c": {"type": "write", "deps": ["b"]},
    }


def _step(backend: Backend, worker: Worker) -> None:
    """Take the queued jobs, then hand their records to the scheduler (one invocation)."""
    while backend.work_once(worker):
        pass
    backend.pump()


def test_a_chain_hands_its_count_down_and_is_counted_once_at_its_end(backend: Backend) -> None:
    g = backend.gid("carry")
    handlers = {"write": write}
    backend.submit({"id": g, "jobs": chain_of_three()}, handlers)
    worker = backend.worker(handlers)
    backend.pump()  # a's "ready" record: a is queued
    _step(backend, worker)  # a finished: b released with a's count
    assert backend.store.get_graph(g).counts == {"finished": 0, "failed": 0, "aborted": 0}
    assert backend.store.get_job(g, "b").carried_finished == 1
    # The same record again (at-least-once delivery) releases nothing and counts nothing.
    report = backend.scheduler.process_stream_event(backend.events[-1])
    assert report.released == 0
    assert backend.store.get_graph(g).counts["finished"] == 0
    _step(backend, worker)  # b finished: c released with a's and b's counts
    assert backend.store.get_job(g, "c").carried_finished == 2
    assert backend.store.get_graph(g).counts["finished"] == 0
    _step(backend, worker)  # c, the end of the chain, counts all three
    graph = backend.store.get_graph(g)
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, {"finished": 3, "failed": 0, "aborted": 0})


def test_a_chain_failing_midway_counts_what_it_carried(backend: Backend) -> None:
    def broken(job: overseer.Job) -> None:
        raise RuntimeError("bad input")

    g = backend.gid("carry-fail")
    handlers = {"write": write, "broken": broken}
    graph = backend.run({"id": g, "jobs": chain_of_three(middle="broken")}, handlers)
    assert (graph.status, graph.counts) == (GraphStatus.FAILED, {"finished": 1, "failed": 1, "aborted": 1})
    # Rerun with the handler fixed: b forgets what it carried, and the counts stay exact.
    assert backend.store.get_job(g, "b").carried_finished == 1
    operations.rerun_graph(backend.services, g)
    assert backend.store.get_job(g, "b").carried_finished == 0
    graph = backend.drive(g, {"write": write, "broken": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, {"finished": 3, "failed": 0, "aborted": 0})
