"""Rerunning one job, alone or with its downstream, on both backends: what runs again, what
keeps its status, attempts and artifacts, and the bookkeeping the scheduler relies on
(graph counters, each job's finished deps and carried counts) stays exact."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import overseer
from overseer import operations
from overseer.errors import GraphNotFound, RerunRefused
from overseer.states import CLAIM, FINISH, GraphStatus, JobStatus
from overseer.store import Fence

from .driver import Backend

EXACT_THREE = {"finished": 3, "failed": 0, "aborted": 0}


class Counting:
    """A handler that writes its job's name and counts its runs."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def __call__(self, job: overseer.Job) -> list[overseer.Artifact]:
        self.runs[job.name] += 1
        return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]


def broken(job: overseer.Job) -> None:
    raise RuntimeError("bad input")


def statuses(backend: Backend, graph_id: str) -> dict[str, str]:
    return {name: job.status.value for name, job in backend.jobs(graph_id).items()}


def claim_elsewhere(backend: Backend, graph_id: str, name: str) -> None:
    """Another worker claims the job (its message stays queued; our worker's claim is refused)."""
    claimed = backend.store.transition(
        graph_id, name, CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "elsewhere"}
    )
    assert claimed is not None


def chain(n: int = 3) -> dict[str, Any]:
    names = "abcdefgh"[:n]
    return {name: {"type": "write", "deps": [names[i - 1]] if i else []} for i, name in enumerate(names)}


def test_a_finished_job_with_its_downstream_runs_again_and_the_rest_is_kept(backend: Backend) -> None:
    g = backend.gid("rerun-downstream")
    write = Counting()
    graph = backend.run({"id": g, "jobs": chain()}, {"write": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    a_before = backend.jobs(g)["a"]

    change = operations.rerun_graph(backend.services, g, job="b", downstream=True)
    assert change.jobs_changed == 2
    # The graph is running again, and counts only what is still finished.
    assert (change.graph.status, change.graph.counts) == (GraphStatus.RUNNING, {**EXACT_THREE, "finished": 1})
    jobs = backend.jobs(g)
    assert statuses(backend, g) == {"a": "finished", "b": "ready", "c": "waiting"}
    assert (jobs["b"].attempts, jobs["b"].released_by, jobs["b"].finished_at) == (0, "rerun", None)
    assert (jobs["b"].carried_finished, jobs["c"].carried_finished, jobs["c"].carried_from) == (0, 0, None)
    assert jobs["a"] == a_before  # untouched: status, attempts, artifacts

    graph = backend.drive(g, {"write": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    assert write.runs == {"a": 1, "b": 2, "c": 2}
    assert {n: j.attempts for n, j in backend.jobs(g).items()} == {"a": 1, "b": 1, "c": 1}


def test_a_job_alone_runs_again_and_a_finished_dependent_keeps_its_run(backend: Backend) -> None:
    # a's count went to b with b's release; a's second end must be counted on its own.
    g = backend.gid("rerun-alone")
    write = Counting()
    backend.run({"id": g, "jobs": chain()}, {"write": write})
    c_before = backend.jobs(g)["c"]

    change = operations.rerun_graph(backend.services, g, job="a")
    assert change.jobs_changed == 1
    assert statuses(backend, g) == {"a": "ready", "b": "finished", "c": "finished"}
    graph = backend.drive(g, {"write": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    assert write.runs == {"a": 2, "b": 1, "c": 1}
    assert backend.jobs(g)["c"] == c_before


def test_a_waiting_dependent_forgets_the_finished_dep_that_runs_again(backend: Backend) -> None:
    g = backend.gid("rerun-forget")
    write = Counting()
    handlers = {"write": write}
    backend.submit({"id": g, "jobs": {"left": {"type": "write"}, "right": {"type": "write"},
                                      "join": {"type": "write", "deps": ["left", "right"]}}})  # fmt: skip
    worker = backend.worker(handlers)
    backend.pump()  # both roots queued
    claim_elsewhere(backend, g, "right")
    backend.work_once(worker)  # left finishes; right's message claims nothing
    backend.pump()
    assert (backend.jobs(g)["join"].status, backend.jobs(g)["join"].finished_deps) == (JobStatus.WAITING, 1)

    assert operations.rerun_graph(backend.services, g, job="left").jobs_changed == 1
    assert backend.jobs(g)["join"].finished_deps == 0
    # right ends now: join must not be released while left runs again.
    backend.store.transition(g, "right", FINISH, fence=Fence(1, "elsewhere"))
    backend.pump()
    jobs = backend.jobs(g)
    assert (jobs["left"].status, jobs["join"].status, jobs["join"].finished_deps) == (
        JobStatus.READY, JobStatus.WAITING, 1,
    )  # fmt: skip
    graph = backend.drive(g, handlers)
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    assert write.runs == {"left": 2, "join": 1}


def test_a_downstream_job_released_already_waits_again_with_its_carried_count(backend: Backend) -> None:
    g = backend.gid("rerun-ready")
    write = Counting()
    handlers = {"write": write}
    backend.submit({"id": g, "jobs": chain()})
    worker = backend.worker(handlers)
    backend.pump()
    backend.work_once(worker)  # a finishes
    backend.pump()  # b released, carrying a's count
    assert (backend.jobs(g)["b"].status, backend.jobs(g)["b"].carried_finished) == (JobStatus.READY, 1)

    change = operations.rerun_graph(backend.services, g, job="a", downstream=True)
    assert change.jobs_changed == 2
    assert statuses(backend, g) == {"a": "ready", "b": "waiting", "c": "waiting"}
    assert backend.jobs(g)["b"].carried_finished == 0
    # a was carried by b (uncounted), and b counts it no more: the counters still say 0.
    assert backend.store.get_graph(g).counts == {"finished": 0, "failed": 0, "aborted": 0}
    graph = backend.drive(g, handlers)
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    assert write.runs == {"a": 2, "b": 1, "c": 1}


def test_a_failed_job_with_its_downstream_runs_again_after_a_fix(backend: Backend) -> None:
    g = backend.gid("rerun-failed-job")
    write = Counting()
    jobs = {**chain(), "other": {"type": "write"}}
    jobs["b"] = {"type": "maybe", "deps": ["a"]}
    graph = backend.run({"id": g, "jobs": jobs}, {"write": write, "maybe": broken})
    assert (graph.status, graph.counts) == (GraphStatus.FAILED, {"finished": 2, "failed": 1, "aborted": 1})
    assert operations.rerun_graph(backend.services, g, job="b", downstream=True).jobs_changed == 2
    assert backend.store.get_graph(g).counts == {"finished": 2, "failed": 0, "aborted": 0}
    assert backend.jobs(g)["b"].errors == []
    graph = backend.drive(g, {"write": write, "maybe": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, {"finished": 4, "failed": 0, "aborted": 0})
    assert write.runs == {"a": 1, "other": 1, "b": 1, "c": 1}


def test_a_rerun_is_refused_while_one_of_its_jobs_runs(backend: Backend) -> None:
    g = backend.gid("rerun-refused")
    write = Counting()
    backend.submit({"id": g, "jobs": chain()})
    worker = backend.worker({"write": write})
    backend.pump()
    backend.work_once(worker)  # a finishes
    backend.pump()
    claim_elsewhere(backend, g, "b")
    before = backend.jobs(g)
    with pytest.raises(
        RerunRefused, match=r"cannot rerun 'a' with its downstream .*1 of those jobs is running \('b'\)"
    ):
        operations.rerun_graph(backend.services, g, job="a", downstream=True)
    assert backend.jobs(g) == before  # nothing changed
    # Alone, a may run again: b keeps running with the inputs it has.
    assert operations.rerun_graph(backend.services, g, job="a").jobs_changed == 1
    with pytest.raises(GraphNotFound, match="has no job 'nope'"):
        operations.rerun_graph(backend.services, g, job="nope")


def test_old_records_replayed_after_a_rerun_release_nothing_of_it(backend: Backend) -> None:
    # `overseer run --backend aws --no-emulator` reads the stream from its start again.
    g = backend.gid("rerun-replay")
    write = Counting()
    backend.run({"id": g, "jobs": chain()}, {"write": write})
    old_events = list(backend.events)
    operations.rerun_graph(backend.services, g, job="b", downstream=True)
    for event in old_events:
        backend.scheduler.process_stream_event(event)
    assert statuses(backend, g) == {"a": "finished", "b": "ready", "c": "waiting"}
    graph = backend.drive(g, {"write": write})
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, EXACT_THREE)
    assert write.runs == {"a": 1, "b": 2, "c": 2}


def test_a_job_rerun_without_its_failed_dep_is_aborted_again_and_the_graph_ends(backend: Backend) -> None:
    g = backend.gid("rerun-blocked")
    handlers = {"write": Counting(), "broken": broken}
    document = {"id": g, "jobs": {"u": {"type": "broken"}, "a": {"type": "write"},
                                  "d": {"type": "write", "deps": ["u", "a"]}}}  # fmt: skip
    graph = backend.run(document, handlers)
    assert (graph.status, graph.counts) == (GraphStatus.FAILED, {"finished": 1, "failed": 1, "aborted": 1})
    assert operations.rerun_graph(backend.services, g, job="d").jobs_changed == 1
    d = backend.jobs(g)["d"]
    assert (d.status, d.reason) == (JobStatus.ABORTED, "upstream job 'u' failed")
    backend.pump()  # its "aborted" record: the graph ends again, counted exactly
    graph = backend.store.get_graph(g)
    assert (graph.status, graph.counts) == (GraphStatus.FAILED, {"finished": 1, "failed": 1, "aborted": 1})
