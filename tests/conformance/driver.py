"""A backend-neutral in-process stack: the same scheduler and worker code as ``overseer run``,
driven step by step (pump the feed or stream, then let one worker take what is queued), so
the conformance tests run unchanged on the embedded backend and on the AWS adapters."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overseer.config import Settings
from overseer.graph import parse_graph
from overseer.handlers import HandlerSpec, to_spec
from overseer.scheduler import Scheduler
from overseer.store import GraphRecord, JobMessage, JobRecord, Services
from overseer.worker import Outcome, Worker

SETTINGS = dict(receive_wait_seconds=0, lease_seconds=30, fault_backoff_seconds=0.0)


class Interrupted(Exception):
    """The process stopped here (a write that never happened)."""


@dataclass
class Backend:
    kind: str
    settings: Settings
    services: Services
    reader: Any  # .poll() -> Lambda-shaped records, filtered like the scheduler's event source
    dead_letter_reader: Callable[[], list[JobMessage]]
    # Skip a batch of records as the event source gives up on it (notes it for the sweep).
    give_up: Callable[[list[dict[str, Any]]], None] = lambda records: None
    # Context manager: the ``at``-th write to the store from here on raises ``Interrupted``.
    interrupt_writes: Callable[[int], Any] = lambda at: None
    scheduler: Scheduler = field(init=False)
    # Prefix of this test's graph ids (the AWS backend shares one stack per session).
    namespace: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler.for_services(self.services)

    def gid(self, name: str) -> str:
        return self.namespace + name

    @property
    def store(self) -> Any:
        return self.services.store

    @property
    def queue(self) -> Any:
        return self.services.queue

    def submit(self, document: Mapping[str, Any], handlers: Mapping[str, Any] | None = None) -> GraphRecord:
        spec = parse_graph(document, handler_types=handlers.keys() if handlers else None)
        graph, _ = self.store.create_graph(spec, max_attempts={})
        return graph

    def pump(self) -> int:
        records = self.reader.poll()
        if records:
            event = {"Records": records}
            self.events.append(event)
            self.scheduler.process_stream_event(event)
        return len(records)

    def worker(self, handlers: Mapping[str, Any], worker_id: str = "test-worker") -> Worker:
        specs: dict[str, HandlerSpec] = {t: to_spec(t, h) for t, h in handlers.items()}
        return Worker(self.services, specs, worker_id=worker_id)

    def work_once(self, worker: Worker) -> int:
        deliveries = self.queue.receive(
            max_messages=10, wait_seconds=0, visibility_seconds=self.settings.lease_seconds
        )
        for delivery in deliveries:
            self.outcomes.append(worker.process(delivery))
        return len(deliveries)

    def run(
        self, document: Mapping[str, Any], handlers: Mapping[str, Any], max_rounds: int = 400
    ) -> GraphRecord:
        graph = self.submit(document, handlers)
        return self.drive(graph.graph_id, handlers, max_rounds)

    def drive(self, graph_id: str, handlers: Mapping[str, Any], max_rounds: int = 400) -> GraphRecord:
        worker = self.worker(handlers)
        for _ in range(max_rounds):
            moved = self.pump() + self.work_once(worker)
            graph = self.store.get_graph(graph_id)
            if graph.status.terminal:
                return graph
            if not moved:
                time.sleep(0.02)
        raise AssertionError(f"graph {graph_id} did not finish: {self.jobs(graph_id)}")

    def jobs(self, graph_id: str) -> dict[str, JobRecord]:
        return {job.name: job for job in self.store.list_jobs(graph_id)}
