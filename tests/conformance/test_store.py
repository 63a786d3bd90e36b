"""The JobStore contract: transitions and their conditions, fences, idempotent creation,
chunked edges, the finished-deps set, graph counters and status."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import overseer.items
from overseer import timeutil
from overseer.items import DUE, LATE, LEASE, SWEEP_SHARDS, minute, next_lease_bucket
from overseer.states import (
    ABORT,
    CLAIM,
    FAIL,
    FINISH,
    LIMIT_WAIT,
    REDISPATCH,
    RELEASE,
    RETRY,
    TRANSITIONS,
    GraphStatus,
    JobStatus,
    Transition,
)
from overseer.store import Dependent, Fence, JobOutputs

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


def apply(backend: Backend, graph_id: str, name: str, transition: Transition, attempts: int = 1):
    """Apply ``transition`` the way the engine does (claims take attempt+1 and a lease)."""
    store = backend.store
    if transition == CLAIM:
        return store.transition(
            graph_id,
            name,
            CLAIM,
            fence=Fence(attempts - 1),
            changes={"attempts": attempts, "lease_owner": OWNER},
        )
    fence = Fence(attempts, OWNER) if transition.fenced else None
    if transition.requires is not None:
        # What it requires is written by the transition that precedes it (limit_wait's park).
        required = {"limit_wait": LIMIT_WAIT}[transition.requires]
        store.transition(graph_id, name, required, changes={transition.requires: "geo_api"})
    return store.transition(graph_id, name, transition, fence=fence)


def waiting_jobs(backend: Backend, graph_id: str, names: list[str]) -> None:
    """A graph whose named jobs all wait on a blocker that never runs."""
    backend.submit({"id": graph_id, "jobs": {"blocker": [], **{n: ["blocker"] for n in names}}})


def test_every_transition_succeeds_exactly_from_its_sources(backend: Backend) -> None:
    g = backend.gid("moves")
    cases = [(t, s) for t in TRANSITIONS.values() for s in JobStatus]
    names = [f"{t.name}-{s.value}" for t, s in cases]
    waiting_jobs(backend, g, names)

    def case(transition: Transition, status: JobStatus, name: str) -> None:
        for step in PATHS[status]:
            assert apply(backend, g, name, step) is not None, (name, step.name)
        result = apply(backend, g, name, transition)
        after = backend.store.get_job(g, name)
        if status in transition.sources:
            assert result is not None, name
            assert result.status == after.status == transition.target, name
            assert result == after
            assert after.updated_at >= after.created_at
            if transition.target.terminal:
                assert after.finished_at is not None
        else:
            assert result is None, name
            assert after.status == status, name

    # The cases are independent jobs: run them side by side (the emulator is slow).
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(case, [t for t, _ in cases], [s for _, s in cases], names))


def test_fenced_transitions_refuse_a_wrong_owner_or_attempt(backend: Backend) -> None:
    g = backend.gid("fences")
    store = backend.store
    waiting_jobs(backend, g, ["a"])
    store.transition(g, "a", RELEASE)
    # A claim is fenced by the attempt the message was sent for: a stale message claims nothing.
    assert store.transition(g, "a", CLAIM, fence=Fence(1), changes={"attempts": 2}) is None
    claimed = store.transition(
        g,
        "a",
        CLAIM,
        fence=Fence(0),
        changes={"attempts": 1, "lease_owner": OWNER, "lease_expires_at": "2030-01-01T00:00:00.000Z"},
        remove=["not_before"],
    )
    assert (claimed.status, claimed.attempts, claimed.lease_owner) == (JobStatus.RUNNING, 1, OWNER)
    assert store.transition(g, "a", CLAIM, fence=Fence(0), changes={"attempts": 1}) is None
    for transition in (FINISH, FAIL, ABORT, RETRY):
        with pytest.raises(ValueError):
            store.transition(g, "a", transition)
        assert store.transition(g, "a", transition, fence=Fence(1, "someone-else")) is None
        assert store.transition(g, "a", transition, fence=Fence(2, OWNER)) is None
        assert store.transition(g, "a", transition, fence=Fence(0, OWNER)) is None
    assert not store.renew_lease(g, "a", Fence(1, "someone-else"), lease_expires_at="x", heartbeat_at="y")
    assert not store.renew_lease(g, "a", Fence(2, OWNER), lease_expires_at="x", heartbeat_at="y")
    assert store.renew_lease(
        g, "a", Fence(1, OWNER), lease_expires_at="2031-01-01T00:00:00.000Z", heartbeat_at="2030-06-01"
    )
    job = store.get_job(g, "a")
    assert (job.status, job.lease_expires_at, job.heartbeat_at) == (
        JobStatus.RUNNING,
        "2031-01-01T00:00:00.000Z",
        "2030-06-01",
    )
    done = store.transition(
        g,
        "a",
        FINISH,
        fence=Fence(1, OWNER),
        changes={"artifacts": [{"bucket": "b", "key": "k", "size": 1, "sha256": "0" * 64}], "rows": []},
        remove=["error", "reason", "lease_owner", "lease_expires_at"],
    )
    assert done.status == JobStatus.FINISHED and done.lease_owner is None and done.lease_expires_at is None
    assert done.artifacts == [{"bucket": "b", "key": "k", "size": 1, "sha256": "0" * 64}]
    # The outcome is final: no second outcome, no lease renewal.
    assert store.transition(g, "a", FAIL, fence=Fence(1, OWNER)) is None
    assert not store.renew_lease(g, "a", Fence(1, OWNER), lease_expires_at="x", heartbeat_at="y")
    # Unknown jobs move nowhere.
    assert store.transition(g, "missing", RELEASE) is None
    assert store.get_job(g, "missing") is None


def test_changes_and_removals_map_to_the_same_attributes(backend: Backend) -> None:
    g = backend.gid("changes")
    store = backend.store
    waiting_jobs(backend, g, ["a"])
    store.transition(g, "a", RELEASE)
    store.transition(g, "a", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": OWNER})
    retried = store.transition(
        g,
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
        g,
        "a",
        CLAIM,
        fence=Fence(1),
        changes={"attempts": 2, "lease_owner": OWNER},
        remove=["not_before"],
    )
    failed = store.transition(
        g,
        "a",
        FAIL,
        fence=Fence(2, OWNER),
        changes={"error": {"type": "ValueError", "message": "bad", "traceback": "line 1"}},
    )
    assert failed.error == {"type": "ValueError", "message": "bad", "traceback": "line 1"}
    assert failed.not_before is None and failed.finished_at is not None
    rerun = store.transition(
        g, "a", TRANSITIONS["rerun"], changes={"reason": None}, remove=["error", "finished_at"]
    )
    assert (rerun.status, rerun.error, rerun.finished_at, rerun.attempts) == (
        JobStatus.WAITING,
        None,
        None,
        2,
    )
    assert store.get_job(g, "a") == rerun


def test_creating_a_graph_twice_creates_it_once(backend: Backend) -> None:
    g = backend.gid("once")
    first = backend.submit({"id": g, "args": {"x": 1}, "jobs": {"a": [], "b": ["a"]}})
    assert (first.status, first.jobs_total, first.args) == (GraphStatus.RUNNING, 2, {"x": 1})
    assert first.counts == {"finished": 0, "failed": 0, "aborted": 0}
    jobs = backend.jobs(g)
    assert {n: j.status for n, j in jobs.items()} == {"a": JobStatus.READY, "b": JobStatus.WAITING}
    assert jobs["b"].deps == ["a"] and jobs["a"].dependents == [Dependent("b", 0, 1)]
    records = backend.reader.poll()
    from overseer.graph import parse_graph

    spec = parse_graph({"id": g, "jobs": {"a": [], "b": ["a"], "c": ["b"]}})
    again, created = backend.store.create_graph(spec, max_attempts={})
    assert not created
    assert (again.jobs_total, again.definition_sha256) == (2, first.definition_sha256)
    assert backend.jobs(g) == jobs
    assert len(records) == 1 and backend.reader.poll() == []  # only a's release acts; nothing new
    assert backend.store.get_graph("nope") is None


def test_job_attributes_from_the_spec_and_defaults(backend: Backend) -> None:
    g = backend.gid("attrs")
    from overseer.graph import parse_graph

    spec = parse_graph(
        {
            "id": g,
            "args": {"company": 42},
            "jobs": {
                "a": {"type": "t1", "args": {"x": "é"}, "max_attempts": 2, "timeout_seconds": 60},
                "b": {"type": "t2", "deps": ["a"]},
            },
        }
    )
    backend.store.create_graph(spec, max_attempts={"t2": 7})
    a, b = backend.store.get_job(g, "a"), backend.store.get_job(g, "b")
    assert (a.type, a.args, a.max_attempts, a.timeout_seconds) == ("t1", {"company": 42, "x": "é"}, 2, 60)
    assert (b.type, b.max_attempts, b.timeout_seconds, b.deps_count) == ("t2", 7, None, 1)
    assert [j.name for j in backend.store.list_jobs(g)] == ["a", "b"]
    assert backend.store.outputs(g, ["a", "b"]) == {"a": JobOutputs([]), "b": JobOutputs([])}


@pytest.fixture
def small_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both backends write the items overseer.items builds.
    monkeypatch.setattr(overseer.items, "INLINE_EDGES", 2)
    monkeypatch.setattr(overseer.items, "EDGE_CHUNK", 3)


def test_many_edges_go_to_chunks_and_read_back_in_order(backend: Backend, small_edges: None) -> None:
    g = backend.gid("chunks")
    fan = [f"f{i}" for i in range(8)]
    jobs = {"root": [], **{f: ["root"] for f in fan}, "join": list(reversed(fan)), "small": ["root", "f0"]}
    backend.submit({"id": g, "jobs": jobs})
    store = backend.store
    root, join, small = (store.get_job(g, n) for n in ("root", "join", "small"))
    assert root.dependents is None and join.deps is None
    assert (join.deps_count, small.deps, small.deps_count) == (8, ["root", "f0"], 2)
    assert store.dependencies(join) == list(reversed(fan))
    expected = sorted([Dependent(f, 0, 1) for f in fan] + [Dependent("small", 0, 2)], key=lambda d: d.child)
    assert sorted(store.dependents(root), key=lambda d: d.child) == expected
    f0 = store.get_job(g, "f0")
    assert sorted(store.dependents(f0), key=lambda d: d.child) == [
        Dependent("join", 7, 8),
        Dependent("small", 1, 2),
    ]
    # Chunk items are no jobs.
    assert sorted(j.name for j in store.list_jobs(g)) == sorted(jobs)
    graph = backend.drive(
        g,
        {
            "root": lambda j: None,
            "join": lambda j: None,
            "small": lambda j: None,
            **{f: lambda j: None for f in fan},
        },
    )
    assert graph.status == GraphStatus.FINISHED and graph.counts["finished"] == len(jobs)


def test_finished_dependencies_are_a_set_and_only_counted_while_waiting(backend: Backend) -> None:
    g = backend.gid("deps")
    store = backend.store
    backend.submit({"id": g, "jobs": {"a": [], "b": [], "c": [], "join": ["a", "b", "c"]}})
    assert store.record_finished_dependency(g, "join", 0) == 1
    assert store.record_finished_dependency(g, "join", 0) == 1
    assert store.record_finished_dependency(g, "join", 2) == 2
    assert store.get_job(g, "join").finished_deps == 2
    assert store.record_finished_dependency(g, "a", 0) is None  # ready, not waiting
    assert store.record_finished_dependency(g, "missing", 0) is None
    assert store.record_finished_dependency(g, "join", 1) == 3
    store.transition(g, "join", RELEASE)
    assert store.record_finished_dependency(g, "join", 1) is None


def test_graph_progress_and_status(backend: Backend) -> None:
    g = backend.gid("prog")
    store = backend.store
    backend.submit({"id": g, "jobs": {"a": [], "b": [], "c": []}})
    rec = store.add_graph_progress(g, {"finished": 2, "failed": 1})
    assert rec.counts == {"finished": 2, "failed": 1, "aborted": 0}
    rec = store.add_graph_progress(g, {"failed": -1, "aborted": 1, "finished": 0})
    assert rec.counts == {"finished": 2, "failed": 0, "aborted": 1}
    assert store.add_graph_progress(g, {"finished": 0}).counts == rec.counts
    assert store.add_graph_progress("missing", {"finished": 1}) is None
    assert store.set_graph_status(g, GraphStatus.FINISHED, sources=[GraphStatus.CREATING]) is None
    assert store.get_graph(g).finished_at is None
    done = store.set_graph_status(
        g,
        GraphStatus.FAILED,
        sources=[GraphStatus.RUNNING],
        counts={"finished": 2, "failed": 1, "aborted": 0},
    )
    assert done.status == GraphStatus.FAILED and done.finished_at is not None
    assert done.counts == {"finished": 2, "failed": 1, "aborted": 0}
    assert store.get_graph(g) == done
    assert store.set_graph_status(g, GraphStatus.FINISHED, sources=[GraphStatus.RUNNING]) is None
    assert store.set_graph_status("missing", GraphStatus.FINISHED, sources=[GraphStatus.RUNNING]) is None
    back = store.set_graph_status(g, GraphStatus.RUNNING, sources=[GraphStatus.FAILED])
    assert back.status == GraphStatus.RUNNING


def test_running_graphs_lists_exactly_the_running_ones(backend: Backend) -> None:
    a, b = backend.gid("run-a"), backend.gid("run-b")
    backend.submit({"id": a, "jobs": {"x": []}})
    backend.submit({"id": b, "jobs": {"x": []}})
    backend.store.set_graph_status(b, GraphStatus.FINISHED, sources=[GraphStatus.RUNNING])
    running = {g.graph_id for g in backend.store.running_graphs()}
    assert a in running and b not in running


def test_racing_claims_of_one_job_have_exactly_one_winner(backend: Backend) -> None:
    # The fence is only as good as the conditional write under concurrency: a duplicated
    # message taken by several workers at once must give the job to exactly one of them.
    g = backend.gid("racing")
    store = backend.store
    names = [f"j{i}" for i in range(25)]
    waiting_jobs(backend, g, names)
    for name in names:
        store.transition(g, name, RELEASE)
    contenders = [(name, f"worker-{k}") for name in names for k in range(4)]

    def claim(name: str, owner: str) -> str | None:
        job = store.transition(g, name, CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": owner})
        return owner if job is not None else None

    with ThreadPoolExecutor(8) as pool:
        winners = list(pool.map(claim, [n for n, _ in contenders], [o for _, o in contenders]))
    for name in names:
        won = [w for (n, _), w in zip(contenders, winners, strict=True) if n == name and w]
        assert len(won) == 1, (name, won)
        job = store.get_job(g, name)
        assert (job.status, job.attempts, job.lease_owner) == (JobStatus.RUNNING, 1, won[0])


# -- the sweep's indexes ------------------------------------------------------------------


def indexed(backend: Backend, graph_id: str, kind: str, until: str, limit: int = 100) -> list[str]:
    """The jobs of ``graph_id`` that the sweep index gives for ``kind`` up to minute ``until``,
    every shard read page by page (``limit`` per page)."""
    found = []
    for shard in range(SWEEP_SHARDS):
        start = None
        while True:
            page, start = backend.store.sweep_page(f"{kind}#{shard}", until, start=start, limit=limit)
            found += [job.name for job in page if job.graph_id == graph_id]
            if start is None:
                break
    return sorted(found)


def in_minutes(minutes: float) -> str:
    return minute(timeutil.now() + dt.timedelta(minutes=minutes))


def claim_with_lease(backend: Backend, graph_id: str, name: str, expires_in: float) -> None:
    changes = {"attempts": 1, "lease_owner": OWNER, "lease_expires_at": timeutil.iso_in(expires_in)}
    assert backend.store.transition(graph_id, name, CLAIM, fence=Fence(0), changes=changes) is not None


def test_the_sweep_index_gives_expired_leases_and_not_live_ones(backend: Backend) -> None:
    g = backend.gid("leases")
    waiting_jobs(backend, g, ["dead", "live"])
    for name in ("dead", "live"):
        backend.store.transition(g, name, RELEASE)
    claim_with_lease(backend, g, "dead", -180)
    claim_with_lease(backend, g, "live", 180)
    assert indexed(backend, g, LEASE, in_minutes(0)) == ["dead"]
    assert indexed(backend, g, LEASE, in_minutes(-10)) == []  # not before its expiry
    assert indexed(backend, g, LEASE, in_minutes(10)) == ["dead", "live"]
    # Ended jobs leave the index.
    backend.store.transition(g, "dead", FINISH, fence=Fence(1, OWNER))
    assert indexed(backend, g, LEASE, in_minutes(10)) == ["live"]


def test_a_renewal_that_moves_the_lease_bucket_moves_the_job_in_the_index(backend: Backend) -> None:
    g = backend.gid("renewed")
    waiting_jobs(backend, g, ["a"])
    backend.store.transition(g, "a", RELEASE)
    claim_with_lease(backend, g, "a", -180)
    claimed = backend.store.get_job(g, "a")
    assert indexed(backend, g, LEASE, in_minutes(0)) == ["a"]
    expires = timeutil.iso_in(120)
    bucket = next_lease_bucket(minute(claimed.lease_expires_at), expires)
    assert bucket is not None and bucket >= minute(expires)
    assert backend.store.renew_lease(
        g, "a", Fence(1, OWNER), lease_expires_at=expires, heartbeat_at=timeutil.iso(), lease_bucket=bucket
    )
    assert indexed(backend, g, LEASE, in_minutes(0)) == []
    assert indexed(backend, g, LEASE, bucket) == ["a"]
    # A renewal without a bucket leaves the job where it is.
    assert backend.store.renew_lease(
        g, "a", Fence(1, OWNER), lease_expires_at=timeutil.iso_in(130), heartbeat_at=timeutil.iso()
    )
    assert indexed(backend, g, LEASE, bucket) == ["a"]


def test_ready_jobs_are_due_and_a_retry_beyond_the_sqs_delay_is_late(backend: Backend) -> None:
    g = backend.gid("due")
    names = ["r1", "r2", "r3", "r4", "later"]
    waiting_jobs(backend, g, names)
    for name in names:
        backend.store.transition(g, name, RELEASE)
    # Paged one job at a time: every job once, through the continuations.
    assert indexed(backend, g, DUE, in_minutes(0), limit=1) == sorted(["blocker", *names])
    assert indexed(backend, g, DUE, in_minutes(-5)) == []
    claim_with_lease(backend, g, "later", 120)
    retried = backend.store.transition(
        g, "later", RETRY, fence=Fence(1, OWNER), changes={"not_before": timeutil.iso_in(2000)}
    )
    assert retried is not None
    assert indexed(backend, g, DUE, in_minutes(60)) == ["blocker", "r1", "r2", "r3", "r4"]
    assert indexed(backend, g, LATE, in_minutes(15)) == []  # 2000 s - 900 s: in 18 minutes
    assert indexed(backend, g, LATE, in_minutes(20)) == ["later"]
    # Sent (dispatched): a ready job like the others.
    backend.store.transition(
        g, "later", REDISPATCH, fence=Fence(1), changes={"dispatched_at": timeutil.iso()}
    )
    assert indexed(backend, g, LATE, in_minutes(20)) == []
    assert "later" in indexed(backend, g, DUE, in_minutes(60))


def test_running_graphs_come_and_go_with_their_status(backend: Backend) -> None:
    g = backend.gid("active")
    backend.submit({"id": g, "jobs": {"x": []}})
    assert g in {graph.graph_id for graph in backend.store.running_graphs()}
    backend.store.set_graph_status(g, GraphStatus.ABORTED, sources=[GraphStatus.RUNNING])
    assert g not in {graph.graph_id for graph in backend.store.running_graphs()}
    backend.store.set_graph_status(g, GraphStatus.RUNNING, sources=[GraphStatus.ABORTED])  # a rerun
    (again,) = [graph for graph in backend.store.running_graphs() if graph.graph_id == g]
    assert (again.status, again.jobs_total) == (GraphStatus.RUNNING, 1)


def test_the_sweep_cursor_is_kept_until_cleared(backend: Backend) -> None:
    store = backend.store
    store.put_sweep_cursor({"key": "lease#3", "start": '{"k": 1}'})
    assert store.get_sweep_cursor() == {"key": "lease#3", "start": '{"k": 1}'}
    store.put_sweep_cursor(None)
    assert store.get_sweep_cursor() is None


def test_the_jobs_written_since_a_time_are_listed_alone(backend: Backend) -> None:
    """What a page's refresh reads: only the jobs written at or after its last read."""
    from overseer import operations

    g = backend.gid("changed")
    backend.submit({"id": g, "jobs": {"a": [], "b": ["a"], "c": []}})
    everything = operations.list_jobs(backend.services, g)
    assert [job.name for job in everything] == ["a", "b", "c"]
    since = max(str(job.updated_at) for job in everything)
    later = timeutil.iso(timeutil.parse(since) + dt.timedelta(milliseconds=5))
    assert operations.list_jobs(backend.services, g, changed_since=later) == []
    while timeutil.iso() <= later:  # the next write is stamped after it
        time.sleep(0.002)
    claimed = backend.store.transition(
        g, "c", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "w"}
    )
    assert claimed is not None and str(claimed.updated_at) >= later
    assert [job.name for job in operations.list_jobs(backend.services, g, changed_since=later)] == ["c"]
    # Any ISO form of the time, as the API receives it.
    as_offset = timeutil.parse(later).isoformat()
    assert [job.name for job in operations.list_jobs(backend.services, g, changed_since=as_offset)] == ["c"]
    with pytest.raises(ValueError):
        operations.list_jobs(backend.services, g, changed_since="yesterday")
