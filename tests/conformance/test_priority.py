"""Priorities on both backends: a graph's priority is stored on its jobs (and an expansion's
children), its ready jobs go to its pool's queue of that priority, and a worker takes the
higher priorities first; a high-priority message dead-lettered fails its job like any."""

from __future__ import annotations

from typing import Any

from overseer import Artifact, Expand, Job
from overseer.operations import submit_graph
from overseer.store import JobMessage
from overseer.sweep import sweep

from .driver import Backend


def write(job: Job) -> Artifact:
    return Artifact(key=f"{job.graph_id}/{job.name}", data=b"x")


def fan_out(job: Job) -> list[Any]:
    return [write(job), Expand(type="write", items=[{"n": 1}, {"n": 2}])]


def test_a_worker_takes_high_then_normal_then_low(backend: Backend) -> None:
    low, normal, high = (backend.gid(f"prio-{p}") for p in ("low", "normal", "high"))
    submit_graph(
        backend.services,
        {"id": low, "priority": "low", "jobs": {f"l{i}": {"type": "write"} for i in range(4)}},
    )
    submit_graph(backend.services, {"id": normal, "jobs": {"n0": {"type": "write"}}})
    graph = submit_graph(
        backend.services, {"id": high, "priority": "high", "jobs": {"h0": {"type": "write"}}}
    )[0]
    assert graph.summary()["priority"] == "high"
    assert {job.priority for job in backend.store.list_jobs(low)} == {"low"}
    assert [job.priority for job in backend.store.list_jobs(normal)] == [None]
    backend.pump()
    worker = backend.worker({"write": write})
    taken = []
    for _ in range(6):
        (delivery,) = backend.queue.receive(max_messages=1, wait_seconds=0, visibility_seconds=30)
        taken.append(worker.process(delivery).job_name)
    assert taken[:2] == ["h0", "n0"]
    assert sorted(taken[2:]) == ["l0", "l1", "l2", "l3"]


def test_an_expansions_children_keep_their_graphs_priority(backend: Backend) -> None:
    gid = backend.gid("prio-expand")
    submit_graph(backend.services, {"id": gid, "priority": "low", "jobs": {"root": {"type": "fan"}}})
    graph = backend.drive(gid, {"fan": fan_out, "write": write})
    assert graph.status.value == "finished"
    assert {job.name: job.priority for job in backend.store.list_jobs(gid)} == {
        "root": "low",
        "root.0": "low",
        "root.1": "low",
    }


def test_a_dead_lettered_high_priority_message_fails_its_job(backend: Backend) -> None:
    gid = backend.gid("prio-poison")
    submit_graph(backend.services, {"id": gid, "priority": "high", "jobs": {"a": {"type": "write"}}})
    backend.pump()
    # The worker dies on it every time: received too often, the message is dead-lettered.
    for _ in range(12):
        backend.queue.receive(max_messages=1, wait_seconds=0, visibility_seconds=0)
    assert backend.queue.depth() == 0
    dead_letters = backend.services.dead_letters
    if dead_letters is None:  # the AWS driver's services leave the dead letters to the test
        from overseer.backends.aws.queue import SqsDispatchQueue

        dead_letters = SqsDispatchQueue(backend.queue.normal.client, backend.settings.dead_letter_queue_url)  # type: ignore[attr-defined]
    report = sweep(backend.services, stale_ready_seconds=3600, dead_letters=dead_letters)
    assert report.dead_letters == 1
    (job,) = backend.store.list_jobs(gid)
    assert job.status.value == "failed" and job.error is not None and job.error["type"] == "DeadLettered"


def test_a_message_without_its_prioritys_queue_goes_to_the_normal_one(backend: Backend) -> None:
    from overseer.priority import PriorityQueues

    normal_only = PriorityQueues({"normal": backend.queue.normal})  # type: ignore[attr-defined]
    normal_only.send([JobMessage("g", "h", 0, priority="high")])
    assert backend.queue.normal.depth() == 1  # type: ignore[attr-defined]
