"""The AWS adapter of failed stream batches: Lambda's on-failure record in, the batch's
records read again from DynamoDB Streams, and what it says when they are gone."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from overseer.backends.aws.stream import StreamFailureQueue
from overseer.errors import StoreError, StreamRecordsGone


def seq(n: int) -> str:
    return f"{n:021d}"


ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/jobs/stream/2026-11-29T00:00:00.000"
SHARD = "shardId-00000001764374400000-a1b2c3d4"
QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/stream-failures"
# What Lambda sends to the on-failure destination of a DynamoDB event source mapping.
ON_FAILURE = {
    "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 6},
    "version": "1.0",
    "DDBStreamBatchInfo": {
        "shardId": SHARD,
        "startSequenceNumber": seq(100),
        "endSequenceNumber": seq(300),
        "approximateArrivalOfFirstRecord": "2026-11-29T10:00:00Z",
        "approximateArrivalOfLastRecord": "2026-11-29T10:00:05Z",
        "batchSize": 2,
        "streamArn": ARN,
    },
}


def _record(sequence: int, status: str) -> dict:
    return {
        "eventID": str(sequence),
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"graph_id": {"S": "g"}, "entry": {"S": "job#a"}},
            "NewImage": {"graph_id": {"S": "g"}, "entry": {"S": "job#a"}, "status": {"S": status}},
            "OldImage": {"graph_id": {"S": "g"}, "entry": {"S": "job#a"}, "status": {"S": "running"}},
            "SequenceNumber": seq(sequence),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


@pytest.fixture
def adapter():
    sqs = boto3.client("sqs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    streams = boto3.client(
        "dynamodbstreams", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(sqs) as sqs_stub, Stubber(streams) as streams_stub:
        sqs_stub.add_response(
            "receive_message",
            {"Messages": [{"ReceiptHandle": "r1", "Body": json.dumps(ON_FAILURE), "Attributes": {}}]},
        )
        yield StreamFailureQueue(sqs, QUEUE, streams), sqs_stub, streams_stub


def test_the_on_failure_record_names_the_shard_and_the_range(adapter) -> None:
    failures, _, _ = adapter
    (batch,) = failures.receive()
    assert (batch.shard, batch.first_sequence, batch.last_sequence, batch.size) == (
        SHARD,
        seq(100),
        seq(300),
        2,
    )
    assert batch.last_arrival == "2026-11-29T10:00:05.000Z"


def test_the_batch_is_read_again_up_to_its_last_record_with_the_schedulers_filter(adapter) -> None:
    failures, _, streams = adapter
    (batch,) = failures.receive()
    streams.add_response(
        "get_shard_iterator",
        {"ShardIterator": "it-1"},
        {
            "StreamArn": ARN,
            "ShardId": SHARD,
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "SequenceNumber": seq(100),
        },
    )
    # A claim (running -> running is no status change; this one is filtered out as a
    # heartbeat would be), the two records of the batch, and one after it.
    claim = _record(150, "running")
    streams.add_response(
        "get_records",
        {"Records": [_record(100, "finished"), claim], "NextShardIterator": "it-2"},
        {"ShardIterator": "it-1", "Limit": 1000},
    )
    streams.add_response(
        "get_records",
        {"Records": [_record(300, "failed"), _record(400, "finished")], "NextShardIterator": "it-3"},
        {"ShardIterator": "it-2", "Limit": 1000},
    )
    records = failures.records(batch)
    assert [r["dynamodb"]["SequenceNumber"] for r in records] == [seq(100), seq(300)]
    assert {r["eventSourceARN"] for r in records} == {ARN}
    streams.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["TrimmedDataAccessException", "ExpiredIteratorException"])
def test_records_past_the_retention_are_gone(adapter, code: str) -> None:
    failures, _, streams = adapter
    (batch,) = failures.receive()
    streams.add_client_error("get_shard_iterator", service_error_code=code, service_message="trimmed")
    with pytest.raises(StreamRecordsGone, match=code):
        failures.records(batch)


def test_a_batch_whose_records_are_partly_gone_is_gone(adapter) -> None:
    failures, _, streams = adapter
    (batch,) = failures.receive()
    streams.add_response("get_shard_iterator", {"ShardIterator": "it-1"})
    streams.add_response("get_records", {"Records": [_record(300, "failed")]})
    with pytest.raises(StreamRecordsGone, match="only 1 of the 2 records"):
        failures.records(batch)


def test_any_other_error_is_a_store_error_and_the_note_is_kept(adapter) -> None:
    failures, _, streams = adapter
    (batch,) = failures.receive()
    streams.add_client_error("get_shard_iterator", service_error_code="ThrottlingException")
    with pytest.raises(StoreError) as raised:
        failures.records(batch)
    assert not isinstance(raised.value, StreamRecordsGone)
