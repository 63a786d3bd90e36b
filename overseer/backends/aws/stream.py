"""Reading the jobs table's stream and handing it over as Lambda would (local runtime)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ...stream import passes_stream_filters


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
