"""The receive policy of a pool's priority queues, on stand-in queues with a stand-in clock:
highest first, an empty high or low queue is not asked on every receive, the lowest is
asked first every tenth receive."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from overseer.priority import FAIR_EVERY, PriorityQueues, by_priority
from overseer.store import Delivery, JobMessage


class ListQueue:
    """Messages in a list; counts receives (each one an SQS request on AWS)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[JobMessage] = []
        self.receives = 0
        self.deleted: list[str] = []
        self.waits: list[int] = []

    def send(self, messages: Sequence[JobMessage]) -> None:
        self.messages += messages

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ):
        self.receives += 1
        self.waits.append(wait_seconds)
        taken, self.messages = self.messages[:max_messages], self.messages[max_messages:]
        return [Delivery(m, f"r-{m.job_name}") for m in taken]

    def delete(self, receipts: Sequence[str]) -> None:
        self.deleted += receipts

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        pass

    def depth(self) -> int:
        return len(self.messages)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queues(clock: Clock) -> tuple[PriorityQueues, dict[str, ListQueue]]:
    raw = {p: ListQueue(p) for p in ("high", "normal", "low")}
    return PriorityQueues(raw, clock=clock, rng=random.Random(7)), raw


def take(pq: PriorityQueues) -> str:
    (delivery,) = pq.receive(max_messages=1, wait_seconds=0)
    return delivery.message.job_name


def test_messages_go_to_their_prioritys_queue_and_the_highest_is_taken_first() -> None:
    pq, raw = queues(Clock())
    pq.send(
        [
            JobMessage("g", "low-1", 0, priority="low"),
            JobMessage("g", "n-1", 0),
            JobMessage("g", "h-1", 0, priority="high"),
        ]
    )
    assert {p: [m.job_name for m in q.messages] for p, q in raw.items()} == {
        "high": ["h-1"],
        "normal": ["n-1"],
        "low": ["low-1"],
    }
    assert pq.depth() == 3
    assert [take(pq), take(pq), take(pq)] == ["h-1", "n-1", "low-1"]


def test_a_receipt_goes_back_to_its_queue() -> None:
    pq, raw = queues(Clock())
    pq.send([JobMessage("g", "h", 0, priority="high"), JobMessage("g", "n", 0)])
    got = pq.receive(max_messages=1, wait_seconds=0) + pq.receive(max_messages=1, wait_seconds=0)
    pq.delete([d.receipt for d in got])
    assert (raw["high"].deleted, raw["normal"].deleted) == (["r-h"], ["r-n"])


def test_a_busy_worker_asks_the_empty_high_and_low_queues_about_once_a_second() -> None:
    clock = Clock()
    pq, raw = queues(clock)
    pq.send([JobMessage("g", f"n-{i}", 0) for i in range(1000)])
    for _ in range(1000):  # 1,000 jobs of 20 ms: 20 seconds
        take(pq)
        clock.now += 0.02
    assert raw["normal"].receives == 1000
    # Backed off 0.25 s, 0.5 s, then every second: about 21 empty asks in 20 s, not 1,000.
    assert raw["high"].receives <= 22
    # The low queue is backed off the same way.
    assert raw["low"].receives <= 22


def test_a_worker_with_long_jobs_asks_the_empty_queues_not_on_every_job() -> None:
    clock = Clock()
    pq, raw = queues(clock)
    pq.send([JobMessage("g", f"n-{i}", 0) for i in range(100)])
    for _ in range(100):  # jobs of a minute: the time backoff alone would allow a look each job
        take(pq)
        clock.now += 60
    assert raw["normal"].receives == 100
    assert 100 / 8 <= raw["high"].receives <= 100 / 4 * 1.4  # once every 4 jobs on average
    assert raw["low"].receives <= 100 / FAIR_EVERY + 1  # on its fair turns only


def test_every_tenth_receive_asks_the_lowest_priority_first() -> None:
    pq, _ = queues(Clock())
    pq.send([JobMessage("g", f"h-{i}", 0, priority="high") for i in range(30)])
    pq.send([JobMessage("g", f"low-{i}", 0, priority="low") for i in range(3)])
    taken = [take(pq) for _ in range(30)]
    assert [i + 1 for i, name in enumerate(taken) if name.startswith("low")] == [
        FAIR_EVERY,
        2 * FAIR_EVERY,
        3 * FAIR_EVERY,
    ]


def test_an_idle_worker_long_polls_the_normal_queue_for_at_most_five_seconds() -> None:
    pq, raw = queues(Clock())
    assert pq.receive(max_messages=1, wait_seconds=20) == []
    assert raw["normal"].waits == [0, 5]  # asked at once, then waited on
    assert (raw["high"].waits, raw["low"].waits) == ([0], [0])


@pytest.mark.parametrize("only", [{"normal"}])
def test_a_pool_without_priority_queues_is_its_normal_queue(only: set[str]) -> None:
    normal = ListQueue("normal")
    assert by_priority({"normal": normal}) is normal
    with pytest.raises(ValueError, match="normal-priority queue"):
        PriorityQueues({"high": normal})
