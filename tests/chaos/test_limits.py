"""A concurrency limit across real worker processes (the AWS adapters on the emulator):
eight workers, twelve jobs holding a limit of two, never more than two at once; a holder's
worker killed frees its slot when its lease passes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from overseer.states import GraphStatus, JobStatus
from overseer.timeutil import parse
from tests.support import most_at_once

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

LIMIT = {"geo_api": 2}


def limited_graph(graph_id: str, jobs: int, sleep: float) -> dict[str, Any]:
    return {
        "id": graph_id,
        "jobs": {
            f"geo{n:02d}": {"type": "spans", "limit": "geo_api", "args": {"sleep": sleep}}
            for n in range(jobs)
        },
    }


def handler_spans(lines: Sequence[Sequence[Any]]) -> dict[tuple[str, int], list[float]]:
    """(job, attempt) -> [start, end] (end missing for a run that was killed)."""
    out: dict[tuple[str, int], list[float]] = {}
    for kind, name, attempt, _, moment in lines:
        out.setdefault((name, attempt), []).append(moment) if kind == "start" else out[
            (name, attempt)
        ].append(moment)
    return out


def notes(chaos_stack: Any) -> list[list[Any]]:
    path = chaos_stack.runs_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_eight_workers_run_at_most_two_of_twelve_jobs_holding_a_limit_of_two(chaos_stack):
    services = dataclasses.replace(
        chaos_stack.services, settings=chaos_stack.settings.with_(limits=json.dumps(LIMIT))
    )
    chaos_stack.submit(limited_graph("limited", jobs=12, sleep=0.5))
    pool = chaos_stack.pool(8, OVERSEER_LIMITS=json.dumps(LIMIT)).start()
    try:
        graph = chaos_stack.drive("limited", timeout=240, services=services)
    finally:
        pool.stop()

    jobs = chaos_stack.jobs("limited")
    assert graph.status == GraphStatus.FINISHED
    assert {n: (j.status, j.attempts) for n, j in jobs.items()} == {n: (JobStatus.FINISHED, 1) for n in jobs}
    # Measured from the jobs' records and from the handlers' own clocks: two at once, never more.
    recorded = [(parse(j.started_at).timestamp(), parse(j.finished_at).timestamp()) for j in jobs.values()]
    assert most_at_once(recorded) == 2
    ran = handler_spans(notes(chaos_stack))
    assert len(ran) == 12
    assert most_at_once([(start, end) for start, end in ran.values()]) == 2
    # Jobs waited outside the queue: none dead-lettered, nothing left waiting or holding.
    assert services.store.count_waiting("geo_api") == 0
    assert services.store.slot_holders("geo_api") == {}


def test_killing_a_holders_worker_frees_its_slot_within_one_lease(chaos_stack):
    lease = chaos_stack.settings.lease_seconds
    services = dataclasses.replace(
        chaos_stack.services, settings=chaos_stack.settings.with_(limits=json.dumps(LIMIT))
    )
    chaos_stack.submit(limited_graph("killed-holder", jobs=8, sleep=2.0))
    pool = chaos_stack.pool(4, OVERSEER_LIMITS=json.dumps(LIMIT)).start()
    killed_at = 0.0
    victim: tuple[str, int] | None = None
    try:
        with ThreadPoolExecutor(1) as driver:
            driving = driver.submit(chaos_stack.drive, "killed-holder", timeout=240, services=services)
            # Kill the worker of the first job that runs: its handler's note names the worker.
            while victim is None and not driving.done():
                started = [n for n in notes(chaos_stack) if n[0] == "start"]
                if started:
                    _, name, attempt, pid, _ = started[0]
                    os.killpg(pid, signal.SIGKILL)
                    killed_at, victim = time.time(), (name, attempt)
                time.sleep(0.05)
            graph = driving.result()
    finally:
        pool.stop()
    assert victim is not None

    jobs = chaos_stack.jobs("killed-holder")
    assert graph.status == GraphStatus.FINISHED
    ran = handler_spans(notes(chaos_stack))
    # The killed run never ended; the job ran again (its lease expired: attempt 2).
    assert len(ran[victim]) == 1 and jobs[victim[0]].attempts == 2
    finished_runs = [(run[0], run[1]) for key, run in ran.items() if key != victim]
    assert most_at_once([*finished_runs, (ran[victim][0], killed_at)]) == 2

    def running_at(moment: float) -> int:
        return sum(1 for start, end in finished_runs if start <= moment < end)

    # Its slot was free again within one lease of the kill (its holder's lease passed, the
    # sweep, every second, woke a waiter): the first moment after the kill when two ran.
    two_again = min(start for start, _ in finished_runs if start > killed_at and running_at(start) >= 2)
    print(f"two jobs ran again {two_again - killed_at:.2f} s after the kill (lease {lease} s)")
    assert two_again - killed_at < lease + 2 * chaos_stack.settings.sweep_interval_seconds + 1
