"""cdk-nag (AwsSolutions pack) findings that this stack accepts, each with its reason.

cdk-nag 3 reports through CDK policy validation; an acknowledgment names the exact finding
(``AwsSolutions-IAM5[Resource::*]``), never a whole rule, and sits on the construct that
owns the resource. The infrastructure tests fail on any finding not listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

from infra.artifacts import EXPANSION_ITEMS_PREFIX

if TYPE_CHECKING:
    from infra.stack import OverseerStack

PACK = "AwsSolutions::"


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=PACK + rule, reason=reason))


def _artifact_objects(s: OverseerStack, pattern: str) -> str:
    """How cdk-nag names the resource of objects ``pattern`` of the artifact bucket."""
    if s.artifacts.created:
        return f"Resource::<ArtifactsBucket88671897.Arn>/{pattern}"
    return f"Resource::arn:<AWS::Partition>:s3:::{s.config.existing_bucket_name}/{pattern}"


def acknowledge_findings(stack: Stack) -> None:
    """Acknowledge the accepted findings on ``stack`` (an ``OverseerStack``)."""
    s: OverseerStack = stack  # type: ignore[assignment]

    # --- Lambdas -------------------------------------------------------------------------
    for function in (s.scheduler.function, s.sweep.function, s.api.function, s.triggers.function):
        _ack(
            function,
            "AwsSolutions-L1",
            "Pinned to Python 3.12: the bundled wheels (pip --python-version 3.12) and the "
            "worker image (python:3.12-slim) use the same version; bump all three together.",
        )
        assert function.role is not None
        _ack(
            function.role,  # its own role, beside the function (infra/function_factory.py)
            "AwsSolutions-IAM5[Resource::*]",
            "xray:PutTraceSegments / PutTelemetryRecords (active tracing) support no "
            "resource-level permissions"
            + (
                "; dynamodb:ListStreams (stream event source) neither"
                if function is s.scheduler.function
                else ""
            )
            + (
                "; batch:ListJobs (counting workers) and batch:DescribeJobs (a lost worker's host) neither"
                if function is s.sweep.function
                else ""
            )
            + ".",
        )

    # The scheduler reads an expansion's items and deletes those of attempts that did not
    # commit; the sweep's replay of a failed stream batch runs the scheduler's code.
    for function in (s.scheduler.function, s.sweep.function):
        assert function.role is not None
        _ack(
            function.role,
            f"AwsSolutions-IAM5[{_artifact_objects(s, EXPANSION_ITEMS_PREFIX + '*')}]",
            "Expansions' items files are keyed by graph, job and attempt, not known at deploy "
            "time; access is limited to Get/DeleteObject under the expansions prefix of the "
            "artifact bucket (no artifact).",
        )

    # The API presigns artifact downloads with its role (GET .../artifacts).
    assert s.api.function.role is not None
    _ack(
        s.api.function.role,
        f"AwsSolutions-IAM5[{_artifact_objects(s, '*')}]",
        "GET /graphs/{id}/jobs/{job}/artifacts presigns downloads of the job's artifacts, whose "
        "keys the handlers chose: read only (GetObject), objects of the artifact bucket.",
    )
    for name in s.config.allowed_buckets:
        _ack(
            s.api.function.role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]",
            f"allowedBuckets: artifacts written to {name} are downloaded through the API too "
            "(GetObject only).",
        )

    # --- Workers (every pool's) -------------------------------------------------------
    computes = []
    for workers in s.pools.values():
        pool = workers.pool
        _ack(
            workers.job_role,
            f"AwsSolutions-IAM5[{_artifact_objects(s, '*')}]",
            "Workers write artifacts under keys derived from graph and job ids, not known at "
            "deploy time; access is limited to Get/Put/AbortMultipartUpload of objects of the "
            "artifact bucket (no delete).",
        )
        for name in s.config.allowed_buckets:
            _ack(
                workers.job_role,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]",
                f"allowedBuckets: handlers may write artifacts anywhere in {name} (Get before Put "
                "to skip identical objects, Put, AbortMultipartUpload; no delete).",
            )
        # What the user configured for the worker role is the user's decision.
        for policy in pool.worker_policies:
            for wildcard in [f"Action::{a}" for a in policy.actions if "*" in a] + [
                f"Resource::{r}" for r in policy.resources if "*" in r
            ]:
                _ack(workers.job_role, f"AwsSolutions-IAM5[{wildcard}]", "Configured in workerPolicies.")
        for arn in pool.worker_managed_policies:
            _ack(
                workers.job_role, f"AwsSolutions-IAM4[Policy::{arn}]", "Configured in workerManagedPolicies."
            )
        if workers.compute_environment not in computes:  # pools may share one
            computes.append(workers.compute_environment)
            _ack(
                workers.compute_environment,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonEC2ContainerServiceforEC2Role]",
                "The Batch instance role needs the ECS agent permissions of this AWS-maintained "
                "policy; containers run with their own job role, not the instance role.",
            )
        _ack(
            workers.container,
            "AwsSolutions-IAM5[Resource::*]",
            "The ECS execution role's ecr:GetAuthorizationToken supports no resource-level "
            "permissions; image pulls are limited to the asset repository.",
        )

    # --- Queues and bucket ---------------------------------------------------------------
    _ack(
        s.dispatch.delivery_failures,
        "AwsSolutions-SQS3",
        "This queue is itself a dead-letter destination (the trigger rules' DLQ and the "
        "trigger function's on-failure destination); it has no DLQ of its own.",
    )
    _ack(
        s.dispatch.stream_failures,
        "AwsSolutions-SQS3",
        "This queue is itself the scheduler stream mapping's on-failure destination; the "
        "sweep replays and deletes its messages (a message it cannot replay stays, and the "
        "StreamFailures alarm fires); it has no DLQ of its own.",
    )
    _ack(
        s.monitoring.blocked_queue,
        "AwsSolutions-SQS3",
        "It collects Batch's blocked-queue events for people to read (the WorkersBlocked "
        "alarm); nothing consumes it, so there is nothing to dead-letter.",
    )
    if s.artifacts.created:
        _ack(
            s.artifacts.bucket,
            "AwsSolutions-S1",
            "Every artifact write is recorded in the jobs table (artifact manifest with key, "
            "size, sha256); enable CloudTrail S3 data events for request-level auditing "
            "instead of a second log bucket.",
        )

    # --- API -----------------------------------------------------------------------------
    api = s.api.rest_api
    if s.config.api_gateway_account:
        _ack(
            api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role; this AWS-managed policy is the "
            "documented way to let API Gateway write execution and access logs.",
        )
    _ack(
        api,
        "AwsSolutions-COG4",
        "Every method uses IAM (SigV4) authorization: callers are AWS principals (CLI, "
        "services, pipelines), not end users of a Cognito user pool.",
    )
    _ack(
        api,
        "AwsSolutions-APIG3",
        "IAM authorization rejects unsigned requests before integration; stage throttling "
        "limits signed ones. Attach a WAF web ACL to the stage if the API is exposed widely.",
    )
