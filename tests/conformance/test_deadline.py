"""A graph's deadline (``timeout``), on both backends: once it passes, the sweep aborts the
graph as a cancel does, with the reason "deadline of N s passed"; what had ended keeps its
status, and the counters match the jobs."""

from __future__ import annotations

import time
from typing import Any

import overseer
from overseer import timeutil
from overseer.states import CLAIM, FINISH, GraphStatus, JobStatus
from overseer.store import Fence
from overseer.sweep import sweep

from .driver import Backend


def write(job: overseer.Job) -> list[overseer.Artifact]:
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"12345678")]


def chain(graph_id: str, timeout: int) -> dict[str, Any]:
    names = ["a", "b", "c", "d"]
    jobs = {n: {"type": "write", "deps": [names[i - 1]] if i else []} for i, n in enumerate(names)}
    return {"id": graph_id, "timeout": timeout, "jobs": jobs}


def test_past_its_deadline_the_sweep_aborts_the_graph_with_the_reason(backend: Backend) -> None:
    g = backend.gid("deadline")
    # Long enough for the steps below to fit before it even on a loaded machine.
    graph = backend.submit(chain(g, timeout=8), {"write": write})
    assert graph.timeout_seconds == 8 and graph.deadline_at is not None
    worker = backend.worker({"write": write})
    while backend.jobs(g)["a"].status != JobStatus.FINISHED:  # a runs and finishes
        backend.pump()
        backend.work_once(worker)
    backend.pump()  # b is released
    claimed = backend.store.transition(
        g, "b", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "slow-worker"}
    )
    assert claimed is not None  # b is running on a worker when the deadline passes

    before = sweep(backend.services)
    assert (before.graphs_past_deadline, backend.store.get_graph(g).status) == (0, GraphStatus.RUNNING)
    time.sleep(max(0.0, (timeutil.parse(graph.deadline_at) - timeutil.now()).total_seconds()))
    report = sweep(backend.services)

    assert report.graphs_past_deadline == 1, report.failures
    ended = backend.store.get_graph(g)
    assert (ended.status, ended.reason) == (GraphStatus.ABORTED, "deadline of 8 s passed")
    assert ended.counts == {"finished": 1, "failed": 0, "aborted": 3}
    jobs = backend.jobs(g)
    assert jobs["a"].status == JobStatus.FINISHED and jobs["a"].reason is None
    for name in "bcd":  # running, ready or waiting: aborted, each saying why
        assert (jobs[name].status, jobs[name].reason) == (JobStatus.ABORTED, "deadline of 8 s passed")
    # The slow worker's outcome is refused by the fence: b stays aborted.
    assert backend.store.transition(g, "b", FINISH, fence=Fence(1, "slow-worker")) is None
    assert sweep(backend.services).graphs_past_deadline == 0  # once


def test_a_graph_that_ends_before_its_deadline_keeps_its_outcome(backend: Backend) -> None:
    g = backend.gid("deadline-met")
    graph = backend.run(chain(g, timeout=3600), {"write": write})
    assert (graph.status, graph.reason) == (GraphStatus.FINISHED, None)
    assert sweep(backend.services).graphs_past_deadline == 0
    assert backend.store.get_graph(g).status == GraphStatus.FINISHED


def test_a_rerun_after_the_deadline_gets_the_timeout_afresh_and_its_outcome_says_no_deadline(
    backend: Backend,
) -> None:
    from overseer import operations

    g = backend.gid("deadline-rerun")
    graph = backend.submit(chain(g, timeout=1), {"write": write})
    time.sleep(max(0.0, (timeutil.parse(graph.deadline_at) - timeutil.now()).total_seconds()))
    assert sweep(backend.services).graphs_past_deadline == 1
    aborted = backend.store.get_graph(g)
    assert (aborted.status, aborted.reason) == (GraphStatus.ABORTED, "deadline of 1 s passed")

    change = operations.rerun_graph(backend.services, g)
    assert change.jobs_changed == 4
    reopened = backend.store.get_graph(g)
    assert (reopened.status, reopened.reason) == (GraphStatus.RUNNING, None)
    assert reopened.deadline_at > aborted.deadline_at  # the timeout runs again from the rerun
    done = backend.drive(g, {"write": write})
    assert (done.status, done.reason, done.counts["finished"]) == (GraphStatus.FINISHED, None, 4)
