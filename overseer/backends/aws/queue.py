"""The dispatch queue on SQS. Implements ``overseer.store.DispatchQueue``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from ...errors import StoreError
from ...store import Delivery, JobMessage

SQS_BATCH = 10
MAX_DELAY_SECONDS = 900


class SqsDispatchQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, messages: Sequence[JobMessage]) -> None:
        for start in range(0, len(messages), SQS_BATCH):
            batch = messages[start : start + SQS_BATCH]
            entries = [
                {
                    # Unique within the batch; SQS needs no more.
                    "Id": f"m{i}",
                    "MessageBody": m.to_json(),
                    "DelaySeconds": max(0, min(MAX_DELAY_SECONDS, int(m.delay_seconds))),
                }
                for i, m in enumerate(batch)
            ]
            response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = response.get("Failed") or []
            if failed:
                raise StoreError(f"SQS refused {len(failed)} message(s): {failed[0].get('Message')}")

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ) -> list[Delivery]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_seconds is not None:
            kwargs["VisibilityTimeout"] = visibility_seconds
        response = self.client.receive_message(**kwargs)
        deliveries = []
        for raw in response.get("Messages", []):
            count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            try:
                message = JobMessage.from_json(raw["Body"])
            except (ValueError, KeyError, TypeError):
                # Not ours: drop it rather than poison the worker.
                self.delete([raw["ReceiptHandle"]])
                continue
            deliveries.append(Delivery(message, raw["ReceiptHandle"], count))
        return deliveries

    def delete(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), SQS_BATCH):
            batch = receipts[start : start + SQS_BATCH]
            entries = [
                {"Id": hashlib.sha1(r.encode()).hexdigest()[:16] + str(i), "ReceiptHandle": r}
                for i, r in enumerate(batch)
            ]
            self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=seconds
            )
        except ClientError as exc:
            # The message is gone or its receipt expired: nothing left to extend.
            if exc.response["Error"]["Code"] not in ("ReceiptHandleIsInvalid", "InvalidParameterValue"):
                raise

    def depth(self) -> int:
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())
