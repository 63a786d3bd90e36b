"""The JobStore contract: transitions and their conditions, fences, idempotent creation,
chunked edges, the finished-deps set, graph counters and status."""

from __future__ import annotations

import pytest

import overseer.aws.jobstore
import overseer.embedded.store
from overseer.states import (
    ABORT,
    CLAIM,
    FAIL,
    FINISH,
    RELEASE,
    RETRY,
    TRANSITIONS,
    GraphStatus,
    JobStatus,
    Transition,
)
from overseer.store import Dependent, Fence

from .driver import Backend

OWNER = "worker-1"
# How to bring a fresh waiting job to each status: the transitions, in order.
PATHS: dict[JobStatus, list[Transition]] = {
    JobStatus.WAITING: [],
    JobStatus.READY: [RELEASE],
    JobStatus.RUNNING: [RELEASE, CLAIM],
    JobStatus.FINISHED: [RELEASE, CLAIM, FINISH],
    JobStatus.FAILED: [RELEASE, CLAIM, FAIL],
    JobStatus.ABORTED: [RELEASE, CLAIM, ABORT],
}


def apply(backend: Backend, graph_id: str, name: str, transition: Transition):
    """Apply ``transition`` the way the engine does (claims take attempt+1 and a lease)."""
    store = backend.store
    job = store.get_job(graph_id, name)
    if transition == CLAIM:
        return store.transition(
            graph_id,
            name,
            CLAIM,
            fence=Fence(job.attempts),
            changes={"attempts": job.attempts + 1, "lease_owner": OWNER},
        )
    fence = Fence(job.attempts, OWNER) if transition.fenced else None
    return store.transition(graph_id, name, transition, fence=fence)


def waiting_jobs(backend: Backend, graph_id: str, names: list[str]) -> None:
    """A graph whose named jobs all wait on a blocker that never runs."""
    backend.submit({"id": graph_id, "jobs": {"blocker": [], **{n: ["blocker"] for n in names}}})


def test_every_transition_succeeds_exactly_from_its_sources(backend: Backend) -> None:
    cases = [(t, s) for t in TRANSITIONS.values() for s in JobStatus]
    names = [f"{t.name}-{s.value}" for t, s in cases]
    waiting_jobs(backend, "moves", names)
    for (transition, status), name in zip(cases, names, strict=True):
        for step in PATHS[status]:
            assert apply(backend, "moves", name, step) is not None, (name, step.name)
        assert backend.store.get_job("moves", name).status == status
        result = apply(backend, "moves", name, transition)
        after = backend.store.get_job("moves", name)
        if status in transition.sources:
            assert result is not None, name
            assert result.status == after.status == transition.target, name
            assert after.updated_at >= after.created_at
            assert (after.finished_at is not None) == transition.target.terminal or status.terminal
        else:
            assert result is None, name
            assert after.status == status, name


def test_fenced_transitions_refuse_a_wrong_owner_or_attempt(backend: Backend) -> None:
    store = backend.store
    waiting_jobs(backend, "fences", ["a"])
    store.transition("fences", "a", RELEASE)
    # A claim is fenced by the attempt the message was sent for: a stale message claims nothing.
    assert store.transition("fences", "a", CLAIM, fence=Fence(1), changes={"attempts": 2}) is None
    claimed = store.transition(
        "fences",
        "a",
        CLAIM,
        fence=Fence(0),
        changes={"attempts": 1, "lease_owner": OWNER, "lease_expires_at": "2030-01-01T00:00:00.000Z"},
        remove=["not_before"],
    )
    assert (claimed.status, claimed.attempts, claimed.lease_owner) == (JobStatus.RUNNING, 1, OWNER)
    assert store.transition("fences", "a", CLAIM, fence=Fence(0), changes={"attempts": 1}) is None
    for transition in (FINISH, FAIL, ABORT, RETRY):
        with pytest.raises(ValueError):
            store.transition("fences", "a", transition)
        assert store.transition("fences", "a", transition, fence=Fence(1, "someone-else")) is None
        assert store.transition("fences", "a", transition, fence=Fence(2, OWNER)) is None
        assert store.transition("fences", "a", transition, fence=Fence(0, OWNER)) is None
    assert not store.renew_lease(
        "fences", "a", Fence(1, "someone-else"), lease_expires_at="x", heartbeat_at="y"
    )
    assert not store.renew_lease("fences", "a", Fence(2, OWNER), lease_expires_at="x", heartbeat_at="y")
    assert store.renew_lease(
        "fences", "a", Fence(1, OWNER), lease_expires_at="2031-01-01T00:00:00.000Z", heartbeat_at="2030-06-01"
    )
    job = store.get_job("fences", "a")
    assert (job.status, job.lease_expires_at, job.heartbeat_at) == (
        JobStatus.RUNNING,
        "2031-01-01T00:00:00.000Z",
        "2030-06-01",
    )
    done = store.transition(
        "fences",
        "a",
        FINISH,
        fence=Fence(1, OWNER),
        changes={"artifacts": [{"bucket": "b", "key": "k", "size": 1, "sha256": "0" * 64}], "rows": []},
        remove=["error", "reason", "lease_owner", "lease_expires_at"],
    )
    assert done.status == JobStatus.FINISHED and done.lease_owner is None and done.lease_expires_at is None
    assert done.artifacts == [{"bucket": "b", "key": "k", "size": 1, "sha256": "0" * 64}]
    # The outcome is final: no second outcome, no lease renewal.
    assert store.transition("fences", "a", FAIL, fence=Fence(1, OWNER)) is None
    assert not store.renew_lease("fences", "a", Fence(1, OWNER), lease_expires_at="x", heartbeat_at="y")
    # Unknown jobs move nowhere.
    assert store.transition("fences", "missing", RELEASE) is None
    assert store.get_job("fences", "missing") is None


def test_changes_and_removals_map_to_the_same_attributes(backend: Backend) -> None:
    store = backend.store
    waiting_jobs(backend, "changes", ["a"])
    store.transition("changes", "a", RELEASE)
    store.transition("changes", "a", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": OWNER})
    retried = store.transition(
        "changes",
        "a",
        RETRY,
        fence=Fence(1, OWNER),
        changes={"error": {"type": "Fault", "message": "later", "traceback": ""}, "not_before": "2020-01-01"},
        remove=["lease_owner", "lease_expires_at"],
    )
    assert retried.error == {"type": "Fault", "message": "later", "traceback": None}
    assert retried.error_text() == "Fault: later"
    assert (retried.not_before, retried.lease_owner, retried.attempts) == ("2020-01-01", None, 1)
    store.transition(
        "changes",
        "a",
        CLAIM,
        fence=Fence(1),
        changes={"attempts": 2, "lease_owner": OWNER},
        remove=["not_before"],
    )
    failed = store.transition(
        "changes",
        "a",
        FAIL,
        fence=Fence(2, OWNER),
        changes={"error": {"type": "ValueError", "message": "bad", "traceback": "line 1"}},
    )
    assert failed.error == {"type": "ValueError", "message": "bad", "traceback": "line 1"}
    assert failed.not_before is None and failed.finished_at is not None
    rerun = store.transition(
        "changes", "a", TRANSITIONS["rerun"], changes={"reason": None}, remove=["error", "finished_at"]
    )
    assert (rerun.status, rerun.error, rerun.finished_at, rerun.attempts) == (
        JobStatus.WAITING,
        None,
        None,
        2,
    )
    assert store.get_job("changes", "a") == rerun


def test_creating_a_graph_twice_creates_it_once(backend: Backend) -> None:
    first = backend.submit({"id": "once", "args": {"x": 1}, "jobs": {"a": [], "b": ["a"]}})
    assert (first.status, first.jobs_total, first.args) == (GraphStatus.RUNNING, 2, {"x": 1})
    assert first.counts == {"finished": 0, "failed": 0, "aborted": 0}
    jobs = backend.jobs("once")
    assert {n: j.status for n, j in jobs.items()} == {"a": JobStatus.READY, "b": JobStatus.WAITING}
    assert jobs["b"].deps == ["a"] and jobs["a"].dependents == [Dependent("b", 0, 1)]
    records = backend.new_reader().poll()
    from overseer.graph import parse_graph

    spec = parse_graph({"id": "once", "jobs": {"a": [], "b": ["a"], "c": ["b"]}})
    again, created = backend.store.create_graph(spec, max_attempts={})
    assert not created
    assert (again.jobs_total, again.definition_sha256) == (2, first.definition_sha256)
    assert backend.jobs("once") == jobs
    assert len(backend.new_reader().poll()) == len(records) == 1  # only a's release acts
    assert backend.store.get_graph("nope") is None


def test_job_attributes_from_the_spec_and_defaults(backend: Backend) -> None:
    from overseer.graph import parse_graph

    spec = parse_graph(
        {
            "id": "attrs",
            "args": {"company": 42},
            "jobs": {
                "a": {"type": "t1", "args": {"x": "é"}, "max_attempts": 2, "timeout_seconds": 60},
                "b": {"type": "t2", "deps": ["a"]},
            },
        }
    )
    backend.store.create_graph(spec, max_attempts={"t2": 7})
    a, b = backend.store.get_job("attrs", "a"), backend.store.get_job("attrs", "b")
    assert (a.type, a.args, a.max_attempts, a.timeout_seconds) == ("t1", {"company": 42, "x": "é"}, 2, 60)
    assert (b.type, b.max_attempts, b.timeout_seconds, b.deps_count) == ("t2", 7, None, 1)
    assert [j.name for j in backend.store.list_jobs("attrs")] == ["a", "b"]
    assert backend.store.manifests("attrs", ["a", "b"]) == {"a": [], "b": []}


@pytest.fixture
def small_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (overseer.aws.jobstore, overseer.embedded.store):
        monkeypatch.setattr(module, "INLINE_EDGES", 2)
        monkeypatch.setattr(module, "EDGE_CHUNK", 3)


def test_many_edges_go_to_chunks_and_read_back_in_order(backend: Backend, small_edges: None) -> None:
    fan = [f"f{i}" for i in range(8)]
    jobs = {"root": [], **{f: ["root"] for f in fan}, "join": list(reversed(fan)), "small": ["root", "f0"]}
    backend.submit({"id": "chunks", "jobs": jobs})
    store = backend.store
    root, join, small = (store.get_job("chunks", n) for n in ("root", "join", "small"))
    assert root.dependents is None and join.deps is None
    assert (join.deps_count, small.deps, small.deps_count) == (8, ["root", "f0"], 2)
    assert store.dependencies(join) == list(reversed(fan))
    expected = sorted([Dependent(f, 0, 1) for f in fan] + [Dependent("small", 0, 2)], key=lambda d: d.child)
    assert sorted(store.dependents(root), key=lambda d: d.child) == expected
    f0 = store.get_job("chunks", "f0")
    assert sorted(store.dependents(f0), key=lambda d: d.child) == [
        Dependent("join", 7, 8),
        Dependent("small", 1, 2),
    ]
    # Chunk items are no jobs.
    assert sorted(j.name for j in store.list_jobs("chunks")) == sorted(jobs)
    graph = backend.drive(
        "chunks",
        {
            "root": lambda j: None,
            "join": lambda j: None,
            "small": lambda j: None,
            **{f: lambda j: None for f in fan},
        },
    )
    assert graph.status == GraphStatus.FINISHED and graph.counts["finished"] == len(jobs)


def test_finished_dependencies_are_a_set_and_only_counted_while_waiting(backend: Backend) -> None:
    store = backend.store
    backend.submit({"id": "deps", "jobs": {"a": [], "b": [], "c": [], "join": ["a", "b", "c"]}})
    assert store.record_finished_dependency("deps", "join", 0) == 1
    assert store.record_finished_dependency("deps", "join", 0) == 1
    assert store.record_finished_dependency("deps", "join", 2) == 2
    assert store.get_job("deps", "join").finished_deps == 2
    assert store.record_finished_dependency("deps", "a", 0) is None  # ready, not waiting
    assert store.record_finished_dependency("deps", "missing", 0) is None
    assert store.record_finished_dependency("deps", "join", 1) == 3
    store.transition("deps", "join", RELEASE)
    assert store.record_finished_dependency("deps", "join", 1) is None


def test_graph_progress_and_status(backend: Backend) -> None:
    store = backend.store
    backend.submit({"id": "prog", "jobs": {"a": [], "b": [], "c": []}})
    g = store.add_graph_progress("prog", {"finished": 2, "failed": 1})
    assert g.counts == {"finished": 2, "failed": 1, "aborted": 0}
    g = store.add_graph_progress("prog", {"failed": -1, "aborted": 1, "finished": 0})
    assert g.counts == {"finished": 2, "failed": 0, "aborted": 1}
    assert store.add_graph_progress("prog", {"finished": 0}).counts == g.counts
    assert store.add_graph_progress("missing", {"finished": 1}) is None
    assert store.set_graph_status("prog", GraphStatus.FINISHED, sources=[GraphStatus.CREATING]) is None
    assert store.get_graph("prog").finished_at is None
    done = store.set_graph_status(
        "prog",
        GraphStatus.FAILED,
        sources=[GraphStatus.RUNNING],
        counts={"finished": 2, "failed": 1, "aborted": 0},
    )
    assert done.status == GraphStatus.FAILED and done.finished_at is not None
    assert done.counts == {"finished": 2, "failed": 1, "aborted": 0}
    assert store.get_graph("prog") == done
    assert store.set_graph_status("prog", GraphStatus.FINISHED, sources=[GraphStatus.RUNNING]) is None
    assert store.set_graph_status("missing", GraphStatus.FINISHED, sources=[GraphStatus.RUNNING]) is None
    back = store.set_graph_status("prog", GraphStatus.RUNNING, sources=[GraphStatus.FAILED])
    assert back.status == GraphStatus.RUNNING
