"""Infrastructure tests: synthesise the real stack once and check what a user would check.

The stack is built from the repository's cdk.json context, with the cdk-nag AwsSolutions
pack attached, into a temporary cloud assembly (one synth per session, ~20 s the first
time, when the Lambda dependencies are downloaded into .cache/, ~10 s after).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

import aws_cdk as cdk
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.app import build_app
from infra.artifacts import EXPANSION_ITEMS_PREFIX
from infra.config import ConfigError, DeploymentConfig
from infra.stack import OverseerStack
from overseer.expansion import items_key

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTEXT: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
REQUIRED_ENV = (
    "OVERSEER_GRAPHS_TABLE",
    "OVERSEER_JOBS_TABLE",
    "OVERSEER_QUEUE_URL",
    "OVERSEER_DEAD_LETTER_QUEUE_URL",
    "OVERSEER_ARTIFACT_BUCKET",
    "OVERSEER_HANDLERS",
    "OVERSEER_LEASE_SECONDS",
    "OVERSEER_EVENT_BUS",
)


@dataclass
class Synthesis:
    stack: OverseerStack
    template: Template
    resources: dict[str, dict[str, Any]]
    outdir: Path
    validation_error: str | None

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_}

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


# A second configuration: every option the default cdk.json leaves off.
VARIANT_CONTEXT: dict[str, Any] = {
    **CONTEXT,
    "spot": False,
    "scratchVolumeGiB": 0,
    "existingBucketName": "my-data-bucket",
    "allowedBuckets": ["my-exports"],
    "eventBusName": "overseer-events",
    "triggers": [
        {
            "name": "on-upload",
            "eventPattern": {"source": ["my.app"], "detail-type": ["Report Wanted"]},
            "template": "daily_report",
            "args": [{"company_id": n} for n in range(1, 8)],
        }
    ],
}


def _synthesise(outdir: Path, context: dict[str, Any]) -> Synthesis:
    app = cdk.App(outdir=str(outdir), context=dict(context))
    _, stack = build_app(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    error = None
    try:
        app.synth()
    except RuntimeError as exc:  # policy validation failed: the report says why
        error = str(exc)
    data = json.loads((outdir / stack.template_file).read_text())
    return Synthesis(
        stack=stack,
        template=Template.from_json(data),
        resources=data["Resources"],
        outdir=outdir,
        validation_error=error,
    )


# The session fixtures ``synth`` and ``variant`` (one synth each) are in conftest.py.


def _statements(synth: Synthesis, role_logical_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if {"Ref": role_logical_id} in roles:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    return actions


# --- cdk-nag and cfn-lint ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["synth", "variant"])
def test_cdk_nag_aws_solutions_has_no_unacknowledged_findings(
    which: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesis = request.getfixturevalue(which)
    report_file = synth.outdir / "validation-report.json"
    violations = []
    if report_file.exists():
        for plugin in json.loads(report_file.read_text())["pluginReports"]:
            for violation in plugin["violations"]:
                paths = [c["constructPath"] for c in violation["violatingConstructs"]]
                violations.append(f"{violation['severity']} {violation['ruleName']} {paths}")
    assert violations == [], "\n".join(violations)
    assert synth.validation_error is None


@pytest.mark.parametrize("which", ["synth", "variant"])
def test_cfn_lint_reports_no_error(which: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesis = request.getfixturevalue(which)
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(synth.outdir / synth.stack.template_file, ManualArgs(regions=["us-east-1"]))
    errors = [str(m) for m in matches if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(errors)


# --- tables ------------------------------------------------------------------------------


def test_tables_are_on_demand_encrypted_with_pitr_and_retained(synth: Synthesis) -> None:
    tables = synth.of_type("AWS::DynamoDB::Table")
    assert len(tables) == 2
    for table in tables.values():
        props = table["Properties"]
        assert table["DeletionPolicy"] == "Retain"
        assert table["UpdateReplacePolicy"] == "Retain"
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["DeletionProtectionEnabled"] is True
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "graph_id", "KeyType": "HASH"},
                {"AttributeName": "entry", "KeyType": "RANGE"},
            ],
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
    )
    synth.template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"KeySchema": [{"AttributeName": "graph_id", "KeyType": "HASH"}]},
    )


# --- scheduler stream --------------------------------------------------------------------


def test_scheduler_stream_filter_passes_only_job_records_it_acts_on(synth: Synthesis) -> None:
    mappings = synth.of_type("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 1
    props = next(iter(mappings.values()))["Properties"]
    assert props["FunctionName"] == {"Ref": synth.logical_id(synth.stack.scheduler.function)}
    assert props["EventSourceArn"] == {
        "Fn::GetAtt": [synth.logical_id(synth.stack.tables.jobs_table), "StreamArn"]
    }
    ended, ready_again, released = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    for pattern in (ended, ready_again, released):
        assert sorted(pattern["eventName"]) == ["INSERT", "MODIFY"]
        assert pattern["dynamodb"]["Keys"] == {"entry": {"S": [{"prefix": "job#"}]}}
    assert sorted(ended["dynamodb"]["NewImage"]["status"]["S"]) == ["aborted", "failed", "finished"]
    # Ready records only when the scheduler did not release the job itself (it sends those).
    assert ready_again["dynamodb"]["NewImage"] == {"status": {"S": ["ready"]}}
    assert ready_again["dynamodb"]["OldImage"] == {"status": {"S": ["running"]}}
    assert released["dynamodb"]["NewImage"] == {
        "status": {"S": ["ready"]},
        # Children are written ready; a job woken by a slot of its limit given back is sent
        # again, not one that parks waiting for a slot (overseer.limits).
        "released_by": {"S": ["submission", "rerun", "expansion", "limit"]},
        "limit_wait": {"S": [{"exists": False}]},
    }
    assert props["BatchSize"] == 100
    assert props["BisectBatchOnFunctionError"] is True
    assert props["MaximumRetryAttempts"] == 5
    assert props["StartingPosition"] == "TRIM_HORIZON"
    on_failure = props["DestinationConfig"]["OnFailure"]["Destination"]
    assert on_failure == {"Fn::GetAtt": [synth.logical_id(synth.stack.dispatch.stream_failures), "Arn"]}


# --- queues ------------------------------------------------------------------------------


def test_dispatch_queues_have_dlq_redrive_and_lease_visibility(synth: Synthesis) -> None:
    dispatch = synth.stack.dispatch
    dlq_id = synth.logical_id(dispatch.dead_letter_queue)
    # The queue of each priority: high, normal, low.
    for queue in (dispatch.high_queue, dispatch.queue, dispatch.low_queue):
        properties = synth.resources[synth.logical_id(queue)]["Properties"]
        assert properties["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
        assert properties["RedrivePolicy"]["maxReceiveCount"] >= 3
        assert properties["VisibilityTimeout"] == CONTEXT["leaseSeconds"]
    for queue in synth.of_type("AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_every_queue_and_the_bucket_accept_tls_only(synth: Synthesis) -> None:
    deny_plain_http = Match.array_with(
        [
            Match.object_like(
                {
                    "Effect": "Deny",
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            )
        ]
    )
    synth.template.resource_properties_count_is(
        "AWS::SQS::QueuePolicy",
        {"PolicyDocument": {"Statement": deny_plain_http}},
        len(synth.of_type("AWS::SQS::Queue")),
    )
    synth.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": synth.logical_id(synth.stack.artifacts.bucket)},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "s3:*",
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


# --- artifacts ---------------------------------------------------------------------------


def test_artifact_bucket_is_private_encrypted_versioned_and_expires_old_versions(
    synth: Synthesis,
) -> None:
    bucket = synth.resources[synth.logical_id(synth.stack.artifacts.bucket)]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rule = props["LifecycleConfiguration"]["Rules"][0]
    assert rule["Status"] == "Enabled"
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == CONTEXT["noncurrentVersionDays"]


# --- workers -----------------------------------------------------------------------------


def test_launch_template_gives_every_instance_a_1_tb_scratch_volume(synth: Synthesis) -> None:
    (template,) = synth.of_type("AWS::EC2::LaunchTemplate").values()
    data = template["Properties"]["LaunchTemplateData"]
    scratch = [m for m in data["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb"]
    assert len(scratch) == 1
    ebs = scratch[0]["Ebs"]
    assert ebs["VolumeSize"] >= 1000  # 1 TiB
    assert ebs["VolumeType"] == "gp3"
    assert ebs["Encrypted"] is True
    assert ebs["DeleteOnTermination"] is True
    user_data = json.dumps(data["UserData"])
    assert "Instance Storage" in user_data  # NVMe instance store when present
    assert "mount -o noatime" in user_data and "/scratch" in user_data
    assert data["MetadataOptions"]["HttpTokens"] == "required"


def test_compute_environment_scales_to_zero_on_spot(synth: Synthesis) -> None:
    (environment,) = synth.of_type("AWS::Batch::ComputeEnvironment").values()
    props = environment["Properties"]
    resources = props["ComputeResources"]
    assert props["Type"] == "managed"
    assert resources["MinvCpus"] == 0
    assert resources["MaxvCpus"] == CONTEXT["maxVcpus"]
    assert resources["Type"] == ("SPOT" if CONTEXT["spot"] else "EC2")
    assert sorted(resources["InstanceTypes"]) == sorted(CONTEXT["instanceTypes"])
    launch_template_id = synth.logical_id(synth.stack.workers.launch_template)
    assert resources["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": launch_template_id}
    synth.template.resource_count_is("AWS::Batch::JobQueue", 1)


def test_job_definition_runs_the_worker_image_with_scratch_and_retries_host_failures(
    synth: Synthesis,
) -> None:
    (definition,) = synth.of_type("AWS::Batch::JobDefinition").values()
    props = definition["Properties"]
    assert props["RetryStrategy"]["EvaluateOnExit"] == [
        {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
        {"Action": "EXIT", "OnReason": "*"},
    ]
    container = props["ContainerProperties"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    for name in REQUIRED_ENV:
        assert name in env, name
    assert env["OVERSEER_SCRATCH_DIR"] == "/scratch"
    # Each job records which build of the handlers ran it: the image's asset hash, its tag.
    image_tag = container["Image"]["Fn::Sub"].rsplit(":", 1)[-1]
    assert env["OVERSEER_CODE_VERSION"] == f"image:{image_tag[:12]}"
    assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
    assert env["OVERSEER_HANDLERS"] == CONTEXT["handlersModule"]
    assert env["OVERSEER_LEASE_SECONDS"] == str(CONTEXT["leaseSeconds"])
    assert (env["OVERSEER_MAX_EXPAND_ITEMS"], env["OVERSEER_MAX_EXPAND_BYTES"]) == (
        str(CONTEXT["maxExpandItems"]),
        str(CONTEXT["maxExpandBytes"]),
    )
    assert container["Volumes"] == [{"Host": {"SourcePath": "/scratch"}, "Name": "scratch"}]
    assert [(m["SourceVolume"], m["ContainerPath"]) for m in container["MountPoints"]] == [
        ("scratch", "/scratch")
    ]
    role_id = synth.logical_id(synth.stack.workers.job_role)
    assert container["JobRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}

    manifest = json.loads((synth.outdir / "Overseer.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "worker_batch/Dockerfile"
    context = synth.outdir / image["source"]["directory"]
    assert (context / "pyproject.toml").exists() and (context / "overseer").is_dir()
    for excluded in (".git", "cdk.out", "node_modules", ".cache", "tests", "infra"):
        assert not (context / excluded).exists(), excluded


def test_worker_dockerfile_is_slim_non_root_and_runs_overseer_worker() -> None:
    dockerfile = (REPO_ROOT / "worker_batch" / "Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile
    assert "USER overseer" in dockerfile
    assert 'ENTRYPOINT ["overseer", "worker"]' in dockerfile
    assert "ARG HANDLERS_DIR=examples" in dockerfile
    assert 'VOLUME ["/scratch"]' in dockerfile


def test_worker_role_is_least_privilege(synth: Synthesis) -> None:
    statements = _statements(synth, synth.logical_id(synth.stack.workers.job_role))
    actions = _actions(statements)
    assert {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "s3:GetObject",
        "s3:PutObject",
    } <= actions
    forbidden = {
        "*",
        "dynamodb:*",
        "dynamodb:DeleteTable",
        "dynamodb:CreateTable",
        "dynamodb:UpdateTable",
        "s3:*",
        "s3:DeleteBucket",
        "s3:DeleteObject",
        "s3:DeleteObject*",
        "s3:PutBucketPolicy",
        "sqs:*",
        "sqs:DeleteQueue",
        "sqs:SetQueueAttributes",
        "iam:PassRole",
        "batch:SubmitJob",
        "events:PutEvents",
    }
    assert not actions & forbidden, actions & forbidden
    assert all(statement["Resource"] != "*" for statement in statements)
    # Graphs: only the UpdateItem of the finish that commits an expansion (jobs_total grows).
    graphs_arn = {"Fn::GetAtt": [synth.logical_id(synth.stack.tables.graphs_table), "Arn"]}
    assert _actions(_on_resource(statements, graphs_arn)) == {"dynamodb:UpdateItem"}


def _on_resource(statements: list[dict[str, Any]], resource: Any) -> list[dict[str, Any]]:
    """The statements that name ``resource``."""
    return [
        s
        for s in statements
        if resource in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]


@pytest.mark.parametrize("which", ["synth", "variant"])
def test_scheduler_and_sweep_read_and_delete_only_the_expansions_items_files(
    which: str, request: pytest.FixtureRequest
) -> None:
    synthesis: Synthesis = request.getfixturevalue(which)
    stack = synthesis.stack
    # Where the worker stores them: the prefix the grants name.
    assert items_key("g", "fan_out", 2) == f"{EXPANSION_ITEMS_PREFIX}g/fan_out/attempt-2.json"
    bucket = stack.resolve(stack.artifacts.bucket.arn_for_objects(f"{EXPANSION_ITEMS_PREFIX}*"))
    jobs_arn = {"Fn::GetAtt": [synthesis.logical_id(stack.tables.jobs_table), "Arn"]}
    for function in (stack.scheduler.function, stack.sweep.function):
        statements = _statements(synthesis, synthesis.logical_id(function.role))
        s3_statements = [s for s in statements if any(a.startswith("s3:") for a in _actions([s]))]
        assert [s["Resource"] for s in s3_statements] == [bucket]
        assert _actions(s3_statements) == {"s3:GetObject", "s3:DeleteObject"}
        # The children: written one by one, each only if it does not exist.
        assert "dynamodb:PutItem" in _actions(_on_resource(statements, jobs_arn))


def test_sweep_may_submit_workers_and_scheduler_may_publish_events(synth: Synthesis) -> None:
    stack = synth.stack
    sweep = _statements(synth, synth.logical_id(stack.sweep.function.role))
    submit = [s for s in sweep if "batch:SubmitJob" in _actions([s])]
    assert len(submit) == 1
    assert sorted(json.dumps(r, sort_keys=True) for r in submit[0]["Resource"]) == sorted(
        json.dumps(r, sort_keys=True)
        for r in (
            {"Fn::GetAtt": [synth.logical_id(stack.workers.job_queue), "JobQueueArn"]},
            {"Ref": synth.logical_id(stack.workers.job_definition)},
        )
    )
    assert "sqs:GetQueueAttributes" in _actions(sweep)
    scheduler = _statements(synth, synth.logical_id(stack.scheduler.function.role))
    assert {"events:PutEvents", "sqs:SendMessage"} <= _actions(scheduler)
    api = _statements(synth, synth.logical_id(stack.api.function.role))
    assert "events:PutEvents" in _actions(api)  # a cancel that ends a graph announces it


# --- API ---------------------------------------------------------------------------------


def test_api_has_the_ten_routes_all_with_iam_auth(synth: Synthesis) -> None:
    resources = synth.of_type("AWS::ApiGateway::Resource")
    root_ref = {"Fn::GetAtt": [synth.logical_id(synth.stack.api.rest_api), "RootResourceId"]}

    def path(ref: Any) -> str:
        if ref == root_ref:
            return ""
        props = resources[ref["Ref"]]["Properties"]
        return path(props["ParentId"]) + "/" + props["PathPart"]

    methods = synth.of_type("AWS::ApiGateway::Method")
    routes = set()
    for method in methods.values():
        props = method["Properties"]
        if props["HttpMethod"] == "OPTIONS":
            continue
        assert props["AuthorizationType"] == "AWS_IAM", props
        assert "RequestValidatorId" in props
        routes.add((path(props["ResourceId"]), props["HttpMethod"]))
    assert routes == {
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
    }
    synth.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
        },
    )
    synth.template.has_resource_properties("AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True})


# --- rules -------------------------------------------------------------------------------


def test_sweep_and_each_trigger_have_a_schedule_rule(synth: Synthesis) -> None:
    rules = synth.of_type("AWS::Events::Rule")
    sweep_rule = rules[synth.logical_id(synth.stack.sweep.rule)]["Properties"]
    assert sweep_rule["ScheduleExpression"] == CONTEXT["sweepSchedule"]
    sweep_fn = synth.logical_id(synth.stack.sweep.function)
    assert sweep_rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [sweep_fn, "Arn"]}

    trigger_fn = {"Fn::GetAtt": [synth.logical_id(synth.stack.triggers.function), "Arn"]}
    assert CONTEXT["triggers"], "cdk.json should ship an example trigger"
    for trigger in CONTEXT["triggers"]:
        rule_ids = [synth.logical_id(r) for r in synth.stack.triggers.rules[trigger["name"]]]
        inputs = []
        for rule_id in rule_ids:
            props = rules[rule_id]["Properties"]
            if "schedule" in trigger:
                assert props["ScheduleExpression"] == trigger["schedule"]
            else:
                assert "EventPattern" in props
            for target in props["Targets"]:
                assert target["Arn"] == trigger_fn
                assert "DeadLetterConfig" in target
                inputs.append(target["InputTransformer"]["InputTemplate"])
        expected_args = trigger["args"] if isinstance(trigger["args"], list) else [trigger["args"]]
        assert len(inputs) == len(expected_args)
        for text, args in zip(inputs, expected_args, strict=True):
            assert f'"template":"{trigger["template"]}"' in text
            assert json.dumps(args, separators=(",", ":")) in text
            assert '"detail":<detail>' in text


# --- Lambdas and observability -----------------------------------------------------------


def test_lambdas_share_one_asset_with_engine_functions_templates_and_dependencies(
    synth: Synthesis,
) -> None:
    functions = {
        k: v
        for k, v in synth.of_type("AWS::Lambda::Function").items()
        if "Handler" in v["Properties"] and v["Properties"]["Handler"].startswith("functions.")
    }
    assert sorted(f["Properties"]["Handler"] for f in functions.values()) == [
        "functions.api.handler",
        "functions.scheduler.handler",
        "functions.sweep.handler",
        "functions.trigger.handler",
    ]
    (key,) = {f["Properties"]["Code"]["S3Key"] for f in functions.values()}
    manifest = json.loads((synth.outdir / "Overseer.assets.json").read_text())
    bundle = synth.outdir / manifest["files"][key.removesuffix(".zip")]["source"]["path"]
    for name in ("overseer", "templates", "yaml", "pynamodb", "aws_lambda_powertools"):
        assert (bundle / name).exists(), name
    assert (bundle / "botocore").exists()  # bundled at the pinned version, not the runtime's

    for function in functions.values():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert "LogGroup" in props["LoggingConfig"]
        env = props["Environment"]["Variables"]
        for name in (*REQUIRED_ENV, "OVERSEER_TEMPLATES_DIR", "OVERSEER_BATCH_JOB_QUEUE"):
            assert name in env, name
        assert env["POWERTOOLS_SERVICE_NAME"].startswith("overseer-")
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Overseer"
        assert env["OVERSEER_MAX_WORKERS"] == str(CONTEXT["maxWorkers"])


def test_every_log_group_has_the_configured_retention(synth: Synthesis) -> None:
    groups = synth.of_type("AWS::Logs::LogGroup")
    assert len(groups) >= 6  # 4 Lambdas, API access logs, workers (+ VPC flow logs)
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == CONTEXT["logRetentionDays"]


def test_dashboard_and_dead_letter_alarm(synth: Synthesis) -> None:
    synth.template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    dlq_name = {"Fn::GetAtt": [synth.logical_id(synth.stack.dispatch.dead_letter_queue), "QueueName"]}
    synth.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": dlq_name}],
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    )


# --- configuration (no synth) ------------------------------------------------------------


def test_config_reads_cdk_json_and_rejects_bad_triggers() -> None:
    config = DeploymentConfig.from_mapping(CONTEXT)
    assert config.spot is CONTEXT["spot"]
    assert config.triggers[0].template == "daily_report"
    assert len(config.triggers[0].args[0]["company_ids"]) >= 2  # one graph per company
    assert DeploymentConfig.from_mapping(
        {
            "triggers": [
                {
                    "name": "n",
                    "template": "t",
                    "schedule": "rate(1 day)",
                    "args": [{"company_id": 1}, {"company_id": 2}],
                }
            ]
        }
    ).triggers[0].args == ({"company_id": 1}, {"company_id": 2})

    assert DeploymentConfig.from_mapping({}).lease_seconds == 120
    overridden = DeploymentConfig.from_mapping(
        {"spot": "false", "instanceTypes": "c6id.large,c6id.xlarge", "maxVcpus": "8"}
    )
    assert (overridden.spot, overridden.instance_types, overridden.max_vcpus) == (
        False,
        ("c6id.large", "c6id.xlarge"),
        8,
    )
    with pytest.raises(ConfigError, match="exactly one of"):
        DeploymentConfig.from_mapping(
            {
                "triggers": [
                    {
                        "name": "x",
                        "template": "t",
                        "schedule": "rate(1 hour)",
                        "eventPattern": {"source": ["a"]},
                    }
                ]
            }
        )
    with pytest.raises(ConfigError, match="cron"):
        DeploymentConfig.from_mapping({"triggers": [{"name": "x", "template": "t", "schedule": "0 2 * * *"}]})


def test_configured_templates_and_handlers_exist_and_are_deployed(synth: Synthesis) -> None:
    templates_dir = REPO_ROOT / CONTEXT["templatesDir"]
    for trigger in CONTEXT["triggers"]:
        assert (templates_dir / f"{trigger['template']}.yaml").exists(), trigger["template"]
    module_file = REPO_ROOT / (CONTEXT["handlersModule"].replace(".", "/") + ".py")
    assert module_file.exists()
    # The worker image copies handlersDir; the module must live inside it.
    assert module_file.is_relative_to(REPO_ROOT / CONTEXT["handlersDir"])

    functions = synth.of_type("AWS::Lambda::Function").values()
    (key,) = {
        f["Properties"]["Code"]["S3Key"]
        for f in functions
        if f["Properties"].get("Handler", "").startswith("functions.")
    }
    manifest = json.loads((synth.outdir / "Overseer.assets.json").read_text())
    bundle = synth.outdir / manifest["files"][key.removesuffix(".zip")]["source"]["path"]
    for template in templates_dir.glob("*.yaml"):
        assert (bundle / "templates" / template.name).exists(), template.name


# --- the variant configuration -----------------------------------------------------------


def test_variant_on_demand_without_ebs_scratch(variant: Synthesis) -> None:
    (environment,) = variant.of_type("AWS::Batch::ComputeEnvironment").values()
    assert environment["Properties"]["ComputeResources"]["Type"] == "EC2"
    assert environment["Properties"]["ComputeResources"]["MinvCpus"] == 0
    (template,) = variant.of_type("AWS::EC2::LaunchTemplate").values()
    assert "BlockDeviceMappings" not in template["Properties"]["LaunchTemplateData"]


def test_variant_uses_the_existing_bucket_and_may_write_allowed_buckets(
    variant: Synthesis,
) -> None:
    variant.template.resource_count_is("AWS::S3::Bucket", 0)
    (definition,) = variant.of_type("AWS::Batch::JobDefinition").values()
    env = {e["Name"]: e["Value"] for e in definition["Properties"]["ContainerProperties"]["Environment"]}
    assert env["OVERSEER_ARTIFACT_BUCKET"] == "my-data-bucket"
    assert env["OVERSEER_ALLOWED_BUCKETS"] == "my-exports"
    statements = _statements(variant, variant.logical_id(variant.stack.workers.job_role))
    resources = json.dumps([s["Resource"] for s in statements])
    assert ":s3:::my-data-bucket/*" in resources and ":s3:::my-exports/*" in resources
    exports = [s for s in statements if ":s3:::my-exports/*" in json.dumps(s["Resource"])]
    # GetObject: HeadObject before a put skips identical objects (no delete).
    assert _actions(exports) == {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}


def test_variant_publishes_on_its_own_bus(variant: Synthesis) -> None:
    variant.template.has_resource_properties("AWS::Events::EventBus", {"Name": "overseer-events"})
    function = variant.of_type("AWS::Lambda::Function")[variant.logical_id(variant.stack.scheduler.function)]
    assert function["Properties"]["Environment"]["Variables"]["OVERSEER_EVENT_BUS"] == {
        "Ref": variant.logical_id(variant.stack.events.bus)
    }


def test_variant_event_pattern_trigger_with_one_target_per_args(variant: Synthesis) -> None:
    rules = [
        variant.resources[variant.logical_id(r)]["Properties"]
        for r in variant.stack.triggers.rules["on-upload"]
    ]
    assert [len(r["Targets"]) for r in rules] == [5, 2]  # at most 5 targets per rule
    for rule in rules:
        assert "ScheduleExpression" not in rule
        assert rule["EventPattern"] == {"source": ["my.app"], "detail-type": ["Report Wanted"]}
        for target in rule["Targets"]:
            transformer = target["InputTransformer"]
            assert transformer["InputPathsMap"]["detail"] == "$.detail"
            assert '"template":"daily_report"' in transformer["InputTemplate"]
            # An event-pattern trigger carries its event's data: the whole detail into the
            # args, and the event's id at the end of each graph id (functions.trigger).
            assert '"eventArgs":{"detail":"$.detail"}' in transformer["InputTemplate"]
            assert '"graphIdFrom":"event"' in transformer["InputTemplate"]


def test_a_trigger_reads_the_data_it_names_from_its_event() -> None:
    upload = {
        "name": "uploads",
        "template": "ingest",
        "eventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"]},
        "eventArgs": {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"},
        "graphIdFrom": "key",
    }
    (trigger,) = DeploymentConfig.from_mapping({"triggers": [upload]}).triggers
    assert (dict(trigger.event_args), trigger.graph_id_from) == (upload["eventArgs"], "key")
    # A schedule carries no event data unless it says so (its graphs are keyed on the date).
    nightly = {"name": "n", "template": "t", "schedule": "rate(1 day)"}
    (scheduled,) = DeploymentConfig.from_mapping({"triggers": [nightly]}).triggers
    assert (dict(scheduled.event_args), scheduled.graph_id_from) == ({}, "")
    with pytest.raises(ConfigError, match=r"'eventArgs' maps arg names to paths in the event"):
        DeploymentConfig.from_mapping({"triggers": [{**upload, "eventArgs": {"key": "detail.object.key"}}]})
    with pytest.raises(
        ConfigError, match=r"'graphIdFrom' is 'event' \(the event's id\), '' \(nothing\) or one"
    ):
        DeploymentConfig.from_mapping({"triggers": [{**upload, "graphIdFrom": "etag"}]})


def test_every_context_key_is_in_cdk_json_and_documented_with_its_default() -> None:
    from infra.config import DEFAULTS

    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for key, default in DEFAULTS.items():
        assert key in CONTEXT, f"{key} missing from cdk.json"
        if key != "triggers":
            assert CONTEXT[key] == default, f"cdk.json {key} differs from infra/config.py"
        assert f"| `{key}` |" in docs, f"{key} not documented in docs/deploy.md"
