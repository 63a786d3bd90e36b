"""API: a REST API (API Gateway) over ``functions.api.handler``, IAM auth on every method."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.function_factory import FunctionFactory

# Route table: (path, HTTP method). The Lambda routes them (Powertools event handler).
ROUTES = (
    ("/graphs", "POST"),
    ("/graphs", "GET"),
    ("/graphs/{id}", "GET"),
    ("/graphs/{id}/jobs", "GET"),
    ("/graphs/{id}/jobs/{job}", "GET"),
    ("/graphs/{id}/jobs/{job}/logs", "GET"),
    ("/graphs/{id}/jobs/{job}/artifacts", "GET"),
    ("/graphs/{id}/cancel", "POST"),
    ("/graphs/{id}/rerun", "POST"),
    ("/limits", "GET"),
)

# Checked by API Gateway before the Lambda runs. The body is either an inline graph (the
# graph file format: id, args, jobs) or a template start ({"template": NAME, "args": {...}}).
# The function validates the details and answers 4xx with a clear message; this model caps
# sizes. API Gateway itself rejects bodies over 10 MB and Lambda over 6 MB.
SUBMIT_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="SubmitGraph",
    type=apigw.JsonSchemaType.OBJECT,
    min_properties=1,
    max_properties=16,
    properties={
        "id": apigw.JsonSchema(
            type=apigw.JsonSchemaType.STRING,
            min_length=1,
            max_length=200,
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        ),
        "template": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128),
        "args": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT, max_properties=256),
        "jobs": apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT, min_properties=1, max_properties=100_000),
    },
)


class Api(Construct):
    """The REST API.

    ``POST /graphs``, ``GET /graphs``, ``GET /graphs/{id}``, ``GET /graphs/{id}/jobs``,
    ``GET /graphs/{id}/jobs/{job}`` (and its ``/logs`` and ``/artifacts``),
    ``POST /graphs/{id}/cancel``, ``POST /graphs/{id}/rerun``, ``GET /limits``; every method requires a
    SigV4-signed request (``AWS_IAM``). Requests are validated (path parameters; the
    submit body against ``SUBMIT_SCHEMA``), throttled, traced and access-logged.

    With ``manage_account`` the stack also sets the region's API Gateway logging role
    (``AWS::ApiGateway::Account``, retained when the stack is deleted); without it the
    account must have one already, or the stage's logging fails to deploy.

    Attributes
    ----------
    function, rest_api, access_logs:
        The API Lambda, the REST API and its access log group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        factory: FunctionFactory,
        log_retention: logs.RetentionDays,
        manage_account: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.build(
            self,
            "Function",
            handler="functions.api.handler",
            service="api",
            description="Overseer API: submit, inspect, cancel and rerun graphs",
            timeout_seconds=29,
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            description="Overseer for AWS: job graphs",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The logging role is account-wide (AWS::ApiGateway::Account, one per region):
            # other APIs rely on it, so it outlives the stack. Off when the account sets it
            # up elsewhere (apiGatewayAccount=false).
            cloud_watch_role=manage_account,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if manage_account else None,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.INFO,
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=50,
                throttling_burst_limit=100,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        params_validator = self.rest_api.add_request_validator("Parameters", validate_request_parameters=True)
        body_validator = self.rest_api.add_request_validator(
            "BodyAndParameters", validate_request_body=True, validate_request_parameters=True
        )
        submit_model = self.rest_api.add_model(
            "SubmitGraph", content_type="application/json", schema=SUBMIT_SCHEMA
        )
        integration = apigw.LambdaIntegration(self.function)

        graphs = self.rest_api.root.add_resource("graphs")
        graphs.add_method(
            "POST",
            integration,
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=body_validator,
            request_models={"application/json": submit_model},
        )
        # The graphs newest first (query parameters: status, since, until, limit, after).
        graphs.add_method(
            "GET",
            integration,
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=params_validator,
        )
        graph = graphs.add_resource("{id}")
        id_param = {"method.request.path.id": True}
        graph.add_method(
            "GET",
            integration,
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=params_validator,
            request_parameters=id_param,
        )
        resources = {}
        for path, method in (("jobs", "GET"), ("cancel", "POST"), ("rerun", "POST")):
            resources[path] = graph.add_resource(path)
            resources[path].add_method(
                method,
                integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=params_validator,
                request_parameters=id_param,
            )
        # One job, its log lines (CloudWatch Logs) and its artifacts' download URLs.
        job = resources["jobs"].add_resource("{job}")
        job_params = {**id_param, "method.request.path.job": True}
        for resource in (job, job.add_resource("logs"), job.add_resource("artifacts")):
            resource.add_method(
                "GET",
                integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=params_validator,
                request_parameters=job_params,
            )
        # Each concurrency limit: its size, holders and waiting jobs (overseer.limits).
        self.rest_api.root.add_resource("limits").add_method(
            "GET",
            integration,
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=params_validator,
        )
