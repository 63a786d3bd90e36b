"""The rehearsal's IAM model: the policy evaluator, and the permissions of requests botocore really sends."""

from __future__ import annotations

import functools
import io
from typing import Any, cast
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from tests.rehearsal.iam import StatementRef, UnsupportedPolicy, evaluate, statements, without_statement
from tests.rehearsal.permissions import (
    AwsRequest,
    Permission,
    UnknownRequest,
    head_object_needs_list_bucket,
    required_permissions,
)

REGION, ACCOUNT = "us-east-1", "123456789012"
QUEUE_URL = f"http://127.0.0.1:4566/{ACCOUNT}/dispatch"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:dispatch"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table"
BATCH = f"arn:aws:batch:{REGION}:{ACCOUNT}"


class _Captured(Exception):
    def __init__(self, request: Any) -> None:
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Captured(request)


@functools.cache
def _client(service: str, endpoint: str | None) -> Any:
    """A client whose requests are captured instead of sent (None: AWS's own, virtual-hosted endpoints)."""
    session = boto3.Session(aws_access_key_id="AKIDREHEARSAL", aws_secret_access_key="x", region_name=REGION)
    # AWS's own endpoints even when another test of this process set AWS_ENDPOINT_URL.
    config = (
        Config(s3={"addressing_style": "virtual"}, ignore_configured_endpoint_urls=True)
        if endpoint is None
        else None
    )
    client = cast(Any, session).client(service, endpoint_url=endpoint, config=config)
    client.meta.events.register("before-send", _capture)
    return client


def sent(
    service: str, operation: str, endpoint: str | None = "http://127.0.0.1:4566", **kwargs: Any
) -> AwsRequest:
    """The request botocore puts on the wire for `operation`, stopped before it is sent."""
    with pytest.raises(_Captured) as captured:
        getattr(_client(service, endpoint), operation)(**kwargs)
    prepared = captured.value.request
    url = urlsplit(prepared.url)
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in prepared.headers.items()}
    body = prepared.body.read() if isinstance(prepared.body, io.IOBase) else prepared.body or b""
    return AwsRequest(
        prepared.method,
        url.path,
        url.query,
        {"Host": url.netloc, **headers},
        body.encode() if isinstance(body, str) else body,
    )


def needs(request: AwsRequest, **kwargs: Any) -> list[tuple[str, str]]:
    return [
        (p.action, p.resource)
        for p in required_permissions(request, region=REGION, account=ACCOUNT, **kwargs)
    ]


# --- the evaluator -----------------------------------------------------------------------------------------


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_explicit_deny_wins_over_any_allow() -> None:
    docs = [doc(allow("sqs:*")), doc({"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": QUEUE_ARN})]
    denied = evaluate(docs, "sqs:DeleteQueue", QUEUE_ARN)
    assert (denied.allowed, denied.statements) == (False, (StatementRef(1, 0),))
    assert "explicitly denied" in denied.reason
    assert evaluate(docs, "sqs:SendMessage", QUEUE_ARN).statements == (StatementRef(0, 0),)


def test_nothing_allows_means_implicit_deny() -> None:
    decision = evaluate([doc(allow("sqs:SendMessage", QUEUE_ARN))], "sqs:ReceiveMessage", QUEUE_ARN)
    assert not decision.allowed and decision.statements == ()
    assert "sqs:ReceiveMessage" in decision.reason and QUEUE_ARN in decision.reason


def test_not_action_allows_everything_else() -> None:
    docs = [doc({"Effect": "Allow", "NotAction": ["iam:*", "sqs:Delete*"], "Resource": "*"})]
    assert evaluate(docs, "sqs:ReceiveMessage", QUEUE_ARN).allowed
    assert not evaluate(docs, "sqs:DeleteMessage", QUEUE_ARN).allowed
    assert not evaluate(docs, "iam:PassRole", "arn:aws:iam::1:role/r").allowed


def test_actions_match_case_insensitively_with_wildcards() -> None:
    assert evaluate([doc(allow("SQS:receivemessage"))], "sqs:ReceiveMessage", QUEUE_ARN).allowed
    assert evaluate([doc(allow("s3:Get*"))], "s3:GetObject", "arn:aws:s3:::b/k").allowed
    assert evaluate([doc(allow("dynamodb:?etItem"))], "dynamodb:GetItem", f"{TABLE}/t").allowed
    assert not evaluate([doc(allow("s3:Get*"))], "s3:PutObject", "arn:aws:s3:::b/k").allowed


def test_resources_match_case_sensitively_and_wildcards_span_separators() -> None:
    docs = [doc(allow("dynamodb:Query", f"{TABLE}/jobs*"))]
    assert evaluate(docs, "dynamodb:Query", f"{TABLE}/jobs/index/by-state").allowed
    assert not evaluate(docs, "dynamodb:Query", f"{TABLE}/Jobs").allowed
    assert evaluate(
        [doc(allow("s3:GetObject", "arn:aws:s3:::b/a?c"))], "s3:GetObject", "arn:aws:s3:::b/a/c"
    ).allowed
    not_resource = [doc({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::secret/*"})]
    assert not evaluate(not_resource, "s3:GetObject", "arn:aws:s3:::secret/k").allowed
    assert evaluate(not_resource, "s3:GetObject", "arn:aws:s3:::open/k").allowed


def test_string_equals_condition_needs_the_key() -> None:
    docs = [
        doc(
            allow(
                "s3:PutObject", Condition={"StringEquals": {"s3:x-amz-acl": ["private", "bucket-owner-read"]}}
            )
        )
    ]
    assert evaluate(docs, "s3:PutObject", "arn:aws:s3:::b/k", {"s3:x-amz-acl": "bucket-owner-read"}).allowed
    assert not evaluate(docs, "s3:PutObject", "arn:aws:s3:::b/k", {"s3:x-amz-acl": "public-read"}).allowed
    assert not evaluate(docs, "s3:PutObject", "arn:aws:s3:::b/k").allowed
    if_exists = [doc(allow("s3:PutObject", Condition={"StringEqualsIfExists": {"s3:x-amz-acl": "private"}}))]
    assert evaluate(if_exists, "s3:PutObject", "arn:aws:s3:::b/k").allowed


def test_arn_like_condition_and_keys_are_anded() -> None:
    condition = {
        "ArnLike": {"aws:SourceArn": "arn:aws:events:*:123456789012:rule/overseer-*"},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }
    docs = [doc(allow("lambda:InvokeFunction", Condition=condition))]
    context = {
        "aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/overseer-nightly",
        "aws:SourceAccount": ACCOUNT,
    }
    assert evaluate(docs, "lambda:InvokeFunction", "*", context).allowed
    assert not evaluate(
        docs, "lambda:InvokeFunction", "*", {**context, "aws:SourceAccount": "999999999999"}
    ).allowed
    other_account = {**context, "aws:SourceArn": f"arn:aws:events:{REGION}:999999999999:rule/overseer-x"}
    assert not evaluate(docs, "lambda:InvokeFunction", "*", other_account).allowed


def test_set_operators_over_multivalued_keys() -> None:
    any_value = [doc(allow("s3:*", Condition={"ForAnyValue:StringLike": {"aws:TagKeys": "team-*"}}))]
    all_values = [doc(allow("s3:*", Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}))]
    assert evaluate(any_value, "s3:PutObject", "*", {"aws:TagKeys": ["x", "team-a"]}).allowed
    assert not evaluate(any_value, "s3:PutObject", "*", {"aws:TagKeys": ["x"]}).allowed
    assert evaluate(all_values, "s3:PutObject", "*", {"aws:TagKeys": ["a", "b"]}).allowed
    assert not evaluate(all_values, "s3:PutObject", "*", {"aws:TagKeys": ["a", "c"]}).allowed


def test_unknown_operator_raises_instead_of_allowing() -> None:
    docs = [doc(allow("s3:*", Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}))]
    with pytest.raises(UnsupportedPolicy, match="DateGreaterThan"):
        evaluate(docs, "s3:GetObject", "*", {"aws:CurrentTime": "2026-11-29T00:00:00Z"})
    with pytest.raises(UnsupportedPolicy, match="unresolved"):
        evaluate([doc(allow("s3:*", {"Fn::GetAtt": ["Bucket", "Arn"]}))], "s3:GetObject", "*")


def test_without_statement_removes_exactly_one() -> None:
    docs = [doc(allow("sqs:SendMessage"), allow("sqs:ReceiveMessage")), {"Statement": allow("s3:GetObject")}]
    assert statements(docs) == [StatementRef(0, 0), StatementRef(0, 1), StatementRef(1, 0)]
    fewer = without_statement(docs, StatementRef(0, 1))
    assert not evaluate(fewer, "sqs:ReceiveMessage", QUEUE_ARN).allowed
    assert (
        evaluate(fewer, "sqs:SendMessage", QUEUE_ARN).allowed and evaluate(fewer, "s3:GetObject", "*").allowed
    )
    assert statements(without_statement(docs, StatementRef(1, 0))) == [StatementRef(0, 0), StatementRef(0, 1)]
    assert len(docs[0]["Statement"]) == 2  # the originals are untouched


# --- requests as botocore sends them -----------------------------------------------------------------------


def test_request_names_its_service_caller_and_operation() -> None:
    request = sent("sqs", "receive_message", QueueUrl=QUEUE_URL)
    assert (request.service, request.access_key, request.operation) == (
        "sqs",
        "AKIDREHEARSAL",
        "sqs:ReceiveMessage",
    )
    assert request.headers["x-amz-target"] == "AmazonSQS.ReceiveMessage"


@pytest.mark.parametrize(
    ("operation", "kwargs", "expected"),
    [
        ("get_item", {"Key": {"pk": {"S": "1"}}}, [("dynamodb:GetItem", f"{TABLE}/jobs")]),
        ("put_item", {"Item": {"pk": {"S": "1"}}}, [("dynamodb:PutItem", f"{TABLE}/jobs")]),
        ("update_item", {"Key": {"pk": {"S": "1"}}}, [("dynamodb:UpdateItem", f"{TABLE}/jobs")]),
        ("delete_item", {"Key": {"pk": {"S": "1"}}}, [("dynamodb:DeleteItem", f"{TABLE}/jobs")]),
        ("query", {}, [("dynamodb:Query", f"{TABLE}/jobs")]),
        ("query", {"IndexName": "by-state"}, [("dynamodb:Query", f"{TABLE}/jobs/index/by-state")]),
        ("scan", {"IndexName": "by-state"}, [("dynamodb:Scan", f"{TABLE}/jobs/index/by-state")]),
        ("scan", {}, [("dynamodb:Scan", f"{TABLE}/jobs")]),
        ("describe_table", {}, [("dynamodb:DescribeTable", f"{TABLE}/jobs")]),
    ],
)
def test_dynamodb_single_table_calls(operation: str, kwargs: dict[str, Any], expected: list[Any]) -> None:
    assert needs(sent("dynamodb", operation, TableName="jobs", **kwargs)) == expected


def test_dynamodb_batch_calls_need_the_batch_action_on_each_table() -> None:
    key = {"Keys": [{"pk": {"S": "1"}}]}
    assert needs(sent("dynamodb", "batch_get_item", RequestItems={"jobs": key, "graphs": key})) == [
        ("dynamodb:BatchGetItem", f"{TABLE}/jobs"),
        ("dynamodb:BatchGetItem", f"{TABLE}/graphs"),
    ]
    put = [{"PutRequest": {"Item": {"pk": {"S": "1"}}}}]
    assert needs(sent("dynamodb", "batch_write_item", RequestItems={"rows": put})) == [
        ("dynamodb:BatchWriteItem", f"{TABLE}/rows")
    ]


def test_dynamodb_transactions_need_the_singular_action_per_item() -> None:
    key = {"pk": {"S": "1"}}
    items = [
        {"Put": {"TableName": "jobs", "Item": key}},
        {"Update": {"TableName": "graphs", "Key": key, "UpdateExpression": "SET a = :a",
                    "ExpressionAttributeValues": {":a": {"S": "x"}}}},
        {"Delete": {"TableName": "jobs", "Key": key}},
        {"ConditionCheck": {"TableName": "graphs", "Key": key, "ConditionExpression": "attribute_exists(k)"}},
    ]  # fmt: skip
    assert needs(sent("dynamodb", "transact_write_items", TransactItems=items)) == [
        ("dynamodb:PutItem", f"{TABLE}/jobs"),
        ("dynamodb:UpdateItem", f"{TABLE}/graphs"),
        ("dynamodb:DeleteItem", f"{TABLE}/jobs"),
        ("dynamodb:ConditionCheckItem", f"{TABLE}/graphs"),
    ]
    gets = [{"Get": {"TableName": "jobs", "Key": key}}, {"Get": {"TableName": "graphs", "Key": key}}]
    assert needs(sent("dynamodb", "transact_get_items", TransactItems=gets)) == [
        ("dynamodb:GetItem", f"{TABLE}/jobs"),
        ("dynamodb:GetItem", f"{TABLE}/graphs"),
    ]


def test_dynamodb_streams_calls_need_the_stream() -> None:
    stream = f"{TABLE}/jobs/stream/2026-11-29T00:00:00.000"
    assert needs(sent("dynamodbstreams", "describe_stream", StreamArn=stream)) == [
        ("dynamodb:DescribeStream", stream)
    ]
    iterator = sent(
        "dynamodbstreams",
        "get_shard_iterator",
        StreamArn=stream,
        ShardId="shardId-00000001700000000000-abcdef12",
        ShardIteratorType="LATEST",
    )
    assert needs(iterator) == [("dynamodb:GetShardIterator", stream)]
    records = sent("dynamodbstreams", "get_records", ShardIterator="it-1")
    assert needs(records, stream_of_iterator={"it-1": stream}.get) == [("dynamodb:GetRecords", stream)]
    with pytest.raises(UnknownRequest, match="GetRecords"):
        needs(records)
    assert needs(sent("dynamodbstreams", "list_streams")) == [("dynamodb:ListStreams", "*")]


def test_sqs_queue_url_is_its_arn_and_batches_are_the_singular_actions() -> None:
    entry = {"Id": "1", "ReceiptHandle": "r"}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "send_message_batch": ({"Entries": [{"Id": "1", "MessageBody": "m"}]}, "sqs:SendMessage"),
        "delete_message_batch": ({"Entries": [entry]}, "sqs:DeleteMessage"),
        "change_message_visibility_batch": ({"Entries": [{**entry, "VisibilityTimeout": 0}]},
                                            "sqs:ChangeMessageVisibility"),
        "receive_message": ({}, "sqs:ReceiveMessage"),
        "get_queue_attributes": ({"AttributeNames": ["All"]}, "sqs:GetQueueAttributes"),
        "set_queue_attributes": ({"Attributes": {"VisibilityTimeout": "1"}}, "sqs:SetQueueAttributes"),
        "purge_queue": ({}, "sqs:PurgeQueue"),
        "change_message_visibility": ({"ReceiptHandle": "r", "VisibilityTimeout": 5},
                                      "sqs:ChangeMessageVisibility"),
    }  # fmt: skip
    for operation, (kwargs, action) in cases.items():
        assert needs(sent("sqs", operation, QueueUrl=QUEUE_URL, **kwargs)) == [(action, QUEUE_ARN)], operation
    aws_url = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/dlq"
    assert needs(sent("sqs", "receive_message", QueueUrl=aws_url)) == [
        ("sqs:ReceiveMessage", f"arn:aws:sqs:eu-west-1:{ACCOUNT}:dlq")
    ]
    assert needs(sent("sqs", "get_queue_url", QueueName="dispatch")) == [("sqs:GetQueueUrl", QUEUE_ARN)]


def test_sqs_query_protocol() -> None:
    body = f"Action=DeleteMessageBatch&Version=2012-11-05&QueueUrl={QUEUE_URL}&Entry.1.Id=1".encode()
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261129/us-east-1/sqs/aws4_request, Signature=0",
    }
    request = AwsRequest("POST", "/", "", headers, body)
    assert request.operation == "sqs:DeleteMessageBatch"
    assert needs(request) == [("sqs:DeleteMessage", QUEUE_ARN)]


def test_s3_object_reads_and_writes() -> None:
    obj = "arn:aws:s3:::artifacts/graphs/g 1/out.json"
    key = {"Bucket": "artifacts", "Key": "graphs/g 1/out.json"}
    assert needs(sent("s3", "get_object", **key)) == [("s3:GetObject", obj)]
    assert needs(sent("s3", "head_object", **key)) == [("s3:GetObject", obj)]
    json_object = sent("s3", "put_object", Body=b"[1]", ContentType="application/json", **key)
    assert needs(json_object) == [("s3:PutObject", obj)]
    assert json_object.operation == "s3:PUT /artifacts/graphs/g%201/out.json"
    assert needs(sent("s3", "put_object", Body=b"{}", Tagging="kind=log", **key)) == [
        ("s3:PutObject", obj),
        ("s3:PutObjectTagging", obj),
    ]
    assert needs(sent("s3", "delete_object", **key)) == [("s3:DeleteObject", obj)]
    assert needs(sent("s3", "copy_object", CopySource={"Bucket": "inputs", "Key": "a b.csv"}, **key)) == [
        ("s3:PutObject", obj),
        ("s3:GetObject", "arn:aws:s3:::inputs/a b.csv"),
    ]


def test_s3_virtual_hosted_requests_name_the_bucket_in_the_host() -> None:
    request = sent("s3", "head_object", endpoint=None, Bucket="my-artifacts", Key="k/v")
    assert request.headers["host"].startswith("my-artifacts.s3")
    assert needs(request) == [("s3:GetObject", "arn:aws:s3:::my-artifacts/k/v")]
    listing = sent("s3", "list_objects_v2", endpoint=None, Bucket="my-artifacts", Prefix="k/")
    assert needs(listing) == [("s3:ListBucket", "arn:aws:s3:::my-artifacts")]


def test_s3_multipart_calls_are_put_object() -> None:
    key, obj = {"Bucket": "artifacts", "Key": "big"}, "arn:aws:s3:::artifacts/big"
    assert needs(sent("s3", "create_multipart_upload", **key)) == [("s3:PutObject", obj)]
    assert needs(sent("s3", "upload_part", UploadId="u", PartNumber=1, Body=b"x", **key)) == [
        ("s3:PutObject", obj)
    ]
    parts = {"Parts": [{"ETag": "e", "PartNumber": 1}]}
    assert needs(sent("s3", "complete_multipart_upload", UploadId="u", MultipartUpload=parts, **key)) == [
        ("s3:PutObject", obj)
    ]
    assert needs(sent("s3", "abort_multipart_upload", UploadId="u", **key)) == [
        ("s3:AbortMultipartUpload", obj)
    ]
    assert needs(sent("s3", "list_parts", UploadId="u", **key)) == [("s3:ListMultipartUploadParts", obj)]
    assert needs(sent("s3", "list_multipart_uploads", Bucket="artifacts")) == [
        ("s3:ListBucketMultipartUploads", "arn:aws:s3:::artifacts")
    ]


def test_s3_bucket_calls() -> None:
    bucket = "arn:aws:s3:::artifacts"
    assert needs(sent("s3", "list_objects_v2", Bucket="artifacts", Prefix="g/")) == [
        ("s3:ListBucket", bucket)
    ]
    assert needs(sent("s3", "list_objects", Bucket="artifacts")) == [("s3:ListBucket", bucket)]
    assert needs(sent("s3", "head_bucket", Bucket="artifacts")) == [("s3:ListBucket", bucket)]
    assert needs(sent("s3", "get_bucket_location", Bucket="artifacts")) == [("s3:GetBucketLocation", bucket)]
    delete = {"Objects": [{"Key": "a"}, {"Key": "b c"}]}
    assert needs(sent("s3", "delete_objects", Bucket="artifacts", Delete=delete)) == [
        ("s3:DeleteObject", f"{bucket}/a"),
        ("s3:DeleteObject", f"{bucket}/b c"),
    ]
    with pytest.raises(UnknownRequest, match="policy"):
        needs(sent("s3", "get_bucket_policy", Bucket="artifacts"))


def test_reading_an_object_needs_list_bucket_to_see_a_404() -> None:
    bucket = Permission("s3:ListBucket", "arn:aws:s3:::artifacts")
    assert head_object_needs_list_bucket(sent("s3", "head_object", Bucket="artifacts", Key="k")) == bucket
    assert head_object_needs_list_bucket(sent("s3", "get_object", Bucket="artifacts", Key="k")) == bucket
    assert (
        head_object_needs_list_bucket(sent("s3", "put_object", Bucket="artifacts", Key="k", Body=b"")) is None
    )
    assert (
        head_object_needs_list_bucket(sent("s3", "list_parts", Bucket="artifacts", Key="k", UploadId="u"))
        is None
    )


def test_batch_submit_job_needs_the_queue_and_the_job_definition() -> None:
    assert needs(sent("batch", "submit_job", jobName="j", jobQueue="workers", jobDefinition="worker:3")) == [
        ("batch:SubmitJob", f"{BATCH}:job-queue/workers"),
        ("batch:SubmitJob", f"{BATCH}:job-definition/worker:3"),
    ]
    arns: dict[str, str] = {
        "jobQueue": f"{BATCH}:job-queue/q",
        "jobDefinition": f"{BATCH}:job-definition/worker",
    }
    assert needs(sent("batch", "submit_job", jobName="j", **arns)) == [
        ("batch:SubmitJob", arns["jobQueue"]),
        ("batch:SubmitJob", arns["jobDefinition"]),
    ]
    assert needs(sent("batch", "submit_job", jobName="j", jobQueue="q", jobDefinition="worker"))[1] == (
        "batch:SubmitJob",
        f"{BATCH}:job-definition/worker",
    )


def test_batch_reads_are_any_resource_and_job_changes_name_the_job() -> None:
    assert needs(sent("batch", "list_jobs", jobQueue="q")) == [("batch:ListJobs", "*")]
    assert needs(sent("batch", "describe_jobs", jobs=["1"])) == [("batch:DescribeJobs", "*")]
    assert needs(sent("batch", "describe_job_queues")) == [("batch:DescribeJobQueues", "*")]
    assert needs(sent("batch", "describe_compute_environments")) == [
        ("batch:DescribeComputeEnvironments", "*")
    ]
    assert needs(sent("batch", "describe_job_definitions")) == [("batch:DescribeJobDefinitions", "*")]
    assert needs(sent("batch", "terminate_job", jobId="j-1", reason="r")) == [
        ("batch:TerminateJob", f"{BATCH}:job/j-1")
    ]
    assert needs(sent("batch", "cancel_job", jobId="j-1", reason="r")) == [
        ("batch:CancelJob", f"{BATCH}:job/j-1")
    ]
    assert sent("batch", "cancel_job", jobId="j-1", reason="r").operation == "batch:CancelJob"


def test_eventbridge_put_events_needs_each_bus() -> None:
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus"
    entries = [
        {"Source": "s", "DetailType": "d", "Detail": "{}"},
        {"Source": "s", "DetailType": "d", "Detail": "{}", "EventBusName": "overseer"},
        {"Source": "s", "DetailType": "d", "Detail": "{}", "EventBusName": f"{bus}/other"},
    ]
    assert needs(sent("events", "put_events", Entries=entries)) == [
        ("events:PutEvents", f"{bus}/default"),
        ("events:PutEvents", f"{bus}/overseer"),
        ("events:PutEvents", f"{bus}/other"),
    ]


def test_logs_calls_name_the_group_or_the_stream() -> None:
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/batch/job"
    assert needs(sent("logs", "filter_log_events", logGroupName="/aws/batch/job")) == [
        ("logs:FilterLogEvents", f"{group}:*")
    ]
    assert needs(sent("logs", "describe_log_streams", logGroupName="/aws/batch/job")) == [
        ("logs:DescribeLogStreams", f"{group}:*")
    ]
    stream = {"logGroupName": "/aws/batch/job", "logStreamName": "worker/1"}
    assert needs(sent("logs", "get_log_events", **stream)) == [
        ("logs:GetLogEvents", f"{group}:log-stream:worker/1")
    ]
    assert needs(sent("logs", "create_log_stream", **stream)) == [
        ("logs:CreateLogStream", f"{group}:log-stream:worker/1")
    ]
    events = [{"timestamp": 1, "message": "m"}]
    assert needs(sent("logs", "put_log_events", logEvents=events, **stream)) == [
        ("logs:PutLogEvents", f"{group}:log-stream:worker/1")
    ]


def test_cloudwatch_sts_and_secrets() -> None:
    metric: dict[str, Any] = {"Namespace": "Overseer", "MetricData": [{"MetricName": "m", "Value": 1}]}
    assert needs(sent("cloudwatch", "put_metric_data", **metric)) == [("cloudwatch:PutMetricData", "*")]
    query = AwsRequest(
        "POST",
        "/",
        "",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261129/us-east-1/monitoring/aws4_request",
        },
        b"Action=PutMetricData&Namespace=Overseer",
    )
    assert needs(query) == [("cloudwatch:PutMetricData", "*")]
    assert needs(sent("sts", "get_caller_identity")) == []
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-AbCdEf"
    assert needs(sent("secretsmanager", "get_secret_value", SecretId=secret)) == [
        ("secretsmanager:GetSecretValue", secret)
    ]
    by_name = needs(sent("secretsmanager", "get_secret_value", SecretId="db"))
    assert by_name == [
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-??????")
    ]


def test_unknown_requests_are_refused_not_guessed() -> None:
    with pytest.raises(UnknownRequest, match="CreateBackup"):
        needs(sent("dynamodb", "create_backup", TableName="jobs", BackupName="nightly"))
    with pytest.raises(UnknownRequest, match="PutRule"):
        needs(sent("events", "put_rule", Name="r", ScheduleExpression="rate(1 minute)"))
    with pytest.raises(UnknownRequest, match="lambda"):
        needs(sent("lambda", "list_functions"))
    malformed = sent("dynamodb", "get_item", TableName="jobs", Key={"pk": {"S": "1"}})
    malformed.body = b"[]"
    with pytest.raises(UnknownRequest, match="malformed dynamodb:GetItem"):
        needs(malformed)
    with pytest.raises(UnknownRequest, match="createjobqueue"):
        needs(sent("batch", "create_job_queue", jobQueueName="q", priority=1, computeEnvironmentOrder=[]))


def test_a_presigned_get_is_a_get_object_by_the_key_that_signed_it() -> None:
    """An artifact download URL the API presigned: whoever GETs it acts as the API's role."""
    from botocore.config import Config

    session = boto3.Session(aws_access_key_id="ASIAAPIROLE", aws_secret_access_key="x", region_name=REGION)
    s3 = session.client("s3", endpoint_url="http://127.0.0.1:4566", config=Config(signature_version="s3v4"))
    url = urlsplit(s3.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "g1/a b.txt"}))
    request = AwsRequest("GET", url.path, url.query, {"Host": url.netloc})
    assert request.access_key == "ASIAAPIROLE"
    assert needs(request) == [("s3:GetObject", "arn:aws:s3:::b/g1/a b.txt")]
