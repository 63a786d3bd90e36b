"""SIGKILL a random worker every ~2 s during a 150-job graph, replacing it each time."""

from __future__ import annotations

import pytest

from overseer.states import GraphStatus, JobStatus
from tests.chaos import toolkit

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def test_killing_workers_loses_nothing_and_finishes_every_job_once(chaos_stack):
    # Jobs long enough that a run lasts well past five kills however fast the hand-offs are.
    document = toolkit.layered_graph("kills", layers=10, width=15, sleep=0.3)
    chaos_stack.submit(document)
    pool = chaos_stack.pool(4).start()
    try:
        with toolkit.Killer(pool, interval=2.0, seed=11) as killer:
            graph = chaos_stack.drive("kills", timeout=360)
    finally:
        pool.stop()

    jobs = chaos_stack.jobs("kills")
    assert graph.status == GraphStatus.FINISHED
    assert len(jobs) == 150
    assert {n for n, j in jobs.items() if j.status != JobStatus.FINISHED} == set()
    # Every job was recorded finished exactly once, and never changed after.
    into, after = toolkit.finished_transitions(chaos_stack.stream(), "kills")
    assert {n: c for n, c in into.items() if c != 1} == {}
    assert set(into) == set(jobs)
    assert after == 0
    # Every artifact is in S3 with the bytes job.random gives and the recorded SHA-256.
    assert toolkit.check_artifacts(chaos_stack.services, list(jobs.values())) == []
    # The kills happened, and some of them took a job down mid-run (retried after its lease).
    assert len(killer.killed) >= 5
    assert any(j.attempts > 1 for j in jobs.values()), "no kill hit a running job"
