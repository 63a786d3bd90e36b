"""``overseer.operations`` cancel and rerun with the scheduler handler on the real stream."""

from __future__ import annotations

import pytest

from overseer import operations
from overseer.backends.aws import clients
from overseer.backends.aws.events import EventBridgePublisher
from overseer.errors import GraphNotFound
from tests.functions.conftest import Deployed, FakeLambdaContext

pytestmark = pytest.mark.integration


def statuses(deployed: Deployed, graph_id: str) -> dict[str, str]:
    return {j.name: j.status.value for j in deployed.services.store.list_jobs(graph_id)}


def test_rerun_counts_deps_that_finished_after_the_abort(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    graph_id = "ops-rerun"
    operations.submit_graph(deployed.services, {"id": graph_id, "jobs": {"a": [], "b": [], "c": ["a", "b"]}})
    deployed.fail(graph_id, "b")
    deployed.pump(context)  # c is aborted while a still runs
    deployed.finish(graph_id, "a")
    deployed.pump(context)
    assert statuses(deployed, graph_id) == {"a": "finished", "b": "failed", "c": "aborted"}
    assert operations.get_graph(deployed.services, graph_id).status == "failed"

    change = operations.rerun_graph(deployed.services, graph_id)
    assert change.jobs_changed == 2
    assert change.graph.status == "running"
    assert change.graph.counts == {"finished": 1, "failed": 0, "aborted": 0}
    assert statuses(deployed, graph_id) == {"a": "finished", "b": "ready", "c": "waiting"}
    b = deployed.services.store.get_job(graph_id, "b")
    assert b is not None and (b.error, b.attempts, b.finished_at) == (None, 0, None)

    deployed.pump(context)
    deployed.finish(graph_id, "b")
    deployed.pump(context)
    assert statuses(deployed, graph_id)["c"] == "ready"
    deployed.finish(graph_id, "c")
    deployed.pump(context)
    graph = operations.get_graph(deployed.services, graph_id)
    assert (graph.status, graph.counts) == ("finished", {"finished": 3, "failed": 0, "aborted": 0})

    # Nothing left to rerun: the finished graph stays finished.
    assert operations.rerun_graph(deployed.services, graph_id).jobs_changed == 0
    assert operations.get_graph(deployed.services, graph_id).status == "finished"


def test_cancel_aborts_open_jobs_and_announces_it(deployed: Deployed, context: FakeLambdaContext) -> None:
    graph_id = "ops-cancel"
    operations.submit_graph(deployed.services, {"id": graph_id, "jobs": {"a": [], "b": ["a"], "c": ["b"]}})
    deployed.pump(context)
    deployed.finish(graph_id, "a")
    deployed.pump(context)
    deployed.drain_queue(deployed.events_queue_url)

    publisher = EventBridgePublisher(clients.client("events"), deployed.settings.event_bus)
    change = operations.cancel_graph(deployed.services, graph_id, on_graph_done=publisher.graph_done)
    assert (change.graph.status, change.jobs_changed) == ("aborted", 2)
    assert statuses(deployed, graph_id) == {"a": "finished", "b": "aborted", "c": "aborted"}
    deployed.pump(context)  # the scheduler counts the aborts
    graph = operations.get_graph(deployed.services, graph_id)
    assert (graph.status, graph.counts) == ("aborted", {"finished": 1, "failed": 0, "aborted": 2})
    events = deployed.drain_queue(deployed.events_queue_url)
    assert [(e["detail-type"], e["detail"]["graph_id"]) for e in events] == [("Graph Aborted", graph_id)]


def test_operations_on_an_unknown_graph_raise(deployed: Deployed) -> None:
    for operation in (
        operations.get_graph,
        operations.list_jobs,
        operations.cancel_graph,
        operations.rerun_graph,
    ):
        with pytest.raises(GraphNotFound, match="no graph 'missing'"):
            operation(deployed.services, "missing")
