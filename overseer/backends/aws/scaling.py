"""The sweep's Batch calls: scaling workers from the dispatch queue's depth, and asking
whether lost workers lost their host.

Workers exit after an idle period (``Settings.idle_exit_seconds``), so scaling in is
their own business; the sweep only starts workers when the queue holds more work than
the active ones are expected to drain. ``host_terminations`` is the sweep's
``HostTerminations`` lookup: a job whose worker's instance was terminated (a Spot
reclaim) goes back to ready without counting the attempt (see ``overseer.sweep``).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any

from ...config import Settings
from ...store import DispatchQueue

log = logging.getLogger("overseer.scaling")

# Batch job states of a worker that is, or soon will be, taking jobs from the queue.
ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
# How Batch's reason begins when a job's instance was terminated under it, Spot reclaims
# included: "Host EC2 (instance i-0abc...) terminated."
HOST_TERMINATED = "Host EC2"
DESCRIBE_JOBS_MAX = 100  # job ids per DescribeJobs request


def workers_wanted(queue_depth: int, running: int, settings: Settings) -> int:
    """How many workers to start: one per ``jobs_per_worker`` queued jobs, at most
    ``max_workers`` in all, minus those already active (never negative).

    >>> workers_wanted(120, 1, Settings(jobs_per_worker=50, max_workers=16))
    2
    """
    if queue_depth <= 0:
        return 0
    target = min(math.ceil(queue_depth / max(1, settings.jobs_per_worker)), settings.max_workers)
    return max(0, target - running)


def active_workers(batch_client: Any, job_queue: str) -> int:
    """Worker jobs of ``job_queue`` that are submitted, waiting for capacity, or running."""
    paginator = batch_client.get_paginator("list_jobs")
    total = 0
    for state in ACTIVE_STATES:
        for page in paginator.paginate(jobQueue=job_queue, jobStatus=state):
            total += len(page.get("jobSummaryList", []))
    return total


def scale_batch_workers(
    batch_client: Any, queue: DispatchQueue, settings: Settings, *, queue_depth: int | None = None
) -> int:
    """Submit the worker jobs ``workers_wanted`` asks for; returns how many were submitted.

    Uses ``settings.batch_job_queue`` and ``settings.batch_job_definition``; does nothing
    when either is empty. ``queue_depth`` saves a queue read when the caller has it.
    """
    if not settings.batch_job_queue or not settings.batch_job_definition:
        return 0
    depth = queue.depth() if queue_depth is None else queue_depth
    if depth <= 0:
        return 0
    running = active_workers(batch_client, settings.batch_job_queue)
    wanted = workers_wanted(depth, running, settings)
    batch = uuid.uuid4().hex[:8]
    for n in range(wanted):
        batch_client.submit_job(
            jobName=f"overseer-worker-{batch}-{n + 1}",
            jobQueue=settings.batch_job_queue,
            jobDefinition=settings.batch_job_definition,
        )
    if wanted:
        log.info("queue depth %d, %d workers active: started %d", depth, running, wanted)
    return wanted


def host_terminations(batch_client: Any, job_ids: Sequence[str]) -> dict[str, str]:
    """The Batch jobs among ``job_ids`` whose instance was terminated under them, with
    Batch's reason (the job's ``statusReason`` or its last attempt's); one DescribeJobs
    request per 100 ids. Jobs Batch no longer knows are left out.

    Example
    -------
    >>> host_terminations(boto3.client("batch"), ["4c1d..."])  # doctest: +SKIP
    {'4c1d...': 'Host EC2 (instance i-0abc) terminated.'}
    """
    lost: dict[str, str] = {}
    ids = list(job_ids)
    for start in range(0, len(ids), DESCRIBE_JOBS_MAX):
        for job in batch_client.describe_jobs(jobs=ids[start : start + DESCRIBE_JOBS_MAX]).get("jobs", []):
            attempts = job.get("attempts") or [{}]
            reasons = (job.get("statusReason") or "", attempts[-1].get("statusReason") or "")
            reason = next((r for r in reasons if r.startswith(HOST_TERMINATED)), None)
            if reason:
                lost[job["jobId"]] = reason
    return lost
