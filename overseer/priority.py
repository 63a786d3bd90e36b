"""Priorities: a graph's jobs are ``high``, ``normal`` (the default) or ``low``, and within a
worker pool, ready jobs of higher priority are taken first.

Each pool has a dispatch queue per priority (``normal`` is the pool's queue as it always
was; ``high`` and ``low`` are two more, dead-lettering into the pool's one dead-letter
queue). ``PriorityQueues`` puts them behind the one ``DispatchQueue`` interface the rest of
the engine uses: ``send`` routes each message by its job's priority, ``depth`` adds them
up, and a receipt names the queue it came from. Only ``receive`` has a policy:

* **Highest first.** A receive asks ``high``, then ``normal``, then ``low``, and returns
  the first message found.
* **No empty receive per job.** A high or low queue found empty is not asked again before
  the worker has taken ``CHECK_EVERY`` (4) more jobs on average (1 to 7, drawn, so that
  workers started together do not look together), nor for a while (``EMPTY_BACKOFF``:
  0.25 s, then 0.5 s, then 1 s each time it is found empty again; back to the start when
  it has a message). So a worker busy with normal jobs asks the empty high queue once
  every 4 jobs on average and at most once a second, and the low queue only on its fair
  turns (below): about 0.35 empty receives per job at most, fewer the shorter its jobs. The normal queue is
  asked every time, as a worker without priorities would. An idle worker asks them on time
  alone.
* **Never starved for ever.** Every ``FAIR_EVERY``-th receive (10th) asks the queues the
  other way round, lowest first: while higher-priority work keeps coming, each lower
  priority still gets about one take in ten of every worker, so a low job waits at most
  about ten of a worker's jobs once it is at the head of its queue.
* **Idle.** When every queue was found empty, the worker long-polls the normal queue for
  at most ``IDLE_WAIT_SECONDS`` (5 s) at a time before asking the others again, so a high
  job submitted to an idle pool waits at most that long.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

from .store import Delivery, DispatchQueue, JobMessage

PRIORITIES = ("high", "normal", "low")
NORMAL = "normal"
EMPTY_BACKOFF = (0.25, 0.5, 1.0)
CHECK_EVERY = 4
FAIR_EVERY = 10
IDLE_WAIT_SECONDS = 5


def priority_of(value: str | None) -> str:
    return value if value in PRIORITIES else NORMAL


def by_priority(queues: Mapping[str, DispatchQueue]) -> DispatchQueue:
    """A pool's queue: ``queues["normal"]`` itself when it is the only one, else the
    ``PriorityQueues`` of them all."""
    return queues[NORMAL] if set(queues) == {NORMAL} else PriorityQueues(queues)


class PriorityQueues:
    """A pool's dispatch queues by priority as one ``DispatchQueue`` (see the module
    docstring). ``queues`` must hold ``normal``; a priority without a queue of its own
    goes to the normal queue (a stack or state directory made before priorities existed)."""

    def __init__(
        self,
        queues: Mapping[str, DispatchQueue],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if NORMAL not in queues:
            raise ValueError("a pool's queues need a normal-priority queue")
        self.queues = {p: queues[p] for p in PRIORITIES if p in queues}
        self.clock = clock
        self.rng = rng or random.Random()
        self.receives = 0
        self._empty_until: dict[str, float] = {}
        self._empty_times: dict[str, int] = {}
        # Jobs taken since each queue was last found empty, and whether the last receive
        # found nothing at all (an idle worker looks at every queue on time alone).
        self._taken_since_empty: dict[str, int] = {}
        self._idle = True

    @property
    def normal(self) -> DispatchQueue:
        return self.queues[NORMAL]

    def _queue(self, priority: str | None) -> tuple[str, DispatchQueue]:
        name = priority_of(priority)
        name = name if name in self.queues else NORMAL
        return name, self.queues[name]

    def send(self, messages: Sequence[JobMessage]) -> None:
        by_priority: dict[str, list[JobMessage]] = {}
        for message in messages:
            by_priority.setdefault(self._queue(message.priority)[0], []).append(message)
        for name, batch in by_priority.items():
            self.queues[name].send(batch)

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ) -> list[Delivery]:
        if len(self.queues) == 1:
            return self.normal.receive(
                max_messages=max_messages, wait_seconds=wait_seconds, visibility_seconds=visibility_seconds
            )
        self.receives += 1
        order = list(self.queues)
        if self.receives % FAIR_EVERY == 0:
            order.reverse()
        now = self.clock()
        for name in order:
            # The normal queue is always asked: a worker asks it anyway.
            if name != NORMAL and not self._due(name, now):
                continue
            got = self.queues[name].receive(
                max_messages=max_messages, wait_seconds=0, visibility_seconds=visibility_seconds
            )
            if got:
                self._empty_times[name] = 0
                return self._taken(name, got)
            if name == NORMAL:
                continue
            times = self._empty_times.get(name, 0)
            self._empty_until[name] = now + EMPTY_BACKOFF[min(times, len(EMPTY_BACKOFF) - 1)]
            self._empty_times[name] = times + 1
            # The next look comes after 1 to 7 jobs (4 on average), so that workers started
            # together do not all look at the same moment, after the same number of jobs.
            self._taken_since_empty[name] = CHECK_EVERY - self.rng.randint(1, 2 * CHECK_EVERY - 1)
        self._idle = True
        if wait_seconds <= 0:
            return []
        # Nothing at once: wait on the normal queue, the common one, then ask the others again.
        waited = min(wait_seconds, IDLE_WAIT_SECONDS)
        got = self.normal.receive(
            max_messages=max_messages, wait_seconds=waited, visibility_seconds=visibility_seconds
        )
        if got:
            return self._taken(NORMAL, got)
        if self.clock() - now < waited:
            # The wait ended early: another queue of the pool got a message (a local stack's
            # queues share a bell), so the next receive asks them all.
            self._empty_until.clear()
        return []

    def _due(self, name: str, now: float) -> bool:
        """Whether an empty-looking high or low queue is asked again: its backoff has passed
        and, while jobs flow, the worker has taken ``CHECK_EVERY`` jobs since."""
        if self._empty_until.get(name, 0.0) > now:
            return False
        return self._idle or self._taken_since_empty.get(name, CHECK_EVERY) >= CHECK_EVERY

    def _taken(self, name: str, got: list[Delivery]) -> list[Delivery]:
        self._idle = False
        for queue in self._taken_since_empty:
            self._taken_since_empty[queue] += len(got)
        return [self._tagged(name, d) for d in got]

    @staticmethod
    def _tagged(name: str, delivery: Delivery) -> Delivery:
        # The receipt names its queue, so a delete or a visibility change goes back there.
        return Delivery(delivery.message, f"{name}|{delivery.receipt}", delivery.receive_count)

    def _split(self, receipt: str) -> tuple[DispatchQueue, str]:
        name, sep, inner = receipt.partition("|")
        if sep and name in self.queues:
            return self.queues[name], inner
        return self.normal, receipt

    def delete(self, receipts: Sequence[str]) -> None:
        by_queue: dict[int, tuple[DispatchQueue, list[str]]] = {}
        for receipt in receipts:
            queue, inner = self._split(receipt)
            by_queue.setdefault(id(queue), (queue, []))[1].append(inner)
        for queue, inners in by_queue.values():
            queue.delete(inners)

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        queue, inner = self._split(receipt)
        queue.extend_visibility(inner, seconds)

    def depth(self) -> int:
        return sum(queue.depth() for queue in self.queues.values())

    def interrupt(self) -> None:
        """End a receive's wait at once (the worker is stopping), where the queues can."""
        for queue in self.queues.values():
            interrupt = getattr(queue, "interrupt", None)
            if interrupt is not None:
                interrupt()

    def depths(self) -> dict[str, int]:
        """Each priority's depth."""
        return {name: queue.depth() for name, queue in self.queues.items()}
