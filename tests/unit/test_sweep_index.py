"""Where a job sits in the sweep index (``overseer.items``), and how often a heartbeat moves it."""

from __future__ import annotations

import datetime as dt

from overseer import timeutil
from overseer.items import (
    LEASE_BUCKET_AHEAD_SECONDS,
    minute,
    next_lease_bucket,
    sweep_index_values,
    sweep_shard_key,
)
from overseer.states import JobStatus

NOW = dt.datetime(2026, 11, 29, 21, 43, 17, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return timeutil.iso(NOW + dt.timedelta(seconds=seconds))


def test_a_claimed_job_sits_under_its_lease_expiry_minute() -> None:
    values = sweep_index_values("g", "a", JobStatus.RUNNING, {"lease_expires_at": at(120)}, NOW)
    assert values == {"sweep_key": sweep_shard_key("lease", "g", "a"), "sweep_at": "2026-11-29T21:45"}


def test_a_ready_job_is_due_now_or_at_its_not_before_and_a_far_retry_is_late() -> None:
    due = sweep_index_values("g", "a", JobStatus.READY, {}, NOW)
    assert due["sweep_key"].startswith("due#") and due["sweep_at"] == "2026-11-29T21:43"
    soon = sweep_index_values("g", "a", JobStatus.READY, {"not_before": at(600)}, NOW)
    assert soon["sweep_key"].startswith("due#") and soon["sweep_at"] == "2026-11-29T21:53"
    late = sweep_index_values("g", "a", JobStatus.READY, {"not_before": at(2000)}, NOW)
    assert late["sweep_key"].startswith("late#") and late["sweep_at"] == minute(
        NOW + dt.timedelta(seconds=1100)
    )
    sent = sweep_index_values("g", "a", JobStatus.READY, {"dispatched_at": at(0)}, NOW)
    assert sent["sweep_key"].startswith("due#")


def test_waiting_and_ended_jobs_leave_the_index() -> None:
    for status in (JobStatus.WAITING, JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED):
        assert sweep_index_values("g", "a", status, {}, NOW) == {"sweep_key": None, "sweep_at": None}
    # A running job without a lease (never written by a worker) is not the sweep's either.
    assert sweep_index_values("g", "a", JobStatus.RUNNING, {}, NOW)["sweep_key"] is None


def test_renewals_keep_the_bucket_after_the_expiry_and_move_it_about_once_in_seven() -> None:
    lease, beat = 120, 40
    bucket = minute(at(lease))  # as the claim wrote it
    moves = renewals = 0
    for n in range(1, 180):
        expires = at(n * beat + lease)
        moved = next_lease_bucket(bucket, expires)
        renewals += 1
        if moved is not None:
            moves += 1
            bucket = moved
        end = timeutil.parse(bucket + ":00Z") + dt.timedelta(seconds=60)
        # Never found by the sweep while the lease runs, and found at most this late after.
        assert (
            timeutil.parse(expires)
            < end
            <= timeutil.parse(expires) + dt.timedelta(seconds=LEASE_BUCKET_AHEAD_SECONDS + 60)
        )
    assert renewals / 8 < moves < renewals / 6


def test_shards_spread_jobs_over_every_partition_of_a_kind() -> None:
    keys = {sweep_shard_key("lease", "g", f"job-{n}") for n in range(200)}
    assert keys == {f"lease#{shard}" for shard in range(8)}
