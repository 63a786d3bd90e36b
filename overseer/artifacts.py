"""The one shared persistence function: every artifact any handler returns is stored here.

Handlers return descriptions of their outputs (``Artifact``, ``Rows``); nothing is
stored until every artifact of the job has been validated, so an invalid one stores
nothing at all. Identical objects already in place are not uploaded again, which keeps
reruns cheap and harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from .errors import InvalidArtifact
from .expansion import tree_outputs
from .job import Artifact, Rows, StoredArtifact
from .store import MAX_MANIFEST_BYTES, ArtifactStore, JobRecord, RowSink, Services

MAX_KEY_BYTES = 1024


@dataclass
class PersistResult:
    manifest: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    uploaded: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _Checked:
    artifact: Artifact
    bucket: str
    size: int
    sha256: str


def check_key(key: Any) -> str:
    """Reject keys that are empty, absolute, traversing or unprintable."""
    if not isinstance(key, str) or not key:
        raise InvalidArtifact(f"artifact key must be a non-empty string, got {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidArtifact(f"artifact key {key[:60]!r}... is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith(("/", "\\")):
        raise InvalidArtifact(f"artifact key {key!r} is absolute; use a relative key like 'reports/x.csv'")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidArtifact(f"artifact key {key!r} contains a control character")
    segments = key.replace("\\", "/").split("/")
    if any(s in (".", "..") for s in segments):
        raise InvalidArtifact(f"artifact key {key!r} traverses with '.' or '..' segments")
    return key


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_artifact(artifact: Artifact, default_bucket: str, allowed: Collection[str]) -> _Checked:
    key = check_key(artifact.key)
    bucket = artifact.bucket or default_bucket
    if bucket != default_bucket and bucket not in allowed:
        raise InvalidArtifact(
            f"artifact {key!r} targets bucket {bucket!r}, which is not allowed; "
            f"allowed: {sorted({default_bucket, *allowed})} (set OVERSEER_ALLOWED_BUCKETS)"
        )
    if (artifact.data is None) == (artifact.file is None):
        raise InvalidArtifact(f"artifact {key!r} must have exactly one of data= or file=")
    if artifact.data is not None:
        if not isinstance(artifact.data, bytes | bytearray | memoryview):
            raise InvalidArtifact(
                f"artifact {key!r} data must be bytes, got {type(artifact.data).__name__}"
                " (encode text with .encode())"
            )
        data = bytes(artifact.data)
        return _Checked(
            Artifact(key, data=data, bucket=bucket, content_type=artifact.content_type),
            bucket,
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
    path = Path(artifact.file)  # type: ignore[arg-type]
    if not path.is_file():
        raise InvalidArtifact(f"artifact {key!r} file {str(path)!r} does not exist or is not a file")
    return _Checked(artifact, bucket, path.stat().st_size, _sha256_file(path))


def _plain_rows(rows: Rows) -> list[dict[str, Any]]:
    if not isinstance(rows.table, str) or not rows.table:
        raise InvalidArtifact(f"rows artifact needs a table name, got {rows.table!r}")
    try:
        # DynamoDB wants Decimals, not floats; a JSON round trip also proves the rows are data.
        text = json.dumps(list(rows.items), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArtifact(f"rows for table {rows.table!r} are not JSON data: {exc}") from exc
    items = json.loads(text, parse_float=Decimal)
    if not all(isinstance(i, dict) and i for i in items):
        raise InvalidArtifact(f"rows for table {rows.table!r} must be non-empty mappings")
    return items


def persist_artifacts(
    artifacts: Sequence[Artifact | Rows],
    *,
    store: ArtifactStore,
    default_bucket: str,
    allowed_buckets: Collection[str] = (),
    row_sink: RowSink | None = None,
) -> PersistResult:
    """Validate every artifact, then store each one; returns the manifest to record."""
    checked: list[_Checked] = []
    row_batches: list[tuple[str, list[dict[str, Any]]]] = []
    seen: set[tuple[str, str]] = set()
    for artifact in artifacts:
        if isinstance(artifact, Rows):
            if row_sink is None:
                raise InvalidArtifact("this backend has no row sink for Rows artifacts")
            row_batches.append((artifact.table, _plain_rows(artifact)))
            continue
        item = _check_artifact(artifact, default_bucket, allowed_buckets)
        where = (item.bucket, item.artifact.key)
        if where in seen:
            raise InvalidArtifact(f"two artifacts target s3://{where[0]}/{where[1]}")
        seen.add(where)
        checked.append(item)

    result = PersistResult()
    result.manifest = [
        {"bucket": c.bucket, "key": c.artifact.key, "size": c.size, "sha256": c.sha256} for c in checked
    ]
    for table, items in row_batches:
        digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
        result.rows.append({"table": table, "items": len(items), "sha256": digest})
    if len(json.dumps(result.manifest + result.rows)) > MAX_MANIFEST_BYTES:
        raise InvalidArtifact(
            f"the job returned {len(checked)} artifacts; their manifest exceeds "
            f"{MAX_MANIFEST_BYTES} bytes: bundle small outputs into fewer, larger artifacts"
        )

    for c in checked:
        existing = store.stat(c.bucket, c.artifact.key)
        if existing is not None and existing.size == c.size and existing.sha256 == c.sha256:
            result.skipped += 1
            continue
        if c.artifact.data is not None:
            store.put_bytes(
                c.bucket,
                c.artifact.key,
                bytes(c.artifact.data),
                sha256=c.sha256,
                content_type=c.artifact.content_type,
            )
        else:
            store.put_file(
                c.bucket,
                c.artifact.key,
                Path(c.artifact.file),  # type: ignore[arg-type]
                sha256=c.sha256,
                content_type=c.artifact.content_type,
            )
        result.uploaded += 1
    for table, items in row_batches:
        assert row_sink is not None
        row_sink.put_rows(table, items)
    return result


def load_inputs(services: Services, record: JobRecord) -> dict[str, list[StoredArtifact]]:
    """dependency name -> the artifacts it stored, for ``job.inputs``; a dependency that
    expanded is followed by every job of its tree (``overseer.expansion.tree_outputs``)."""
    deps = services.store.dependencies(record)
    return {
        name: [
            StoredArtifact(m["bucket"], m["key"], int(m["size"]), m["sha256"], services.artifacts)
            for m in outputs.artifacts
        ]
        for name, outputs in tree_outputs(services.store, record, deps).items()
    }
