"""What the sweep repairs, under real worker processes: stream batches the scheduler gave up
on, submissions killed between writes, and sweeps started at the same moment."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import Counter

import pytest

from overseer.graph import parse_graph
from overseer.scheduler import Scheduler
from overseer.states import GraphStatus
from overseer.sweep import SweepReport, sweep
from tests.chaos import toolkit
from tests.support import give_up_on_batch

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def dropping(chaos_stack) -> toolkit.DroppingScheduler:
    services = chaos_stack.services
    sqs, streams = services.queue.normal.client, chaos_stack.stack.reader.client
    url = chaos_stack.settings.stream_failures_queue_url
    assert url and services.stream_failures is not None
    return toolkit.DroppingScheduler(
        Scheduler(services.store, services.queue),
        lambda records: give_up_on_batch(sqs, url, streams, records),
        every=2,
    )


def assert_each_job_ran_once_and_finished(chaos_stack, graph_ids: list[str]) -> None:
    runs = Counter((graph_id, name) for graph_id, name, _, _ in chaos_stack.runs())
    expected = {(g, name) for g in graph_ids for name in chaos_stack.jobs(g)}
    assert {k: n for k, n in runs.items() if k[0] in graph_ids} == dict.fromkeys(expected, 1)
    stream = chaos_stack.stream()
    for graph_id in graph_ids:
        assert chaos_stack.store_graph(graph_id).status == GraphStatus.FINISHED
        into, after = toolkit.finished_transitions(stream, graph_id)
        assert into == Counter(dict.fromkeys(chaos_stack.jobs(graph_id), 1)) and after == 0


def test_stream_batches_dropped_after_the_schedulers_retries_are_replayed_by_the_sweep(chaos_stack):
    chaos_stack.submit(toolkit.layered_graph("dropped", layers=6, width=10))
    scheduler = dropping(chaos_stack)
    pool = chaos_stack.pool(3).start()
    try:
        graph = chaos_stack.drive("dropped", timeout=180, scheduler=scheduler)
    finally:
        pool.stop()

    assert graph.status == GraphStatus.FINISHED
    assert scheduler.dropped >= 3
    assert_each_job_ran_once_and_finished(chaos_stack, ["dropped"])
    # What the graph's end left in the on-failure queue is replayed too, and nothing stays.
    last = sweep(chaos_stack.services)
    assert last.failures == {}
    assert chaos_stack.services.stream_failures.receive() == []


def two_roots_and_24_after(graph_id: str) -> dict:
    """26 jobs: more than one batch of job writes (25 a batch), and two roots to release."""
    jobs: dict[str, dict] = {f"root-{i}": {"type": "write"} for i in range(2)}
    jobs.update({f"after-{i:02d}": {"type": "write", "deps": ["root-0", "root-1"]} for i in range(24)})
    return {"id": graph_id, "jobs": jobs}


def test_submissions_killed_at_each_write_finish_once_submitted_again(chaos_stack):
    store = chaos_stack.services.store
    killed = []
    for at in itertools.count(1):
        document = two_roots_and_24_after(f"killed-{at}")
        if toolkit.submit_in_a_process(document, chaos_stack.worker_env, die_at_write=at) == 0:
            break  # the whole submission took fewer writes
        killed.append(at)
        # Submitted again (a client retrying after its connection dropped).
        graph, _ = store.create_graph(parse_graph(document), max_attempts={})
        assert graph.status == GraphStatus.RUNNING
    # The graph item, two batches of jobs, the graph running, two roots released.
    assert len(killed) == 6

    pool = chaos_stack.pool(3).start()
    try:
        for at in killed:
            assert chaos_stack.drive(f"killed-{at}", timeout=120).status == GraphStatus.FINISHED
    finally:
        pool.stop()
    assert_each_job_ran_once_and_finished(chaos_stack, [f"killed-{at}" for at in killed])


def test_two_sweeps_started_at_once_replay_each_dropped_batch_once(chaos_stack):
    chaos_stack.submit(toolkit.layered_graph("swept-twice", layers=6, width=10))
    scheduler = dropping(chaos_stack)
    # Only the two sweepers below sweep (the drive loop's own sweep never comes).
    quiet = dataclasses.replace(
        chaos_stack.services, settings=chaos_stack.settings.with_(sweep_interval_seconds=10**6)
    )
    reports: list[SweepReport] = []
    stop = threading.Event()
    together = threading.Barrier(2)

    def sweeper() -> None:
        while not stop.is_set():
            try:
                together.wait(30)  # both sweeps start at the same moment, every round
            except threading.BrokenBarrierError:
                return  # the test is over
            reports.append(sweep(chaos_stack.services))
            stop.wait(0.3)

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for thread in threads:
        thread.start()
    pool = chaos_stack.pool(3).start()
    try:
        graph = chaos_stack.drive("swept-twice", timeout=180, scheduler=scheduler, services=quiet)
    finally:
        pool.stop()
        stop.set()
        together.abort()
        for thread in threads:
            thread.join(60)
    reports.append(sweep(chaos_stack.services))

    assert graph.status == GraphStatus.FINISHED
    assert_each_job_ran_once_and_finished(chaos_stack, ["swept-twice"])
    assert [r.failures for r in reports if r.failures] == []
    assert sum(r.lease_held_elsewhere for r in reports) >= 1, "the two sweeps never met"
    # Each dropped batch was replayed by exactly one sweep.
    assert scheduler.dropped >= 3
    assert sum(r.stream_batches_replayed for r in reports) == scheduler.dropped
