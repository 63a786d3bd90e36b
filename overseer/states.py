"""The job state machine, written down once.

::

    waiting --(all deps finished)--> ready --(worker claims)--> running --(returns)--> finished
       |                               ^                           |--(exception)----> failed
       |                               |--(fault / lease expired)--|  (after max attempts: failed)
       |                                                           |--(abort)--------> aborted
       +--(upstream failed/aborted, graph cancelled)---------------------------------> aborted
    failed / aborted --(rerun)--> waiting or ready
    finished / failed / aborted / ready --(rerun of a job and its downstream)--> waiting
    ready --(its concurrency limit is full)--> ready, waiting outside the queue
          --(a slot given back)--> ready, enqueued again

Every write that changes a job's status names one of the ``Transition`` objects below;
the stores turn it into a single conditional write ("status is one of ``sources``", plus
the fence when one is given), so a stale or duplicated actor can never move a job
backwards or overwrite another owner's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class _Status(StrEnum):
    @property
    def terminal(self) -> bool:
        """Finished, failed or aborted: nothing moves it on but a rerun (jobs and graphs alike)."""
        return self in TERMINAL


class JobStatus(_Status):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    ABORTED = "aborted"


# The terminal statuses' values, shared by jobs and graphs (a StrEnum equals its value).
TERMINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED})


class GraphStatus(_Status):
    CREATING = "creating"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[JobStatus]
    target: JobStatus
    # Fenced transitions are only valid for the current owner of the current attempt.
    fenced: bool = False
    # An attribute the job must carry for the transition to apply (None: no such condition).
    requires: str | None = None


def _t(
    name: str, sources: set[JobStatus], target: JobStatus, fenced: bool = False, requires: str | None = None
) -> Transition:
    return Transition(name, frozenset(sources), target, fenced, requires)


S = JobStatus
RELEASE = _t("release", {S.WAITING}, S.READY)
# Who released a job (its ``released_by``). The scheduler sends the jobs it releases
# itself; the others are enqueued from their "ready" stream record.
RELEASED_BY_SCHEDULER = "scheduler"
RELEASED_BY_SUBMISSION = "submission"
RELEASED_BY_RERUN = "rerun"
# A child of an expansion, written ready by the scheduler (``overseer.expansion``).
RELEASED_BY_EXPANSION = "expansion"
# A job that waited for a concurrency limit, woken when a slot was given back (``overseer.limits``).
RELEASED_BY_LIMIT = "limit"
CLAIM = _t("claim", {S.READY}, S.RUNNING)
FINISH = _t("finish", {S.RUNNING}, S.FINISHED, fenced=True)
FAIL = _t("fail", {S.RUNNING}, S.FAILED, fenced=True)
ABORT = _t("abort", {S.RUNNING}, S.ABORTED, fenced=True)
RETRY = _t("retry", {S.RUNNING}, S.READY, fenced=True)
# Worker shutdown (SIGTERM, spot reclaim): the job goes back, and the attempt is not counted.
SHUTDOWN_RELEASE = _t("shutdown_release", {S.RUNNING}, S.READY, fenced=True)
# The sweep re-sends a ready job's lost (or late) message; the status stays ready.
REDISPATCH = _t("redispatch", {S.READY}, S.READY)
# A job whose concurrency limit is full waits, ready, outside the queue (``limit_wait`` set;
# its message is deleted); a slot given back wakes it (the scheduler enqueues it again).
LIMIT_WAIT = _t("limit_wait", {S.READY}, S.READY)
LIMIT_WAKE = _t("limit_wake", {S.READY}, S.READY, requires="limit_wait")
# The sweep: a message dead-lettered (received too often without an outcome).
DEAD_LETTER = _t("dead_letter", {S.READY, S.RUNNING}, S.FAILED)
# The sweep takes back a job whose owner's lease expired.
EXPIRE = _t("expire", {S.RUNNING}, S.READY)
EXPIRE_FAIL = _t("expire_fail", {S.RUNNING}, S.FAILED)
# Upstream failure or abort, and graph cancellation.
CASCADE_ABORT = _t("cascade_abort", {S.WAITING, S.READY}, S.ABORTED)
CANCEL_RUNNING = _t("cancel_running", {S.RUNNING}, S.ABORTED)
RERUN = _t("rerun", {S.FAILED, S.ABORTED}, S.WAITING)
# `overseer rerun ID --job NAME [--downstream]`: that job (finished or not) and what depends
# on it run again; a downstream job released already waits again for the rerun upstream.
RERUN_JOB = _t("rerun_job", {S.FINISHED, S.FAILED, S.ABORTED, S.READY}, S.WAITING)

TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        RELEASE, CLAIM, FINISH, FAIL, ABORT, RETRY, SHUTDOWN_RELEASE, EXPIRE, EXPIRE_FAIL,
        DEAD_LETTER, REDISPATCH, CASCADE_ABORT, CANCEL_RUNNING, RERUN, RERUN_JOB, LIMIT_WAIT,
        LIMIT_WAKE,
    )
}  # fmt: skip


def allowed(source: JobStatus, target: JobStatus) -> bool:
    """Whether any transition moves a job from ``source`` to ``target``."""
    return any(source in t.sources and t.target == target for t in TRANSITIONS.values())


def terminal_counts(statuses: Iterable[JobStatus]) -> dict[str, int]:
    """A graph's counters as they are stored: how many of ``statuses`` are finished,
    failed and aborted."""
    counts = {s.value: 0 for s in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED)}
    for status in statuses:
        if status.terminal:
            counts[status.value] += 1
    return counts


def graph_outcome(counts: Mapping[JobStatus, int]) -> GraphStatus | None:
    """The graph's status once every job is terminal, else None.

    finished when every job finished; failed when a job failed; aborted otherwise.
    """
    if any(counts.get(s, 0) for s in JobStatus if not s.terminal):
        return None
    if counts.get(S.FAILED, 0):
        return GraphStatus.FAILED
    if counts.get(S.ABORTED, 0):
        return GraphStatus.ABORTED
    return GraphStatus.FINISHED


def gave_up(message: str, attempts: int) -> str:
    """The error message of a job that failed for good: ``message`` after its last attempt."""
    return f"{message} (gave up after {attempts} attempts)"
