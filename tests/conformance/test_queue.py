"""The DispatchQueue contract: visibility timeouts, receipts, receive counts, delays,
deletes, depth and dead-lettering."""

from __future__ import annotations

import time

from overseer.backends.aws.resources import MAX_RECEIVE_COUNT
from overseer.store import JobMessage

from .driver import Backend


def receive(backend: Backend, visibility: int | None = None, n: int = 10):
    return backend.queue.receive(max_messages=n, wait_seconds=0, visibility_seconds=visibility)


def test_a_received_message_is_hidden_until_its_visibility_timeout(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", "a", 0)])
    first = receive(backend, visibility=1)
    assert [(d.message, d.receive_count) for d in first] == [(JobMessage("g", "a", 0), 1)]
    assert receive(backend, visibility=1) == []
    assert queue.depth() == 1  # in flight still counts
    time.sleep(1.3)
    second = receive(backend, visibility=30)
    assert [(d.message, d.receive_count) for d in second] == [(JobMessage("g", "a", 0), 2)]
    assert second[0].receipt != first[0].receipt
    queue.delete([second[0].receipt])
    queue.delete([second[0].receipt])  # twice is harmless
    assert queue.depth() == 0
    assert receive(backend) == []


def test_extend_visibility_keeps_a_message_hidden_or_releases_it(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", "b", 3)])
    (delivery,) = receive(backend, visibility=1)
    queue.extend_visibility(delivery.receipt, 3)
    time.sleep(1.2)
    assert receive(backend) == []
    queue.extend_visibility(delivery.receipt, 0)
    (again,) = receive(backend, visibility=30)
    assert (again.message.attempts, again.receive_count) == (3, 2)


def test_delayed_messages_become_visible_after_their_delay(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", "later", 1, delay_seconds=1), JobMessage("g", "now", 0)])
    assert [d.message.job_name for d in receive(backend)] == ["now"]
    assert queue.depth() == 2  # delayed ones count too
    time.sleep(1.3)
    got = receive(backend)
    assert [(d.message.job_name, d.message.attempts) for d in got] == [("later", 1)]


def test_a_long_poll_waits_for_a_message(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", "soon", 0, delay_seconds=1)])
    started = time.monotonic()
    got = queue.receive(max_messages=1, wait_seconds=3, visibility_seconds=30)
    assert [d.message.job_name for d in got] == ["soon"]
    assert 0.8 <= time.monotonic() - started < 3
    started = time.monotonic()
    assert queue.receive(max_messages=1, wait_seconds=1) == []
    assert time.monotonic() - started >= 0.9


def test_batches_and_many_messages(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", f"j{i:02d}", 0) for i in range(25)])
    seen: list[str] = []
    for _ in range(10):
        got = receive(backend, visibility=30)
        assert len(got) <= 10
        seen += [d.message.job_name for d in got]
        queue.delete([d.receipt for d in got])
        if len(seen) == 25:
            break
    assert sorted(seen) == [f"j{i:02d}" for i in range(25)]
    assert queue.depth() == 0


def test_a_message_received_too_often_goes_to_the_dead_letters(backend: Backend) -> None:
    queue = backend.queue
    queue.send([JobMessage("g", "poison", 0)])
    counts = []
    for _ in range(MAX_RECEIVE_COUNT + 2):
        counts += [d.receive_count for d in receive(backend, visibility=0)]
    assert counts == list(range(1, MAX_RECEIVE_COUNT + 1))
    assert receive(backend) == []
    assert backend.dead_letter_reader() == [JobMessage("g", "poison", 0)]
    if backend.kind == "embedded":
        (history,) = backend.queue.normal.dead_letters()
        assert (history["message"], history["receive_count"]) == (
            JobMessage("g", "poison", 0),
            MAX_RECEIVE_COUNT,
        )
