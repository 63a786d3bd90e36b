"""``functions.trigger.handler`` with EventBridge events, against the emulator."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from functions import trigger
from overseer.backends.aws import clients
from overseer.errors import InvalidTriggerEvent
from overseer.templates import TemplateError
from tests.functions.conftest import Deployed, FakeLambdaContext, load_event

pytestmark = pytest.mark.integration


def stored_items(deployed: Deployed) -> dict[str, set[str]]:
    """Every item of the graphs and jobs tables, as JSON, by table: equal before and after
    a call when it wrote, updated and deleted nothing."""
    scan = clients.client("dynamodb").get_paginator("scan")
    return {
        table: {
            json.dumps(item, sort_keys=True)
            for page in scan.paginate(TableName=table)
            for item in page["Items"]
        }
        for table in (deployed.settings.graphs_table, deployed.settings.jobs_table)
    }


def test_scheduled_rule_starts_one_graph_per_company_once(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    result = trigger.handler(load_event("eventbridge_scheduled_trigger"), context)
    ids = [g["graph_id"] for g in result["graphs"]]
    assert ids == [f"daily-report-2026-11-26-company-{n}" for n in (1, 2, 3)]
    assert result["created"] == 3
    graph = deployed.services.store.get_graph("daily-report-2026-11-26-company-2")
    assert graph is not None
    assert graph.args == {"date": "2026-11-26", "format": "pdf", "company_id": 2}
    report = deployed.services.store.get_job("daily-report-2026-11-26-company-2", "report")
    assert report is not None and report.args["company_id"] == 2

    # EventBridge delivers at least once: the same event again starts nothing.
    again = trigger.handler(load_event("eventbridge_scheduled_trigger"), context)
    assert again["created"] == 0
    assert [g["graph_id"] for g in again["graphs"]] == ids


def test_event_detail_names_the_template(deployed: Deployed, context: FakeLambdaContext) -> None:
    result = trigger.handler(load_event("eventbridge_custom_event"), context)
    assert result["graphs"] == [
        {"graph_id": "daily-report-2026-11-27-company-99", "status": "running", "created": True}
    ]


def test_constant_input_dates_the_graph(deployed: Deployed, context: FakeLambdaContext) -> None:
    dated = {"template": "daily-report", "args": {"company_id": 5, "date": "2030-01-01"}}
    assert trigger.handler(dated, context)["graphs"][0]["graph_id"] == "daily-report-2030-01-01-company-5"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    undated = {"template": "daily-report", "args": {"company_id": 6}}
    assert trigger.handler(undated, context)["graphs"][0]["graph_id"] == f"daily-report-{today}-company-6"


@pytest.mark.parametrize(
    ("event", "error", "words"),
    [
        ({"detail": {}}, trigger.InvalidTriggerEvent, "names no template"),
        ({"template": "daily-report", "args": [1]}, trigger.InvalidTriggerEvent, "'args' must be an object"),
        ({"template": "nope"}, TemplateError, "known templates: cyclic, daily-report"),
        ({"template": "daily-report", "args": {"company_ids": []}}, TemplateError, "non-empty list"),
    ],
)
def test_bad_events_raise_and_write_nothing(
    deployed: Deployed, context: FakeLambdaContext, event: dict, error: type[Exception], words: str
) -> None:
    before = stored_items(deployed)
    with pytest.raises(error, match=words.replace("(", r"\(").replace("[", r"\[")):
        trigger.handler(event, context)
    assert stored_items(deployed) == before


def test_one_bad_company_writes_no_graph(deployed: Deployed, context: FakeLambdaContext) -> None:
    event = {"template": "daily-report", "args": {"company_ids": [10, "bad id!"], "date": "2026-12-01"}}
    before = stored_items(deployed)
    with pytest.raises(Exception, match="graph id"):
        trigger.handler(event, context)
    assert deployed.services.store.get_graph("daily-report-2026-12-01-company-10") is None
    assert stored_items(deployed) == before  # no graph item, no job item of company 10 either


def s3_upload(event_id: str, key: str) -> dict:
    """What an S3 upload rule's target receives (infra.triggers.trigger_input, EventBridge
    having filled in the envelope): an "Object Created" event of S3's EventBridge
    notifications, with the trigger's eventArgs and graphIdFrom."""
    return {
        "template": "ingest",
        "args": {},
        "trigger": "uploads",
        "event": {
            "id": event_id,
            "time": "2026-11-30T09:12:01Z",
            "source": "aws.s3",
            "detail-type": "Object Created",
            "detail": {
                "version": "0",
                "bucket": {"name": "landing-zone"},
                "object": {"key": key, "size": 1024, "etag": "b1946ac92492d2347c6235b4d2611184"},
                "request-id": "57H08PA84AB1JZW0",
                "requester": "123456789012",
                "reason": "PutObject",
            },
        },
        "eventArgs": {"bucket": "$.detail.bucket.name", "key": "$.detail.object.key"},
        "graphIdFrom": "event",
    }


def test_two_uploads_on_one_day_are_two_graphs_and_a_redelivered_event_is_one(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    first = trigger.handler(s3_upload("e6f2b1c0-1", "in/2026-11-30/orders.csv"), context)
    second = trigger.handler(s3_upload("e6f2b1c0-2", "in/2026-11-30/refunds.csv"), context)
    again = trigger.handler(s3_upload("e6f2b1c0-1", "in/2026-11-30/orders.csv"), context)

    ids = [result["graphs"][0]["graph_id"] for result in (first, second, again)]
    assert ids[:2] == ["ingest-2026-11-30-e6f2b1c0-1", "ingest-2026-11-30-e6f2b1c0-2"]
    assert (first["created"], second["created"], again["created"]) == (1, 1, 0)
    assert ids[2] == ids[0]  # EventBridge delivers at least once: the same event, one graph
    for graph_id, key in zip(ids[:2], ("in/2026-11-30/orders.csv", "in/2026-11-30/refunds.csv"), strict=True):
        graph = deployed.services.store.get_graph(graph_id)
        assert graph is not None
        assert (graph.args["bucket"], graph.args["key"], graph.args["date"]) == (
            "landing-zone",
            key,
            "2026-11-30",
        )
        load = deployed.services.store.get_job(graph_id, "load")
        assert load is not None and load.args["key"] == key  # every job sees the event's data


def test_the_graph_id_may_come_from_a_key_the_rule_chose(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    by_key = {**s3_upload("e1", "in/a b.csv"), "graphIdFrom": "key"}
    result = trigger.handler(by_key, context)
    graph_id = result["graphs"][0]["graph_id"]
    # A key holds characters an id cannot: they become "-", and a digest keeps keys apart.
    assert (
        graph_id.startswith("ingest-2026-11-30-in-a-b.csv-")
        and len(graph_id) == len("ingest-2026-11-30-in-a-b.csv-") + 8
    )
    assert trigger.handler({**by_key, "event": {**by_key["event"], "id": "e2"}}, context)["created"] == 0


def test_an_event_without_the_data_the_rule_reads_is_refused(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    before = stored_items(deployed)
    event = s3_upload("e3", "in/x.csv")
    del event["event"]["detail"]["object"]
    with pytest.raises(
        InvalidTriggerEvent, match=r"the event has nothing at \$\.detail\.object\.key \(eventArgs 'key'"
    ):
        trigger.handler(event, context)
    assert stored_items(deployed) == before
