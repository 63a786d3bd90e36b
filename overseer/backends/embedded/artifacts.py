"""Artifacts in a directory (``overseer.store.ArtifactStore``) and rows in SQLite.

Layout: ``root/<bucket>/<key>`` holds the bytes, ``root/.meta/<bucket>/<key>.json`` the
recorded size and SHA-256. Every write goes to a temporary file in the target's own
directory and is moved into place with ``os.replace`` (atomic on POSIX): readers see the
old object or the new one, never a torn one. The data is written before its metadata,
so a crash in between leaves a stat that does not match and the next persist rewrites.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ...store import ObjectInfo
from .db import Database, database

META_DIR = ".meta"


class DirectoryArtifactStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, bucket: str, key: str, meta: bool = False) -> Path:
        """The file of ``bucket/key``; refuses anything that would leave the root."""
        if not bucket or "/" in bucket or "\\" in bucket or bucket in (".", "..") or bucket == META_DIR:
            raise ValueError(f"invalid bucket name {bucket!r}")
        if not key or key.startswith(("/", "\\")) or "\x00" in key:
            raise ValueError(f"invalid artifact key {key!r}")
        parts = key.replace("\\", "/").split("/")
        if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in ("", ".", ".."):
            raise ValueError(f"artifact key {key!r} traverses or has empty segments")
        base = self.root / META_DIR if meta else self.root
        path = (base / bucket / Path(*parts)).resolve()
        if meta:
            path = path.with_name(path.name + ".json")
        if not path.is_relative_to(base.resolve() / bucket):
            raise ValueError(f"artifact {bucket}/{key} escapes {self.root}")
        return path

    @contextlib.contextmanager
    def _atomic(self, path: Path) -> Iterator[Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _write_meta(self, bucket: str, key: str, size: int, sha256: str, content_type: str | None) -> None:
        meta = {"size": size, "sha256": sha256, "content_type": content_type}
        with self._atomic(self._path(bucket, key, meta=True)) as handle:
            handle.write(json.dumps(meta).encode())

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self._path(bucket, key)
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        sha256 = None
        try:
            meta = json.loads(self._path(bucket, key, meta=True).read_bytes())
            if int(meta.get("size", -1)) == size:
                sha256 = meta.get("sha256")
        except (FileNotFoundError, NotADirectoryError, ValueError):
            pass
        return ObjectInfo(size, sha256)

    def put_bytes(
        self, bucket: str, key: str, data: bytes, *, sha256: str, content_type: str | None = None
    ) -> None:
        with self._atomic(self._path(bucket, key)) as handle:
            handle.write(data)
        self._write_meta(bucket, key, len(data), sha256, content_type)

    def put_file(
        self, bucket: str, key: str, path: Path, *, sha256: str, content_type: str | None = None
    ) -> None:
        with self._atomic(self._path(bucket, key)) as handle, Path(path).open("rb") as source:
            shutil.copyfileobj(source, handle, 1024 * 1024)
        self._write_meta(bucket, key, Path(path).stat().st_size, sha256, content_type)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._path(bucket, key).read_bytes()

    def download(self, bucket: str, key: str, path: Path) -> None:
        target = Path(path)
        with self._atomic(target.resolve()) as handle, self._path(bucket, key).open("rb") as source:
            shutil.copyfileobj(source, handle, 1024 * 1024)

    def delete(self, bucket: str, key: str) -> None:
        for path in (self._path(bucket, key), self._path(bucket, key, meta=True)):
            path.unlink(missing_ok=True)

    def download_url(self, bucket: str, key: str, *, expires_seconds: int) -> str:
        """The stored file's ``file://`` URL (it does not expire)."""
        return self._path(bucket, key).as_uri()

    def keys(self, bucket: str) -> list[str]:
        """Every key of a bucket, sorted (embedded only: listing, tests)."""
        base = self.root / bucket
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp")
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _row_key(item: Mapping[str, Any], key_names: Sequence[str] | None) -> str:
    if key_names:
        return json.dumps([item.get(k) for k in key_names], sort_keys=True, default=_plain)
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=_plain).encode()).hexdigest()


class SqliteRowSink:
    """Rows artifacts into a ``rows`` table of the stack's SQLite file.

    A table's key attributes are given per table (``keys={"metrics": ["company_id"]}``),
    so a same-key item overwrites as in DynamoDB; without them the whole item is the key.
    """

    def __init__(
        self, path: object, *, keys: Mapping[str, Sequence[str]] | None = None, db: Database | None = None
    ) -> None:
        self.db = db or database(str(path))
        self.keys = dict(keys or {})

    def put_rows(self, table: str, items: Sequence[Mapping[str, Any]]) -> None:
        key_names = self.keys.get(table)
        rows = [
            (table, _row_key(item, key_names), json.dumps(dict(item), sort_keys=True, default=_plain))
            for item in items
        ]
        with self.db.write() as conn:
            conn.executemany("INSERT OR REPLACE INTO rows (tbl, item_key, item) VALUES (?, ?, ?)", rows)

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            found = conn.execute("SELECT item FROM rows WHERE tbl = ? ORDER BY item_key", (table,)).fetchall()
        return [json.loads(text) for (text,) in found]
