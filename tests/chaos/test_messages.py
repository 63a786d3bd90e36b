"""At-least-once delivery at its worst: every message twice; the whole stream again."""

from __future__ import annotations

from collections import Counter

import pytest

from overseer.backends.aws.stream import lambda_record
from overseer.handlers import to_spec
from overseer.scheduler import Scheduler
from overseer.states import GraphStatus, JobStatus
from overseer.worker import Worker
from tests.chaos import toolkit

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def run_graph(chaos_stack, graph_id: str, scheduler: Scheduler | None = None) -> None:
    chaos_stack.submit(toolkit.layered_graph(graph_id, layers=4, width=15))
    pool = chaos_stack.pool(3).start()
    try:
        graph = chaos_stack.drive(graph_id, timeout=90, scheduler=scheduler)
    finally:
        pool.stop()
    assert graph.status == GraphStatus.FINISHED


def test_every_message_delivered_twice_runs_each_job_once(chaos_stack):
    services = chaos_stack.services
    queue = toolkit.DuplicatingQueue(services.queue)
    run_graph(chaos_stack, "twice", Scheduler(services.store, queue))

    jobs = chaos_stack.jobs("twice")
    assert queue.duplicates >= len(jobs) == 60
    assert {n: (j.status, j.attempts) for n, j in jobs.items()} == dict.fromkeys(
        jobs, (JobStatus.FINISHED, 1)
    )
    runs = Counter(name for graph_id, name, _, _ in chaos_stack.runs() if graph_id == "twice")
    assert runs == Counter(dict.fromkeys(jobs, 1))
    into, after = toolkit.finished_transitions(chaos_stack.stream(), "twice")
    assert into == Counter(dict.fromkeys(jobs, 1)) and after == 0
    assert toolkit.check_artifacts(services, list(jobs.values())) == []


def replay(chaos_stack, records: list[dict], batch: int = 100) -> None:
    scheduler = Scheduler(chaos_stack.services.store, chaos_stack.services.queue)
    shaped = [lambda_record(r, chaos_stack.stack.reader.stream_arn, "us-east-1") for r in records]
    for order in (shaped, shaped[::-1]):
        for start in range(0, len(order), batch):
            scheduler.process_stream_event({"Records": order[start : start + batch]})


def drain_without_running(chaos_stack) -> Counter[str]:
    """Deliver whatever the replay enqueued to a worker whose handlers count their calls."""
    calls: Counter[str] = Counter()

    def counting(job):
        calls[job.name] += 1

    worker = Worker(chaos_stack.services, {"write": to_spec("write", counting)}, worker_id="replay-check")
    outcomes: Counter[str] = Counter()
    queue = chaos_stack.services.queue
    while deliveries := queue.receive(max_messages=10, wait_seconds=0):
        for delivery in deliveries:
            outcomes[worker.process(delivery).kind] += 1
    assert calls == Counter(), f"replayed messages ran handlers: {calls}"
    return outcomes


def test_replaying_the_whole_stream_changes_no_job_and_no_graph_record(chaos_stack):
    run_graph(chaos_stack, "replay")
    ddb = chaos_stack.services.store.Job._get_connection().connection.client
    table = chaos_stack.settings.jobs_table
    before = toolkit.table_items(ddb, table)
    graph_before = chaos_stack.store_graph("replay")
    records = chaos_stack.stream()
    assert len(records) > 4 * 60

    replay(chaos_stack, records)

    after = toolkit.table_items(ddb, table)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == set()
    graph_after = chaos_stack.store_graph("replay")
    assert (graph_after.status, graph_after.counts, graph_after.updated_at) == (
        graph_before.status, graph_before.counts, graph_before.updated_at,
    )  # fmt: skip
    outcomes = drain_without_running(chaos_stack)
    assert set(outcomes) <= {"skipped"}
    assert toolkit.table_items(ddb, table) == before
    assert chaos_stack.store_graph("replay").status == GraphStatus.FINISHED
