"""``functions.sweep.handler`` on the emulator, and the scaling rule with a stand-in Batch client."""

from __future__ import annotations

from typing import Any

import pytest

from functions import sweep
from overseer.aws.scaling import scale_batch_workers, workers_wanted
from overseer.config import Settings
from overseer.store import JobMessage
from tests.functions.conftest import Deployed, FakeLambdaContext, load_event


@pytest.mark.integration
def test_sweep_reports_the_queue_depth(deployed: Deployed, context: FakeLambdaContext) -> None:
    deployed.drain_queue()
    deployed.services.queue.send([JobMessage("g", f"j{n}", 0) for n in range(3)])
    result = sweep.handler(load_event("eventbridge_sweep_schedule"), context)
    assert result["queue_depth"] == 3
    assert result["workers_started"] == 0  # no Batch queue configured
    assert result["leases_expired"] == result["lost_messages_resent"] == result["dead_letters"] == 0
    deployed.drain_queue()


@pytest.mark.parametrize(
    ("depth", "running", "wanted"),
    [(0, 0, 0), (1, 0, 1), (50, 0, 1), (51, 0, 2), (120, 1, 2), (10_000, 3, 13), (10_000, 20, 0)],
)
def test_workers_wanted(depth: int, running: int, wanted: int) -> None:
    assert workers_wanted(depth, running, Settings(jobs_per_worker=50, max_workers=16)) == wanted


class FakeBatch:
    """Records submitted jobs; lists ``active`` jobs in the RUNNING state."""

    def __init__(self, active: int) -> None:
        self.active = active
        self.submitted: list[dict[str, Any]] = []

    def get_paginator(self, name: str) -> FakeBatch:
        assert name == "list_jobs"
        return self

    def paginate(self, jobQueue: str, jobStatus: str) -> list[dict[str, Any]]:
        count = self.active if jobStatus == "RUNNING" else 0
        return [{"jobSummaryList": [{"jobId": str(n)} for n in range(count)]}]

    def submit_job(self, **kwargs: Any) -> dict[str, Any]:
        self.submitted.append(kwargs)
        return {"jobId": str(len(self.submitted))}


class FakeQueue:
    def __init__(self, depth: int) -> None:
        self._depth = depth

    def depth(self) -> int:
        return self._depth


def test_scale_batch_workers_submits_the_missing_workers() -> None:
    settings = Settings(
        batch_job_queue="workers", batch_job_definition="worker:3", jobs_per_worker=10, max_workers=4
    )
    batch = FakeBatch(active=1)
    assert scale_batch_workers(batch, FakeQueue(35), settings) == 3
    assert {(j["jobQueue"], j["jobDefinition"]) for j in batch.submitted} == {("workers", "worker:3")}
    assert len({j["jobName"] for j in batch.submitted}) == 3


def test_scale_batch_workers_needs_batch_settings() -> None:
    batch = FakeBatch(active=0)
    assert scale_batch_workers(batch, FakeQueue(100), Settings()) == 0
    assert batch.submitted == []
