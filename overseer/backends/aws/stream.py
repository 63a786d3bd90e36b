"""Reading the jobs table's stream: from its start, as Lambda would hand it over (the local
runtime's ``StreamReader``), and again for a batch the scheduler gave up on
(``StreamFailureQueue``, the sweep's)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from ... import timeutil
from ...errors import StoreError, StreamRecordsGone
from ...store import FailedBatch
from ...stream import passes_stream_filters

log = logging.getLogger("overseer.stream")


def lambda_record(raw: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """One GetRecords record in the shape Lambda delivers it."""
    body = dict(raw["dynamodb"])
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, dt.datetime):
        body["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": raw.get("eventID", ""),
        "eventName": raw["eventName"],
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": raw.get("awsRegion", region),
        "dynamodb": body,
        "eventSourceARN": stream_arn,
    }


class StreamReader:
    """Polls every shard of a DynamoDB stream from its start, remembering where it is."""

    def __init__(self, client: Any, stream_arn: str, region: str = "us-east-1") -> None:
        self.client = client
        self.stream_arn = stream_arn
        self.region = region
        self.iterators: dict[str, str | None] = {}

    def _discover(self) -> None:
        description = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        for shard in description["Shards"]:
            if shard["ShardId"] not in self.iterators:
                self.iterators[shard["ShardId"]] = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn,
                    ShardId=shard["ShardId"],
                    ShardIteratorType="TRIM_HORIZON",
                )["ShardIterator"]

    def poll(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The next records (Lambda-shaped) that pass the scheduler's filter."""
        if not self.iterators:
            self._discover()
        records: list[dict[str, Any]] = []
        for shard, iterator in list(self.iterators.items()):
            if iterator is None:
                continue
            response = self.client.get_records(ShardIterator=iterator, Limit=limit)
            self.iterators[shard] = response.get("NextShardIterator")
            for raw in response.get("Records", []):
                record = lambda_record(raw, self.stream_arn, self.region)
                if passes_stream_filters(record):
                    records.append(record)
        return records


# What DynamoDB Streams answers for records it no longer has (past the 24-hour retention,
# or the shard is gone): the batch cannot be read again.
_GONE = frozenset({"TrimmedDataAccessException", "ExpiredIteratorException", "ResourceNotFoundException"})
# GetRecords pages read for one failed batch before giving up (a batch holds at most 10,000
# records; an open shard may answer empty pages before the range).
_MAX_PAGES = 50


class StreamFailureQueue:
    """``overseer.store.StreamFailures`` on AWS: the scheduler's on-failure destination (an SQS
    queue receiving Lambda's record of each stream batch it gave up on, its
    ``DDBStreamBatchInfo``) and the jobs table's stream, read again with
    ``GetShardIterator(AT_SEQUENCE_NUMBER)`` and ``GetRecords``."""

    def __init__(self, sqs: Any, queue_url: str, streams: Any) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.streams = streams
        self._arns: dict[str, str] = {}

    def receive(self, max_batches: int = 10) -> list[FailedBatch]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max(1, min(10, max_batches)),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        batches = []
        for message in response.get("Messages", []):
            try:
                info = json.loads(message["Body"])["DDBStreamBatchInfo"]
                batch = FailedBatch(
                    receipt=message["ReceiptHandle"],
                    shard=str(info["shardId"]),
                    first_sequence=str(info["startSequenceNumber"]),
                    last_sequence=str(info["endSequenceNumber"]),
                    size=int(info["batchSize"]),
                    last_arrival=_iso(info.get("approximateArrivalOfLastRecord")),
                    receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                # Not a stream batch's record: nothing to replay; keep it in the log.
                log.error("not a stream on-failure record (%s), deleted: %s", exc, message.get("Body"))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                continue
            self._arns[batch.receipt] = str(info["streamArn"])
            batches.append(batch)
        return batches

    def records(self, batch: FailedBatch) -> list[dict[str, Any]]:
        arn = self._arns[batch.receipt]
        region = arn.split(":")[3]
        first, last = int(batch.first_sequence), int(batch.last_sequence)
        records: list[dict[str, Any]] = []
        try:
            iterator = self.streams.get_shard_iterator(
                StreamArn=arn,
                ShardId=batch.shard,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=batch.first_sequence,
            )["ShardIterator"]
            for _ in range(_MAX_PAGES):
                response = self.streams.get_records(ShardIterator=iterator, Limit=1000)
                raws = response.get("Records", [])
                for raw in raws:
                    sequence = int(raw["dynamodb"]["SequenceNumber"])
                    if sequence > last:
                        iterator = None
                        break
                    record = lambda_record(raw, arn, region)
                    if sequence >= first and passes_stream_filters(record):
                        records.append(record)
                iterator = iterator and response.get("NextShardIterator")
                if not iterator:
                    break
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _GONE:
                raise StreamRecordsGone(f"shard {batch.shard} of {arn}: {code}") from exc
            raise StoreError(f"cannot read shard {batch.shard} of {arn} again: {exc}") from exc
        if len(records) < batch.size:
            raise StreamRecordsGone(
                f"only {len(records)} of the {batch.size} records {first}..{last} of shard "
                f"{batch.shard} are still in the stream"
            )
        return records

    def delete(self, batch: FailedBatch) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=batch.receipt)
        self._arns.pop(batch.receipt, None)


def _iso(text: Any) -> str | None:
    """Lambda's arrival times ("2019-11-14T00:13:19Z") as the engine's ISO strings."""
    if not text:
        return None
    return timeutil.iso(timeutil.parse(str(text)))
