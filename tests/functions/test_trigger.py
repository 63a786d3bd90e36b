"""``functions.trigger.handler`` with EventBridge events, against the emulator."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from functions import trigger
from overseer.backends.aws import clients
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
