"""Create the template's data resources in the emulator from their synthesized properties.

Tables (keys, indexes, stream view type, TTL), queues (visibility timeout, retention,
long polling, redrive policy and its max receives), buckets (versioning) and event buses
are made exactly as the template declares them, and their physical identities recorded on
the Template, so that any drift between the template and the code shows as a failure.
"""

from __future__ import annotations

import json
from typing import Any

from tests.rehearsal.template import ACCOUNT, REGION, Template

QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "DelaySeconds",
    "MaximumMessageSize",
    "FifoQueue",
    "ContentBasedDeduplication",
)


def create_resources(template: Template, session: Any) -> None:
    """Create every table, queue, bucket and event bus of the template (dependencies first)."""
    creators = {
        "AWS::DynamoDB::Table": _table,
        "AWS::SQS::Queue": _queue,
        "AWS::S3::Bucket": _bucket,
        "AWS::Events::EventBus": _event_bus,
    }
    done: set[str] = set()

    def create(logical_id: str) -> None:
        if logical_id in done:
            return
        done.add(logical_id)
        for dependency in _references(template.props(logical_id)):
            if template.resources.get(dependency, {}).get("Type") in creators:
                create(dependency)
        creators[template.resources[logical_id]["Type"]](template, logical_id, session)

    for logical_id, resource in template.resources.items():
        if resource["Type"] in creators:
            create(logical_id)


def _references(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for item in value.values():
            found |= _references(item)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item)
    return found


def _table(template: Template, logical_id: str, session: Any) -> None:
    props = template.resolve(template.props(logical_id))
    name = props.get("TableName") or template.physical_name(logical_id, limit=255)
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if request["BillingMode"] == "PROVISIONED":
        request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            request[key] = props[key]
    stream = props.get("StreamSpecification")
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    dynamodb = session.client("dynamodb")
    description = dynamodb.create_table(**request)["TableDescription"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )
    template.physical[logical_id] = {
        "Ref": name,
        "Arn": description["TableArn"],
        **({"StreamArn": description["LatestStreamArn"]} if stream else {}),
    }


def _queue(template: Template, logical_id: str, session: Any) -> None:
    props = template.resolve(template.props(logical_id))
    name = props.get("QueueName") or template.physical_name(logical_id, limit=80)
    attributes = {
        key: str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
        for key in QUEUE_ATTRIBUTES
        if key in props
    }
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    url = session.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    template.physical[logical_id] = {
        "Ref": url,
        "QueueUrl": url,
        "QueueName": name,
        "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
    }


def _bucket(template: Template, logical_id: str, session: Any) -> None:
    props = template.resolve(template.props(logical_id))
    name = (props.get("BucketName") or template.physical_name(logical_id, limit=63)).lower()
    s3 = session.client("s3")
    s3.create_bucket(Bucket=name)
    if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    template.physical[logical_id] = {
        "Ref": name,
        "Arn": f"arn:aws:s3:::{name}",
        "DomainName": f"{name}.s3.amazonaws.com",
        "RegionalDomainName": f"{name}.s3.{REGION}.amazonaws.com",
    }


def _event_bus(template: Template, logical_id: str, session: Any) -> None:
    props = template.resolve(template.props(logical_id))
    arn = session.client("events").create_event_bus(Name=props["Name"])["EventBusArn"]
    template.physical[logical_id] = {"Ref": props["Name"], "Name": props["Name"], "Arn": arn}
