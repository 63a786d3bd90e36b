"""Settings: the one place that reads the environment.

Priority is argument > environment > default. AWS endpoint, region and credentials are
*not* read here: boto3 reads them itself (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_PROFILE``...), so the same code runs against AWS, the emulator or LocalStack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

ENV_PREFIX = "OVERSEER_"
# Where a local stack (the embedded backend) keeps its state unless told otherwise.
DEFAULT_STATE_DIR = Path(".overseer")


def logs_dir(state_dir: str | Path) -> Path:
    """Where a state directory keeps logs: each job's output (``<graph>/<job>.<attempt>.log``)
    and a local stack's worker logs (``workers/``)."""
    return Path(state_dir) / "logs"


def job_log_path(log_dir: str | Path, graph_id: str, job_name: str, attempt: int) -> Path:
    """Where the child writes one attempt's output: ``<log_dir>/<graph_id>/<job>.<attempt>.log``."""
    return Path(log_dir) / graph_id / f"{quote(job_name, safe='')}.{attempt}.log"


@dataclass(frozen=True)
class Settings:
    """Names of the stack's resources and the engine's tunables.

    Each field is read from ``OVERSEER_<FIELD NAME IN CAPITALS>``, e.g.
    ``OVERSEER_JOBS_TABLE``. ``allowed_buckets`` is a comma-separated list.
    """

    # "aws": DynamoDB, SQS, S3; "embedded": SQLite and a directory under state_dir.
    backend: str = "aws"
    state_dir: str = ""
    graphs_table: str = "overseer-graphs"
    jobs_table: str = "overseer-jobs"
    queue_url: str = ""
    dead_letter_queue_url: str = ""
    # The default pool's queues of high- and low-priority jobs ("" = none: every job goes to
    # ``queue_url``; ``overseer.priority``).
    high_queue_url: str = ""
    low_queue_url: str = ""
    # The scheduler's on-failure destination: stream batches it gave up on, which the sweep
    # reads again from the stream and replays ("" = none).
    stream_failures_queue_url: str = ""
    artifact_bucket: str = "overseer-artifacts"
    # Buckets a handler may write to besides the artifact bucket.
    allowed_buckets: tuple[str, ...] = ()
    # Import path or .py file exposing HANDLERS.
    handlers: str = ""
    scratch_dir: str = ""
    # A claimed job's lease; the worker renews it every lease_seconds / 3.
    lease_seconds: int = 120
    # The worker exits after this long with an empty queue (0 = never).
    idle_exit_seconds: int = 0
    # The worker exits when this process, its parent (a local run or stack), is gone: a
    # killed runner leaves no orphan, and no idle exit is needed (0 = not watched).
    parent_pid: int = 0
    # Long-poll wait of one SQS receive.
    receive_wait_seconds: int = 20
    # Backoff of a faulted job: base * 2 ** (attempt - 1), capped.
    fault_backoff_seconds: float = 1.0
    fault_backoff_max_seconds: float = 900.0
    default_max_attempts: int = 5
    # The sweep treats a lease as expired this long after its expiry (bound on clock skew).
    clock_skew_seconds: int = 30
    # How often `overseer run` sweeps (the stack's sweep Lambda runs every minute).
    sweep_interval_seconds: int = 5
    # One sweep at a time: the sweep holds a lease this long at most (given back when it
    # ends). On AWS longer than the sweep Lambda's 55-second timeout; a sweep that died keeps
    # the others away this long, so a local run, whose sweeps take milliseconds, keeps it short.
    sweep_lease_seconds: int = 120
    # A graph still `creating` this long after its submission began (the submission stopped
    # half-way) is rolled back by the sweep.
    creating_timeout_seconds: int = 600
    # "process": handlers run in a supervised warm child process; "none": in the worker itself.
    isolation: str = "process"
    # Address-space limit of the handler process (0 = none), and default timeout (0 = none).
    handler_memory_mb: int = 0
    handler_timeout_seconds: int = 0
    # On SIGTERM, how long the running job may go on before it is released to the queue.
    shutdown_grace_seconds: int = 20
    # EventBridge bus that receives "Graph Finished" / "Graph Failed" events ("" = none).
    event_bus: str = ""
    # Directory of graph templates (<name>.yaml / .json) that the API and triggers start.
    templates_dir: str = ""
    # AWS Batch scaling by the sweep: queue, job definition, and the most workers at once.
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    max_workers: int = 16
    # Jobs (queued messages) one worker is expected to drain per sweep interval.
    jobs_per_worker: int = 50
    # The worker pool this process belongs to (a worker takes jobs from its pool's queue),
    # and every pool of the stack or run as JSON (``overseer.pools``; "" = the default only).
    pool: str = "default"
    pools: str = ""
    # The version of the handler code this worker runs, recorded on every job it runs: on
    # AWS the worker image's asset hash (set by the stack); "" = a hash of the handlers'
    # source files (``overseer.isolation.code_version``).
    code_version: str = ""
    # Concurrency limits as JSON, name -> how many jobs holding it may run at once
    # (``overseer.limits``; "" = none).
    limits: str = ""
    # A worker takes no new job this long after its start (0 = no limit), and refuses (hands
    # back, attempt not counted) a job it could not finish by its deadline: seconds after its
    # start when it is stopped (AWS Batch's timeout, less a grace; 0 = none).
    worker_lifetime_seconds: int = 0
    worker_deadline_seconds: int = 0
    # The most items (children) one Expand may list, and bytes of its items as JSON.
    max_expand_items: int = 10_000
    max_expand_bytes: int = 16 * 1024 * 1024
    # How long one scheduler invocation makes children before it hands on (a record of the
    # parent carries on from where it stopped).
    expand_budget_seconds: float = 30.0
    # "package.module:function" called with every botocore client the engine builds ("" = none):
    # the one place where test tooling (e.g. fault injection) attaches to the engine.
    client_hook: str = ""
    # Directory where each process writes how many AWS requests it made, by operation, at
    # exit ("" = not counted): how `overseer run --json` reports its workers' requests.
    request_log: str = ""
    # Days an ended graph and its jobs are kept (0 = for ever): on AWS each ended item carries
    # ``expires_at`` for DynamoDB's time to live (``overseer.items.expires_at``); the stack
    # sets it from cdk.json's ``retentionDays``. Locally, ``overseer gc`` deletes.
    retention_days: int = 0
    # CloudWatch Logs group of the deployed workers, read by `overseer logs --api`.
    worker_log_group: str = "/aws/batch/job"
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from ``environ`` (default: ``os.environ``). ``defaults`` replace the
        class defaults where the environment says nothing (e.g. a local run's short lease);
        ``overrides`` that are not None win over both."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, tuple):
                values[f.name] = tuple(b.strip() for b in raw.split(",") if b.strip())
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` return these settings (for subprocesses)."""
        env: dict[str, str] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
