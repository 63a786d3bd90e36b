"""Retention on DynamoDB: ended graphs and jobs carry ``expires_at`` (the tables' time to live)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import overseer
from overseer import timeutil
from overseer.config import Settings
from overseer.operations import cancel_graph, rerun_graph
from overseer.states import GraphStatus, JobStatus
from overseer.store import INLINE_EDGES
from tests.support import LocalStack

pytestmark = pytest.mark.integration

RETENTION_DAYS = 30
DAY = 86_400


@pytest.fixture
def kept_30_days(aws_env: dict[str, str]) -> Iterator[LocalStack]:
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        receive_wait_seconds=0,
        lease_seconds=30,
        fault_backoff_seconds=0.0,
        retention_days=RETENTION_DAYS,
    )
    yield LocalStack.provisioned(settings)


def graph_item(stack: LocalStack, graph_id: str) -> dict[str, Any]:
    ddb = boto3.client("dynamodb")
    item: dict[str, Any] = ddb.get_item(
        TableName=stack.settings.graphs_table, Key={"graph_id": {"S": graph_id}}, ConsistentRead=True
    )["Item"]
    return item


def job_items(stack: LocalStack, graph_id: str) -> dict[str, dict[str, Any]]:
    """Every item of the graph in the jobs table (jobs and edge chunks), by ``entry``."""
    ddb = boto3.client("dynamodb")
    pages = ddb.get_paginator("query").paginate(
        TableName=stack.settings.jobs_table,
        KeyConditionExpression="graph_id = :g",
        ExpressionAttributeValues={":g": {"S": graph_id}},
        ConsistentRead=True,
    )
    return {item["entry"]["S"]: item for page in pages for item in page["Items"]}


def expiry(item: dict[str, Any]) -> int | None:
    return int(item["expires_at"]["N"]) if "expires_at" in item else None


def ended_plus_retention(item: dict[str, Any]) -> int:
    return int(timeutil.parse(item["finished_at"]["S"]).timestamp()) + RETENTION_DAYS * DAY


def ok(job: overseer.Job) -> None:
    return None


def broken(job: overseer.Job) -> None:
    raise RuntimeError("no input")


DIAMOND = {
    "jobs": {
        "top": {"type": "ok"},
        "left": {"type": "ok", "deps": ["top"]},
        "right": {"type": "ok", "deps": ["top"]},
        "join": {"type": "ok", "deps": ["left", "right"]},
    }
}


def test_the_tables_expire_items_on_expires_at(kept_30_days: LocalStack) -> None:
    ddb = boto3.client("dynamodb")
    for table in (kept_30_days.settings.graphs_table, kept_30_days.settings.jobs_table):
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_a_finished_graph_and_every_job_expire_retention_days_after_they_ended(
    kept_30_days: LocalStack,
) -> None:
    graph = kept_30_days.run({"id": "kept", **DIAMOND}, {"ok": ok})

    assert graph.status == GraphStatus.FINISHED
    stored = graph_item(kept_30_days, "kept")
    assert expiry(stored) == ended_plus_retention(stored)
    jobs = job_items(kept_30_days, "kept")
    assert sorted(jobs) == ["job#join", "job#left", "job#right", "job#top"]
    for item in jobs.values():
        assert expiry(item) == ended_plus_retention(item)
        assert 0 < (expiry(item) or 0) - timeutil.now().timestamp() <= RETENTION_DAYS * DAY


def test_a_rerun_removes_the_expiry_of_what_it_brings_back_and_the_new_end_sets_it_again(
    kept_30_days: LocalStack,
) -> None:
    attempts = {"n": 0}

    def flaky(job: overseer.Job) -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("first run fails")

    handlers = {"ok": ok, "flaky": flaky}
    document = {
        "id": "again",
        "jobs": {
            "top": {"type": "ok"},
            "mid": {"type": "flaky", "deps": ["top"], "max_attempts": 1},
            "end": {"type": "ok", "deps": ["mid"]},
        },
    }
    failed = kept_30_days.run(document, handlers)
    assert failed.status == GraphStatus.FAILED
    before = job_items(kept_30_days, "again")
    assert all(expiry(item) for item in before.values())  # finished, failed and aborted alike
    assert expiry(graph_item(kept_30_days, "again"))

    rerun_graph(kept_30_days.services, "again")

    assert "expires_at" not in graph_item(kept_30_days, "again")
    during = job_items(kept_30_days, "again")
    assert "expires_at" not in during["job#mid"] and "expires_at" not in during["job#end"]
    assert expiry(during["job#top"]) == expiry(before["job#top"])  # still ended: kept as it was

    graph = kept_30_days.drive("again", handlers)
    assert graph.status == GraphStatus.FINISHED
    after = job_items(kept_30_days, "again")
    assert all(expiry(item) == ended_plus_retention(item) for item in after.values())
    stored = graph_item(kept_30_days, "again")
    assert expiry(stored) == ended_plus_retention(stored)


def test_a_cancelled_graph_and_its_aborted_jobs_expire(kept_30_days: LocalStack) -> None:
    kept_30_days.submit({"id": "stopped", **DIAMOND}, {"ok": ok})

    cancel_graph(kept_30_days.services, "stopped")

    jobs = job_items(kept_30_days, "stopped")
    assert {item["status"]["S"] for item in jobs.values()} == {JobStatus.ABORTED.value}
    assert all(expiry(item) == ended_plus_retention(item) for item in jobs.values())
    stored = graph_item(kept_30_days, "stopped")
    assert stored["status"]["S"] == "aborted" and expiry(stored) == ended_plus_retention(stored)


def test_edge_chunk_items_expire_twice_the_retention_after_the_submission(kept_30_days: LocalStack) -> None:
    wide = {f"p{i}": {"type": "ok"} for i in range(INLINE_EDGES + 1)}
    wide["join"] = {"type": "ok", "deps": sorted(wide)}
    graph = kept_30_days.submit({"id": "wide", "jobs": wide}, {"ok": ok})

    items = job_items(kept_30_days, "wide")
    chunks = [item for entry, item in items.items() if not entry.startswith("job#")]
    submitted = int(timeutil.parse(graph.created_at or "").timestamp())
    assert chunks and all(expiry(c) == submitted + 2 * RETENTION_DAYS * DAY for c in chunks)
    assert not any(expiry(item) for entry, item in items.items() if entry.startswith("job#"))


def test_an_expansions_children_and_counter_items_expire_too(kept_30_days: LocalStack) -> None:
    def start(job: overseer.Job) -> list[Any]:
        return [overseer.Expand(type="ok", items=[{"i": i} for i in range(3)])]

    began = int(timeutil.now().timestamp())
    graph = kept_30_days.run(
        {"id": "grown", "jobs": {"start": {"type": "start"}, "join": {"type": "ok", "deps": ["start"]}}},
        {"start": start, "ok": ok},
    )

    assert graph.status == GraphStatus.FINISHED
    items = job_items(kept_30_days, "grown")
    jobs = {entry: item for entry, item in items.items() if entry.startswith("job#")}
    counters = [item for entry, item in items.items() if entry.startswith("exp#")]
    assert sorted(jobs) == ["job#join", "job#start", "job#start.0", "job#start.1", "job#start.2"]
    assert all(expiry(item) == ended_plus_retention(item) for item in jobs.values())
    ended = int(timeutil.now().timestamp())
    # A counter expires the retention after its last count (when the children's trees ended).
    assert counters and all(
        began + RETENTION_DAYS * DAY <= (expiry(c) or 0) <= ended + RETENTION_DAYS * DAY for c in counters
    )


def test_with_no_retention_nothing_carries_an_expiry(stack: LocalStack) -> None:
    graph = stack.run({"id": "forever", **DIAMOND}, {"ok": ok})
    failed = stack.run(
        {"id": "forever-failed", "jobs": {"b": {"type": "broken", "max_attempts": 1}}}, {"broken": broken}
    )

    assert (graph.status, failed.status) == (GraphStatus.FINISHED, GraphStatus.FAILED)
    for graph_id in ("forever", "forever-failed"):
        assert "expires_at" not in graph_item(stack, graph_id)
        assert not any("expires_at" in item for item in job_items(stack, graph_id).values())
