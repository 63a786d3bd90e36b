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

from ...pools import Pool

log = logging.getLogger("overseer.scaling")

# Batch job states of a worker that is, or soon will be, taking jobs from the queue.
ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
# How Batch's reason begins when a job's instance was terminated under it, Spot reclaims
# included: "Host EC2 (instance i-0abc...) terminated."
HOST_TERMINATED = "Host EC2"
DESCRIBE_JOBS_MAX = 100  # job ids per DescribeJobs request


def workers_wanted(queue_depth: int, running: int, pool: Pool) -> int:
    """How many workers to start for ``pool``: one per ``backlog_per_worker`` queued jobs, at
    most ``max_workers`` in all, counting those already active.

    >>> workers_wanted(120, 1, Pool("default", max_workers=16, backlog_per_worker=50))
    2
    """
    if queue_depth <= 0:
        return 0
    target = min(math.ceil(queue_depth / max(1, pool.backlog_per_worker)), pool.max_workers)
    return max(0, target - running)


def active_workers(batch_client: Any, job_queue: str) -> int:
    """Worker jobs of ``job_queue`` that are submitted, waiting for capacity, or running."""
    paginator = batch_client.get_paginator("list_jobs")
    total = 0
    for state in ACTIVE_STATES:
        for page in paginator.paginate(jobQueue=job_queue, jobStatus=state):
            total += len(page.get("jobSummaryList", []))
    return total


def scale_pool(batch_client: Any, pool: Pool, queue_depth: int) -> tuple[int, int]:
    """Count ``pool``'s active workers and submit the ones ``workers_wanted`` asks for:
    (workers started, workers active before). Nothing when the pool has no Batch job
    queue and job definition."""
    if not pool.batch_job_queue or not pool.batch_job_definition:
        return 0, 0
    running = active_workers(batch_client, pool.batch_job_queue)
    wanted = workers_wanted(queue_depth, running, pool)
    batch = uuid.uuid4().hex[:8]
    for n in range(wanted):
        batch_client.submit_job(
            jobName=f"overseer-{pool.name}-{batch}-{n + 1}",
            jobQueue=pool.batch_job_queue,
            jobDefinition=pool.batch_job_definition,
        )
    if wanted:
        log.info(
            "pool %s: queue depth %d, %d workers active: started %d", pool.name, queue_depth, running, wanted
        )
    return wanted, running


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
