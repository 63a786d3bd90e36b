"""The worker: take a job from the queue, claim it, run its handler, record the outcome.

One job at a time per worker process. Workers share nothing: they never talk to each
other or to a master, so scaling is adding or removing processes. Whatever a handler
does, the worker records an outcome and goes on with the next job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import timeutil
from .artifacts import load_inputs, persist_artifacts
from .config import logs_dir
from .errors import AbortJob, FaultJob, HandlerCrashed, InvalidArtifact, RemoteHandlerError
from .expansion import prepare as prepare_expansion
from .expansion import split_results
from .handlers import HandlerSpec
from .isolation import code_version, inputs_in_child, short_traceback
from .items import error_history, minute, next_lease_bucket
from .job import Expand, Job
from .limits import Admission, Holder, live_holders, parse_limits, wake
from .states import ABORT, CLAIM, FAIL, FINISH, LIMIT_WAIT, RETRY, SHUTDOWN_RELEASE, gave_up
from .store import Delivery, Fence, JobMessage, JobRecord, Services

log = logging.getLogger("overseer.worker")
# The run loop deletes handled messages in batches of up to 10 (one SQS request), at the
# latest a quarter of the lease after the first one (at most 30 s; the message stays
# invisible for at least two thirds of a lease after its job's last heartbeat), or as soon
# as the queue is empty. A message not deleted in time is received again and its claim is
# refused by the fence: one receive and one failed write, only when a worker dies.
DELETE_BATCH = 10
DELETE_DELAY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    """What happened to one delivery: finished, failed, aborted, retry, or skipped."""

    kind: str
    graph_id: str
    job_name: str
    detail: str = ""


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff after the ``attempt``-th try: base, 2 base, 4 base... up to cap."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """How long a job waits before its next try: full jitter, a uniform draw from zero to
    ``backoff_seconds(attempt, base, cap)``, so jobs that failed together do not retry together."""
    return (rng or random).uniform(0.0, backoff_seconds(attempt, base, cap))


def _error(kind: str, message: str, trace: str = "") -> dict[str, str]:
    """A job's error as the store keeps it."""
    return {"type": kind, "message": message, "traceback": trace}


RunHandler = Callable[[HandlerSpec, Job, Callable[[], bool]], list[Any]]


def run_in_process(spec: HandlerSpec, job: Job, should_stop: Callable[[], bool]) -> list[Any]:
    """Run the handler in the worker's own process (no isolation; tests and debugging)."""
    return spec.run(job)


class _Heartbeat:
    """Renews the job's lease, the message's visibility and the slot of the job's concurrency
    limit (if it holds one) while the handler runs."""

    def __init__(
        self, services: Services, job: JobRecord, fence: Fence, receipt: str, limit: str | None = None
    ) -> None:
        self.services, self.job, self.fence, self.receipt = services, job, fence, receipt
        self.limit = limit
        self.lease = services.settings.lease_seconds
        # The job's minute in the sweep index, as the claim wrote it (overseer.items).
        self.bucket = minute(job.lease_expires_at) if job.lease_expires_at else None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                expires = timeutil.iso_in(self.lease)
                bucket = next_lease_bucket(self.bucket, expires)
                held = self.services.store.renew_lease(
                    self.job.graph_id,
                    self.job.name,
                    self.fence,
                    lease_expires_at=expires,
                    heartbeat_at=timeutil.iso(),
                    lease_bucket=bucket,
                )
                if held and bucket is not None:
                    self.bucket = bucket
                if held and self.limit is not None:
                    # A slot taken back (its lease passed) is another job's now: stop too.
                    held = self.services.store.renew_slot(self.limit, self.job.id, self.fence, until=expires)
                if not held:
                    # Cancelled, or taken over after our lease expired: our outcome will be
                    # refused by the fence, so there is no point extending the message.
                    self.lost.set()
                    return
                self.services.queue.extend_visibility(self.receipt, self.lease)
            except Exception:  # a missed beat is retried at the next one
                log.warning("heartbeat of %s failed", self.job.id, exc_info=True)


def default_worker_id() -> str:
    """A lease owner unique to this process: ``<host>:<pid>:<nonce>``, or on AWS Batch
    ``batch:<Batch job id>:<pid>:<nonce>``, so the sweep can ask Batch whether an expired
    lease's worker lost its host (``overseer.sweep.batch_job_of`` reads it back)."""
    unique = f"{os.getpid()}:{uuid.uuid4().hex[:6]}"
    batch_job = os.environ.get("AWS_BATCH_JOB_ID")  # set by Batch in every job's container
    return f"batch:{batch_job}:{unique}" if batch_job else f"{socket.gethostname()}:{unique}"


class Worker:
    def __init__(
        self,
        services: Services,
        handlers: dict[str, HandlerSpec],
        *,
        worker_id: str | None = None,
        run_handler: RunHandler | None = None,
        services_factory: Callable[[], Services] | None = None,
    ) -> None:
        """``services_factory`` builds this worker's services again (picklable, e.g.
        ``partial(overseer.backends.build_services, settings)``): the handler process
        reads a job's inputs through services of its own."""
        self.services = services
        self.settings = services.settings
        self.handlers = handlers
        self.worker_id = worker_id or default_worker_id()
        if run_handler is None:
            if self.settings.isolation == "process" and self.settings.handlers:
                from .isolation import IsolatedRunner

                run_handler = IsolatedRunner(
                    self.settings.handlers,
                    memory_limit_mb=self.settings.handler_memory_mb,
                    default_timeout_seconds=self.settings.handler_timeout_seconds,
                    # Local stacks keep each job's output in <state_dir>/logs; in AWS it goes
                    # to the container's stdout (CloudWatch Logs), prefixed with the job id.
                    log_dir=logs_dir(self.settings.state_dir) if self.settings.state_dir else None,
                    inputs_factory=partial(inputs_in_child, services_factory) if services_factory else None,
                )
            else:
                run_handler = run_in_process
        self.run_handler = run_handler
        self._stopping = threading.Event()
        self._stop_requested_at: float | None = None
        self._deletes: list[str] = []
        self._deletes_since = 0.0
        self.processed = 0
        self.started = time.monotonic()
        self.limits = parse_limits(self.settings.limits)
        self.code_version = self.settings.code_version or code_version(self.settings.handlers)

    def stop(self) -> None:
        """Take no new job; the running one may go on for ``shutdown_grace_seconds``, then
        it is stopped and released to the queue (the attempt is not counted)."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._stopping.set()
        # A receive waiting for a message ends now rather than at the end of its wait.
        interrupt = getattr(self.services.queue, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def _grace_over(self) -> bool:
        started = self._stop_requested_at
        return started is not None and time.monotonic() - started > self.settings.shutdown_grace_seconds

    def close(self) -> None:
        close = getattr(self.run_handler, "close", None)
        if close is not None:
            close()

    def run(self) -> int:
        """Work until stopped, or idle for ``idle_exit_seconds``. Returns jobs processed."""
        warm = getattr(self.run_handler, "warm", None)
        if warm is not None:
            try:
                warm()  # the handler process starts while the worker waits for its first job
            except Exception:
                log.warning("could not start the handler process ahead of the first job", exc_info=True)
        idle_since = time.monotonic()
        try:
            self._run_loop(idle_since)
        finally:
            self.flush_deletes()
        return self.processed

    def _run_loop(self, idle_since: float) -> None:
        lifetime = self.settings.worker_lifetime_seconds
        parent = self.settings.parent_pid
        while not self._stopping.is_set():
            if lifetime and time.monotonic() - self.started >= lifetime:
                log.info("lived %ss (its lifetime): taking no more jobs, exiting", lifetime)
                break
            if parent and os.getppid() != parent:  # reparented: the run that started it died
                log.info("its parent process %s is gone: exiting", parent)
                break
            if self._deletes and time.monotonic() - self._deletes_since > self.delete_delay:
                self.flush_deletes()
            try:
                deliveries = self.services.queue.receive(
                    max_messages=1,
                    wait_seconds=self.settings.receive_wait_seconds,
                    visibility_seconds=self.settings.lease_seconds,
                )
            except Exception:
                log.exception("receive failed; retrying")
                self._stopping.wait(1.0)
                continue
            if not deliveries:
                self.flush_deletes()
                idle = self.settings.idle_exit_seconds
                if idle and time.monotonic() - idle_since >= idle:
                    log.info("idle for %ss: exiting", idle)
                    break
                continue
            for delivery in deliveries:
                try:
                    outcome = self.process(delivery, defer_delete=True)
                    log.info("%s/%s %s", outcome.graph_id, outcome.job_name, outcome.kind)
                except Exception:
                    # The message becomes visible again; the job is retried or swept.
                    log.exception("could not process %s", delivery.message)
                self.processed += 1
            idle_since = time.monotonic()

    @property
    def delete_delay(self) -> float:
        """How long the run loop may hold a handled message before deleting it."""
        return min(DELETE_DELAY_MAX_SECONDS, self.settings.lease_seconds / 4)

    @property
    def pending_deletes(self) -> int:
        """Handled messages not deleted yet."""
        return len(self._deletes)

    def flush_deletes(self) -> None:
        """Delete the messages of the jobs already recorded, in one batch."""
        receipts, self._deletes = self._deletes, []
        if receipts:
            try:
                self.services.queue.delete(receipts)
            except Exception:
                # They become visible again; their claims are refused and they are deleted then.
                log.warning("could not delete %d messages", len(receipts), exc_info=True)

    def _delete(self, receipt: str, defer: bool) -> None:
        if not defer:
            self.services.queue.delete([receipt])
            return
        if not self._deletes:
            self._deletes_since = time.monotonic()
        self._deletes.append(receipt)
        if len(self._deletes) >= DELETE_BATCH:
            self.flush_deletes()

    # -- one job ----------------------------------------------------------------------
    def process(self, delivery: Delivery, *, defer_delete: bool = False) -> Outcome:
        """Claim, run and record one delivered job. With ``defer_delete`` its message is
        deleted later in a batch (``flush_deletes``): the outcome is already recorded, and a
        message seen again meanwhile claims nothing. A job holding a concurrency limit takes
        a slot of it first, or waits outside the queue while there is none
        (``overseer.limits``)."""
        message = delivery.message
        store, queue = self.services.store, self.services.queue
        lease = self.settings.lease_seconds
        attempt = message.attempts + 1
        job_id = f"{message.graph_id}/{message.job_name}"
        limit = self._limit_of(message)
        holding: str | None = None
        if limit is not None and limit in self.limits:
            holder = Holder(self.worker_id, attempt, timeutil.iso_in(lease))
            admission = store.acquire_slot(limit, self.limits[limit], job_id, holder)
            if admission == Admission.FULL:
                return self._wait_for_slot(delivery, limit, defer_delete)
            if admission == Admission.TAKEN:
                # Another worker took this very attempt (a duplicate message).
                self._delete(delivery.receipt, defer_delete)
                return Outcome("skipped", message.graph_id, message.job_name)
            holding = limit
        try:
            stamp = timeutil.iso()
            record = store.transition(
                message.graph_id,
                message.job_name,
                CLAIM,
                fence=Fence(message.attempts),
                changes={
                    "attempts": attempt,
                    "lease_owner": self.worker_id,
                    "lease_expires_at": timeutil.iso_in(lease),
                    "heartbeat_at": stamp,
                    "started_at": stamp,
                    # Which worker, of which pool, ran it (kept after the job ends).
                    "worker": self.worker_id,
                    "worker_pool": self.settings.pool,
                },
                remove=["not_before", "dispatched_at"],
            )
            if record is None:
                # Duplicate or stale message: the job is someone else's, or already done.
                self._delete(delivery.receipt, defer_delete)
                return Outcome("skipped", message.graph_id, message.job_name)
            fence = Fence(attempt, self.worker_id)
            if limit is not None and holding is None:
                unknown = {"error": self._unknown_limit(record, limit)}
                outcome = self._record(record, fence, FAIL, "failed", unknown)
            else:
                with _Heartbeat(self.services, record, fence, delivery.receipt, holding) as heartbeat:
                    outcome = self._run_and_record(record, fence, heartbeat.lost.is_set)
        finally:
            if holding is not None:
                self._give_back(holding, job_id, Fence(attempt, self.worker_id))
        if outcome.kind == "released":
            # Visible again at once, for another worker.
            queue.extend_visibility(delivery.receipt, 0)
        else:
            self._delete(delivery.receipt, defer_delete)
        return outcome

    # -- concurrency limits -----------------------------------------------------------
    def _limit_of(self, message: JobMessage) -> str | None:
        """The limit the job holds: its graph's, else its handler's. A message from a sender
        that predates limits names no type: the job is read (only when limits are set)."""
        job_type, limit = message.job_type, message.limit
        if job_type is None and self.limits:
            record = self.services.store.get_job(message.graph_id, message.job_name)
            if record is not None:
                job_type, limit = record.type, record.limit
        if limit is None and job_type is not None:
            spec = self.handlers.get(job_type)
            limit = spec.limit if spec is not None else None
        return limit

    def _unknown_limit(self, record: JobRecord, limit: str) -> dict[str, str]:
        known = sorted(self.limits) or "none"
        return _error(
            "UnknownLimit",
            f"job {record.name!r} (type {record.type!r}) holds the concurrency limit {limit!r}, "
            f"which is not configured (configured: {known}): add it to 'limits' in cdk.json, "
            f"or pass --limit {limit}=N",
        )

    def _wait_for_slot(self, delivery: Delivery, limit: str, defer_delete: bool) -> Outcome:
        """Every slot of ``limit`` is held: the job waits outside the queue (parked, its
        message deleted) until a slot given back wakes it."""
        message, store = delivery.message, self.services.store
        parked = store.transition(
            message.graph_id,
            message.job_name,
            LIMIT_WAIT,
            fence=Fence(message.attempts),
            changes={"limit_wait": limit, "limit_since": message.waiting_since or timeutil.iso()},
        )
        self._delete(delivery.receipt, defer_delete)
        if parked is None:
            return Outcome("skipped", message.graph_id, message.job_name)
        # A slot given back while the job was being parked found no one to wake: look again.
        free = self.limits[limit] - len(live_holders(store.slot_holders(limit)))
        if free > 0:
            wake(store, limit, free)
        return Outcome("waiting", message.graph_id, message.job_name, f"for limit {limit!r}")

    def _give_back(self, limit: str, job_id: str, fence: Fence) -> None:
        """Give the slot back and wake the job that has waited longest for it."""
        try:
            if self.services.store.release_slot(limit, job_id, fence):
                wake(self.services.store, limit, 1)
        except Exception:
            # Its lease runs out instead, and the sweep wakes the waiters then.
            log.warning("could not give back a slot of limit %r held by %s", limit, job_id, exc_info=True)

    def _max_attempts(self, record: JobRecord, spec: HandlerSpec | None) -> int:
        return int(record.max_attempts or (spec and spec.max_attempts) or self.settings.default_max_attempts)

    def _job(self, record: JobRecord, max_attempts: int, scratch: Path) -> Job:
        return Job(
            graph_id=record.graph_id,
            name=record.name,
            type=record.type,
            args=record.args,
            attempt=record.attempts,
            max_attempts=max_attempts,
            scratch=scratch,
            deps=tuple(record.deps or ()),
            retry_on=tuple(record.retry_on),
            inputs_loader=lambda: load_inputs(self.services, record),
        )

    def _reload_handlers_if_changed(self) -> None:
        """The handlers' source changed (e.g. fixed before a rerun): read their settings
        and types again here too; the runner restarts its child itself."""
        changed = getattr(self.run_handler, "handlers_changed", None)
        if changed is None or not changed():
            return
        from .handlers import load_handlers

        try:
            self.handlers = load_handlers(self.settings.handlers)
        except Exception:
            log.warning("cannot reload the handlers from %s", self.settings.handlers, exc_info=True)
        if not self.settings.code_version:
            self.code_version = code_version(self.settings.handlers)

    def _run_and_record(self, record: JobRecord, fence: Fence, lease_lost: Callable[[], bool]) -> Outcome:
        self._reload_handlers_if_changed()
        spec = self.handlers.get(record.type)
        if spec is not None and record.timeout_seconds:
            spec = dataclasses.replace(spec, timeout_seconds=record.timeout_seconds)
        max_attempts = self._max_attempts(record, spec)
        if spec is None:
            error = {
                "type": "UnknownHandler",
                "message": f"no handler for job type {record.type!r} in {self.settings.handlers!r}",
            }
            return self._record(record, fence, FAIL, "failed", {"error": error})
        refusal = self._beyond_deadline(record, fence, spec)
        if refusal is not None:
            return refusal
        root = Path(self.settings.scratch_dir or tempfile.gettempdir()) / "overseer-scratch"
        scratch = root / f"{record.graph_id}-{record.name}-{record.attempts}-{uuid.uuid4().hex[:6]}"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            job = self._job(record, max_attempts, scratch)
            try:
                results = self.run_handler(spec, job, lambda: lease_lost() or self._grace_over())
                artifacts, expand = split_results(results)
                persisted = persist_artifacts(
                    artifacts,
                    store=self.services.artifacts,
                    default_bucket=self.settings.artifact_bucket,
                    allowed_buckets=self.settings.allowed_buckets,
                    row_sink=self.services.rows,
                )
                expansion = self._expansion(record, expand)
            except AbortJob as signal:
                return self._record(record, fence, ABORT, "aborted", {"reason": signal.message})
            except FaultJob as signal:
                return self._retry(record, fence, max_attempts, spec, _error("Fault", signal.message))
            except HandlerCrashed as exc:
                if self._grace_over() and not lease_lost():
                    return self._record(
                        record,
                        fence,
                        SHUTDOWN_RELEASE,
                        "released",
                        {"attempts": record.attempts - 1, "reason": "released by a worker shutting down"},
                    )
                return self._retry(record, fence, max_attempts, spec, _error("HandlerCrashed", str(exc)))
            except RemoteHandlerError as exc:
                error = _error(exc.type_name, exc.message, exc.traceback_text)
                if exc.retryable:
                    return self._retry(record, fence, max_attempts, spec, error)
                return self._record(record, fence, FAIL, "failed", {"error": error})
            except InvalidArtifact as exc:
                error = _error(type(exc).__name__, str(exc))
                return self._record(record, fence, FAIL, "failed", {"error": error})
            except Exception as exc:
                # The handler ran in this process (no isolation): match its retry_on here.
                error = _error(type(exc).__name__, str(exc)[:2000], short_traceback(exc))
                if spec.retries(exc, record.retry_on):
                    return self._retry(record, fence, max_attempts, spec, error)
                return self._record(record, fence, FAIL, "failed", {"error": error})
            finish: dict[str, Any] = {"artifacts": persisted.manifest, "rows": persisted.rows}
            if expansion is not None:
                finish.update(expansion=expansion, expand_made=0)
                if not expansion["count"]:
                    finish["expand_done_at"] = timeutil.iso()  # nothing to wait for
            outcome = self._record(
                record,
                fence,
                FINISH,
                "finished",
                finish,
                remove=["error", "reason"],
                add_jobs=expansion["count"] if expansion else 0,
            )
            if expansion is not None and outcome.kind == "lost":
                self.services.artifacts.delete(expansion["bucket"], expansion["key"])
            return outcome
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _beyond_deadline(self, record: JobRecord, fence: Fence, spec: HandlerSpec) -> Outcome | None:
        """A job this worker could not finish before it is stopped (``worker_deadline_seconds``
        after its start, AWS Batch's timeout less a grace): handed back without counting the
        attempt, for a younger worker, and this one takes no more jobs; a job no worker of
        this pool could finish fails, rather than going round the queue for ever."""
        deadline = self.settings.worker_deadline_seconds
        timeout = spec.timeout_seconds or self.settings.handler_timeout_seconds
        if not deadline or not timeout:
            return None
        if timeout > deadline:
            error = _error(
                "JobTooLong",
                f"its timeout of {timeout:g} s is longer than a worker of pool {self.settings.pool!r} "
                f"may run ({deadline} s): lower the job's timeout_seconds, or raise the pool's "
                "longestJobSeconds / batchTimeoutSeconds",
            )
            return self._record(record, fence, FAIL, "failed", {"error": error})
        left = deadline - (time.monotonic() - self.started)
        if timeout <= left:
            return None
        self.stop()
        reason = f"released: this worker had {left:.0f} s left, the job may take {timeout:g} s"
        return self._record(
            record, fence, SHUTDOWN_RELEASE, "released", {"attempts": record.attempts - 1, "reason": reason}
        )

    def _expansion(self, record: JobRecord, expand: Expand | None) -> dict[str, Any] | None:
        """The expansion this finish commits: ``expand`` checked and its items stored, or None
        when there is none, or when the job committed one already (a rerun keeps it)."""
        if expand is None:
            return None
        if record.expansion is not None:
            log.warning(
                "%s expanded again; its first committed expansion (%s items) stands",
                record.id,
                record.expansion["count"],
            )
            return None
        return prepare_expansion(
            expand,
            record,
            handler_types=self.handlers.keys(),
            settings=self.settings,
            artifacts=self.services.artifacts,
        )

    def _retry(
        self, record: JobRecord, fence: Fence, max_attempts: int, spec: HandlerSpec, error: dict[str, str]
    ) -> Outcome:
        """Try the job again after a jittered backoff (the handler's, else the settings'), or
        fail it when this was its last attempt."""
        if record.attempts >= max_attempts:
            error = {**error, "message": gave_up(error["message"], record.attempts)}
            return self._record(record, fence, FAIL, "failed", {"error": error})
        base = self.settings.fault_backoff_seconds if spec.backoff_seconds is None else spec.backoff_seconds
        cap = self.settings.fault_backoff_max_seconds
        if spec.backoff_max_seconds is not None:
            cap = spec.backoff_max_seconds
        delay = retry_delay(record.attempts, base, cap)
        return self._record(
            record, fence, RETRY, "retry", {"error": error, "not_before": timeutil.iso_in(delay)}
        )

    def _record(
        self,
        record: JobRecord,
        fence: Fence,
        transition: Any,
        kind: str,
        changes: dict[str, Any],
        remove: list[str] | None = None,
        add_jobs: int = 0,
    ) -> Outcome:
        if "error" in changes:
            # Every attempt's error stays on the job, not only the last one.
            changes = {**changes, "errors": error_history(record.errors, record.attempts, changes["error"])}
        if self.code_version:
            # Which code ran this attempt, written with its outcome (no request of its own).
            changes = {**changes, "code_version": self.code_version}
        done = self.services.store.transition(
            record.graph_id,
            record.name,
            transition,
            fence=fence,
            changes=changes,
            remove=[*(remove or []), "lease_owner", "lease_expires_at"],
            add_jobs=add_jobs,
        )
        if done is None:
            # We lost the job (lease expired and someone else took it, or it was cancelled):
            # the fence kept our outcome from overwriting theirs.
            return Outcome("lost", record.graph_id, record.name, f"{kind} not recorded")
        detail = done.error_text() or ""
        return Outcome(kind, record.graph_id, record.name, detail)
