"""A stand-in for AWS Batch: each SubmitJob starts a worker container as the job definition says.

Only what the stack uses is modelled: SubmitJob (the queue and the job definition must be
among the template's; a stack with worker pools has one of each per pool), ListJobs of one
job queue and DescribeJobs with statuses taken from the containers, and a host loss
(``reclaim``) that fails the attempt with Batch's ``Host EC2 ...`` reason and retries it as
the job definition's retry strategy says. The container gets the submitted job
definition's environment, user, volumes and memory; Batch's own variables; credentials of
that job definition's job role from the container credentials endpoint (never static
keys); and one deviation: ``AWS_ENDPOINT_URL`` pointing at the rehearsal's gateway.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.rehearsal import docker_env
from tests.rehearsal.gateway import Gateway, Principal
from tests.rehearsal.permissions import Permission
from tests.rehearsal.template import ACCOUNT, REGION, Template


@dataclass(frozen=True)
class JobDefinition:
    """One of the template's job definitions, resolved, with the principals ECS gives its
    container (the job role) and uses to start it (the execution role)."""

    logical_id: str
    arn: str
    properties: dict[str, Any]
    job_role: Principal
    execution_role: Principal

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.properties["ContainerProperties"])

    @property
    def environment(self) -> dict[str, str]:
        return {e["Name"]: e["Value"] for e in self.container.get("Environment", [])}

    def named_by(self, given: str | None) -> bool:
        """Whether SubmitJob's ``jobDefinition`` (an ARN, ``name:revision`` or ``name``) names it."""
        name_and_revision = self.arn.rsplit("/", 1)[-1]
        return given in (self.arn, name_and_revision, name_and_revision.rsplit(":", 1)[0])


@dataclass
class Attempt:
    container: docker_env.Container
    started_at: int
    status_reason: str = ""
    exit_code: int | None = None
    stopped_at: int | None = None
    lines_shipped: int = 0


@dataclass
class BatchJob:
    job_id: str
    name: str
    queue: str
    definition: JobDefinition
    created_at: int
    attempts: list[Attempt] = field(default_factory=list)
    status: str = "SUBMITTED"
    status_reason: str = ""

    @property
    def arn(self) -> str:
        return f"arn:aws:batch:{REGION}:{ACCOUNT}:job/{self.job_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class BatchStandIn:
    """Runs the worker image for each submitted job; answers the Batch API the stack calls."""

    def __init__(
        self,
        *,
        template: Template,
        image: str,
        gateway: Gateway,
        principal_for_role: Callable[[str, Any], Principal],
        scratch_dir: Path,
    ) -> None:
        """``principal_for_role(name, role_arn_expression)``: the principal of a role of the
        template, named ``name`` in the gateway's record."""
        self.template = template
        self.image = image
        self.gateway = gateway
        self.scratch_dir = scratch_dir
        self.jobs: dict[str, BatchJob] = {}
        self._lock = threading.Lock()
        self.queue_arns = [
            template.get_att(queue_id, "JobQueueArn") for queue_id in template.of_type("AWS::Batch::JobQueue")
        ]
        self.definitions: list[JobDefinition] = []
        for definition_id in template.of_type("AWS::Batch::JobDefinition"):
            roles = template.props(definition_id)["ContainerProperties"]  # as Fn::GetAtt, unresolved
            properties = template.resolve(template.props(definition_id))
            variables = properties["ContainerProperties"].get("Environment", [])
            # The record names a worker by its pool: "worker" (the default pool's), "worker-large".
            pool = next((v["Value"] for v in variables if v["Name"] == "OVERSEER_POOL"), "default")
            name = "worker" if pool == "default" else f"worker-{pool}"
            self.definitions.append(
                JobDefinition(
                    logical_id=definition_id,
                    arn=template.ref(definition_id),
                    properties=properties,
                    job_role=principal_for_role(name, roles["JobRoleArn"]),
                    execution_role=principal_for_role(f"{name}-execution", roles["ExecutionRoleArn"]),
                )
            )

    def _queue_named(self, given: str | None) -> str | None:
        return next((arn for arn in self.queue_arns if given in (arn, arn.rsplit("/", 1)[-1])), None)

    # -- the API ---------------------------------------------------------------------------

    def __call__(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        operation = path.rstrip("/").rsplit("/", 1)[-1].lower()
        handler = {"submitjob": self._submit, "listjobs": self._list, "describejobs": self._describe}.get(
            operation
        )
        if handler is None:
            return 400, {"__type": "ClientException", "message": f"not modelled: {method} {path}"}
        return handler(body)

    def _submit(self, body: dict[str, Any]) -> tuple[int, Any]:
        queue = self._queue_named(body.get("jobQueue"))
        if queue is None:
            return 400, {
                "__type": "ClientException",
                "message": f"job queue {body.get('jobQueue')} not found",
            }
        definition = next((d for d in self.definitions if d.named_by(body.get("jobDefinition"))), None)
        if definition is None:
            return 400, {
                "__type": "ClientException",
                "message": f"job definition {body.get('jobDefinition')} not found",
            }
        job = BatchJob(str(uuid.uuid4()), body["jobName"], queue, definition, _now_ms())
        with self._lock:
            self.jobs[job.job_id] = job
        self._start_attempt(job)
        return 200, {"jobArn": job.arn, "jobName": job.name, "jobId": job.job_id}

    def _list(self, body: dict[str, Any]) -> tuple[int, Any]:
        # Batch lists one job queue's jobs (the stack never lists array or multi-node jobs).
        queue = self._queue_named(body.get("jobQueue"))
        if queue is None:
            return 400, {
                "__type": "ClientException",
                "message": f"job queue {body.get('jobQueue')} not found",
            }
        wanted = body.get("jobStatus", "RUNNING")
        summaries = [self._summary(j) for j in self._refreshed() if j.queue == queue and j.status == wanted]
        return 200, {"jobSummaryList": summaries}

    def _describe(self, body: dict[str, Any]) -> tuple[int, Any]:
        known = {j.job_id: j for j in self._refreshed()}
        return 200, {"jobs": [self._detail(known[i]) for i in body.get("jobs", []) if i in known]}

    # -- jobs and their containers ---------------------------------------------------------

    def _start_attempt(self, job: BatchJob) -> None:
        definition = job.definition
        container = definition.container
        environment = definition.environment
        environment.update(self._secrets(definition, container.get("Secrets", [])))
        environment.update(
            {
                "AWS_BATCH_JOB_ID": job.job_id,
                "AWS_BATCH_JOB_ATTEMPT": str(len(job.attempts) + 1),
                "AWS_BATCH_JQ_NAME": job.queue.rsplit("/", 1)[-1],
                "AWS_BATCH_CE_NAME": "rehearsal",
                "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
                # ECS gives RELATIVE_URI on 169.254.170.2; here the same protocol on loopback.
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": self.gateway.credentials_uri(definition.job_role),
                # The one deviation from the job definition: calls reach the emulator.
                "AWS_ENDPOINT_URL": self.gateway.url,
            }
        )
        volumes = {v["Name"]: v.get("Host", {}).get("SourcePath") for v in container.get("Volumes", [])}
        mounts = []
        for mount in container.get("MountPoints", []):
            source = volumes[mount["SourceVolume"]]
            # The instance's /scratch (made by the boot script, mode 1777) is a directory here.
            host = self.scratch_dir if source == "/scratch" else Path(str(source))
            mounts.append((str(host), mount["ContainerPath"], bool(mount.get("ReadOnly"))))
        memory = next(
            (int(r["Value"]) for r in container.get("ResourceRequirements", []) if r["Type"] == "MEMORY"),
            container.get("Memory"),
        )
        started = docker_env.run_container(
            self.image,
            name=docker_env.unique_name("worker"),
            env=environment,
            user=container.get("User"),
            mounts=mounts,
            memory_mib=int(memory) if memory else None,
            command=container.get("Command", []),
        )
        with self._lock:
            job.attempts.append(Attempt(started, _now_ms()))
            job.status = "RUNNING"

    def _secrets(self, definition: JobDefinition, secrets: list[dict[str, str]]) -> dict[str, str]:
        """ECS fetches the job's secrets with the execution role before the container starts."""
        values = {}
        for secret in secrets:
            check = self.gateway.check(
                definition.execution_role, Permission("secretsmanager:GetSecretValue", secret["ValueFrom"])
            )
            if not check.allowed:
                raise AssertionError(f"execution role cannot read secret {secret['ValueFrom']}")
            values[secret["Name"]] = f"rehearsal-secret-of-{secret['Name']}"
        return values

    def _refreshed(self) -> list[BatchJob]:
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            with self._lock:
                attempt = job.attempts[-1] if job.status == "RUNNING" and job.attempts else None
            if attempt is None or attempt.container.status() == "running":
                continue
            code = attempt.container.exit_code()
            with self._lock:
                # Another thread may have retried the job meanwhile (a reclaim): the ending
                # belongs to the attempt inspected, not to the job's newer one.
                if job.status != "RUNNING" or job.attempts[-1] is not attempt:
                    continue
                attempt.exit_code, attempt.stopped_at = code, _now_ms()
                attempt.status_reason = attempt.status_reason or "Essential container in task exited"
                job.status = "SUCCEEDED" if code == 0 else "FAILED"
                job.status_reason = attempt.status_reason
        return jobs

    def reclaim(self, job_id: str) -> None:
        """The instance under a job is lost (a Spot reclaim): the container dies at once, the
        attempt fails with Batch's reason, and the retry strategy decides what comes next."""
        job = self.jobs[job_id]
        with self._lock:
            attempt = job.attempts[-1]
            attempt.status_reason = f"Host EC2 (instance i-{uuid.uuid4().hex[:17]}) terminated."
            attempt.exit_code, attempt.stopped_at = None, _now_ms()
            retried = self._retries(job, attempt.status_reason)
            # As Batch does: a retried job waits RUNNABLE for its next attempt; one that is
            # not retried has failed. Either way no other thread ends it from the dead container.
            job.status = "RUNNABLE" if retried else "FAILED"
            job.status_reason = attempt.status_reason
        attempt.container.kill()
        if retried:
            self._start_attempt(job)

    def _retries(self, job: BatchJob, reason: str) -> bool:
        strategy = job.definition.properties.get("RetryStrategy", {})
        if len(job.attempts) >= int(strategy.get("Attempts", 1)):
            return False
        for rule in strategy.get("EvaluateOnExit", []):
            if fnmatch.fnmatchcase(reason, rule.get("OnStatusReason", "*")):
                return str(rule["Action"]).upper() == "RETRY"
        return False

    def ship_logs(self, logs: Any) -> int:
        """What the awslogs driver does for each container: its output, line by line, as
        events of the stream ``<prefix>/worker/<job id>`` in the job definition's log group
        (created when missing, as the stack's is). Only the lines not shipped before;
        returns how many. ``logs``: a CloudWatch Logs client of the emulator itself."""
        shipped = 0
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            options = job.definition.container["LogConfiguration"]["Options"]
            group = options["awslogs-group"]
            for attempt in job.attempts:
                lines = [line for line in attempt.container.logs().splitlines() if line]
                new = lines[attempt.lines_shipped :]
                if not new:
                    continue
                stream = f"{options['awslogs-stream-prefix']}/worker/{job.job_id}"
                if attempt.lines_shipped == 0:
                    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                        logs.create_log_group(logGroupName=group)
                    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                        logs.create_log_stream(logGroupName=group, logStreamName=stream)
                now = _now_ms()
                events = [{"timestamp": now, "message": line} for line in new]
                for start in range(0, len(events), 1000):
                    logs.put_log_events(
                        logGroupName=group, logStreamName=stream, logEvents=events[start : start + 1000]
                    )
                attempt.lines_shipped = len(lines)
                shipped += len(new)
        return shipped

    def containers(self) -> list[docker_env.Container]:
        with self._lock:
            return [a.container for j in self.jobs.values() for a in j.attempts]

    def running(self) -> list[BatchJob]:
        return [j for j in self._refreshed() if j.status == "RUNNING"]

    def _summary(self, job: BatchJob) -> dict[str, Any]:
        return {
            "jobArn": job.arn,
            "jobId": job.job_id,
            "jobName": job.name,
            "createdAt": job.created_at,
            "status": job.status,
            "statusReason": job.status_reason,
        }

    def _detail(self, job: BatchJob) -> dict[str, Any]:
        attempts = [
            {
                "container": {"exitCode": a.exit_code, "taskArn": f"task/{job.job_id}"},
                "startedAt": a.started_at,
                "stoppedAt": a.stopped_at,
                "statusReason": a.status_reason,
            }
            for a in job.attempts
            if a.stopped_at is not None
        ]
        return {
            **self._summary(job),
            "jobQueue": job.queue,
            "jobDefinition": job.definition.arn,
            "attempts": attempts,
            "dependsOn": [],
            "container": {},
        }
