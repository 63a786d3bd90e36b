"""The IAM permissions a raw AWS HTTP request needs, read from the request as botocore sends it.

Written from the AWS Service Authorization Reference, independent of the project's code.
Anything not modelled raises `UnknownRequest`: the rehearsal must never guess a permission.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

from urllib3 import HTTPHeaderDict


class UnknownRequest(Exception):
    """A request whose permissions this module does not know."""


@dataclass(frozen=True)
class Permission:
    action: str
    resource: str


@dataclass
class AwsRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""

    def __post_init__(self) -> None:
        self.headers = HTTPHeaderDict(self.headers)  # case-insensitive lookups

    @cached_property
    def _scope(self) -> list[str]:
        """AKID/date/region/service/aws4_request, from the header or a presigned URL."""
        found = re.search(r"Credential=([^,\s]+)", self.headers.get("Authorization", ""))
        scope = found.group(1) if found else "".join(parse_qs(self.query).get("X-Amz-Credential", []))
        parts = scope.split("/")
        return parts if len(parts) == 5 else ["", "", "", "", ""]

    @property
    def service(self) -> str:
        """The SigV4 signing name, e.g. `sqs`, `dynamodb` (also for DynamoDB Streams), `s3`."""
        return self._scope[3]

    @property
    def access_key(self) -> str:
        return self._scope[0]

    @property
    def target(self) -> str:
        return self.headers.get("X-Amz-Target", "")

    @cached_property
    def json(self) -> dict[str, Any]:
        """The parameters of the JSON protocols (a ValueError when the body is not a JSON object)."""
        decoded = json.loads(self.body or b"{}")
        if not isinstance(decoded, dict):
            raise ValueError(f"not a JSON object: {self.body[:80]!r}")
        return decoded

    @cached_property
    def form(self) -> dict[str, str]:
        """The parameters of the query protocol: the URL's query and a form-encoded body."""
        form = parse_qs(self.query)
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            form |= parse_qs(self.body.decode(errors="replace"))
        return {k: v[0] for k, v in form.items()}

    @property
    def operation(self) -> str:
        """A readable `service:OperationName`, for messages."""
        name = self.target.rpartition(".")[2] or self.form.get("Action", "")
        if self.service == "batch":
            name = _BATCH_OPS.get(self.path.removeprefix("/v1/"), "")
        return f"{self.service}:{name or f'{self.method} {self.path}'}"

    def describe(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} target={self.target!r}"


Resolver = Callable[[AwsRequest, "Arns"], list[Permission]]


@dataclass(frozen=True)
class Arns:
    region: str
    account: str
    stream_of_iterator: Callable[[str], str | None]

    def of(self, service: str, kind: str, name: str) -> str:
        """`name` as is when it is an ARN, else the ARN of `service` and resource `kind` built from it."""
        if name.startswith("arn:"):
            return name
        return f"arn:aws:{service}:{self.region}:{self.account}:{kind}{name}"


def _operation(request: AwsRequest, prefix: str) -> str:
    if not request.target.startswith(prefix + "."):
        raise UnknownRequest(f"unexpected target for {request.service}: {request.describe()}")
    return request.target.removeprefix(prefix + ".")


_DYNAMODB_TABLE_OPS = {
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable",
    "ConditionCheckItem", "CreateTable", "DeleteTable", "UpdateTable", "DescribeTimeToLive",
}  # fmt: skip
_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}  # fmt: skip


def _dynamodb(request: AwsRequest, arns: Arns) -> list[Permission]:
    if request.target.startswith("DynamoDBStreams_20120810."):
        return _dynamodb_streams(request, arns)
    op, p = _operation(request, "DynamoDB_20120810"), request.json

    def table(name: str, index: str | None = None) -> str:
        return arns.of("dynamodb", "table/", name) + (f"/index/{index}" if index else "")

    if op in _DYNAMODB_TABLE_OPS:
        index = p.get("IndexName") if op in ("Query", "Scan") else None
        return [Permission(f"dynamodb:{op}", table(p["TableName"], index))]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [Permission(f"dynamodb:{op}", table(name)) for name in p["RequestItems"]]
    if op in ("TransactWriteItems", "TransactGetItems"):
        return [
            Permission(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(spec["TableName"]))
            for item in p["TransactItems"]
            for kind, spec in item.items()
        ]
    if op == "ListTables":
        return [Permission("dynamodb:ListTables", "*")]
    raise UnknownRequest(f"DynamoDB {op}: {request.describe()}")


def _dynamodb_streams(request: AwsRequest, arns: Arns) -> list[Permission]:
    op, p = _operation(request, "DynamoDBStreams_20120810"), request.json
    if op in ("DescribeStream", "GetShardIterator"):
        return [Permission(f"dynamodb:{op}", p["StreamArn"])]
    if op == "GetRecords":
        stream = arns.stream_of_iterator(p["ShardIterator"])
        if stream is None:
            raise UnknownRequest(f"GetRecords with an iterator of no known stream: {request.describe()}")
        return [Permission("dynamodb:GetRecords", stream)]
    if op == "ListStreams":
        return [Permission("dynamodb:ListStreams", "*")]
    raise UnknownRequest(f"DynamoDB Streams {op}: {request.describe()}")


_SQS_QUEUE_OPS = {
    "SendMessage", "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes",
    "SetQueueAttributes", "PurgeQueue", "DeleteQueue", "ListDeadLetterSourceQueues", "ListQueueTags",
    "TagQueue", "UntagQueue",
}  # fmt: skip
_SQS_BATCHES = {f"{op}Batch": op for op in ("SendMessage", "DeleteMessage", "ChangeMessageVisibility")}


def queue_arn(url: str, region: str) -> str:
    """`http://host:port/{account}/{name}` or `https://sqs.{region}.amazonaws.com/...` as an ARN."""
    parts = urlsplit(url)
    found = re.fullmatch(r"/(\d{12}|[^/]+)/([^/]+)/?", parts.path)
    if not found:
        raise UnknownRequest(f"not a queue URL: {url}")
    host = re.fullmatch(r"sqs\.([a-z0-9-]+)\.amazonaws\.com", parts.hostname or "")
    return f"arn:aws:sqs:{host.group(1) if host else region}:{found.group(1)}:{found.group(2)}"


def _sqs(request: AwsRequest, arns: Arns) -> list[Permission]:
    op = _operation(request, "AmazonSQS") if request.target else request.form.get("Action", "")
    p = request.json if request.target else request.form
    action = _SQS_BATCHES.get(op, op)  # a batch call needs its singular action
    if action in _SQS_QUEUE_OPS:
        return [Permission(f"sqs:{action}", queue_arn(p["QueueUrl"], arns.region))]
    if op in ("GetQueueUrl", "CreateQueue"):
        account = p.get("QueueOwnerAWSAccountId", arns.account)
        return [Permission(f"sqs:{op}", f"arn:aws:sqs:{arns.region}:{account}:{p['QueueName']}")]
    if op == "ListQueues":
        return [Permission("sqs:ListQueues", "*")]
    raise UnknownRequest(f"SQS {op or '(no action)'}: {request.describe()}")


def _s3_target(request: AwsRequest) -> tuple[str, str, set[str]]:
    """(bucket, key, query keys) of an S3 request, path-style or virtual-hosted."""
    host = request.headers.get("Host", "").rsplit(":", 1)[0]
    virtual = re.fullmatch(r"(.+)\.s3(?:[.-].*)?", host)
    path = request.path.lstrip("/")
    bucket, _, key = (f"{virtual.group(1)}/{path}" if virtual else path).partition("/")
    if not bucket:
        raise UnknownRequest(f"S3 request without a bucket: {request.describe()}")
    # x-id names the SDK's operation; X-Amz-* (Credential, Signature...) sign a presigned URL.
    keys = {
        k
        for k in parse_qs(request.query, keep_blank_values=True)
        if k != "x-id" and not k.lower().startswith("x-amz-")
    }
    return bucket, unquote(key), keys


_S3_BUCKET_OPS = {
    ("GET", None): "s3:ListBucket", ("HEAD", None): "s3:ListBucket", ("GET", "uploads"):
    "s3:ListBucketMultipartUploads", ("GET", "location"): "s3:GetBucketLocation", ("GET", "versions"):
    "s3:ListBucketVersions", ("POST", "delete"): "s3:DeleteObject",
}  # fmt: skip
_S3_OBJECT_OPS = {
    ("GET", None): "s3:GetObject", ("HEAD", None): "s3:GetObject", ("PUT", None): "s3:PutObject",
    ("DELETE", None): "s3:DeleteObject", ("POST", "uploads"): "s3:PutObject", ("PUT", "uploadId"):
    "s3:PutObject", ("POST", "uploadId"): "s3:PutObject", ("DELETE", "uploadId"): "s3:AbortMultipartUpload",
    ("GET", "uploadId"): "s3:ListMultipartUploadParts", ("GET", "tagging"): "s3:GetObjectTagging",
    ("PUT", "tagging"): "s3:PutObjectTagging",
}  # fmt: skip
_S3_LIST_PARAMS = {"list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token",
                   "start-after", "encoding-type", "fetch-owner", "key-marker", "upload-id-marker",
                   "max-uploads", "version-id-marker"}  # fmt: skip
_S3_OBJECT_PARAMS = {"partNumber", "response-content-type", "response-content-language", "response-expires",
                     "response-cache-control", "response-content-disposition",
                     "response-content-encoding"}  # fmt: skip


def _s3(request: AwsRequest, arns: Arns) -> list[Permission]:
    bucket, key, keys = _s3_target(request)
    subresources = keys - (_S3_OBJECT_PARAMS if key else _S3_LIST_PARAMS)
    sub = subresources.pop() if len(subresources) == 1 else None
    action = (_S3_OBJECT_OPS if key else _S3_BUCKET_OPS).get((request.method, sub))
    if action is None or subresources:
        raise UnknownRequest(f"S3 {request.describe()}")
    if not key:
        if sub == "delete":
            root = ElementTree.fromstring(request.body)
            names = [e.text or "" for e in root.iter() if e.tag.rpartition("}")[2] == "Key"]
            return [Permission(action, f"arn:aws:s3:::{bucket}/{name}") for name in names]
        return [Permission(action, f"arn:aws:s3:::{bucket}")]
    needed = [Permission(action, f"arn:aws:s3:::{bucket}/{key}")]
    if request.method in ("PUT", "POST") and sub in (None, "uploads") and "x-amz-tagging" in request.headers:
        needed.append(Permission("s3:PutObjectTagging", f"arn:aws:s3:::{bucket}/{key}"))
    if request.method == "PUT" and "x-amz-copy-source" in request.headers:
        source = unquote(request.headers["x-amz-copy-source"].partition("?")[0]).lstrip("/")
        needed.append(Permission("s3:GetObject", f"arn:aws:s3:::{source}"))
    return needed


def head_object_needs_list_bucket(request: AwsRequest) -> Permission | None:
    """ListBucket on the bucket for a GET/HEAD of an object: without it AWS answers 403, not 404."""
    if request.service != "s3" or request.method not in ("GET", "HEAD"):
        return None
    bucket, key, keys = _s3_target(request)
    if not key or keys - _S3_OBJECT_PARAMS:
        return None
    return Permission("s3:ListBucket", f"arn:aws:s3:::{bucket}")


_BATCH_OPS = {op.lower(): op for op in (
    "SubmitJob", "ListJobs", "DescribeJobs", "DescribeJobQueues", "DescribeComputeEnvironments",
    "DescribeJobDefinitions", "TerminateJob", "CancelJob")}  # fmt: skip


def _batch(request: AwsRequest, arns: Arns) -> list[Permission]:
    op = _BATCH_OPS.get(request.path.removeprefix("/v1/")) if request.method == "POST" else None
    p = request.json if op else {}
    if op == "SubmitJob":
        return [
            Permission("batch:SubmitJob", arns.of("batch", "job-queue/", p["jobQueue"])),
            Permission("batch:SubmitJob", arns.of("batch", "job-definition/", p["jobDefinition"])),
        ]
    if op in ("TerminateJob", "CancelJob"):
        return [Permission(f"batch:{op}", arns.of("batch", "job/", p["jobId"]))]
    if op:
        return [Permission(f"batch:{op}", "*")]
    raise UnknownRequest(f"Batch {request.describe()}")


def _events(request: AwsRequest, arns: Arns) -> list[Permission]:
    if _operation(request, "AWSEvents") != "PutEvents":
        raise UnknownRequest(f"EventBridge {request.describe()}")
    buses = [entry.get("EventBusName") or "default" for entry in request.json["Entries"]]
    return [Permission("events:PutEvents", arns.of("events", "event-bus/", bus)) for bus in buses]


def _logs(request: AwsRequest, arns: Arns) -> list[Permission]:
    op, p = _operation(request, "Logs_20140328"), request.json
    group = arns.of("logs", "log-group:", p.get("logGroupName") or p["logGroupIdentifier"])
    if op in ("FilterLogEvents", "DescribeLogStreams"):
        # Logs authorizes group-level calls as `log-group:NAME:*` (the ARN CDK grants on).
        return [Permission(f"logs:{op}", group.removesuffix(":*") + ":*")]
    if op in ("GetLogEvents", "PutLogEvents", "CreateLogStream"):
        return [Permission(f"logs:{op}", f"{group.removesuffix(':*')}:log-stream:{p['logStreamName']}")]
    raise UnknownRequest(f"CloudWatch Logs {op}: {request.describe()}")


def _cloudwatch(request: AwsRequest, arns: Arns) -> list[Permission]:
    # botocore may speak JSON, the query protocol or RPCv2-CBOR (the operation is in the path).
    cbor = re.fullmatch(r"/service/\w+/operation/(\w+)", request.path)
    op = request.target.rpartition(".")[2] or (cbor.group(1) if cbor else request.form.get("Action"))
    if op != "PutMetricData":
        raise UnknownRequest(f"CloudWatch {request.describe()}")
    return [Permission("cloudwatch:PutMetricData", "*")]


def _sts(request: AwsRequest, arns: Arns) -> list[Permission]:
    if request.form.get("Action") == "GetCallerIdentity":
        return []  # needs no permission
    raise UnknownRequest(f"STS {request.describe()}")


def _secretsmanager(request: AwsRequest, arns: Arns) -> list[Permission]:
    if _operation(request, "secretsmanager") != "GetSecretValue":
        raise UnknownRequest(f"Secrets Manager {request.describe()}")
    secret = request.json["SecretId"]
    # A secret's ARN ends in `-` and six random characters; CDK grants on the same pattern by name.
    arn = secret if secret.startswith("arn:") else arns.of("secretsmanager", "secret:", f"{secret}-??????")
    return [Permission("secretsmanager:GetSecretValue", arn)]


_SERVICES: dict[str, Resolver] = {
    "dynamodb": _dynamodb, "sqs": _sqs, "s3": _s3, "batch": _batch, "events": _events, "logs": _logs,
    "monitoring": _cloudwatch, "sts": _sts, "secretsmanager": _secretsmanager,
}  # fmt: skip


def required_permissions(
    request: AwsRequest,
    *,
    region: str,
    account: str,
    stream_of_iterator: Callable[[str], str | None] = lambda _: None,
) -> list[Permission]:
    """The permissions `request` needs, without duplicates, in the order AWS would check them."""
    resolve = _SERVICES.get(request.service)
    if resolve is None:
        raise UnknownRequest(f"service {request.service!r}: {request.describe()}")
    try:
        needed = resolve(request, Arns(region, account, stream_of_iterator))
    except (KeyError, TypeError, ValueError, ElementTree.ParseError) as error:
        raise UnknownRequest(f"malformed {request.operation} ({error!r}): {request.describe()}") from None
    return list(dict.fromkeys(needed))
