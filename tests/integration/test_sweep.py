"""The sweep repairs expired leases, lost and late messages, and dead letters."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import overseer
from overseer import timeutil
from overseer.backends.aws.queue import SqsDispatchQueue
from overseer.backends.aws.scaling import host_terminations
from overseer.errors import SweepFailed
from overseer.states import CLAIM, FINISH, RETRY, GraphStatus, JobStatus
from overseer.store import Fence, JobMessage
from overseer.sweep import batch_job_of, sweep
from overseer.worker import Worker

pytestmark = pytest.mark.integration
HANDLERS = {"write": lambda job: [overseer.Artifact(key=f"{job.name}.txt", data=b"x")]}


def claim_and_die(stack, graph_id: str, name: str, attempts: int = 0, owner: str = "dead-worker") -> None:
    """A worker claims the job, then vanishes (SIGKILL): its lease is already over."""
    stack.pump()
    deliveries = stack.services.queue.receive(max_messages=10, wait_seconds=0, visibility_seconds=1)
    assert [d.message.job_name for d in deliveries] == [name]
    stack.store.transition(
        graph_id,
        name,
        CLAIM,
        fence=Fence(attempts),
        changes={
            "attempts": attempts + 1,
            "lease_owner": owner,
            "lease_expires_at": timeutil.iso_in(-5),
        },
    )


def lose_lease(stack, graph_id: str, name: str, owner: str = "dead-worker") -> None:
    """A worker claims the ready job (its message is not on the queue) and vanishes."""
    changes = {"attempts": 1, "lease_owner": owner, "lease_expires_at": timeutil.iso_in(-5)}
    assert stack.store.transition(graph_id, name, CLAIM, fence=Fence(0), changes=changes) is not None


def test_an_expired_lease_puts_the_job_back_and_the_next_attempt_finishes(stack):
    stack.submit({"id": "lease", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    claim_and_die(stack, "lease", "a")
    time.sleep(1.1)  # the dead worker's message becomes visible again: its claim will be refused
    report = sweep(stack.services, clock_skew_seconds=0)
    assert report.leases_expired == 1
    job = stack.store.get_job("lease", "a")
    assert (job.status, job.attempts, job.error["type"]) == (JobStatus.READY, 1, "LeaseExpired")
    assert "worker dead-worker stopped heartbeating" in job.error["message"]

    graph = stack.drive("lease", HANDLERS)
    job = stack.store.get_job("lease", "a")
    assert graph.status == GraphStatus.FINISHED
    assert (job.status, job.attempts, job.error) == (JobStatus.FINISHED, 2, None)
    # The lost attempt's error stays in the job's history.
    assert [(e["attempt"], e["type"]) for e in job.errors] == [(1, "LeaseExpired")]
    # The dead worker, were it only slow, can no longer record anything.
    assert stack.store.transition("lease", "a", FINISH, fence=Fence(1, "dead-worker")) is None


def test_an_expired_lease_past_max_attempts_fails_the_job(stack):
    stack.submit({"id": "lease-max", "jobs": {"a": {"type": "write", "max_attempts": 1}}}, HANDLERS)
    claim_and_die(stack, "lease-max", "a")
    assert sweep(stack.services, clock_skew_seconds=0).jobs_failed == 1
    job = stack.store.get_job("lease-max", "a")
    assert job.status == JobStatus.FAILED
    assert job.error_text().endswith("(gave up after 1 attempts)")


def test_a_lease_within_the_clock_skew_bound_is_left_alone(stack):
    stack.submit({"id": "skew", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    claim_and_die(stack, "skew", "a")
    assert sweep(stack.services, clock_skew_seconds=60).leases_expired == 0
    assert stack.store.get_job("skew", "a").status == JobStatus.RUNNING


def test_a_lost_message_is_sent_again_when_the_queue_is_empty(stack):
    stack.submit({"id": "lost", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    stack.pump()
    queue = stack.services.queue
    queue.delete([d.receipt for d in queue.receive(max_messages=10, wait_seconds=0)])  # lost
    assert sweep(stack.services, stale_ready_seconds=3600).lost_messages_resent == 0
    assert sweep(stack.services, stale_ready_seconds=0).lost_messages_resent == 1
    assert stack.drive("lost", HANDLERS).status == GraphStatus.FINISHED


@pytest.mark.parametrize("other_message", ["in flight", "waiting"])
def test_a_stale_ready_job_is_not_sent_again_while_the_queue_holds_other_messages(stack, other_message):
    # A job can look stale only because the workers are busy: its message may be among those
    # still queued, so the sweep sends nothing until the queue is empty.
    for graph_id in ("lost", "busy"):
        stack.submit({"id": graph_id, "jobs": {"a": {"type": "write"}}}, HANDLERS)
    stack.pump()
    queue = stack.services.queue
    deliveries = {d.message.graph_id: d for d in queue.receive(max_messages=10, wait_seconds=0)}
    queue.delete([deliveries["lost"].receipt])  # lost; "busy" is being worked on
    if other_message == "waiting":
        queue.extend_visibility(deliveries["busy"].receipt, 0)  # its worker gave it back

    report = sweep(stack.services, stale_ready_seconds=0)

    assert (report.queue_depth, report.lost_messages_resent) == (1, 0)
    assert stack.store.get_job("lost", "a").dispatched_at is None
    assert queue.depth() == 1  # nothing was sent


def test_a_retry_beyond_the_sqs_delay_is_sent_by_the_sweep_when_due(stack, monkeypatch):
    stack.submit({"id": "late", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    claim_and_die(stack, "late", "a")
    stack.store.transition(
        "late", "a", RETRY, fence=Fence(1, "dead-worker"), changes={"not_before": timeutil.iso_in(1000)}
    )
    stack.pump()
    assert stack.services.queue.depth() <= 1  # only the dead worker's message, no new one
    assert sweep(stack.services).late_retries_sent == 0  # still more than 15 minutes off

    later = timeutil.now() + dt.timedelta(seconds=950)
    monkeypatch.setattr(
        "overseer.sweep.timeutil", SimpleNamespace(now=lambda: later, parse=timeutil.parse, iso=timeutil.iso)
    )
    report = sweep(stack.services)
    assert report.late_retries_sent == 1
    assert sweep(stack.services).late_retries_sent == 0  # sent once
    assert stack.store.get_job("late", "a").dispatched_at is not None


def test_dead_lettered_messages_fail_their_jobs_with_a_clear_error(stack):
    stack.submit({"id": "poison", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    stack.pump()
    dlq = SqsDispatchQueue(stack.services.queue.normal.client, stack.settings.dead_letter_queue_url)
    dlq.send([JobMessage("poison", "a", 0)])
    assert sweep(stack.services).dead_letters == 1
    job = stack.store.get_job("poison", "a")
    assert job.status == JobStatus.FAILED and job.error["type"] == "DeadLettered"
    assert "without an outcome" in job.error["message"]
    assert [(e["type"], e["attempt"]) for e in job.errors] == [("DeadLettered", 0)]


def wait_for(condition, timeout: float = 20.0):
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_sigterm_releases_the_running_job_without_counting_the_attempt(stack, aws_env, tmp_path: Path):
    # A real `overseer worker` process, stopped as Batch (`docker stop`) stops a container.
    started = tmp_path / "started"
    handlers_file = tmp_path / "slow_handlers.py"
    handlers_file.write_text(
        "import pathlib, time\n\n"
        f"def slow(job):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(60)\n\n"
        "HANDLERS = {'slow': slow}\n"
    )
    stack.submit({"id": "shutdown", "jobs": {"a": {"type": "slow"}}}, {"slow": None})
    stack.pump()
    settings = stack.settings.with_(
        handlers=str(handlers_file), isolation="process", shutdown_grace_seconds=1, idle_exit_seconds=0
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "overseer", "worker"],
            env={**os.environ, **aws_env, **settings.to_env()},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, with the handler's child process
        )
    try:
        wait_for(started.exists)  # the handler runs
        assert stack.store.get_job("shutdown", "a").status == JobStatus.RUNNING
        worker.send_signal(signal.SIGTERM)  # to the worker only, not to its handler process
        returncode = worker.wait(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # whatever is left when the test failed
    assert returncode == 0, log.read_text()
    job = stack.store.get_job("shutdown", "a")
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.READY, 0, None)
    assert "worker shutting down" in job.reason
    # Its message is visible again at once, for another worker, with the attempt not counted.
    deliveries = stack.services.queue.receive(max_messages=10, wait_seconds=0)
    assert [(d.message.job_name, d.message.attempts) for d in deliveries] == [("a", 0)]


def test_a_graph_counted_to_its_end_but_not_ended_is_ended_by_the_sweep(stack):
    # The scheduler's invocation counted b's end (the counters reach the graph's size) and
    # died before it ended the graph. The sweep sees it from the counters alone (a record
    # lost for good, after Lambda's retries, is replayed from the stream: issue 12, part B).
    document = {"id": "lost-end", "jobs": {"a": {"type": "write"}, "b": {"type": "write", "deps": ["a"]}}}
    stack.submit(document, HANDLERS)
    stack.pump()
    for name in ("a", "b"):
        stack.store.transition("lost-end", name, CLAIM, fence=Fence(0), changes={"attempts": 1})
        stack.store.transition("lost-end", name, FINISH, fence=Fence(1))
        if name == "a":
            stack.pump()  # a's record releases b
    stack.reader.poll()  # b's "finished" record: counted, then the invocation died
    stack.store.add_graph_progress("lost-end", {"finished": 2})
    assert stack.store.get_graph("lost-end").status == GraphStatus.RUNNING

    ended: list[str] = []
    report = sweep(stack.services, on_graph_done=lambda graph: ended.append(graph.status))
    graph = stack.store.get_graph("lost-end")
    assert (report.graphs_ended, ended) == (1, [GraphStatus.FINISHED])
    assert (graph.status, graph.counts) == (GraphStatus.FINISHED, {"finished": 2, "failed": 0, "aborted": 0})
    assert sweep(stack.services).graphs_ended == 0  # once ended, the sweep leaves it alone


# -- Spot reclaims: a worker whose Batch job lost its host keeps the job's attempt --------

HOST_LOST = "Host EC2 (instance i-0abc1234) terminated."


class StandInBatch:
    """Batch's DescribeJobs as the sweep sees it: each job's last attempt ended for ``reasons[id]``."""

    def __init__(self, reasons: dict[str, str] | None = None, error: Exception | None = None) -> None:
        self.reasons = reasons or {}
        self.error = error
        self.calls: list[list[str]] = []

    def describe_jobs(self, jobs: list[str]) -> dict:
        self.calls.append(jobs)
        if self.error:
            raise self.error
        return {"jobs": [{"jobId": j, "attempts": [{"statusReason": self.reasons[j]}]} for j in jobs]}

    def lookup(self, job_ids):
        return host_terminations(self, job_ids)


def batch_worker_id(stack, monkeypatch, batch_job: str) -> str:
    """The lease owner of a worker process started by Batch as job ``batch_job``."""
    monkeypatch.setenv("AWS_BATCH_JOB_ID", batch_job)  # Batch sets it in every job's container
    return Worker(stack.services, {}).worker_id


def test_a_worker_knows_its_batch_job_and_the_sweep_reads_it_back(stack, monkeypatch):
    first, second = (batch_worker_id(stack, monkeypatch, "8a3f0e2c-77b1:3") for _ in range(2))
    assert first != second  # unique per worker process
    assert batch_job_of(first) == batch_job_of(second) == "8a3f0e2c-77b1:3"  # an array child's id
    monkeypatch.delenv("AWS_BATCH_JOB_ID")
    assert batch_job_of(Worker(stack.services, {}).worker_id) is None


def test_a_job_whose_worker_lost_its_host_is_ready_again_without_counting_the_attempt(stack, monkeypatch):
    # max_attempts 1: were the reclaim counted, the job would fail.
    stack.submit({"id": "spot", "jobs": {"a": {"type": "write", "max_attempts": 1}}}, HANDLERS)
    claim_and_die(stack, "spot", "a", owner=batch_worker_id(stack, monkeypatch, "8a3f0e2c"))
    batch = StandInBatch({"8a3f0e2c": HOST_LOST})

    report = sweep(stack.services, clock_skew_seconds=0, host_terminations=batch.lookup)

    assert (report.hosts_reclaimed, report.leases_expired, report.jobs_failed) == (1, 0, 0)
    job = stack.store.get_job("spot", "a")
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.READY, 0, None)
    assert HOST_LOST in job.reason
    assert stack.drive("spot", HANDLERS).status == GraphStatus.FINISHED
    assert stack.store.get_job("spot", "a").attempts == 1


def test_a_batch_worker_lost_for_another_reason_counts_the_attempt(stack, monkeypatch):
    stack.submit({"id": "oom", "jobs": {"a": {"type": "write", "max_attempts": 1}}}, HANDLERS)
    claim_and_die(stack, "oom", "a", owner=batch_worker_id(stack, monkeypatch, "5b9d1c44"))
    batch = StandInBatch({"5b9d1c44": "Essential container in task exited"})

    report = sweep(stack.services, clock_skew_seconds=0, host_terminations=batch.lookup)

    assert (report.hosts_reclaimed, report.jobs_failed, report.failures) == (0, 1, {})
    assert stack.store.get_job("oom", "a").status == JobStatus.FAILED


def test_a_failed_batch_lookup_counts_the_attempt_and_the_sweep_goes_on(stack, monkeypatch):
    stack.submit({"id": "no-lookup", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    claim_and_die(stack, "no-lookup", "a", owner=batch_worker_id(stack, monkeypatch, "0c7e9a11"))
    stack.submit({"id": "no-lookup-poison", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    dlq = SqsDispatchQueue(stack.services.queue.normal.client, stack.settings.dead_letter_queue_url)
    dlq.send([JobMessage("no-lookup-poison", "a", 0)])
    batch = StandInBatch(error=RuntimeError("AccessDeniedException: batch:DescribeJobs"))

    report = sweep(stack.services, clock_skew_seconds=0, host_terminations=batch.lookup)

    assert list(report.failures) == ["host_lookup"]
    assert (report.leases_expired, report.hosts_reclaimed, report.dead_letters) == (1, 0, 1)
    job = stack.store.get_job("no-lookup", "a")
    assert (job.status, job.attempts, job.error["type"]) == (JobStatus.READY, 1, "LeaseExpired")
    with pytest.raises(SweepFailed, match="host_lookup"):
        report.raise_if_failed()


def test_one_batch_lookup_per_sweep_for_100_lost_workers(stack):
    for graph_id, size in (("many-1", 60), ("many-2", 40)):
        stack.submit({"id": graph_id, "jobs": {f"j{n}": {"type": "write"} for n in range(size)}}, HANDLERS)
        for n in range(size):
            lose_lease(stack, graph_id, f"j{n}", owner=f"batch:{graph_id}-{n}:1:abc")
    batch = StandInBatch(
        {f"many-1-{n}": HOST_LOST for n in range(60)} | {f"many-2-{n}": "" for n in range(40)}
    )

    report = sweep(stack.services, clock_skew_seconds=0, host_terminations=batch.lookup)

    assert len(batch.calls) == 1 and len(batch.calls[0]) == 100
    assert (report.hosts_reclaimed, report.leases_expired) == (60, 40)


def test_a_failing_step_does_not_stop_the_others(stack):
    class Unreadable(SqsDispatchQueue):
        def depth(self) -> int:
            raise RuntimeError("GetQueueAttributes throttled")

    stack.submit({"id": "isolated", "jobs": {"a": {"type": "write"}}}, HANDLERS)
    lose_lease(stack, "isolated", "a")
    stack.submit({"id": "isolated-ready", "jobs": {"a": {"type": "write"}}}, HANDLERS)  # no message sent
    unreadable = Unreadable(stack.services.queue.normal.client, stack.settings.queue_url)
    services = dataclasses.replace(stack.services, queue=unreadable)
    started: list[int] = []

    def scale(pool: str, depth: int) -> tuple[int, int]:
        started.append(depth)
        return 0, 0

    report = sweep(services, clock_skew_seconds=0, stale_ready_seconds=0, scale=scale)

    assert list(report.failures) == ["queue_depth"]
    assert started == []  # no depth, no scaling decision
    assert report.leases_expired == 1
    assert report.lost_messages_resent == 0  # an unknown depth never passes for an empty queue
    assert sweep(stack.services, stale_ready_seconds=0).lost_messages_resent == 2  # a known empty one: both


# -- cost: one sweep's requests do not grow with the jobs in flight ------------------------


def running_graph(stack, graph_id: str, size: int) -> None:
    """A graph of ``size`` jobs, every one claimed by a live worker (nothing to repair)."""
    stack.submit({"id": graph_id, "jobs": {f"j{n}": {"type": "write"} for n in range(size)}}, HANDLERS)
    for n in range(size):
        changes = {"attempts": 1, "lease_owner": "live", "lease_expires_at": timeutil.iso_in(120)}
        assert stack.store.transition(graph_id, f"j{n}", CLAIM, fence=Fence(0), changes=changes)


def test_one_sweep_makes_the_same_requests_for_420_running_jobs_as_for_20(stack):
    requests = []
    for graph_id, size in (("small", 20), ("large", 400)):
        running_graph(stack, graph_id, size)
        counter = stack.count_requests()
        report = sweep(stack.services)
        requests.append(dict(counter.counts))
        assert (report.failures, report.leases_expired, report.lost_messages_resent) == ({}, 0, 0)
        assert report.graphs == len(requests)
    assert requests[1] == requests[0]
    assert "dynamodb.Scan" not in requests[1]
    # The active-graphs index twice (running graphs, graphs left creating), then the sweep
    # index: 8 shards for leases, 8 for late retries, 8 for due jobs (the queue is empty).
    assert requests[1]["dynamodb.Query"] == 2 + 3 * 8


def test_a_backlog_of_expired_leases_spreads_over_sweeps_from_where_each_stopped(stack):
    stack.submit({"id": "backlog", "jobs": {f"j{n}": {"type": "write"} for n in range(30)}}, HANDLERS)
    for n in range(30):
        lose_lease(stack, "backlog", f"j{n}")
    reports = [sweep(stack.services, clock_skew_seconds=0, max_repairs=10)]
    while reports[-1].stopped_early:
        assert len(reports) < 10
        reports.append(sweep(stack.services, clock_skew_seconds=0, max_repairs=10))
    assert len(reports) >= 3  # at most about 10 repairs (a page more) a sweep
    assert all(r.leases_expired <= 10 + 8 for r in reports)
    assert sum(r.leases_expired for r in reports) == 30  # each once
    jobs = stack.jobs("backlog")
    assert {(j.status, j.attempts) for j in jobs.values()} == {(JobStatus.READY, 1)}
    assert stack.store.get_sweep_cursor() is None  # the last sweep went through everything
