"""The one helper that builds every Overseer Lambda (same code asset, runtime and settings)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.lambda_code import RUNTIME

METRICS_NAMESPACE = "Overseer"


class FunctionFactory:
    """Builds the project's Lambdas: Python 3.12, x86_64, tracing active, Powertools settings,
    a log group with the configured retention, a role that may write to that log group
    only, and the engine's OVERSEER_* environment.

    Example
    -------
    >>> factory = FunctionFactory(code=code, environment=env, log_retention=retention)
    >>> scheduler = factory.build(self, "Function", handler="functions.scheduler.handler",
    ...                           service="scheduler", timeout_seconds=60)
    """

    def __init__(
        self,
        *,
        code: lambda_.Code,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
    ) -> None:
        self.code = code
        self.environment = dict(environment)
        self.log_retention = log_retention
        self.functions: dict[str, lambda_.Function] = {}

    def build(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        service: str,
        description: str,
        timeout_seconds: int = 60,
        memory_size: int = 512,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            scope,
            f"{construct_id}Logs",
            retention=self.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Its own role instead of AWSLambdaBasicExecutionRole (logs on every group): write
        # to this function's log group only. Tracing adds the X-Ray statement by itself.
        role = iam.Role(
            scope,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Overseer {service} Lambda",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                # The log group's Arn attribute ends in ":*": it covers the group's streams.
                resources=[log_group.log_group_arn],
            )
        )
        function = lambda_.Function(
            scope,
            construct_id,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            code=self.code,
            handler=handler,
            description=description,
            timeout=Duration.seconds(timeout_seconds),
            memory_size=memory_size,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            role=role,
            environment={
                **self.environment,
                "POWERTOOLS_SERVICE_NAME": f"overseer-{service}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                "POWERTOOLS_LOGGER_LOG_EVENT": "false",
            },
        )
        self.functions[service] = function
        return function
