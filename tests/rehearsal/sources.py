"""What invokes the functions on AWS, as AWS does it: the stream's event source mapping,
EventBridge rules, and API Gateway. Each reads its configuration from the template only.

- ``StreamPoller``: reads the jobs table's stream with the function's role (as Lambda's
  poller does), filters records with the mapping's FilterCriteria (EventBridge pattern
  semantics, moto's ``EventPattern``), batches them, invokes, retries, bisects, and sends
  an on-failure record to the destination queue when it gives up.
- ``invoke_async``: Lambda's asynchronous invocation (EventBridge targets): retries and the
  on-failure destination of the function's EventInvokeConfig.
- ``rule_input``: a rule target's input (Input, InputPath or InputTransformer).
- ``RestApi``: API Gateway's REST API in front of the function: routes, IAM auth, the
  invoke permission, and the proxy event with the caller's IAM identity.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import json
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from moto.events.models import EventPattern

from tests.rehearsal.gateway import Principal
from tests.rehearsal.template import ACCOUNT, REGION, Template

Invoke = Callable[[Any], Any]  # returns an Invocation (tests.rehearsal.lambda_runtime)


def client_for(principal: Principal, service: str, endpoint: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id=principal.access_key,
        aws_secret_access_key=principal.secret_key,
        aws_session_token=principal.session_token,
        region_name=REGION,
    ).client(service, endpoint_url=endpoint)


class StreamPoller:
    """A DynamoDB event source mapping, polling in a thread of its own."""

    def __init__(
        self,
        *,
        template: Template,
        mapping_id: str,
        invoke: Invoke,
        principal: Principal,
        endpoint: str,
        function_arn: str,
    ) -> None:
        props = template.resolve(template.props(mapping_id))
        self.stream_arn = props["EventSourceArn"]
        self.batch_size = int(props.get("BatchSize", 100))
        self.max_retries = int(props.get("MaximumRetryAttempts", -1))
        self.bisect = bool(props.get("BisectBatchOnFunctionError", False))
        self.on_failure = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        self.starting_position = props.get("StartingPosition", "LATEST")
        self.filters = [
            EventPattern.load(f["Pattern"]) for f in props.get("FilterCriteria", {}).get("Filters", [])
        ]
        self.invoke = invoke
        self.function_arn = function_arn
        self.streams = client_for(principal, "dynamodbstreams", endpoint)
        self.sqs = client_for(principal, "sqs", endpoint)
        self._iterators: dict[str, str] = {}
        self.delivered = 0
        self.failures: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll() == 0:
                    self._stop.wait(0.2)
            except Exception as exc:  # the poller never dies; the test reads its errors
                self.errors.append(repr(exc))
                self._stop.wait(1)

    def poll(self) -> int:
        """One pass over the shards; returns how many records were read."""
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        read = 0
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=self.starting_position
                )["ShardIterator"]
            answer = self.streams.get_records(ShardIterator=self._iterators[shard_id], Limit=1000)
            self._iterators[shard_id] = answer.get("NextShardIterator") or self._iterators[shard_id]
            records = [
                {**_as_lambda_sees_it(r), "eventSourceARN": self.stream_arn}
                for r in answer.get("Records", [])
            ]
            read += len(records)
            matching = [
                r for r in records if not self.filters or any(f.matches_event(r) for f in self.filters)
            ]
            for start in range(0, len(matching), self.batch_size):
                self._deliver(shard_id, matching[start : start + self.batch_size])
        return read

    def _deliver(self, shard_id: str, batch: list[dict[str, Any]]) -> None:
        attempts = 0
        while True:
            attempts += 1
            result = self.invoke({"Records": batch})
            if result.error is None:
                self.delivered += len(batch)
                return
            if self.max_retries != -1 and attempts > self.max_retries:
                break
            if self.bisect and len(batch) > 1:
                middle = len(batch) // 2
                self._deliver(shard_id, batch[:middle])
                self._deliver(shard_id, batch[middle:])
                return
        self._give_up(shard_id, batch, attempts, result.error)

    def _give_up(self, shard_id: str, batch: list[dict[str, Any]], attempts: int, error: Any) -> None:
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        self.failures.append({"record": record, "error": error})
        if self.on_failure:
            queue_name = self.on_failure.rsplit(":", 1)[-1]
            url = self.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))


def _as_lambda_sees_it(value: Any) -> Any:
    """A record as JSON carries it to the function: times as epoch seconds, binary as base64
    (boto3 hands them over as datetime and bytes)."""
    if isinstance(value, dict):
        return {k: _as_lambda_sees_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_lambda_sees_it(v) for v in value]
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def invoke_async(
    template: Template, function_id: str, invoke: Invoke, event: Any, principal: Principal, endpoint: str
) -> Any:
    """Lambda's asynchronous invocation: retried as the function's EventInvokeConfig says
    (2 by default), then the event goes to its on-failure destination, sent with the
    function's own role."""
    config = next(
        (
            template.resolve(c["Properties"])
            for c in template.of_type("AWS::Lambda::EventInvokeConfig").values()
            if c["Properties"]["FunctionName"] == {"Ref": function_id}
        ),
        {},
    )
    retries = int(config.get("MaximumRetryAttempts", 2))
    for _ in range(retries + 1):
        result = invoke(event)
        if result.error is None:
            return result
    destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    if destination and ":sqs:" in destination:
        sqs = client_for(principal, "sqs", endpoint)
        url = sqs.get_queue_url(QueueName=destination.rsplit(":", 1)[-1])["QueueUrl"]
        body = {
            "version": "1.0",
            "requestContext": {"condition": "RetriesExhausted"},
            "requestPayload": event,
            "responsePayload": result.error,
        }
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    return result


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def _json_path(event: Any, path: str) -> Any:
    value = event
    for part in [p for p in path.lstrip("$").split(".") if p]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def rule_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """The payload EventBridge gives a rule's target for ``event``."""
    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        return _json_path(event, target["InputPath"])
    transformer = target.get("InputTransformer")
    if transformer is None:
        return event
    values = {name: _json_path(event, path) for name, path in transformer.get("InputPathsMap", {}).items()}
    template = transformer["InputTemplate"]
    out, position = [], 0
    for match in re.finditer(r"<([A-Za-z0-9_.\-]+)>", template):
        if match.group(1) not in values:
            continue
        out.append(template[position : match.start()])
        value = values[match.group(1)]
        inside_string = template[: match.start()].replace('\\"', "").count('"') % 2 == 1
        if inside_string:
            out.append(json.dumps(value if isinstance(value, str) else json.dumps(value))[1:-1])
        else:
            out.append(json.dumps(value))
        position = match.end()
    out.append(template[position:])
    return json.loads("".join(out))


class RestApi:
    """The REST API as the template declares it, in front of its Lambda proxy integration."""

    def __init__(self, template: Template, invoke_by_arn: Callable[[str], Invoke]) -> None:
        self.template = template
        self.invoke_by_arn = invoke_by_arn
        api_id = next(iter(template.of_type("AWS::ApiGateway::RestApi")))
        self.api_id = template.ref(api_id)
        stage = next(iter(template.of_type("AWS::ApiGateway::Stage").values()))
        self.stage = stage["Properties"]["StageName"]
        paths = {template.get_att(api_id, "RootResourceId"): "/"}
        pending = dict(template.of_type("AWS::ApiGateway::Resource"))
        while pending:
            for logical_id, resource in list(pending.items()):
                parent = template.resolve(resource["Properties"]["ParentId"])
                if parent in paths:
                    paths[template.ref(logical_id)] = (
                        paths[parent].rstrip("/") + "/" + resource["Properties"]["PathPart"]
                    )
                    del pending[logical_id]
        self.methods = {}
        for method in template.of_type("AWS::ApiGateway::Method").values():
            props = method["Properties"]
            resource_path = paths[template.resolve(props["ResourceId"])]
            self.methods[(props["HttpMethod"], resource_path)] = props

    def _route(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        for (http_method, resource_path), props in self.methods.items():
            if http_method not in (method, "ANY"):
                continue
            pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource_path)) + "$"
            match = re.match(pattern, path)
            if match:
                return resource_path, props, match.groupdict()
        return None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        caller: Principal,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        route = self._route(method, path)
        if route is None:
            return 403, {"message": "Missing Authentication Token"}
        resource_path, props, path_parameters = route
        if props.get("AuthorizationType") != "AWS_IAM":
            raise AssertionError(
                f"{method} {resource_path} is not behind IAM auth: {props.get('AuthorizationType')}"
            )
        integration = props["Integration"]
        if integration.get("Type") != "AWS_PROXY":
            raise AssertionError(f"{method} {resource_path}: not a Lambda proxy integration")
        uri = self.template.resolve(integration["Uri"])
        function_arn = uri.split("/functions/", 1)[1].split("/invocations", 1)[0]
        self._check_invoke_permission(function_arn, method, resource_path)
        now = dt.datetime.now(dt.UTC)
        headers = {
            "Content-Type": "application/json",
            "Host": f"{self.api_id}.execute-api.{REGION}.amazonaws.com",
            "User-Agent": "rehearsal",
            "X-Forwarded-Proto": "https",
        }
        event = {
            "resource": resource_path,
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": path_parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "rehearsal",
                "resourcePath": resource_path,
                "httpMethod": method,
                "extendedRequestId": str(uuid.uuid4()),
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{path}",
                "accountId": ACCOUNT,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": self.api_id,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": str(uuid.uuid4()),
                "apiId": self.api_id,
                "domainName": headers["Host"],
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "cognitoIdentityId": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "principalOrgId": None,
                    "accountId": ACCOUNT,
                    "caller": f"AROAREHEARSAL:{caller.name}",
                    "user": f"AROAREHEARSAL:{caller.name}",
                    "userArn": caller.arn,
                    "accessKey": caller.access_key,
                    "sourceIp": "203.0.113.7",
                    "userAgent": "rehearsal",
                },
            },
            "body": None if body is None else json.dumps(body),
            "isBase64Encoded": False,
        }
        result = self.invoke_by_arn(function_arn)(event)
        if result.error is not None:
            return 502, {"message": "Internal server error", "error": result.error}
        response = result.payload
        text = response.get("body") or "null"
        return int(response["statusCode"]), json.loads(text)

    def _check_invoke_permission(self, function_arn: str, method: str, resource_path: str) -> None:
        """API Gateway may invoke the function only with a Lambda permission for this route."""
        source = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{self.api_id}/{self.stage}/{method}{resource_path}"
        source = re.sub(r"\{\w+\}", "*", source)
        for permission in self.template.of_type("AWS::Lambda::Permission").values():
            props = self.template.resolve(permission["Properties"])
            if (
                props.get("Principal") == "apigateway.amazonaws.com"
                and props.get("Action") == "lambda:InvokeFunction"
                and props.get("FunctionName") == function_arn
                and fnmatch.fnmatchcase(source, props.get("SourceArn", "*"))
            ):
                return
        raise AssertionError(
            f"API Gateway has no permission to invoke {function_arn} for {method} {resource_path}"
        )
