"""What the pages read from a local stack (``overseer.ui.reads``), without a browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overseer import operations
from overseer.backends.embedded import embedded_services
from overseer.cli.targets import LocalClient
from overseer.errors import GraphNotFound
from overseer.runner import local_settings
from overseer.states import CLAIM
from overseer.store import Fence
from overseer.ui import reads


def stack_with(state_dir: Path, graph: dict[str, object]) -> LocalClient:
    services = embedded_services(state_dir, local_settings(state_dir))
    operations.submit_graph(services, graph)
    return LocalClient(state_dir)


def test_a_refresh_reads_only_the_jobs_changed_since_the_last(tmp_path: Path) -> None:
    client = stack_with(
        tmp_path, {"id": "g", "jobs": {"a": {"type": "t"}, "b": {"type": "t", "deps": ["a"]}}}
    )
    time.sleep(0.002)  # stamps are to the millisecond: the next read starts after the writes
    first = reads.graph_state(client, "g")
    assert first["complete"] and not first["collapsed"]
    assert {row["name"]: (row["status"], row["deps"]) for row in first["jobs"]} == {
        "a": ("ready", []),
        "b": ("waiting", ["a"]),
    }
    # Older than the slack: nothing changed since then is read again.
    reads.STAMP_SLACK_SECONDS, slack = 0.0, reads.STAMP_SLACK_SECONDS
    try:
        unchanged = reads.graph_state(client, "g", since=first["cursor"])
        assert unchanged["jobs"] == [] and not unchanged["complete"]
        store = client.services.store
        assert store.transition("g", "a", CLAIM, fence=Fence(0), changes={"lease_owner": "w"}) is not None
        changed = reads.graph_state(client, "g", since=unchanged["cursor"])
    finally:
        reads.STAMP_SLACK_SECONDS = slack
    assert [(row["name"], row["status"]) for row in changed["jobs"]] == [("a", "running")]


def test_above_the_size_the_graph_is_collapsed_into_job_types(tmp_path: Path) -> None:
    size = reads.COLLAPSE_ABOVE
    jobs: dict[str, object] = {f"extract-{i}": {"type": "extract"} for i in range(size)}
    # More deps than fit on the item: its edges are kept in chunk items.
    jobs["report"] = {"type": "report", "deps": list(jobs)}
    client = stack_with(tmp_path, {"id": "big", "jobs": jobs})
    state = reads.graph_state(client, "big")
    assert state["collapsed"] and len(state["jobs"]) == size + 1
    assert state["type_edges"] == [["extract", "report"]]
    assert all("deps" not in row for row in state["jobs"])


def test_errors_name_the_unknown_graph_or_job(tmp_path: Path) -> None:
    client = stack_with(tmp_path, {"id": "g", "jobs": {"a": {"type": "t"}}})
    with pytest.raises(GraphNotFound, match="no graph 'nope'"):
        reads.graph_state(client, "nope")
    with pytest.raises(GraphNotFound, match="has no job 'b'"):
        reads.job_detail(client, "g", "b")
    page = reads.jobs_page(client, "g", None, None, 1)
    assert list(page["jobs"]) == ["a"] and page["next"] is None
