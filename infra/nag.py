"""cdk-nag (AwsSolutions pack) findings that this stack accepts, each with its reason.

cdk-nag 3 reports through CDK policy validation; an acknowledgment names the exact finding
(``AwsSolutions-IAM5[Resource::*]``), never a whole rule, and sits on the construct that
owns the resource. The infrastructure tests fail on any finding not listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import OverseerStack

PACK = "AwsSolutions::"
LAMBDA_BASIC = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"
)


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=PACK + rule, reason=reason))


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
        _ack(
            function,
            LAMBDA_BASIC,
            "AWSLambdaBasicExecutionRole only allows writing the function's own CloudWatch "
            "logs; it is the AWS-recommended baseline for Lambda.",
        )
        _ack(
            function,
            "AwsSolutions-IAM5[Resource::*]",
            "xray:PutTraceSegments / PutTelemetryRecords (active tracing) support no "
            "resource-level permissions"
            + (
                "; dynamodb:ListStreams (stream event source) neither"
                if function is s.scheduler.function
                else ""
            )
            + ("; batch:ListJobs (counting workers) neither" if function is s.sweep.function else "")
            + ".",
        )

    # --- Workers -------------------------------------------------------------------------
    _ack(
        s.workers.job_role,
        "AwsSolutions-IAM5[Resource::<ArtifactsBucket88671897.Arn>/*]"
        if s.artifacts.created
        else f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{s.config.existing_bucket_name}/*]",
        "Workers write artifacts under keys derived from graph and job ids, not known at "
        "deploy time; access is limited to Get/Put/AbortMultipartUpload of objects of the "
        "artifact bucket (no delete).",
    )
    for name in s.config.allowed_buckets:
        _ack(
            s.workers.job_role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]",
            f"allowedBuckets: handlers may write artifacts anywhere in {name} (Put only).",
        )
    _ack(
        s.workers.compute_environment,
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AmazonEC2ContainerServiceforEC2Role]",
        "The Batch instance role needs the ECS agent permissions of this AWS-maintained "
        "policy; containers run with their own job role, not the instance role.",
    )
    _ack(
        s.workers.container,
        "AwsSolutions-IAM5[Resource::*]",
        "The ECS execution role's ecr:GetAuthorizationToken supports no resource-level "
        "permissions; image pulls are limited to the asset repository.",
    )

    # --- Queues and bucket ---------------------------------------------------------------
    _ack(
        s.dispatch.delivery_failures,
        "AwsSolutions-SQS3",
        "This queue is itself a dead-letter destination (the scheduler stream mapping's "
        "on-failure destination and the trigger rules' DLQ); it has no DLQ of its own.",
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
