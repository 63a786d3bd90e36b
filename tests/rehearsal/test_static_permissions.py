"""Permissions that no SDK call of the stack's code shows, checked on the synthesized template.

AWS services act on the stack's behalf here: EventBridge invokes functions and writes its
dead-letter queue, API Gateway invokes the API function, Lambda writes each function's
logs, the ECS agent pulls the worker image and writes its logs with the execution role,
EC2 instances join the cluster with the instance role, and Batch and Spot act through
service-linked roles. Each is held to what AWS requires of it.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.iam import evaluate
from tests.rehearsal.template import ACCOUNT, REGION, Template

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def template(synthesized: Path) -> Template:
    return Template.load(synthesized)


def _lambda_permissions(template: Template, principal: str) -> list[dict[str, Any]]:
    return [
        props
        for props in (
            template.resolve(p["Properties"]) for p in template.of_type("AWS::Lambda::Permission").values()
        )
        if props.get("Principal") == principal and props.get("Action") == "lambda:InvokeFunction"
    ]


def _allows_service(template: Template, queue_arn: str, service: str, action: str, source_arn: str) -> bool:
    """Whether a queue's resource policy lets ``service`` do ``action`` for ``source_arn``."""
    for policy in template.of_type("AWS::SQS::QueuePolicy").values():
        props = template.resolve(policy["Properties"])
        queues = [template.resolve(q) for q in props["Queues"]]
        if not any(queue_arn.rsplit(":", 1)[-1] in str(q) for q in queues):
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            services = statement.get("Principal", {}).get("Service", [])
            if service not in (services if isinstance(services, list) else [services]):
                continue
            identity = {k: v for k, v in statement.items() if k != "Principal"}
            decision = evaluate([{"Statement": [identity]}], action, queue_arn, {"aws:SourceArn": source_arn})
            if decision.allowed:
                return True
    return False


def test_every_rule_may_invoke_its_function_targets_and_write_its_dead_letter_queue(
    template: Template,
) -> None:
    permissions = _lambda_permissions(template, "events.amazonaws.com")
    checked = 0
    for rule_id, rule in template.of_type("AWS::Events::Rule").items():
        rule_arn = template.get_att(rule_id, "Arn")
        for target in template.resolve(rule["Properties"]["Targets"]):
            if ":lambda:" in target["Arn"]:
                assert any(
                    p["FunctionName"] == target["Arn"] and p.get("SourceArn") == rule_arn for p in permissions
                ), f"EventBridge may not invoke {target['Arn']} for rule {rule_id}"
                checked += 1
            dead_letter = target.get("DeadLetterConfig", {}).get("Arn")
            if dead_letter:
                assert _allows_service(
                    template, dead_letter, "events.amazonaws.com", "sqs:SendMessage", rule_arn
                ), f"rule {rule_id}: its dead-letter queue's policy does not let EventBridge send to it"
    assert checked >= 2  # the sweep's schedule and the nightly trigger


def test_every_api_method_is_behind_iam_auth_and_may_invoke_the_api_function(template: Template) -> None:
    permissions = _lambda_permissions(template, "apigateway.amazonaws.com")
    methods = template.of_type("AWS::ApiGateway::Method").values()
    assert methods
    for method in methods:
        props = method["Properties"]
        if props["HttpMethod"] == "OPTIONS":
            continue
        assert props["AuthorizationType"] == "AWS_IAM", props
        uri = template.resolve(props["Integration"]["Uri"])
        function_arn = uri.split("/functions/", 1)[1].split("/invocations", 1)[0]
        allowed = [p["SourceArn"] for p in permissions if p["FunctionName"] == function_arn]
        route = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:*/*/{props['HttpMethod']}/"
        assert any(
            fnmatch.fnmatchcase(a.replace(a.split(":")[5].split("/")[0], "*", 1), route + "*")
            or fnmatch.fnmatchcase(route, a)
            for a in allowed
        ), props


def _function_role_and_group(template: Template, function_id: str) -> tuple[str, str]:
    props = template.props(function_id)
    group = template.resolve(props["LoggingConfig"]["LogGroup"])
    return template.role_of(props["Role"]), group


def test_each_function_writes_logs_to_its_own_log_group_only(template: Template) -> None:
    groups = {}
    for function_id in template.python_functions():
        role, group = _function_role_and_group(template, function_id)
        groups[function_id] = (role, group)
    for function_id, (role, group) in groups.items():
        own = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2026/11/29/[$LATEST]abc"
        documents = [d for _, d in template.role_policies(role)]
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            assert evaluate(documents, action, own).allowed, f"{function_id} cannot write its logs"
        for other_id, (_, other) in groups.items():
            if other_id != function_id:
                theirs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{other}:log-stream:x"
                assert not evaluate(documents, "logs:PutLogEvents", theirs).allowed, (
                    f"{function_id} writes {other_id}'s logs"
                )


def test_the_execution_role_pulls_the_worker_image_and_writes_the_worker_logs(template: Template) -> None:
    definition = template.props(next(iter(template.of_type("AWS::Batch::JobDefinition"))))[
        "ContainerProperties"
    ]
    documents = [d for _, d in template.role_policies(template.role_of(definition["ExecutionRoleArn"]))]
    image = template.resolve(definition["Image"])
    repository = image.split("/", 1)[1].split(":", 1)[0]
    repository_arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repository}"
    assert evaluate(documents, "ecr:GetAuthorizationToken", "*").allowed
    for action in ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"):
        assert evaluate(documents, action, repository_arn).allowed, action
    log_options = template.resolve(definition["LogConfiguration"]["Options"])
    stream = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_options['awslogs-group']}:log-stream:worker/x/y"
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert evaluate(documents, action, stream).allowed, action
    for secret in definition.get("Secrets", []):
        assert evaluate(documents, "secretsmanager:GetSecretValue", secret["ValueFrom"]).allowed, secret


def test_instances_join_the_cluster_with_the_ecs_instance_role(template: Template) -> None:
    (profile,) = template.of_type("AWS::IAM::InstanceProfile").values()
    (role,) = [template.resolve(r) for r in profile["Properties"]["Roles"]]
    role_id = next(k for k in template.of_type("AWS::IAM::Role") if template.ref(k) == role)
    documents = [d for _, d in template.role_policies(role_id)]
    for action in (
        "ecs:RegisterContainerInstance",
        "ecs:Poll",
        "ecs:DiscoverPollEndpoint",
        "ecs:StartTelemetrySession",
    ):
        assert evaluate(documents, action, "*").allowed, action


def test_batch_and_spot_act_through_their_service_linked_roles(template: Template) -> None:
    (environment,) = template.of_type("AWS::Batch::ComputeEnvironment").values()
    props = environment["Properties"]
    # No ServiceRole: Batch uses AWSServiceRoleForBatch, which it creates itself.
    assert "ServiceRole" not in props
    resources = props["ComputeResources"]
    if resources["Type"] == "SPOT":
        # The capacity-optimized strategies need no Spot Fleet role; the account needs the
        # AWSServiceRoleForEC2Spot service-linked role (docs/deploy.md's checklist).
        assert resources["AllocationStrategy"] in ("SPOT_CAPACITY_OPTIMIZED", "SPOT_PRICE_CAPACITY_OPTIMIZED")
        assert "SpotIamFleetRole" not in resources
    launch_template = resources["LaunchTemplate"]
    assert launch_template.get("Version") not in (None, "$Latest", "$Default"), launch_template


def test_the_scheduler_role_covers_its_stream_and_on_failure_destination(template: Template) -> None:
    (mapping,) = template.of_type("AWS::Lambda::EventSourceMapping").values()
    props = template.resolve(mapping["Properties"])
    function_id = mapping["Properties"]["FunctionName"]["Ref"]
    role, _ = _function_role_and_group(template, function_id)
    documents = [d for _, d in template.role_policies(role)]
    stream = props["EventSourceArn"]
    for action in ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"):
        assert evaluate(documents, action, stream).allowed, action
    assert evaluate(documents, "dynamodb:ListStreams", "*").allowed
    destination = props["DestinationConfig"]["OnFailure"]["Destination"]
    assert evaluate(documents, "sqs:SendMessage", destination).allowed
