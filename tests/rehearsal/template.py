"""The synthesized template, read as CloudFormation would deploy it.

Physical names and ARNs are made here, the way CloudFormation makes them
(``<stack>-<logical id>-<suffix>``), and intrinsic functions (Ref, Fn::GetAtt, Fn::Join,
Fn::Sub, Fn::Select, Fn::Split) are resolved against them. Nothing here reads the
project's code: the rehearsal knows the stack only through its template.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"

# AWS managed policies the stack attaches, as AWS publishes them (only those the template uses
# are needed; an unknown one fails loudly rather than counting as "allows nothing").
MANAGED_POLICIES: dict[str, dict[str, Any]] = {
    "service-role/AWSLambdaBasicExecutionRole": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "*",
            }
        ]
    },
    "service-role/AmazonEC2ContainerServiceforEC2Role": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeTags",
                    "ecs:CreateCluster",
                    "ecs:DeregisterContainerInstance",
                    "ecs:DiscoverPollEndpoint",
                    "ecs:Poll",
                    "ecs:RegisterContainerInstance",
                    "ecs:StartTelemetrySession",
                    "ecs:UpdateContainerInstancesState",
                    "ecs:Submit*",
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ],
                "Resource": "*",
            },
            {"Effect": "Allow", "Action": "ecs:TagResource", "Resource": "*"},
        ]
    },
    "service-role/AmazonECSTaskExecutionRolePolicy": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ],
                "Resource": "*",
            }
        ]
    },
    "service-role/AmazonAPIGatewayPushToCloudWatchLogs": {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogGroups",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                    "logs:GetLogEvents",
                    "logs:FilterLogEvents",
                ],
                "Resource": "*",
            }
        ]
    },
}


class Unresolvable(Exception):
    """An intrinsic the rehearsal cannot resolve (a resource it does not model)."""


@dataclass
class Template:
    """A synthesized stack template and the physical identity of each of its resources."""

    stack_name: str
    body: dict[str, Any]
    outdir: Path
    # logical id -> {"Ref": value, attribute: value}; filled as resources are created.
    physical: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, outdir: Path, stack_name: str = "Overseer") -> Template:
        body = json.loads((outdir / f"{stack_name}.template.json").read_text())
        return cls(stack_name=stack_name, body=body, outdir=outdir)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.body["Resources"]

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_}

    def props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})

    def physical_name(self, logical_id: str, limit: int = 64) -> str:
        """A name as CloudFormation generates one: stack, logical id, a random-looking suffix."""
        suffix = hashlib.sha1(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:12].upper()
        return f"{self.stack_name}-{logical_id}-{suffix}"[:limit]

    # -- intrinsic functions -------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by what CloudFormation gives."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical, attribute)
            if key == "Fn::Join":
                separator, parts = arg
                return separator.join(str(self.resolve(p)) for p in self.resolve(parts))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(index)]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key.startswith("Fn::"):
                raise Unresolvable(f"{key} is not modelled by the rehearsal")
        return {k: self.resolve(v) for k, v in value.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        variables = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attribute = name.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!][^}]*)\}", replace, text)

    PSEUDO = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NoValue": None,
    }

    def ref(self, name: str) -> Any:
        if name == "AWS::StackName":
            return self.stack_name
        if name in self.PSEUDO:
            return self.PSEUDO[name]
        if name in self.body.get("Parameters", {}):
            return self.body["Parameters"][name].get("Default")
        return self._attribute(name, "Ref")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        return self._attribute(logical_id, attribute)

    def _attribute(self, logical_id: str, attribute: str) -> str:
        known = self.physical.get(logical_id)
        if known is None:
            known = self.physical[logical_id] = self._default_identity(logical_id)
        if attribute not in known:
            raise Unresolvable(f"{logical_id}.{attribute} ({self.resources[logical_id]['Type']})")
        return known[attribute]

    def _default_identity(self, logical_id: str) -> dict[str, str]:
        """Ref and ARN of a resource as CloudFormation would name it (not yet created anywhere)."""
        type_ = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
        match type_:
            case "AWS::IAM::Role":
                return {"Ref": name, "Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "RoleId": name}
            case "AWS::Lambda::Function":
                return {"Ref": name, "Arn": arn.format("lambda", f"function:{name}")}
            case "AWS::Logs::LogGroup":
                group = self.props(logical_id).get("LogGroupName") or f"/aws/rehearsal/{name}"
                return {"Ref": group, "Arn": arn.format("logs", f"log-group:{group}:*")}
            case "AWS::Events::Rule":
                return {"Ref": name, "Arn": arn.format("events", f"rule/{name}")}
            case "AWS::Events::EventBus":
                bus = self.props(logical_id).get("Name") or name
                return {"Ref": bus, "Name": bus, "Arn": arn.format("events", f"event-bus/{bus}")}
            case "AWS::Batch::JobQueue":
                queue_arn = arn.format("batch", f"job-queue/{name}")
                return {"Ref": queue_arn, "JobQueueArn": queue_arn}
            case "AWS::Batch::JobDefinition":
                return {"Ref": arn.format("batch", f"job-definition/{name}:1")}
            case "AWS::Batch::ComputeEnvironment":
                ce_arn = arn.format("batch", f"compute-environment/{name}")
                return {"Ref": ce_arn, "ComputeEnvironmentArn": ce_arn}
            case "AWS::SNS::Topic":
                return {"Ref": arn.format("sns", name), "TopicArn": arn.format("sns", name)}
            case "AWS::ApiGateway::RestApi":
                api_id = name[-10:].lower()
                return {"Ref": api_id, "RootResourceId": f"{api_id}-root"}
            # Data resources, as named before the emulator creates them (static checks).
            case "AWS::DynamoDB::Table":
                table = self.props(logical_id).get("TableName") or self.physical_name(logical_id, limit=255)
                table_arn = arn.format("dynamodb", f"table/{table}")
                return {
                    "Ref": table,
                    "Arn": table_arn,
                    "StreamArn": f"{table_arn}/stream/2026-01-01T00:00:00.000",
                }
            case "AWS::SQS::Queue":
                queue = self.props(logical_id).get("QueueName") or self.physical_name(logical_id, limit=80)
                return {
                    "Ref": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{queue}",
                    "QueueName": queue,
                    "Arn": arn.format("sqs", queue),
                }
            case "AWS::S3::Bucket":
                bucket = (
                    self.props(logical_id).get("BucketName") or self.physical_name(logical_id, limit=63)
                ).lower()
                return {"Ref": bucket, "Arn": f"arn:aws:s3:::{bucket}"}
            case "AWS::ApiGateway::Stage":
                return {"Ref": self.props(logical_id)["StageName"]}
            case "AWS::EC2::LaunchTemplate":
                return {
                    "Ref": f"lt-{name[-12:].lower()}",
                    "LatestVersionNumber": "1",
                    "DefaultVersionNumber": "1",
                }
            case "AWS::SecretsManager::Secret":
                return {"Ref": arn.format("secretsmanager", f"secret:{name}-AbCdEf")}
        # Resources the rehearsal does not run (network, dashboards, ...): an opaque identity.
        return {
            "Ref": f"{logical_id.lower()}-rehearsal",
            "Arn": f"arn:aws:rehearsal:::{logical_id}",
            "GroupId": f"sg-{logical_id.lower()}",
            "DefaultSecurityGroup": "sg-default",
        }

    # -- roles and their policies ---------------------------------------------------------

    def role_of(self, role_arn_expression: Any) -> str:
        """The logical id of the role an ``Fn::GetAtt [Role, Arn]`` names."""
        if isinstance(role_arn_expression, dict) and "Fn::GetAtt" in role_arn_expression:
            return str(role_arn_expression["Fn::GetAtt"][0])
        raise Unresolvable(f"not a role of this stack: {role_arn_expression!r}")

    def role_policies(self, role_logical_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Every identity policy document of a role, resolved, each with a name saying where
        it comes from (inline policy resource, role's inline policy, managed policy)."""
        documents: list[tuple[str, dict[str, Any]]] = []
        role = self.props(role_logical_id)
        for policy in role.get("Policies", []):
            documents.append(
                (f"{role_logical_id}/{policy['PolicyName']}", self.resolve(policy["PolicyDocument"]))
            )
        for managed in self.resolve(role.get("ManagedPolicyArns", [])):
            name = managed.split(":policy/", 1)[1]
            if name not in MANAGED_POLICIES:
                raise Unresolvable(f"managed policy {managed} is not modelled by the rehearsal")
            documents.append((f"managed:{name}", MANAGED_POLICIES[name]))
        for logical_id, policy in self.of_type("AWS::IAM::Policy").items():
            attached = policy["Properties"].get("Roles", [])
            if any(isinstance(r, dict) and r.get("Ref") == role_logical_id for r in attached):
                documents.append((logical_id, self.resolve(policy["Properties"]["PolicyDocument"])))
        return documents

    def statements(self, role_logical_id: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(document name, index, statement) of every statement of a role."""
        for name, document in self.role_policies(role_logical_id):
            statements = document["Statement"]
            for index, statement in enumerate(statements if isinstance(statements, list) else [statements]):
                yield name, index, statement

    # -- assets ---------------------------------------------------------------------------

    def asset_dir(self, logical_id: str) -> Path:
        """The staged asset directory of a Lambda function (what `cdk deploy` zips)."""
        metadata = self.resources[logical_id].get("Metadata", {})
        return self.outdir / metadata["aws:asset:path"]

    def python_functions(self) -> dict[str, dict[str, Any]]:
        return {
            k: v
            for k, v in self.of_type("AWS::Lambda::Function").items()
            if str(v["Properties"].get("Runtime", "")).startswith("python")
        }

    def output(self, name: str) -> Any:
        """A stack output's value, as ``aws cloudformation describe-stacks`` shows it."""
        return self.resolve(self.body["Outputs"][name]["Value"])

    def find(self, type_: str, predicate: Callable[[dict[str, Any]], bool]) -> str:
        """The one logical id of ``type_`` whose properties satisfy ``predicate``."""
        found = [k for k, v in self.of_type(type_).items() if predicate(v.get("Properties", {}))]
        if len(found) != 1:
            raise LookupError(f"expected one {type_}, found {found}")
        return found[0]
