"""The artifact store on S3 (``overseer.store.ArtifactStore``) and the DynamoDB row sink."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from ...store import ObjectInfo

SHA256_METADATA = "sha256"
# Multipart above 16 MiB, 8 parts in parallel.
TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024, max_concurrency=8, multipart_chunksize=16 * 1024 * 1024
)


class S3ArtifactStore:
    def __init__(self, client: Any, transfer: TransferConfig = TRANSFER) -> None:
        self.client = client
        self.transfer = transfer

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(int(head["ContentLength"]), head.get("Metadata", {}).get(SHA256_METADATA))

    def _extra(self, sha256: str, content_type: str | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256}}
        if content_type:
            extra["ContentType"] = content_type
        return extra

    def put_bytes(
        self, bucket: str, key: str, data: bytes, *, sha256: str, content_type: str | None = None
    ) -> None:
        if len(data) >= self.transfer.multipart_threshold:
            self.client.upload_fileobj(
                io.BytesIO(data),
                bucket,
                key,
                ExtraArgs=self._extra(sha256, content_type),
                Config=self.transfer,
            )
            return
        self.client.put_object(Bucket=bucket, Key=key, Body=data, **self._extra(sha256, content_type))

    def put_file(
        self, bucket: str, key: str, path: Path, *, sha256: str, content_type: str | None = None
    ) -> None:
        self.client.upload_file(
            str(path), bucket, key, ExtraArgs=self._extra(sha256, content_type), Config=self.transfer
        )

    def get_bytes(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def download(self, bucket: str, key: str, path: Path) -> None:
        self.client.download_file(bucket, key, str(path), Config=self.transfer)

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)

    def download_url(self, bucket: str, key: str, *, expires_seconds: int) -> str:
        # Signed here, with this process's credentials: no request is made. Whoever holds
        # the URL may GET the object until it expires (or the credentials do).
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
        )
        return url


class DynamoRowSink:
    """Rows artifacts: items into the user's own DynamoDB tables."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def put_rows(self, table: str, items: Sequence[Mapping[str, Any]]) -> None:
        with self.resource.Table(table).batch_writer() as batch:
            for item in items:
                batch.put_item(Item=dict(item))
