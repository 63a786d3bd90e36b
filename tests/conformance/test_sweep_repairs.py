"""What the sweep repairs beyond leases and messages, on both backends: stream batches the
scheduler gave up on (replayed from the stream, or past its retention repaired from the
jobs), submissions stopped between writes, and two sweeps at once."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

import overseer
from overseer.errors import StoreError, StreamRecordsGone, SweepFailed
from overseer.states import GraphStatus, JobStatus
from overseer.store import FailedBatch, Services
from overseer.sweep import SweepReport, sweep

from .driver import Backend, Interrupted

ENDS = ("finished", "failed", "aborted")


def counting_handlers(calls: Counter[tuple[str, str]]) -> dict[str, Any]:
    def ok(job: Any) -> None:
        calls[job.graph_id, job.name] += 1

    def bad(job: Any) -> None:
        calls[job.graph_id, job.name] += 1
        raise RuntimeError("broken on purpose")

    return {"ok": ok, "bad": bad}


def forked(graph_id: str) -> dict[str, Any]:
    """root -> left -> after_left; root -> right (fails) -> after_right (aborted)."""
    return {
        "id": graph_id,
        "jobs": {
            "root": {"type": "ok", "deps": []},
            "left": {"type": "ok", "deps": ["root"]},
            "right": {"type": "bad", "deps": ["root"]},
            "after_left": {"type": "ok", "deps": ["left"]},
            "after_right": {"type": "ok", "deps": ["right"]},
        },
    }


def run_losing_every_end(
    backend: Backend,
    graph_id: str,
    handlers: dict[str, Any],
    services: Services,
    lose: Any = None,
    stale_ready_seconds: int | None = None,
) -> list[SweepReport]:
    """Run the graph, but every stream batch holding a job's end is given up on (as Lambda
    does after its retries); only the sweep (on ``services``) can move the graph on."""
    worker = backend.worker(handlers)
    reports = []
    for _ in range(30):
        records = backend.reader.poll()
        if any(r["dynamodb"]["NewImage"]["status"]["S"] in ENDS for r in records):
            backend.give_up(records)
            if lose is not None:
                lose(records)
        elif records:
            backend.scheduler.process_stream_event({"Records": records})
        backend.work_once(worker)
        reports.append(sweep(services, stale_ready_seconds=stale_ready_seconds))
        if backend.store.get_graph(graph_id).status.terminal:
            return reports
    raise AssertionError(f"graph {graph_id} did not end: {backend.jobs(graph_id)}")


def assert_forked_outcome(backend: Backend, graph_id: str, calls: Counter[tuple[str, str]]) -> None:
    assert backend.store.get_graph(graph_id).status == GraphStatus.FAILED
    jobs = backend.jobs(graph_id)
    assert {name: (job.status, job.attempts) for name, job in jobs.items()} == {
        "root": (JobStatus.FINISHED, 1),
        "left": (JobStatus.FINISHED, 1),
        "after_left": (JobStatus.FINISHED, 1),
        "right": (JobStatus.FAILED, 1),
        "after_right": (JobStatus.ABORTED, 0),
    }
    assert jobs["after_right"].reason == "upstream job 'right' failed"
    ran = Counter({name: n for (gid, name), n in calls.items() if gid == graph_id})
    assert ran == Counter(root=1, left=1, right=1, after_left=1)


def total(reports: list[SweepReport], counter: str) -> int:
    return sum(getattr(report, counter) for report in reports)


def test_a_stream_batch_given_up_on_is_replayed_by_the_sweep(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    handlers = counting_handlers(calls)
    graph_id = backend.gid("replayed")
    backend.submit(forked(graph_id), handlers)

    reports = run_losing_every_end(backend, graph_id, handlers, backend.services)

    assert_forked_outcome(backend, graph_id, calls)
    # root, then left + right (one batch or two), then after_left (after_right was aborted
    # by the replay of right's end).
    assert total(reports, "stream_batches_replayed") >= 3
    assert total(reports, "stream_records_replayed") >= 4
    assert total(reports, "stream_batches_past_retention") == 0
    assert [r.failures for r in reports if r.failures] == []
    assert backend.services.stream_failures is not None
    assert backend.services.stream_failures.receive() == []  # every note was deleted


class GoneForGood:
    """The stream failures of a backend whose records are past the stream's retention."""

    def __init__(self, failures: Any) -> None:
        self.failures = failures

    def receive(self, max_batches: int = 10) -> list[FailedBatch]:
        return list(self.failures.receive(max_batches))

    def records(self, batch: FailedBatch) -> list[dict[str, Any]]:
        raise StreamRecordsGone("past the 24-hour retention")

    def delete(self, batch: FailedBatch) -> None:
        self.failures.delete(batch)


def records_gone_for_good(backend: Backend) -> tuple[Services, Any]:
    """The services a sweep past the stream's retention runs on, and what loses the records of
    a batch given up on (None when the adapter is told they are gone)."""
    if backend.kind == "embedded":
        # The feed's records really go: the adapter finds them missing.
        return backend.services, _delete_feed_records(backend)
    # The emulator's stream never trims: its adapter is told so (see test_stream_failures for
    # the adapter's reading of DynamoDB Streams' TrimmedDataAccessException).
    failures = GoneForGood(backend.services.stream_failures)
    return dataclasses.replace(backend.services, stream_failures=failures), None


def test_past_the_stream_retention_the_sweep_repairs_the_graph_from_its_jobs(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    handlers = counting_handlers(calls)
    graph_id = backend.gid("past-retention")
    backend.submit(forked(graph_id), handlers)
    services, lose = records_gone_for_good(backend)

    reports = run_losing_every_end(backend, graph_id, handlers, services, lose)

    assert_forked_outcome(backend, graph_id, calls)
    assert total(reports, "stream_batches_replayed") == 0
    assert total(reports, "stream_batches_past_retention") >= 3
    assert total(reports, "stranded_graphs_repaired") >= 2
    assert total(reports, "stranded_jobs_released") >= 3  # left, right, after_left
    assert total(reports, "stranded_jobs_aborted") >= 1  # after_right
    assert [r.failures for r in reports if r.failures] == []


def test_past_the_stream_retention_the_sweep_carries_expansions_on_from_the_jobs(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    base = counting_handlers(calls)

    def expand(job: Any) -> list[Any]:
        calls[job.graph_id, job.name] += 1
        return [overseer.Expand(type="ok", items=[{"i": i} for i in range(3)] + [{"bad": True}])]

    def ok_or_bad(job: Any) -> None:
        (base["bad"] if job.args.get("bad") else base["ok"])(job)

    handlers = {**base, "expand": expand, "ok": ok_or_bad}
    graph_id = backend.gid("expansion-past-retention")
    jobs = {"root": {"type": "expand", "deps": []}, "join": {"type": "ok", "deps": ["root"]}}
    backend.submit({"id": graph_id, "jobs": jobs}, handlers)
    services, lose = records_gone_for_good(backend)

    # The children's own records go with the lost batches: the sweep finds them ready with no
    # message (its due check, as it would have long before a batch passes the retention).
    reports = run_losing_every_end(backend, graph_id, handlers, services, lose, stale_ready_seconds=0)

    # The root's end and every child's were lost: the sweep made the children from the jobs,
    # counted their ends, and aborted the join for the child that failed.
    assert backend.store.get_graph(graph_id).status == GraphStatus.FAILED
    statuses = {name: job.status.value for name, job in backend.jobs(graph_id).items()}
    assert statuses == {
        "root": "finished", "root.0": "finished", "root.1": "finished", "root.2": "finished",
        "root.3": "failed", "join": "aborted",
    }  # fmt: skip
    assert backend.jobs(graph_id)["join"].reason == "upstream job 'root.3' failed"
    assert set(Counter({n: c for (g, n), c in calls.items() if g == graph_id}).values()) == {1}
    assert [r.failures for r in reports if r.failures] == []


def _delete_feed_records(backend: Backend) -> Any:
    def lose(records: list[dict[str, Any]]) -> None:
        last = int(records[-1]["dynamodb"]["SequenceNumber"])
        with backend.store.db.write() as conn:
            conn.execute("DELETE FROM feed WHERE seq <= ?", (last,))

    return lose


class HeldInDepth:
    """A dispatch queue whose ``depth`` waits until told to go on: a sweep stays in its
    first step, holding the lease, for as long as the test wants."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def depth(self) -> int:
        self.entered.set()
        assert self.go_on.wait(60)
        return int(self.queue.depth())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


def test_of_two_sweeps_at_once_one_repairs_and_the_other_returns_at_once(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    handlers = counting_handlers(calls)
    graph_id = backend.gid("two-sweeps")
    backend.submit(forked(graph_id), handlers)
    worker = backend.worker(handlers)
    backend.pump()
    backend.work_once(worker)  # root runs; its end is given up on
    records = backend.reader.poll()
    backend.give_up(records)

    held = HeldInDepth(backend.services.queue)
    first: list[SweepReport] = []
    thread = threading.Thread(
        target=lambda: first.append(sweep(dataclasses.replace(backend.services, queue=held)))
    )
    thread.start()
    assert held.entered.wait(30)
    second = sweep(backend.services)
    held.go_on.set()
    thread.join(60)

    assert second.lease_held_elsewhere == 1
    assert second.counts() == {**dict.fromkeys(second.counts(), 0), "lease_held_elsewhere": 1}
    (one,) = first
    assert one.lease_held_elsewhere == 0 and one.failures == {}
    assert one.stream_batches_replayed == 1
    jobs = backend.jobs(graph_id)
    assert (jobs["left"].status, jobs["right"].status) == (JobStatus.READY, JobStatus.READY)
    # The lease was given back: the next sweep runs.
    assert sweep(backend.services).lease_held_elsewhere == 0


def test_a_lease_is_held_by_one_owner_until_released_or_expired(backend: Backend) -> None:
    store = backend.store
    name = backend.gid("lease")
    assert store.acquire_lease(name, "a", seconds=60)
    assert not store.acquire_lease(name, "b", seconds=60)
    store.release_lease(name, "b")  # not the holder: changes nothing
    assert not store.acquire_lease(name, "b", seconds=60)
    store.release_lease(name, "a")
    assert store.acquire_lease(name, "b", seconds=-1)  # taken, and already expired
    assert store.acquire_lease(name, "c", seconds=60)
    store.release_lease(name, "c")


def chain(graph_id: str) -> dict[str, Any]:
    return {
        "id": graph_id,
        "jobs": {
            "a": {"type": "ok", "deps": []},
            "b": {"type": "ok", "deps": []},
            "c": {"type": "ok", "deps": ["a", "b"]},
            "d": {"type": "ok", "deps": ["c"]},
        },
    }


def test_a_submission_stopped_at_any_write_is_completed_by_submitting_it_again(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    handlers = counting_handlers(calls)
    for at in itertools.count(1):
        graph_id = backend.gid(f"cut-at-{at}")
        try:
            with backend.interrupt_writes(at):
                backend.submit(chain(graph_id), handlers)
        except Interrupted:
            pass
        else:
            break  # the whole submission takes fewer than `at` writes
        assert backend.submit(chain(graph_id), handlers).status == GraphStatus.RUNNING
        assert backend.drive(graph_id, handlers).status == GraphStatus.FINISHED
        ran = Counter({name: n for (gid, name), n in calls.items() if gid == graph_id})
        assert ran == Counter(a=1, b=1, c=1, d=1), f"stopped at write {at}"
    # graph, jobs, running, two roots on AWS; graph, 4 jobs, running, two roots embedded.
    assert at > 5


def test_the_sweep_rolls_back_a_graph_left_creating_and_it_can_be_submitted_again(backend: Backend) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    handlers = counting_handlers(calls)
    graph_id = backend.gid("abandoned")
    wide = {"id": graph_id, "jobs": {"j00": {"type": "ok", "deps": []}}}
    wide["jobs"].update({f"j{n:02d}": {"type": "ok", "deps": ["j00"]} for n in range(1, 30)})
    # Stopped after the graph item and the first 25 jobs (AWS writes 25 items a request);
    # the embedded store writes a graph in one transaction, so nothing is left there.
    with pytest.raises(Interrupted), backend.interrupt_writes(3):
        backend.submit(wide, handlers)
    left = backend.store.get_graph(graph_id)
    if backend.kind == "aws":
        assert left is not None and left.status == GraphStatus.CREATING
        assert len(backend.jobs(graph_id)) == 25
    else:
        assert left is None and backend.jobs(graph_id) == {}

    settings = backend.settings.with_(creating_timeout_seconds=0)
    time.sleep(0.01)
    report = sweep(dataclasses.replace(backend.services, settings=settings))

    assert report.failures == {}
    assert report.creating_graphs_rolled_back == (1 if left is not None else 0)
    assert backend.store.get_graph(graph_id) is None and backend.jobs(graph_id) == {}
    backend.submit(wide, handlers)
    assert backend.drive(graph_id, handlers).status == GraphStatus.FINISHED
    ran = Counter({name: n for (gid, name), n in calls.items() if gid == graph_id})
    assert ran == Counter(dict.fromkeys(wide["jobs"], 1))


class LeaseDown:
    """A store that fails to take any lease (throttled, unreachable)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def acquire_lease(self, name: str, owner: str, *, seconds: float) -> bool:
        raise StoreError("the store is unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_sweep_that_cannot_take_its_lease_reports_it_as_a_failed_step(backend: Backend) -> None:
    report = sweep(dataclasses.replace(backend.services, store=LeaseDown(backend.store)))

    assert list(report.failures) == ["lease"]
    assert report.lease_held_elsewhere == 0 and report.graphs == 0
    with pytest.raises(SweepFailed, match="lease"):
        report.raise_if_failed()
