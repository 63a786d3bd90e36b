"""Concurrency limits on both backends: a job whose limit is full waits outside the queue
(no attempt, no receive, not in the queue's depth), a slot given back wakes the oldest
waiter, a holder whose lease passed frees its slot, and every slot write is fenced by its
owner and attempt."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from overseer import Artifact, Job
from overseer.errors import InvalidGraph
from overseer.limits import Admission, Holder, wake
from overseer.operations import cancel_graph, submit_graph
from overseer.store import Fence
from overseer.sweep import sweep
from overseer.timeutil import iso_in
from overseer.worker import Outcome, Worker

from .driver import Backend


def written(job: Job) -> Artifact:
    return Artifact(key=f"{job.graph_id}/{job.name}", data=job.name.encode())


@pytest.fixture
def limit() -> str:
    # The AWS backend shares one stack per session: a limit of this test's own.
    return f"geo_{uuid.uuid4().hex[:8]}"


def limited(backend: Backend, limits: Mapping[str, int]) -> Backend:
    settings = backend.settings.with_(limits=json.dumps(dict(limits)))
    return dataclasses.replace(
        backend, settings=settings, services=dataclasses.replace(backend.services, settings=settings)
    )


def worker(backend: Backend, handlers: Mapping[str, Any], worker_id: str = "w1") -> Worker:
    return backend.worker(handlers, worker_id=worker_id)


def process_all(backend: Backend, w: Worker) -> list[Outcome]:
    deliveries = backend.queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=30)
    return [w.process(d) for d in deliveries]


# How long a holder whose worker died keeps its slot, in the test of its lease passing.
HOLD_SECONDS = 5.0


def hold_elsewhere(backend: Backend, limit: str, seconds: float = 60) -> None:
    """A job of another worker holds the limit's one slot."""
    held = backend.store.acquire_slot(limit, 1, "other/job", Holder("elsewhere", 1, iso_in(seconds)))
    assert held == Admission.HELD


def test_a_job_over_its_limit_waits_outside_the_queue_and_a_slot_given_back_wakes_the_oldest(
    backend: Backend, limit: str
) -> None:
    backend = limited(backend, {limit: 1})
    gid = backend.gid("limit-wait")
    jobs = {f"j{n}": {"type": "geocode", "limit": limit} for n in range(3)}
    submit_graph(backend.services, {"id": gid, "jobs": jobs})
    hold_elsewhere(backend, limit)
    backend.pump()
    w = worker(backend, {"geocode": written})

    outcomes = process_all(backend, w)
    assert sorted((o.kind, o.job_name) for o in outcomes) == [("waiting", f"j{n}") for n in range(3)]
    w.flush_deletes()
    # Waiting outside the queue: no message, no attempt, ready with the limit it waits for.
    assert backend.queue.depth() == 0
    assert backend.pump() == 0  # a parked job is nothing for the scheduler
    records = backend.jobs(gid)
    assert {(j.status.value, j.attempts, j.limit_wait) for j in records.values()} == {("ready", 0, limit)}
    assert records["j0"].summary()["waiting_for_limit"] == {
        "limit": limit,
        "since": records["j0"].limit_since,
    }
    assert backend.store.count_waiting(limit) == 3
    order = sorted(records, key=lambda name: records[name].limit_since or "")

    # The other job gives its slot back: the oldest waiter is woken and enqueued by the
    # scheduler; each job that ends wakes the next.
    assert backend.store.release_slot(limit, "other/job", Fence(1, "elsewhere"))
    (first,) = wake(backend.store, limit, 1)
    assert first.name == order[0]
    ran: list[str] = []
    for _ in range(10):
        backend.pump()
        for outcome in process_all(backend, w):
            assert outcome.kind == "finished", outcome
            ran.append(outcome.job_name)
        if backend.store.get_graph(gid).status.terminal:
            break
    assert ran == order
    assert backend.store.get_graph(gid).status.value == "finished"
    assert {(j.attempts, j.limit_wait, j.limit_since) for j in backend.jobs(gid).values()} == {
        (1, None, None)
    }
    assert backend.store.count_waiting(limit) == 0
    assert backend.store.slot_holders(limit) == {}


def test_a_woken_job_that_finds_its_limit_full_again_waits_in_its_old_place(
    backend: Backend, limit: str
) -> None:
    backend = limited(backend, {limit: 1})
    gid = backend.gid("limit-again")
    submit_graph(backend.services, {"id": gid, "jobs": {"a": {"type": "geocode", "limit": limit}}})
    hold_elsewhere(backend, limit)
    backend.pump()
    w = worker(backend, {"geocode": written})
    assert [o.kind for o in process_all(backend, w)] == ["waiting"]
    since = backend.jobs(gid)["a"].limit_since
    (woken,) = wake(backend.store, limit, 1)  # woken, but the slot is still held
    assert woken.limit_wait is None and woken.limit_since == since
    backend.pump()
    assert [o.kind for o in process_all(backend, w)] == ["waiting"]
    again = backend.jobs(gid)["a"]
    assert (again.limit_wait, again.limit_since, again.attempts) == (limit, since, 0)


def test_a_handlers_limit_holds_its_jobs_and_the_graphs_wins(backend: Backend, limit: str) -> None:
    other = f"{limit}_b"
    backend = limited(backend, {limit: 1, other: 1})
    gid = backend.gid("limit-spec")
    submit_graph(
        backend.services,
        {"id": gid, "jobs": {"a": {"type": "geocode"}, "b": {"type": "geocode", "limit": other}}},
    )
    hold_elsewhere(backend, limit)
    backend.pump()
    w = worker(backend, {"geocode": {"process": written, "limit": limit}})
    outcomes = {o.job_name: o.kind for o in process_all(backend, w)}
    # a holds its handler's limit (full); b its graph's (free).
    assert outcomes == {"a": "waiting", "b": "finished"}


def test_a_holder_whose_lease_passed_frees_its_slot_and_the_sweep_wakes_a_waiter(
    backend: Backend, limit: str
) -> None:
    backend = limited(backend, {limit: 1})
    gid = backend.gid("limit-lease")
    submit_graph(backend.services, {"id": gid, "jobs": {"a": {"type": "geocode", "limit": limit}}})
    # Its worker dies: nobody renews it. Long enough for what comes before the lease
    # passes, on a slow machine too (1 s was not, once: the first sweep found it passed).
    lapses_at = time.monotonic() + HOLD_SECONDS
    hold_elsewhere(backend, limit, seconds=HOLD_SECONDS)
    backend.pump()
    w = worker(backend, {"geocode": written})
    assert [o.kind for o in process_all(backend, w)] == ["waiting"]
    before = sweep(backend.services)
    assert before.limits[limit] == {"size": 1, "running": 1, "waiting": 1, "woken": 0}
    time.sleep(max(0.0, lapses_at - time.monotonic()) + 0.2)

    after = sweep(backend.services)

    assert after.limits[limit] == {"size": 1, "running": 0, "waiting": 1, "woken": 1}
    backend.pump()
    assert [o.kind for o in process_all(backend, w)] == ["finished"]
    # The lapsed holder was left out when the job took the slot; the job gave it back.
    assert backend.store.slot_holders(limit) == {}


def test_slot_writes_are_fenced_by_attempt_and_owner(backend: Backend, limit: str) -> None:
    store = backend.store
    mine = Holder("w1", 2, iso_in(60))
    assert store.acquire_slot(limit, 2, "g/a", mine) == Admission.HELD
    # The same worker asking again keeps its slot; another worker for the same attempt
    # (a duplicate message) is refused; a newer attempt replaces an ended one's slot.
    assert store.acquire_slot(limit, 2, "g/a", mine) == Admission.HELD
    assert store.acquire_slot(limit, 2, "g/a", Holder("w2", 2, iso_in(60))) == Admission.TAKEN
    assert store.acquire_slot(limit, 2, "g/b", Holder("w2", 1, iso_in(60))) == Admission.HELD
    assert store.acquire_slot(limit, 2, "g/c", Holder("w3", 1, iso_in(60))) == Admission.FULL
    # Only its owner renews or gives back a slot.
    assert not store.release_slot(limit, "g/a", Fence(2, "w2"))
    assert not store.renew_slot(limit, "g/a", Fence(2, "w2"), until=iso_in(600))
    assert not store.release_slot(limit, "g/a", Fence(1, "w1"))  # its owner, another attempt
    assert store.renew_slot(limit, "g/a", Fence(2, "w1"), until=iso_in(90))
    assert set(store.slot_holders(limit)) == {"g/a", "g/b"}
    assert store.acquire_slot(limit, 2, "g/a", Holder("w9", 3, iso_in(60))) == Admission.HELD
    assert store.slot_holders(limit)["g/a"].owner == "w9"
    assert not store.release_slot(limit, "g/a", Fence(2, "w1"))  # its attempt ended
    assert store.release_slot(limit, "g/a", Fence(3, "w9"))
    assert not store.release_slot(limit, "g/a", Fence(3, "w9"))  # twice: nothing more
    assert set(store.slot_holders(limit)) == {"g/b"}


def test_a_limit_that_is_not_configured_is_refused_at_submission_or_fails_the_job(
    backend: Backend, limit: str
) -> None:
    backend = limited(backend, {limit: 1})
    gid = backend.gid("limit-unknown")
    with pytest.raises(
        InvalidGraph, match=r"hold the concurrency limit\(s\) \['nope'\], which are not configured"
    ):
        submit_graph(backend.services, {"id": gid, "jobs": {"a": {"limit": "nope"}}})
    assert backend.store.get_graph(gid) is None
    # A handler's limit is only known to the worker: the job fails, naming it.
    submit_graph(backend.services, {"id": gid, "jobs": {"a": {"type": "geocode"}}})
    backend.pump()
    w = worker(backend, {"geocode": {"process": written, "limit": "nope"}})
    assert [o.kind for o in process_all(backend, w)] == ["failed"]
    error = backend.jobs(gid)["a"].error_text()
    assert error is not None and error.startswith(
        "UnknownLimit: job 'a' (type 'geocode') holds the concurrency limit 'nope'"
    )


def test_cancelling_a_graph_aborts_its_waiting_jobs(backend: Backend, limit: str) -> None:
    backend = limited(backend, {limit: 1})
    gid = backend.gid("limit-cancel")
    submit_graph(backend.services, {"id": gid, "jobs": {"a": {"type": "geocode", "limit": limit}}})
    hold_elsewhere(backend, limit)
    backend.pump()
    assert [o.kind for o in process_all(backend, worker(backend, {"geocode": written}))] == ["waiting"]

    cancel_graph(backend.services, gid)

    job = backend.jobs(gid)["a"]
    assert (job.status.value, job.limit_wait) == ("aborted", None)
    assert "waiting_for_limit" not in job.summary()
    assert backend.store.count_waiting(limit) == 0
