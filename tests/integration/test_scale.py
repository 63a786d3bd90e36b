"""Edges scale: 10,000 deps into one job and 10,000 dependents out of one job."""

from __future__ import annotations

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from overseer.graph import parse_graph
from overseer.states import CLAIM, FINISH, GraphStatus, JobStatus
from overseer.store import Fence

pytestmark = pytest.mark.integration
ITEM_BOUND = 100 * 1024  # documented in docs/architecture.md


def item_sizes(table: str) -> list[int]:
    """Approximate DynamoDB item sizes (attribute names + values, as AWS counts them)."""
    client = boto3.client("dynamodb")
    sizes = []
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            plain = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
            sizes.append(sum(len(k) + len(str(v).encode()) for k, v in plain.items()))
    return sizes


def test_ten_thousand_deps_in_and_ten_thousand_dependents_out(stack):
    wide = [f"part-{i:05d}" for i in range(10_000)]
    jobs: dict[str, list[str]] = {"root": []}
    jobs.update({name: ["root"] for name in wide})
    jobs["join"] = wide
    spec = parse_graph({"id": "wide", "jobs": jobs})
    graph, created = stack.store.create_graph(spec, max_attempts={})
    assert created and graph.jobs_total == 10_002

    root = stack.store.get_job("wide", "root")
    join = stack.store.get_job("wide", "join")
    assert len(stack.store.dependents(root)) == 10_000
    assert stack.store.dependencies(join) == wide
    assert max(item_sizes(stack.settings.jobs_table)) < ITEM_BOUND


def test_chunked_edges_release_and_abort_like_inline_ones(stack, monkeypatch):
    import overseer.items

    monkeypatch.setattr(overseer.items, "INLINE_EDGES", 2)
    monkeypatch.setattr(overseer.items, "EDGE_CHUNK", 3)
    parts = [f"p{i}" for i in range(7)]
    document = {
        "id": "chunked",
        "jobs": {
            "root": {"type": "write"},
            **{p: {"type": "write", "deps": ["root"]} for p in parts},
            "join": {"type": "write", "deps": parts},
        },
    }
    handlers = {"write": lambda job: [overseer.Artifact(key=f"{job.name}", data=b"x")]}
    graph = stack.run(document, handlers)
    assert graph.status == GraphStatus.FINISHED
    join = stack.jobs("chunked")["join"]
    assert join.deps is None and join.status == JobStatus.FINISHED


def test_a_stale_worker_cannot_overwrite_the_new_owners_outcome(stack):
    stack.submit({"id": "fenced", "jobs": {"a": []}}, {"a": lambda job: None})
    claimed = stack.store.transition(
        "fenced", "a", CLAIM, fence=Fence(0), changes={"attempts": 1, "lease_owner": "old"}
    )
    assert claimed is not None
    # A duplicate message for the same attempt claims nothing.
    assert stack.store.transition("fenced", "a", CLAIM, fence=Fence(0), changes={"attempts": 1}) is None
    assert stack.store.transition("fenced", "a", FINISH, fence=Fence(1, "someone-else")) is None
    assert stack.store.transition("fenced", "a", FINISH, fence=Fence(1, "old")).status == JobStatus.FINISHED
