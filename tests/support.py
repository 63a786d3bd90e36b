"""An in-process stack on the emulator: the same store, scheduler and worker code as
``overseer run``, driven step by step so tests can duplicate, reorder and count."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overseer import timeutil
from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.clients import RequestCounter
from overseer.backends.aws.resources import provision, stream_arn
from overseer.backends.aws.stream import StreamReader
from overseer.config import Settings
from overseer.graph import parse_graph
from overseer.handlers import HandlerSpec, to_spec
from overseer.scheduler import Scheduler
from overseer.store import GraphRecord, JobRecord, Services
from overseer.worker import Outcome, Worker


@dataclass
class LocalStack:
    settings: Settings
    services: Services
    scheduler: Scheduler
    reader: StreamReader
    events: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    @classmethod
    def provisioned(cls, settings: Settings) -> LocalStack:
        configured = provision(settings)
        services = build_services(configured)
        reader = StreamReader(clients.client("dynamodbstreams"), stream_arn(configured))
        return cls(configured, services, Scheduler.for_services(services), reader)

    @property
    def store(self) -> Any:
        return self.services.store

    def submit(self, document: Mapping[str, Any], handlers: Mapping[str, Any]) -> GraphRecord:
        spec = parse_graph(document, handler_types=handlers.keys())
        graph, _ = self.store.create_graph(spec, max_attempts={})
        return graph

    def pump(self) -> int:
        """Hand the stream's new records to the scheduler; returns how many."""
        records = self.reader.poll()
        if records:
            event = {"Records": records}
            self.events.append(event)
            self.scheduler.process_stream_event(event)
        return len(records)

    def worker(self, handlers: Mapping[str, Any]) -> Worker:
        specs: dict[str, HandlerSpec] = {t: to_spec(t, h) for t, h in handlers.items()}
        return Worker(self.services, specs, worker_id="test-worker")

    def work_once(self, worker: Worker) -> int:
        deliveries = self.services.queue.receive(
            max_messages=10, wait_seconds=0, visibility_seconds=self.settings.lease_seconds
        )
        for delivery in deliveries:
            self.outcomes.append(worker.process(delivery))
        return len(deliveries)

    def run(
        self,
        document: Mapping[str, Any],
        handlers: Mapping[str, Any],
        max_rounds: int = 400,
        between: Callable[[], None] | None = None,
    ) -> GraphRecord:
        """Submit and drive the graph to a terminal status."""
        graph = self.submit(document, handlers)
        return self.drive(graph.graph_id, handlers, max_rounds, between)

    def drive(
        self,
        graph_id: str,
        handlers: Mapping[str, Any],
        max_rounds: int = 400,
        between: Callable[[], None] | None = None,
    ) -> GraphRecord:
        import time

        worker = self.worker(handlers)
        for _ in range(max_rounds):
            moved = self.pump() + self.work_once(worker)
            graph = self.store.get_graph(graph_id)
            if graph.status.terminal:
                return graph
            if between:
                between()
            if not moved:
                time.sleep(0.05)
        raise AssertionError(f"graph {graph_id} did not finish: {self.jobs(graph_id)}")

    def jobs(self, graph_id: str) -> dict[str, JobRecord]:
        return {job.name: job for job in self.store.list_jobs(graph_id)}

    def count_requests(self) -> RequestCounter:
        counter = RequestCounter()
        counter.attach(self.services.queue.normal.client)  # type: ignore[attr-defined]
        counter.attach(self.services.artifacts.client)  # type: ignore[attr-defined]
        for model in (self.store.Graph, self.store.Job):
            counter.attach(model._get_connection().connection.client)
        counter.attach(self.reader.client)
        return counter


def give_up_on_batch(sqs: Any, queue_url: str, streams: Any, records: list[dict[str, Any]]) -> None:
    """Send the record Lambda's event source mapping sends to its on-failure destination
    when it gives up on a batch of stream records (``records``, Lambda-shaped, from one
    shard: the emulator's streams have one)."""
    arn = records[0]["eventSourceARN"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    info = {
        "shardId": shard["ShardId"],
        "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
        "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
        "approximateArrivalOfLastRecord": timeutil.iso(),
        "batchSize": len(records),
        "streamArn": arn,
    }
    body = {"requestContext": {"condition": "RetryAttemptsExhausted"}, "DDBStreamBatchInfo": info}
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))


def most_at_once(spans: Sequence[tuple[float, float]]) -> int:
    """The most of ``spans`` (start, end) open at one moment; an end at the instant of a
    start closes first. How many jobs ran at once, from their start and end times."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
