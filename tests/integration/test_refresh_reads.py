"""What a page's refresh costs on DynamoDB: the jobs written since its last read are one
filtered, eventually consistent Query (half the read units of the engine's consistent one)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from overseer import operations, timeutil
from overseer.config import Settings
from tests.support import LocalStack

pytestmark = pytest.mark.integration


def ok(job: Any) -> None:
    return None


def test_a_refresh_is_an_eventually_consistent_filtered_query(aws_env: dict[str, str]) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    stack = LocalStack.provisioned(
        Settings(
            graphs_table=f"{name}-graphs", jobs_table=f"{name}-jobs", artifact_bucket=f"{name}-artifacts"
        )
    )
    stack.submit(
        {"id": "watched", "jobs": {"a": {"type": "ok"}, "b": {"type": "ok", "deps": ["a"]}}}, {"ok": ok}
    )
    queries: list[dict[str, Any]] = []
    client = stack.store.Job._get_connection().connection.client
    # PynamoDB sends the request as it serialised it: its body is the Query's parameters.
    client.meta.events.register(
        "before-call.dynamodb.Query", lambda params, **_: queries.append(json.loads(params["body"]))
    )

    everything = operations.list_jobs(stack.services, "watched")
    engine_read = queries[-1]
    since = timeutil.iso()
    changed = operations.list_jobs(stack.services, "watched", changed_since=since)

    assert [job.name for job in everything] == ["a", "b"] and changed == []
    assert len(queries) == 2
    assert engine_read["ConsistentRead"] is True and "FilterExpression" not in engine_read
    refresh = queries[-1]
    assert refresh.get("ConsistentRead", False) is False  # absent: DynamoDB's eventual read
    assert "FilterExpression" in refresh
    assert since in str(refresh["ExpressionAttributeValues"])
