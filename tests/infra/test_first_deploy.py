"""What stops a first deploy, read from the synthesized template as AWS would run it.

Each test names a defect the stack had: a role that cannot make a call its code makes (or
may make calls it never needs), an update CloudFormation would not pass on, an account
resource deleted with the stack, a failure nobody is told about. A third configuration,
``FIRST_DEPLOY_CONTEXT``, turns on the worker settings a real deployment needs (instance
store types, rows tables, extra policies and secrets, extra egress, no API Gateway
account resource).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

from infra.config import ConfigError, DeploymentConfig
from infra.instance_store import instance_store_gb, instance_store_suffices
from tests.infra.test_stack import CONTEXT, Synthesis, _actions, _statements, _synthesise

pytestmark = pytest.mark.infra

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-password-AbCdEf"
FIRST_DEPLOY_CONTEXT: dict[str, Any] = {
    **CONTEXT,
    # 1 TiB of scratch fits in the NVMe store of both types: no EBS volume.
    "instanceTypes": ["m6id.8xlarge", "i4i.2xlarge"],
    "allowedBuckets": ["my-exports"],
    "rowsTables": ["reports", "report-lines"],
    "workerPolicies": [{"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reference-data/*"]}],
    "workerManagedPolicies": ["arn:aws:iam::123456789012:policy/reports-read"],
    "workerSecrets": {"DB_PASSWORD": SECRET_ARN},
    "workerEgress": [{"cidr": "10.0.0.0/8", "port": 5432}],
    "apiGatewayAccount": False,
}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesis]:
    yield _synthesise(tmp_path_factory.mktemp("cdk.out.first"), FIRST_DEPLOY_CONTEXT)


def _get_att(synth: Synthesis, construct: Any, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), attribute]}


def _on(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    """The actions of the statements that name ``resource``."""
    return _actions([s for s in statements if resource in _resources(s)])


def _resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def _functions(synth: Synthesis) -> dict[str, Any]:
    stack = synth.stack
    return {
        "scheduler": stack.scheduler.function,
        "sweep": stack.sweep.function,
        "api": stack.api.function,
        "trigger": stack.triggers.function,
    }


def _role_statements(synth: Synthesis, function: Any) -> list[dict[str, Any]]:
    return _statements(synth, synth.logical_id(function.role))


# --- 1. the sweep ------------------------------------------------------------------------


def test_sweep_role_receives_and_deletes_dead_letters(synth: Synthesis) -> None:
    sweep = _role_statements(synth, synth.stack.sweep.function)
    dlq = _get_att(synth, synth.stack.dispatch.dead_letter_queue)
    # overseer.sweep._fail_dead_letters: ReceiveMessage, then DeleteMessageBatch.
    assert _on(sweep, dlq) == {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
    # The lease owner's Batch job tells a Spot reclaim from a crash; no resource-level ARNs.
    assert "batch:DescribeJobs" in _on(sweep, "*")


def test_sweep_is_not_retried_by_lambda_and_expires_fast(synth: Synthesis) -> None:
    (config,) = [
        c["Properties"]
        for c in synth.of_type("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": synth.logical_id(synth.stack.sweep.function)}
    ]
    assert config["MaximumRetryAttempts"] == 0
    assert config["MaximumEventAgeInSeconds"] <= 300


# --- 2. the worker's buckets, rows, policies and secrets ---------------------------------


def test_worker_may_head_and_list_every_bucket_it_writes(first: Synthesis) -> None:
    worker = _statements(first, first.logical_id(first.stack.workers.job_role))
    s3 = [(json.dumps(_resources(s)), _actions([s])) for s in worker if "s3:PutObject" in json.dumps(s)]
    # The existing artifact bucket (existingBucketName unset: created) and allowedBuckets.
    for bucket in (first.logical_id(first.stack.artifacts.bucket), ":s3:::my-exports"):
        objects = set().union(*(a for r, a in s3 if bucket in r and "/*" in r))
        # HeadObject before each put: GetObject, and ListBucket so a new key is 404, not 403.
        assert objects == {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}, bucket
    listed = [json.dumps(_resources(s)) for s in worker if _actions([s]) == {"s3:ListBucket"}]
    assert first.logical_id(first.stack.artifacts.bucket) in str(listed)
    assert ':s3:::my-exports"' in str(listed)


def test_the_api_reads_only_the_objects_of_the_buckets_artifacts_are_written_to(first: Synthesis) -> None:
    """GET .../artifacts presigns downloads with the API's role: GetObject on the objects of
    the artifact bucket and allowedBuckets, nothing else of S3."""
    api = _statements(first, first.logical_id(first.stack.api.function.role))
    s3 = [s for s in api if any(a.startswith("s3:") for a in _actions([s]))]
    assert _actions(s3) == {"s3:GetObject"}
    resources = json.dumps([_resources(s) for s in s3])
    assert first.logical_id(first.stack.artifacts.bucket) in resources
    assert ':s3:::my-exports/*"' in resources
    assert resources.count("/*") == 2


def test_worker_writes_rows_only_into_the_configured_tables(first: Synthesis, synth: Synthesis) -> None:
    worker = _statements(first, first.logical_id(first.stack.workers.job_role))
    (rows,) = [s for s in worker if "dynamodb:BatchWriteItem" in _actions([s])]
    assert _actions([rows]) == {"dynamodb:BatchWriteItem"}
    tables = sorted(json.dumps(r)[-40:] for r in _resources(rows))
    assert len(tables) == 2 and all(":table/report" in t for t in tables)
    default = _statements(synth, synth.logical_id(synth.stack.workers.job_role))
    assert "dynamodb:BatchWriteItem" not in _actions(default)  # rowsTables is empty


def test_worker_gets_the_configured_policies_and_secrets(first: Synthesis) -> None:
    role_id = first.logical_id(first.stack.workers.job_role)
    worker = _statements(first, role_id)
    assert "arn:aws:s3:::reference-data/*" in json.dumps([_resources(s) for s in worker])
    role = first.resources[role_id]["Properties"]
    assert role["ManagedPolicyArns"] == ["arn:aws:iam::123456789012:policy/reports-read"]

    (definition,) = first.of_type("AWS::Batch::JobDefinition").values()
    container = definition["Properties"]["ContainerProperties"]
    assert container["Secrets"] == [{"Name": "DB_PASSWORD", "ValueFrom": SECRET_ARN}]
    assert "DB_PASSWORD" not in {e["Name"] for e in container["Environment"]}
    execution = _statements(first, container["ExecutionRoleArn"]["Fn::GetAtt"][0])
    assert "secretsmanager:GetSecretValue" in _on(execution, SECRET_ARN)
    assert "secretsmanager:GetSecretValue" not in _actions(worker)  # the job role never sees it


def test_worker_settings_are_validated_with_clear_errors() -> None:
    config = DeploymentConfig.from_mapping(FIRST_DEPLOY_CONTEXT)
    assert config.rows_tables == ("reports", "report-lines")
    assert config.worker_egress[0].port == 5432
    assert config.api_gateway_account is False
    assert DeploymentConfig.from_mapping({"rowsTables": "a1b,c2d"}).rows_tables == ("a1b", "c2d")
    bad = {
        "workerPolicies": ([{"actions": ["s3:GetObject"]}], "actions.*resources"),
        "workerManagedPolicies": (["reports-read"], "not a managed policy ARN"),
        "workerSecrets": ({"DB": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"}, "full ARN"),
        "workerEgress": ([{"cidr": "10.0.0.0/33", "port": 5432}], "CIDR"),
        "rowsTables": (["a"], "not a DynamoDB table name"),
        "apiGatewayAccount": ("maybe", "true or false"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message):
            DeploymentConfig.from_mapping({key: value})
    with pytest.raises(ConfigError, match="OVERSEER_"):
        DeploymentConfig.from_mapping({"workerSecrets": {"OVERSEER_QUEUE_URL": SECRET_ARN}})
    with pytest.raises(ConfigError, match="port"):
        DeploymentConfig.from_mapping({"workerEgress": [{"cidr": "10.0.0.0/8", "port": 0}]})


# --- 3. least privilege on the tables ----------------------------------------------------

# Role -> table -> the DynamoDB actions its code paths use (see OverseerStack._grant).
TABLE_ACTIONS = {
    # Graphs: the finish that commits an expansion adds its children to jobs_total.
    "worker": {"jobs": {"GetItem", "Query", "BatchGetItem", "UpdateItem"}, "graphs": {"UpdateItem"}},
    # PutItem: an expansion's children (the sweep's replay of a failed batch makes them too).
    "scheduler": {
        "jobs": {"GetItem", "Query", "UpdateItem", "PutItem"},
        "graphs": {"GetItem", "UpdateItem"},
    },
    # No Scan: running graphs and the jobs to repair come from the two indexes (INDEX_ACTIONS).
    "sweep": {
        "jobs": {"GetItem", "Query", "UpdateItem", "DeleteItem", "BatchGetItem", "PutItem"},
        "graphs": {"GetItem", "UpdateItem", "PutItem", "DeleteItem", "BatchGetItem"},
    },
    "api": {
        "jobs": {"BatchWriteItem", "GetItem", "Query", "UpdateItem"},
        "graphs": {"PutItem", "GetItem", "UpdateItem", "BatchGetItem"},  # GET /graphs: the graphs found
    },
    "trigger": {
        "jobs": {"BatchWriteItem", "UpdateItem", "Query"},
        "graphs": {"PutItem", "GetItem", "UpdateItem"},
    },
}


# Role -> (action, table, index) on the tables' indexes.
INDEX_ACTIONS = {
    "sweep": {("dynamodb:Query", "jobs", "sweep"), ("dynamodb:Query", "graphs", "active-graphs")},
    # GET /graphs: the graphs newest first, day by day.
    "api": {("dynamodb:Query", "graphs", "graphs-by-day")},
}


def _index_of(synth: Synthesis, resource: Any) -> tuple[str, str]:
    """(table, index) of an index ARN ``{"Fn::Join": ["", [<table Arn>, "/index/<name>"]]}``."""
    table_arn, suffix = resource["Fn::Join"][1]
    tables = {"jobs": synth.stack.tables.jobs_table, "graphs": synth.stack.tables.graphs_table}
    (table,) = [name for name, t in tables.items() if _get_att(synth, t) == table_arn]
    return table, suffix.removeprefix("/index/")


def test_each_role_gets_exactly_the_table_operations_its_code_uses(synth: Synthesis) -> None:
    stack = synth.stack
    roles = {
        "worker": synth.logical_id(stack.workers.job_role),
        **{name: synth.logical_id(fn.role) for name, fn in _functions(synth).items()},
    }
    tables = {"jobs": stack.tables.jobs_table, "graphs": stack.tables.graphs_table}
    for role, expected in TABLE_ACTIONS.items():
        statements = _statements(synth, roles[role])
        for name, table in tables.items():
            granted = {a.removeprefix("dynamodb:") for a in _on(statements, _get_att(synth, table))}
            assert granted == expected[name], (role, name, granted)
        # On "<table>/index/*" only what INDEX_ACTIONS names: nothing queries the failed-jobs index.
        on_indexes = {
            (action, table, index)
            for statement in statements
            for resource in _resources(statement)
            if "/index/" in json.dumps(resource)
            for table, index in [_index_of(synth, resource)]
            for action in _actions([statement])
        }
        assert on_indexes == INDEX_ACTIONS.get(role, set()), role
    worker = _actions(_statements(synth, roles["worker"]))
    assert not worker & {"dynamodb:DeleteItem", "dynamodb:Scan", "dynamodb:PutItem"}


def test_the_sweep_reads_the_failed_stream_batches_and_the_stream_again(synth: Synthesis) -> None:
    stack = synth.stack
    statements = _statements(synth, synth.logical_id(stack.sweep.function.role))
    stream = _get_att(synth, stack.tables.jobs_table, "StreamArn")
    assert _on(statements, stream) == {"dynamodb:GetShardIterator", "dynamodb:GetRecords"}
    failures = _get_att(synth, stack.dispatch.stream_failures)
    assert _on(statements, failures) == {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
    props = synth.resources[synth.logical_id(stack.sweep.function)]["Properties"]
    url = props["Environment"]["Variables"]["OVERSEER_STREAM_FAILURES_QUEUE_URL"]
    assert url == {"Ref": synth.logical_id(stack.dispatch.stream_failures)}


# --- 4. Lambda logs ----------------------------------------------------------------------


def test_each_lambda_writes_its_own_log_group_only(synth: Synthesis) -> None:
    for name, function in _functions(synth).items():
        role = synth.resources[synth.logical_id(function.role)]["Properties"]
        assert "ManagedPolicyArns" not in role, name  # no AWSLambdaBasicExecutionRole
        statements = _role_statements(synth, function)
        logs = [
            s
            for s in statements
            if any(a.startswith("logs:") for a in _actions([s]))
            and "logs:FilterLogEvents" not in _actions([s])
        ]
        assert _actions(logs) == {"logs:CreateLogStream", "logs:PutLogEvents"}, name
        props = synth.resources[synth.logical_id(function)]["Properties"]
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        assert [_resources(s) for s in logs] == [[{"Fn::GetAtt": [group, "Arn"]}]], name
        # The API reads the workers' log group (GET .../logs), nothing else reads logs.
        reads = [s for s in statements if "logs:FilterLogEvents" in _actions([s])]
        workers_group = synth.logical_id(synth.stack.workers.log_group)
        expected = [[{"Fn::GetAtt": [workers_group, "Arn"]}]] if name == "api" else []
        assert [_resources(s) for s in reads] == expected, name
        assert all(_actions([s]) == {"logs:FilterLogEvents"} for s in reads), name
        # Active tracing: X-Ray has no resource-level permissions.
        assert {"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= _on(statements, "*"), name


# --- 5. compute environment and network --------------------------------------------------


def test_compute_environment_pins_its_launch_template_version(synth: Synthesis) -> None:
    (environment,) = synth.of_type("AWS::Batch::ComputeEnvironment").values()
    template = environment["Properties"]["ComputeResources"]["LaunchTemplate"]
    template_id = synth.logical_id(synth.stack.workers.launch_template)
    assert template["Version"] == {"Fn::GetAtt": [template_id, "LatestVersionNumber"]}
    # Updates apply in place (infrastructure update) with Batch's service-linked role.
    assert environment["Properties"]["ReplaceComputeEnvironment"] is False
    assert "ServiceRole" not in environment["Properties"]


def _egress(synth: Synthesis) -> list[dict[str, Any]]:
    group = synth.resources[synth.logical_id(synth.stack.workers.security_group)]["Properties"]
    return group["SecurityGroupEgress"]


def test_workers_send_https_only_unless_configured(synth: Synthesis, first: Synthesis) -> None:
    https = {"CidrIp": "0.0.0.0/0", "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443}
    assert [{k: r[k] for k in https} for r in _egress(synth)] == [https]
    extra = {"CidrIp": "10.0.0.0/8", "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432}
    assert [{k: r[k] for k in https} for r in _egress(first)] == [https, extra]


# --- 6. the account's API Gateway logging role -------------------------------------------


def test_api_gateway_account_is_retained_or_left_out(synth: Synthesis, first: Synthesis) -> None:
    (account,) = synth.of_type("AWS::ApiGateway::Account").values()
    assert account["DeletionPolicy"] == "Retain"
    assert account["UpdateReplacePolicy"] == "Retain"
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    assert synth.resources[role_id]["DeletionPolicy"] == "Retain"  # the account points at it
    assert first.of_type("AWS::ApiGateway::Account") == {}
    first.template.has_resource_properties(
        "AWS::ApiGateway::Stage", {"AccessLogSetting": {"DestinationArn": {}}}
    )


# --- 7. failures somebody hears about ----------------------------------------------------


def test_trigger_function_failures_go_to_the_delivery_failures_queue(synth: Synthesis) -> None:
    (config,) = [
        c["Properties"]
        for c in synth.of_type("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": synth.logical_id(synth.stack.triggers.function)}
    ]
    failures = _get_att(synth, synth.stack.dispatch.delivery_failures)
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == failures
    assert "sqs:SendMessage" in _on(_role_statements(synth, synth.stack.triggers.function), failures)
    alarms = [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()]
    failures_name = _get_att(synth, synth.stack.dispatch.delivery_failures, "QueueName")
    assert any(a["Dimensions"] == [{"Name": "QueueName", "Value": failures_name}] for a in alarms)


def test_sweep_api_and_trigger_errors_raise_an_alarm(synth: Synthesis) -> None:
    alarms = [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()]
    for name in ("sweep", "api", "trigger"):
        function = _functions(synth)[name]
        dimension = [{"Name": "FunctionName", "Value": {"Ref": synth.logical_id(function)}}]
        (alarm,) = [a for a in alarms if a.get("MetricName") == "Errors" and a["Dimensions"] == dimension]
        assert alarm["Threshold"] == 1
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_blocked_worker_jobs_raise_an_alarm_with_batch_reason(synth: Synthesis) -> None:
    monitoring = synth.stack.monitoring
    rule = synth.resources[synth.logical_id(monitoring.blocked_rule)]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.batch"],
        "detail-type": ["Batch Job Queue Blocked"],
        "detail": {"jobQueue": [_get_att(synth, synth.stack.workers.job_queue, "JobQueueArn")]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == _get_att(synth, monitoring.blocked_queue)
    assert target["InputTransformer"]["InputPathsMap"]["detail-statusReason"] == "$.detail.statusReason"
    assert "<detail-statusReason>" in target["InputTransformer"]["InputTemplate"]
    queue_name = _get_att(synth, monitoring.blocked_queue, "QueueName")
    synth.template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    )
    # EventBridge may send to the queue (the rule's ARN only).
    synth.template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {"Queues": [{"Ref": synth.logical_id(monitoring.blocked_queue)}]},
    )


# --- 9. scratch --------------------------------------------------------------------------


def test_ebs_scratch_is_skipped_only_when_every_instance_store_is_large_enough(first: Synthesis) -> None:
    (template,) = first.of_type("AWS::EC2::LaunchTemplate").values()
    assert "BlockDeviceMappings" not in template["Properties"]["LaunchTemplateData"]
    assert instance_store_gb("m6id.large") == 118 and instance_store_gb("m6i.large") == 0
    assert instance_store_suffices(["m6id.8xlarge", "i4i.2xlarge"], 1024)
    assert not instance_store_suffices(["m6id.8xlarge", "m6id.4xlarge"], 1024)  # 950 GB < 1 TiB
    assert not instance_store_suffices(["m6id.8xlarge", "m7x.huge"], 10)  # unknown type: keep EBS


# --- the third configuration passes cdk-nag and cfn-lint too -----------------------------


def test_first_deploy_configuration_has_no_nag_finding_or_lint_error(first: Synthesis) -> None:
    from cfnlint.api import ManualArgs, lint_file

    report = first.outdir / "validation-report.json"
    findings = []
    if report.exists():
        for plugin in json.loads(report.read_text())["pluginReports"]:
            findings += [v["ruleName"] for v in plugin["violations"]]
    assert findings == [] and first.validation_error is None, findings
    matches = lint_file(Path(first.outdir / first.stack.template_file), ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []
