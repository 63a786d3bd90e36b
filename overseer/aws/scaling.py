"""Scaling Batch workers from the dispatch queue's depth (called by the sweep).

Workers exit after an idle period (``Settings.idle_exit_seconds``), so scaling in is
their own business; the sweep only starts workers when the queue holds more work than
the active ones are expected to drain.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from ..config import Settings
from ..store import DispatchQueue

log = logging.getLogger("overseer.scaling")

# Batch job states of a worker that is, or soon will be, taking jobs from the queue.
ACTIVE_STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


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
