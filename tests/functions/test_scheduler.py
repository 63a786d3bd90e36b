"""``functions.scheduler.handler`` with DynamoDB stream events, against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions import scheduler
from overseer import operations
from overseer.backends.aws import clients
from overseer.states import CLAIM
from overseer.store import Fence
from tests.functions.conftest import Deployed, FakeLambdaContext, load_event

pytestmark = pytest.mark.integration


@pytest.fixture
def quiet(deployed: Deployed) -> Deployed:
    """Start from an empty dispatch queue and no unread stream records."""
    deployed.reader.poll()
    deployed.drain_queue()
    return deployed


def test_ready_job_is_put_on_the_queue(quiet: Deployed, context: FakeLambdaContext) -> None:
    report = scheduler.handler(load_event("dynamodb_stream_job_ready"), context)
    assert report["records"] == 1
    assert report["enqueued"] == 1
    assert quiet.drain_queue() == [{"g": "stream-graph", "j": "start", "a": 0, "t": "start"}]


def test_finished_job_releases_its_dependent(quiet: Deployed, context: FakeLambdaContext) -> None:
    operations.submit_graph(quiet.services, {"id": "stream-graph", "jobs": {"start": [], "fetch": ["start"]}})
    report = scheduler.handler(load_event("dynamodb_stream_job_finished"), context)
    assert (report["released"], report["enqueued"]) == (1, 1)
    fetch = quiet.services.store.get_job("stream-graph", "fetch")
    assert fetch is not None and fetch.status == "ready"
    # The scheduler sends what it releases (its "ready" record is filtered out).
    assert quiet.drain_queue() == [{"g": "stream-graph", "j": "fetch", "a": 0, "t": "fetch"}]
    # Stream records arrive at least once: the same event again releases nothing, and sends
    # the message again only while the job is ready (the first invocation may have died
    # before sending); the claim is fenced, so a second message is harmless.
    again = scheduler.handler(load_event("dynamodb_stream_job_finished"), context)
    assert (again["released"], again["enqueued"]) == (0, 1)
    assert quiet.drain_queue() == [{"g": "stream-graph", "j": "fetch", "a": 0, "t": "fetch"}]
    quiet.services.store.transition("stream-graph", "fetch", CLAIM, fence=Fence(0), changes={"attempts": 1})
    late = scheduler.handler(load_event("dynamodb_stream_job_finished"), context)
    assert (late["released"], late["enqueued"]) == (0, 0)
    assert quiet.drain_queue() == []


def test_submitted_graph_runs_to_the_end(quiet: Deployed, context: FakeLambdaContext) -> None:
    """The real stream of the emulator's jobs table, fed to the handler as Lambda would."""
    operations.submit_graph(quiet.services, {"id": "sched-e2e", "jobs": {"a": [], "b": [], "c": ["a", "b"]}})
    quiet.pump(context)
    queued = sorted((m["g"], m["j"]) for m in quiet.drain_queue())
    assert queued == [("sched-e2e", "a"), ("sched-e2e", "b")]

    quiet.finish("sched-e2e", "a")
    quiet.finish("sched-e2e", "b")
    quiet.pump(context)
    assert [(m["g"], m["j"]) for m in quiet.drain_queue()] == [("sched-e2e", "c")]

    quiet.finish("sched-e2e", "c")
    reports = quiet.pump(context)
    assert ["sched-e2e"] in [r["graphs_done"] for r in reports]
    graph = operations.get_graph(quiet.services, "sched-e2e")
    assert graph.status == "finished"
    assert graph.counts == {"finished": 3, "failed": 0, "aborted": 0}

    events = [e for e in quiet.drain_queue(quiet.events_queue_url) if e["detail"]["graph_id"] == "sched-e2e"]
    assert [(e["source"], e["detail-type"], e["detail"]["status"]) for e in events] == [
        ("overseer", "Graph Finished", "finished")
    ]


def test_failed_job_aborts_descendants_and_fails_the_graph(
    quiet: Deployed, context: FakeLambdaContext
) -> None:
    operations.submit_graph(quiet.services, {"id": "sched-fail", "jobs": {"a": [], "b": ["a"], "c": ["b"]}})
    quiet.fail("sched-fail", "a")
    quiet.pump(context)
    jobs = {j.name: j for j in quiet.services.store.list_jobs("sched-fail")}
    assert {n: j.status.value for n, j in jobs.items()} == {"a": "failed", "b": "aborted", "c": "aborted"}
    assert jobs["c"].reason == "upstream job 'a' failed"
    assert operations.get_graph(quiet.services, "sched-fail").status == "failed"
    events = [e for e in quiet.drain_queue(quiet.events_queue_url) if e["detail"]["graph_id"] == "sched-fail"]
    assert [e["detail-type"] for e in events] == ["Graph Failed"]
    assert json.dumps(events[0]["detail"]["counts"]) == json.dumps({"finished": 0, "failed": 1, "aborted": 2})


@pytest.fixture
def refused_events(quiet: Deployed, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The scheduler's EventBridge client refuses every PutEvents (as with a missing permission);
    yields the graphs whose events it refused."""
    refused: list[str] = []

    def refuse(params: dict[str, Any], **_: Any) -> None:
        refused.extend(json.loads(e["Detail"])["graph_id"] for e in params["Entries"])
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents")

    build = clients.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        made = build(service, *args, **kwargs)
        if service == "events":
            made.meta.events.register("before-parameter-build.events.PutEvents", refuse)
        return made

    monkeypatch.setattr(clients, "client", client)
    scheduler.reset()  # the next invocation is a cold start with the refusing client
    yield refused
    scheduler.reset()


def test_a_lost_graph_event_does_not_fail_the_batch(
    quiet: Deployed, refused_events: list[str], context: FakeLambdaContext
) -> None:
    """The outcome is stored before the event; a retried batch could not publish it again."""
    operations.submit_graph(quiet.services, {"id": "sched-unannounced", "jobs": {"a": []}})
    quiet.pump(context)
    quiet.drain_queue()
    quiet.finish("sched-unannounced", "a")

    reports = quiet.pump(context)  # raises if the refused event failed the batch

    assert refused_events == ["sched-unannounced"]
    assert ["sched-unannounced"] in [r["graphs_done"] for r in reports]
    assert not any(r.get("batchItemFailures") for r in reports)
    graph = operations.get_graph(quiet.services, "sched-unannounced")
    assert (graph.status, graph.counts) == ("finished", {"finished": 1, "failed": 0, "aborted": 0})
    assert [
        e for e in quiet.drain_queue(quiet.events_queue_url) if e["detail"]["graph_id"] == "sched-unannounced"
    ] == []
