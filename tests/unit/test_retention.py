"""Retention without AWS: the expiry a transition writes, and the embedded store's deletion of
ended graphs (what `overseer gc` does in one SQLite transaction per graph)."""

from __future__ import annotations

from pathlib import Path

from overseer import timeutil
from overseer.backends.embedded import provision
from overseer.backends.embedded.store import SqliteJobStore
from overseer.graph import parse_graph
from overseer.items import expires_at, transition_values
from overseer.states import CANCEL_RUNNING, CLAIM, FINISH, RELEASE, RERUN, RERUN_JOB, GraphStatus

DAY = 86_400


def values_of(transition, retention_days: int):  # type: ignore[no-untyped-def]
    return transition_values(
        transition, {}, (), fenced=transition.fenced, graph_id="g", name="a", retention_days=retention_days
    )


def test_a_job_ending_gets_its_end_plus_the_retention_and_a_rerun_removes_it() -> None:
    for ending in (FINISH, CANCEL_RUNNING):
        values, _ = values_of(ending, 30)
        assert values["expires_at"] == expires_at(values["finished_at"], 30)
        assert values["expires_at"] - int(timeutil.parse(values["finished_at"]).timestamp()) == 30 * DAY
    for rerun in (RERUN, RERUN_JOB):
        values, removed = values_of(rerun, 30)
        assert "expires_at" not in values and "expires_at" in removed
    # Moves that cannot bring an ended job back leave it alone; no retention writes nothing.
    for move in (RELEASE, CLAIM):
        values, removed = values_of(move, 30)
        assert "expires_at" not in values and "expires_at" not in removed
    values, _ = values_of(FINISH, 0)
    assert "expires_at" not in values


def _graph(store: SqliteJobStore, graph_id: str) -> None:
    spec = parse_graph({"id": graph_id, "jobs": {"a": [], "b": ["a"]}})
    store.create_graph(spec, max_attempts={})


def test_only_graphs_still_ended_before_the_cutoff_are_deleted(tmp_path: Path) -> None:
    store = SqliteJobStore(provision(tmp_path).path)
    for graph_id in ("ended", "reopened", "running"):
        _graph(store, graph_id)
    for graph_id in ("ended", "reopened"):
        store.set_graph_status(graph_id, GraphStatus.FAILED, sources=[GraphStatus.RUNNING])
    cutoff = timeutil.iso_in(60)

    listed = [g.graph_id for g in store.ended_graphs(cutoff)]
    # A rerun brings one back between the listing and the deletion: it is kept.
    store.set_graph_status("reopened", GraphStatus.RUNNING, sources=[GraphStatus.FAILED])

    assert sorted(listed) == ["ended", "reopened"]
    assert store.delete_graph("ended", ended_before=cutoff) == 2
    assert store.delete_graph("reopened", ended_before=cutoff) is None
    assert store.delete_graph("running", ended_before=cutoff) is None
    assert store.get_graph("ended") is None and list(store.list_jobs("ended")) == []
    assert [j.name for j in store.list_jobs("reopened")] == ["a", "b"]
    assert store.get_graph("running") is not None
    assert store.ended_graphs(timeutil.iso_in(-60)) == []  # none ended a minute ago


def test_the_scheduler_is_not_given_the_records_of_items_the_time_to_live_deletes() -> None:
    from overseer.stream import passes_stream_filters

    image = {"graph_id": {"S": "g"}, "entry": {"S": "job#a"}, "status": {"S": "finished"}}
    deleted_by_ttl = {
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {"Keys": {"graph_id": {"S": "g"}, "entry": {"S": "job#a"}}, "OldImage": image},
    }
    assert not passes_stream_filters(deleted_by_ttl)
