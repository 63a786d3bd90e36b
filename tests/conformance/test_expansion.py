"""Graphs that grow at run time (``overseer.Expand``), on both backends: children named and
run once, joins that wait for the whole tree and see it in item order, failure, reruns,
cancellation, and every replay or duplicate changing nothing."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

import overseer
from overseer import operations
from overseer.states import GraphStatus, JobStatus

from .driver import Backend


class Fan:
    """Handlers of a fan-out: ``start`` lists ``n`` items, ``child`` writes its item (and
    expands again when its item says ``nest``), ``join`` writes the names it was given."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.runs: Counter[str] = Counter()
        self.fail = fail or set()
        self.joined: list[str] = []

    def start(self, job: overseer.Job) -> list[Any]:
        self.runs[job.name] += 1
        # A later run lists one more item each time (the first committed expansion must win).
        count = job.args["n"] + self.runs[job.name] - 1
        items = [{"i": i, **job.args.get("extra", {})} for i in range(count)]
        return [
            overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=b"listed"),
            overseer.Expand(type="child", items=items, args={"tag": "t"}),
        ]

    def child(self, job: overseer.Job) -> list[Any]:
        self.runs[job.name] += 1
        assert job.args["tag"] == "t" and job.args["graph_arg"] == 1
        parent = job.name.rsplit(".", 1)[0]
        assert [a.read() for a in job.inputs[parent]] in ([b"listed"], [f"{parent}".encode()])
        if job.args["i"] in self.fail:
            raise ValueError(f"item {job.args['i']} is bad")
        out: list[Any] = [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]
        if job.args.get("nest"):
            out.append(
                overseer.Expand(type="child", items=[{"i": 100 + k} for k in range(2)], args={"tag": "t"})
            )
        return out

    def join(self, job: overseer.Job) -> list[Any]:
        self.runs[job.name] += 1
        self.joined = list(job.inputs)
        return [overseer.Artifact(key=f"{job.graph_id}/join.json", data=json.dumps(self.joined).encode())]

    @property
    def handlers(self) -> dict[str, Any]:
        return {"start": self.start, "child": self.child, "join": self.join}


def finish_start(backend: Backend, g: str, fan: Fan) -> None:
    """Run the graph's first job only (the stream may take a moment to bring its record)."""
    worker = backend.worker(fan.handlers)
    for _ in range(200):
        if backend.store.get_job(g, "start").status == JobStatus.FINISHED:
            return
        backend.pump()
        backend.work_once(worker)
    raise AssertionError(f"start did not finish: {backend.jobs(g)}")


def fan_graph(g: str, n: int, **args: Any) -> dict[str, Any]:
    return {"id": g, "args": {"n": n, "graph_arg": 1, **args}, "jobs": {"start": [], "join": ["start"]}}


def test_children_run_once_and_the_join_sees_them_in_item_order(backend: Backend) -> None:
    g = backend.gid("expand-12")
    fan = Fan()
    graph = backend.run(fan_graph(g, 12), fan.handlers)
    assert graph.status == GraphStatus.FINISHED
    children = [f"start.{i}" for i in range(12)]
    assert fan.joined == ["start", *children]
    assert set(fan.runs.values()) == {1} and len(fan.runs) == 14
    jobs = backend.jobs(g)
    assert all(
        jobs[c].status == JobStatus.FINISHED and jobs[c].args["i"] == i for i, c in enumerate(children)
    )
    assert (graph.jobs_total, graph.counts["finished"]) == (14, 14)
    assert jobs["start"].summary()["expansion"] == {"type": "child", "count": 12, "done": True}


def test_an_expansion_of_zero_items_releases_the_join_at_once(backend: Backend) -> None:
    g = backend.gid("expand-0")
    fan = Fan()
    graph = backend.run(fan_graph(g, 0), fan.handlers)
    assert (graph.status, graph.jobs_total) == (GraphStatus.FINISHED, 2)
    assert fan.joined == ["start"]


def test_the_join_waits_for_grandchildren(backend: Backend) -> None:
    g = backend.gid("expand-nested")
    fan = Fan()
    graph = backend.run(fan_graph(g, 2, extra={"nest": True}), fan.handlers)
    assert graph.status == GraphStatus.FINISHED
    assert fan.joined == [
        "start", "start.0", "start.0.0", "start.0.1", "start.1", "start.1.0", "start.1.1",
    ]  # fmt: skip
    assert graph.jobs_total == 8


def test_a_failed_child_aborts_the_join_and_its_siblings_finish(backend: Backend) -> None:
    g = backend.gid("expand-fail")
    fan = Fan(fail={3})
    graph = backend.run(fan_graph(g, 6), fan.handlers)
    assert graph.status == GraphStatus.FAILED
    jobs = backend.jobs(g)
    assert jobs["start.3"].status == JobStatus.FAILED
    assert (jobs["join"].status, jobs["join"].reason) == (JobStatus.ABORTED, "upstream job 'start.3' failed")
    assert sum(j.status == JobStatus.FINISHED for j in jobs.values()) == 6  # start + 5 children

    fan.fail.clear()
    operations.rerun_graph(backend.services, g)
    graph = backend.drive(g, fan.handlers)
    assert graph.status == GraphStatus.FINISHED
    assert fan.runs["start.3"] == 2 and fan.runs["start.2"] == 1 and fan.runs["start"] == 1
    assert fan.joined == ["start", *(f"start.{i}" for i in range(6))]


def test_replayed_records_and_a_second_finish_record_double_nothing(backend: Backend) -> None:
    g = backend.gid("expand-replay")
    fan = Fan()
    graph = backend.run(fan_graph(g, 5), fan.handlers)
    assert graph.status == GraphStatus.FINISHED
    before = {name: (job.status, job.attempts, job.updated_at) for name, job in backend.jobs(g).items()}
    for event in list(backend.events):  # every stream batch delivered again
        backend.scheduler.process_stream_event(event)
    while backend.pump() or backend.work_once(backend.worker(fan.handlers)):
        pass
    after = {name: (job.status, job.attempts, job.updated_at) for name, job in backend.jobs(g).items()}
    assert after == before
    assert backend.store.get_graph(g).counts == {"finished": 7, "failed": 0, "aborted": 0}


def test_children_are_made_in_pages_across_invocations(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overseer.expansion.PAGE", 7)
    backend.scheduler.expansions.budget_seconds = 0  # one page per invocation
    g = backend.gid("expand-pages")
    fan = Fan()
    graph = backend.run(fan_graph(g, 30), fan.handlers)
    assert graph.status == GraphStatus.FINISHED
    assert fan.joined == ["start", *(f"start.{i}" for i in range(30))]
    assert set(fan.runs.values()) == {1}


def test_a_cancelled_graph_makes_its_remaining_children_aborted(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overseer.expansion.PAGE", 4)
    backend.scheduler.expansions.budget_seconds = 0
    g = backend.gid("expand-cancel")
    fan = Fan()
    backend.submit(fan_graph(g, 10), fan.handlers)
    finish_start(backend, g, fan)
    backend.pump()  # the first page of children
    operations.cancel_graph(backend.services, g)
    while backend.pump():
        pass
    jobs = backend.jobs(g)
    assert len(jobs) == 12
    assert {j.status for n, j in jobs.items() if n.startswith("start.")} == {JobStatus.ABORTED}
    assert backend.store.get_graph(g).status == GraphStatus.ABORTED


def test_a_bad_expansion_fails_its_job_with_a_clear_error(backend: Backend) -> None:
    g = backend.gid("expand-bad")

    def start(job: overseer.Job) -> list[Any]:
        return [overseer.Expand(type="nope", items=[{"i": 1}])]

    graph = backend.run({"id": g, "jobs": {"start": [], "join": ["start"]}}, {"start": start, "join": start})
    assert graph.status == GraphStatus.FAILED
    error = backend.jobs(g)["start"].error
    assert error["type"] == "InvalidExpansion"
    assert "expands into type 'nope', which has no handler" in error["message"]
    assert graph.jobs_total == 2


def test_too_many_items_is_a_clear_error(backend: Backend) -> None:
    g = backend.gid("expand-cap")
    backend.services.settings = backend.services.settings.with_(max_expand_items=3)

    def start(job: overseer.Job) -> list[Any]:
        return [overseer.Expand(type="start", items=[{"i": i} for i in range(4)])]

    graph = backend.run({"id": g, "jobs": {"start": []}}, {"start": start})
    assert graph.status == GraphStatus.FAILED
    assert (
        "expands into 4 items; the maximum is 3 (OVERSEER_MAX_EXPAND_ITEMS)"
        in (backend.jobs(g)["start"].error["message"])
    )


def test_a_rerun_of_the_expanded_job_keeps_its_first_committed_expansion(backend: Backend) -> None:
    g = backend.gid("expand-rerun-parent")
    fan = Fan()
    assert backend.run(fan_graph(g, 3), fan.handlers).status == GraphStatus.FINISHED
    operations.rerun_graph(backend.services, g, job="start", downstream=True)
    graph = backend.drive(g, fan.handlers)
    assert (graph.status, graph.jobs_total) == (GraphStatus.FINISHED, 5)
    assert (fan.runs["start"], fan.runs["join"]) == (2, 2)
    assert all(fan.runs[f"start.{i}"] == 1 for i in range(3))
    assert fan.joined == ["start", "start.0", "start.1", "start.2"]
    assert sorted(backend.jobs(g)) == ["join", "start", "start.0", "start.1", "start.2"]


@pytest.mark.parametrize("damage", ["changed", "gone"])
def test_items_changed_or_gone_after_the_commit_end_the_graph_saying_why(
    backend: Backend, damage: str
) -> None:
    g = backend.gid(f"expand-items-{damage}")
    fan = Fan()
    backend.submit(fan_graph(g, 3), fan.handlers)
    finish_start(backend, g, fan)  # its expansion is committed, no child is made yet
    expansion = backend.jobs(g)["start"].expansion
    if damage == "changed":
        backend.services.artifacts.put_bytes(expansion["bucket"], expansion["key"], b"{}", sha256="x")
    else:
        backend.services.artifacts.delete(expansion["bucket"], expansion["key"])
    graph = backend.drive(g, fan.handlers)
    assert graph.status == GraphStatus.ABORTED
    jobs = backend.jobs(g)
    children = [jobs[f"start.{i}"] for i in range(3)]
    assert {c.status for c in children} == {JobStatus.ABORTED}
    why = "were changed after they were committed" if damage == "changed" else "are gone"
    assert all(why in (c.reason or "") for c in children), children[0].reason
    assert jobs["join"].status == JobStatus.ABORTED
    # The first child whose aborted record reached the scheduler names it (any of the three).
    assert re.match(
        r"upstream job 'start\.[012]' aborted: the items of its parent's expansion", jobs["join"].reason
    )
    assert fan.runs == Counter(start=1)
