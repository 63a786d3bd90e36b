"""``functions.sweep.handler`` on the emulator, and the scaling rule with a stand-in Batch client."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from functions import Lazy, sweep
from overseer import timeutil
from overseer.backends import build_services
from overseer.backends.aws.scaling import host_terminations, scale_pool, workers_wanted
from overseer.config import Settings
from overseer.errors import SweepFailed
from overseer.graph import parse_graph
from overseer.pools import Pool, Pools
from overseer.states import CLAIM, JobStatus
from overseer.store import Fence, JobMessage, Services
from tests.functions.conftest import Deployed, FakeLambdaContext, load_event

HOST_LOST = "Host EC2 (instance i-0abc1234) terminated."


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
    assert workers_wanted(depth, running, Pool("default", max_workers=16, backlog_per_worker=50)) == wanted


class FakeBatch:
    """Records submitted jobs; lists ``jobs[status]`` worker jobs per Batch status, two per
    page; describes jobs with the ``reasons`` given (as a job's last attempt's statusReason)."""

    def __init__(self, jobs: dict[str, int] | None = None, reasons: dict[str, str] | None = None) -> None:
        self.jobs = jobs or {}
        self.reasons = reasons or {}
        self.submitted: list[dict[str, Any]] = []
        self.described: list[list[str]] = []

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        assert len(jobs) <= 100, "DescribeJobs takes at most 100 ids"
        self.described.append(jobs)
        return {
            "jobs": [
                {"jobId": j, "status": "FAILED", "attempts": [{"statusReason": self.reasons[j]}]}
                for j in jobs
                if j in self.reasons
            ]
        }

    def get_paginator(self, name: str) -> FakeBatch:
        assert name == "list_jobs"
        return self

    def paginate(self, jobQueue: str, jobStatus: str) -> list[dict[str, Any]]:
        ids = [f"{jobStatus}-{n}" for n in range(self.jobs.get(jobStatus, 0))]
        return [{"jobSummaryList": [{"jobId": i} for i in ids[n : n + 2]]} for n in range(0, len(ids), 2)]

    def submit_job(self, **kwargs: Any) -> dict[str, Any]:
        self.submitted.append(kwargs)
        return {"jobId": str(len(self.submitted))}


def test_scale_pool_submits_the_missing_workers_of_its_pool() -> None:
    settings = Settings(
        batch_job_queue="workers",
        batch_job_definition="worker:3",
        jobs_per_worker=10,
        max_workers=20,
        pools=json.dumps(
            {
                "pools": {
                    "gpu": {
                        "batch_job_queue": "gpu-workers",
                        "batch_job_definition": "gpu:1",
                        "max_workers": 2,
                    }
                }
            }
        ),
    )
    pools = Pools.from_settings(settings)
    # A worker counts from its submission until it ends: 15 active, the ended ones not.
    active = {"SUBMITTED": 1, "PENDING": 2, "RUNNABLE": 3, "STARTING": 4, "RUNNING": 5}
    batch = FakeBatch(jobs={**active, "SUCCEEDED": 7, "FAILED": 6})
    assert scale_pool(batch, pools["default"], 195) == (20 - 15, 15)
    assert {(j["jobQueue"], j["jobDefinition"]) for j in batch.submitted} == {("workers", "worker:3")}
    assert len({j["jobName"] for j in batch.submitted}) == 5
    # Another pool: its own Batch queue and job definition, its own maximum.
    gpu = FakeBatch()
    assert scale_pool(gpu, pools["gpu"], 500) == (2, 0)
    assert {(j["jobQueue"], j["jobDefinition"]) for j in gpu.submitted} == {("gpu-workers", "gpu:1")}


def test_scale_pool_needs_batch_settings() -> None:
    batch = FakeBatch()
    assert scale_pool(batch, Pool("default"), 100) == (0, 0)
    assert batch.submitted == []


def test_host_terminations_reads_the_job_or_its_last_attempt_in_one_call_per_100_ids() -> None:
    class Described(FakeBatch):
        def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
            self.described.append(jobs)
            return {
                "jobs": [
                    {"jobId": "spot", "statusReason": HOST_LOST},
                    {"jobId": "retried", "statusReason": "", "attempts": [{"statusReason": HOST_LOST}, {}]},
                    {"jobId": "reclaimed", "attempts": [{}, {"statusReason": HOST_LOST}]},
                    {"jobId": "crashed", "statusReason": "Essential container in task exited"},
                    {"jobId": "running", "status": "RUNNING"},
                ]
            }

    batch = Described()
    ids = [f"job-{n}" for n in range(101)]
    lost = host_terminations(batch, ids)
    assert lost == {"spot": HOST_LOST, "reclaimed": HOST_LOST}  # "retried": its last attempt is alive
    assert batch.described == [ids[:100], ids[100:]]


# -- the handler: steps isolated, workers first, lost hosts -----------------------------


def refuse(client: Any, operation: str) -> None:
    """``client`` answers ``operation`` with AccessDenied, as AWS does to a role without the grant."""

    def denied(**_: Any) -> tuple[Any, dict[str, Any]]:
        error = {"Code": "AccessDenied", "Message": f"not authorized to perform: sqs:{operation}"}
        return SimpleNamespace(status_code=403, headers={}), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }

    client.meta.events.register(f"before-call.sqs.{operation}", denied)


@pytest.fixture
def on_batch(deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> Services:
    """The handler's services configured for Batch workers (one per queued job, at most 4)."""
    settings = deployed.settings.with_(
        batch_job_queue="workers", batch_job_definition="worker:1", jobs_per_worker=1, max_workers=4
    )
    services = build_services(settings)
    monkeypatch.setattr(sweep, "_services", Lazy(lambda: services))
    deployed.drain_queue()
    return services


def running_job(deployed: Deployed, graph_id: str, owner: str, *, max_attempts: int = 3) -> None:
    """A one-job graph whose job was claimed by ``owner``, then lost: its lease expired a minute ago."""
    store = deployed.services.store
    spec = parse_graph({"id": graph_id, "jobs": {"a": {"type": "t", "max_attempts": max_attempts}}})
    store.create_graph(spec, max_attempts={})
    claimed = store.transition(
        graph_id,
        "a",
        CLAIM,
        fence=Fence(0),
        changes={"attempts": 1, "lease_owner": owner, "lease_expires_at": timeutil.iso_in(-60)},
    )
    assert claimed is not None


def emf_metrics(out: str) -> list[dict[str, Any]]:
    """The EMF blobs the handler printed."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


@pytest.mark.integration
def test_a_failing_dead_letter_queue_stops_neither_scaling_nor_lease_repairs(
    deployed: Deployed,
    on_batch: Services,
    context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert on_batch.dead_letters is not None
    refuse(on_batch.dead_letters.client, "ReceiveMessage")  # the role lacks sqs:ReceiveMessage on it
    batch = FakeBatch()
    monkeypatch.setattr(sweep, "_batch", Lazy(lambda: batch))
    running_job(deployed, "dlq-denied", owner="dead-worker")
    on_batch.queue.send([JobMessage("dlq-denied", f"queued-{n}", 0) for n in range(3)])

    with pytest.raises(SweepFailed, match="dead_letters") as failed:
        sweep.handler(load_event("eventbridge_sweep_schedule"), context)

    assert "AccessDenied" in str(failed.value)
    assert len(batch.submitted) == 3  # one worker per queued job
    job = deployed.services.store.get_job("dlq-denied", "a")
    assert (job.status, job.attempts, job.error["type"]) == (JobStatus.READY, 1, "LeaseExpired")
    blobs = emf_metrics(capsys.readouterr().out)
    assert [b["Step"] for b in blobs if "SweepStepFailed" in b] == ["dead_letters"]
    assert [b["WorkersStarted"] for b in blobs if "WorkersStarted" in b] == [[3]]
    deployed.drain_queue()


@pytest.mark.integration
def test_a_worker_whose_host_was_reclaimed_keeps_its_attempt(
    deployed: Deployed, on_batch: Services, context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    reclaimed, crashed = "8a3f0e2c-reclaimed", "5b9d1c44-crashed"
    batch = FakeBatch(reasons={reclaimed: HOST_LOST, crashed: "Essential container in task exited"})
    monkeypatch.setattr(sweep, "_batch", Lazy(lambda: batch))
    running_job(deployed, "spot-reclaimed", owner=f"batch:{reclaimed}:7:a1b2c3", max_attempts=1)
    running_job(deployed, "spot-crashed", owner=f"batch:{crashed}:7:d4e5f6")

    result = sweep.handler(load_event("eventbridge_sweep_schedule"), context)

    assert (result["hosts_reclaimed"], result["leases_expired"], result["failed_steps"]) == (1, 1, [])
    assert [sorted(ids) for ids in batch.described] == [sorted([reclaimed, crashed])]  # one call
    job = deployed.services.store.get_job("spot-reclaimed", "a")
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.READY, 0, None)
    assert HOST_LOST in job.reason
    job = deployed.services.store.get_job("spot-crashed", "a")
    assert (job.status, job.attempts, job.error["type"]) == (JobStatus.READY, 1, "LeaseExpired")
    deployed.drain_queue()


@pytest.mark.integration
def test_the_sweep_lambda_replays_a_stream_batch_the_scheduler_gave_up_on(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    from overseer.backends.aws import clients
    from tests.support import give_up_on_batch

    store = deployed.services.store
    store.create_graph(parse_graph({"id": "given-up", "jobs": {"a": [], "b": ["a"]}}), max_attempts={})
    deployed.pump(context)
    deployed.drain_queue()
    deployed.finish("given-up", "a")
    records = deployed.stream_event()["Records"]
    # Lambda gave up on the batch with a's end: b waits, and the batch is in the on-failure queue.
    give_up_on_batch(
        clients.client("sqs"),
        deployed.settings.stream_failures_queue_url,
        deployed.reader.client,
        records,
    )
    assert store.get_job("given-up", "b").status == JobStatus.WAITING

    result = sweep.handler(load_event("eventbridge_sweep_schedule"), context)

    assert result["stream_batches_replayed"] == 1
    assert result["lease_held_elsewhere"] == 0 and result["failed_steps"] == []
    assert store.get_job("given-up", "b").status == JobStatus.READY
    assert [m["j"] for m in deployed.drain_queue()] == ["b"]
