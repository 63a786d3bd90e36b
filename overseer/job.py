"""The handler API: what a handler receives (``Job``) and returns (``Artifact``, ``Rows``)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from .errors import InvalidArtifact


@dataclass(frozen=True)
class Artifact:
    """Bytes to store at ``bucket``/``key``: either ``data`` or the local ``file``.

    ``bucket=None`` means the stack's artifact bucket. Example::

        return [overseer.Artifact(key=f"reports/{job.args['company_id']}.csv", data=csv_bytes)]
    """

    key: str
    data: bytes | None = None
    file: str | os.PathLike[str] | None = None
    bucket: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Rows:
    """Items to put into a DynamoDB table the user owns (the artifact idea beyond S3).

    Puts overwrite items with the same key, so persisting twice is harmless.
    """

    table: str
    items: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Expand:
    """Child jobs of this job, one per item found at run time (a fan-out).

    Returned beside the job's artifacts. Each child is a job of the same graph, of ``type``,
    named ``<this job>.<i>`` (``i`` the item's 0-based index), with the graph's args, then
    ``args``, then its item merged into its own args; this job's artifacts are in its
    ``job.inputs[<this job>]``. A job that depends on this one waits for every child (and
    their children) and finds each child's artifacts in its inputs, in item order::

        return [overseer.Expand(type="process_file", items=[{"key": k} for k in keys])]
    """

    type: str
    items: Sequence[Mapping[str, Any]]
    args: Mapping[str, Any] | None = None


class ArtifactReader(Protocol):
    def get_bytes(self, bucket: str, key: str) -> bytes: ...
    def download(self, bucket: str, key: str, path: Path) -> None: ...


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact a dependency stored: where it is, its size and SHA-256."""

    bucket: str
    key: str
    size: int
    sha256: str
    reader: ArtifactReader | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The object's bytes, checked against the recorded SHA-256."""
        if self.reader is None:
            raise InvalidArtifact(f"s3://{self.bucket}/{self.key} has no reader attached")
        data = self.reader.get_bytes(self.bucket, self.key)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise InvalidArtifact(
                f"s3://{self.bucket}/{self.key} does not match its recorded SHA-256; "
                "it was changed after its job stored it"
            )
        return data

    def download(self, path: str | os.PathLike[str]) -> Path:
        """Write the object to ``path`` (a file) and return the path."""
        if self.reader is None:
            raise InvalidArtifact(f"s3://{self.bucket}/{self.key} has no reader attached")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.reader.download(self.bucket, self.key, target)
        return target

    def manifest(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "size": self.size, "sha256": self.sha256}


def job_seed(job_id: str) -> int:
    """The seed of ``job.random``: the first 8 bytes of SHA-256 of the job id, big-endian."""
    return int.from_bytes(hashlib.sha256(job_id.encode("utf-8")).digest()[:8], "big")


@dataclass
class Job:
    """What a handler receives.

    ``random`` is a ``random.Random`` seeded from ``id`` (``graph_id/name``), so a rerun
    of the same graph id draws the same numbers and produces bit-identical artifacts.
    ``inputs`` maps each dependency's name to the artifacts it stored.
    """

    graph_id: str
    name: str
    type: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    scratch: Path
    deps: tuple[str, ...] = ()
    # The graph's ``retry_on`` for this job (dotted exception names; empty: the handler's).
    retry_on: tuple[str, ...] = ()
    inputs_loader: Callable[[], dict[str, list[StoredArtifact]]] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"{self.graph_id}/{self.name}"

    @cached_property
    def random(self) -> random.Random:
        return random.Random(job_seed(self.id))

    @cached_property
    def inputs(self) -> dict[str, list[StoredArtifact]]:
        return self.inputs_loader() if self.inputs_loader else {}


Handler = Callable[[Job], Any] | Mapping[str, Any]


def _identity_pre(job: Job) -> Job:
    return job


def _identity_post(job: Job, result: Any) -> Any:
    return result


def harness(
    handler: Handler, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]], stage: str = "process"
) -> dict[str, Any]:
    """Wrap one stage of a handler with middleware, as Overseer's ``harness`` does.

    ``wrapper`` takes the stage function and returns its replacement. Example::

        def timed(process):
            def run(job):
                start = time.monotonic()
                try:
                    return process(job)
                finally:
                    print(job.name, time.monotonic() - start)
            return run

        HANDLERS = {"fetch": overseer.harness(fetch, timed)}
    """
    stages = dict(handler) if isinstance(handler, Mapping) else {"process": handler}
    if stage not in ("pre_process", "process", "post_process"):
        raise ValueError(f"unknown stage {stage!r}: use pre_process, process or post_process")
    inner = stages.get(stage)
    if inner is None:
        # Wrapping a missing pre/post stage wraps the identity.
        inner = _identity_pre if stage == "pre_process" else _identity_post
    stages[stage] = wrapper(inner)
    return stages
