"""The rehearsal's concurrency-limit story: a stack with ``limits: {"geo_api": 1}`` runs a
graph of three jobs holding ``geo_api`` one at a time, as deployed.

The graph goes in through API Gateway (the API function knows the limits, and refuses a
graph naming one the stack does not have); the scheduler sends the three jobs; the sweep
starts three workers (``backlogPerWorker: 1``, a setting a user may choose). Each worker
takes a slot of ``geo_api`` (a conditional UpdateItem of its item in the graphs table)
before it claims a job; the others find it full, read it (GetItem), and park their jobs
outside the queue; the worker giving the slot back wakes the oldest (Query of the sweep
index's ``limit#geo_api`` partition), which the scheduler sends again. The sweep counts the
holders and the waiters of each limit on every run. Every AWS call is checked against the
caller's role as it happens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from tests.rehearsal.conftest import CONTEXT, synthesized_once
from tests.rehearsal.test_pools import metric_by, sweep_now
from tests.rehearsal.test_story import api, jobs, removal_report, wait_until_ended
from tests.rehearsal.world import Rehearsal

pytestmark = pytest.mark.rehearsal

LIMITS_CONTEXT = {**CONTEXT, "limits": json.dumps({"geo_api": 1}), "backlogPerWorker": 1}
GRAPH_ID = "one-at-a-time"
JOB_NAMES = ("geocode_a", "geocode_b", "geocode_c")
GRAPH = {
    "id": GRAPH_ID,
    # Each job sleeps a few seconds and writes an artifact; the graph gives each the limit.
    "jobs": {name: {"type": "wait", "args": {"seconds": 6}, "limit": "geo_api"} for name in JOB_NAMES},
}


@pytest.fixture(scope="module")
def rehearsal() -> Iterator[Rehearsal]:
    world = Rehearsal.start(synthesized_once(LIMITS_CONTEXT))
    try:
        yield world
    finally:
        world.close()


def queued(rehearsal: Rehearsal) -> int:
    """The dispatch queues' messages as the SQS console shows them: available + in flight +
    delayed, in the three queues (high, normal, low priority)."""
    sqs = rehearsal.client("sqs")
    return sum(
        int(value)
        for output in ("QueueUrl", "HighQueueUrl", "LowQueueUrl")
        for value in sqs.get_queue_attributes(
            QueueUrl=str(rehearsal.template.output(output)),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"].values()
    )


def job_items(rehearsal: Rehearsal, graph_id: str) -> dict[str, dict[str, Any]]:
    """The graph's job items as an operator reads them in the console (the jobs table)."""
    items = rehearsal.client("dynamodb").query(
        TableName=str(rehearsal.template.output("JobsTable")),
        KeyConditionExpression="graph_id = :g AND begins_with(entry, :j)",
        ExpressionAttributeValues={":g": {"S": graph_id}, ":j": {"S": "job#"}},
        ConsistentRead=True,
    )["Items"]
    return {item["job_name"]["S"]: {k: next(iter(v.values())) for k, v in item.items()} for item in items}


def test_the_processes_that_use_limits_know_them(rehearsal: Rehearsal) -> None:
    (definition,) = rehearsal.batch.definitions
    assert definition.environment["OVERSEER_LIMITS"] == '{"geo_api":1}'
    for name in ("api", "trigger", "sweep"):
        assert rehearsal.functions[name].runtime.environment["OVERSEER_LIMITS"] == '{"geo_api":1}', name
    assert "OVERSEER_LIMITS" not in rehearsal.functions["scheduler"].runtime.environment


def test_a_graph_naming_a_limit_the_stack_does_not_have_is_refused(rehearsal: Rehearsal) -> None:
    graph = {"id": "unknown-limit", "jobs": {"enrich": {"type": "wait", "limit": "crm_api"}}}
    status, answer = rehearsal.api.request("POST", "/graphs", {"graph": graph}, caller=rehearsal.operator)
    assert status == 400, answer
    assert "hold the concurrency limit(s) ['crm_api'], which are not configured; limits: ['geo_api']" in str(
        answer
    )
    status, _ = rehearsal.api.request("GET", "/graphs/unknown-limit", caller=rehearsal.operator)
    assert status == 404  # nothing written


def test_three_jobs_holding_a_limit_of_one_run_one_at_a_time(rehearsal: Rehearsal) -> None:
    assert api(rehearsal, "POST", "/graphs", {"graph": GRAPH})["graph_id"] == GRAPH_ID
    assert {name: job.get("limit") for name, job in jobs(rehearsal, GRAPH_ID).items()} == dict.fromkeys(
        JOB_NAMES, "geo_api"
    )
    # The three are ready at once: the scheduler sends all three, and the sweep, one worker per
    # queued job, starts three workers. No one holds or waits for the limit yet.
    rehearsal.wait_for(lambda: queued(rehearsal) == 3, timeout=60, what="three messages")
    first = sweep_now(rehearsal)
    assert (first.payload["queue_depths"], first.payload["workers_started"]) == ({"default": 3}, 3)
    # Its last step reports the limit (the workers it started may have taken jobs by then:
    # never more than one holds it).
    reported = first.payload["limits"]["geo_api"]
    assert (reported["size"], reported["woken"]) == (1, 0) and reported["running"] <= 1
    assert first.payload["failed_steps"] == []
    # The dashboard's row: LimitRunning and LimitWaiting, dimension Limit.
    assert metric_by(first.logs, "LimitRunning", "Limit") == {"geo_api": reported["running"]}
    assert metric_by(first.logs, "LimitWaiting", "Limit") == {"geo_api": reported["waiting"]}

    rehearsal.start_sweep_schedule()  # from here on, as deployed
    assert wait_until_ended(rehearsal, GRAPH_ID) == "finished", jobs(rehearsal, GRAPH_ID)

    items = job_items(rehearsal, GRAPH_ID)
    assert {name: (item["status"], item["attempts"]) for name, item in items.items()} == dict.fromkeys(
        JOB_NAMES, ("finished", "1")
    )  # waiting for a slot is no attempt
    # Never two at once: each job started after the one before it finished.
    runs = sorted((item["started_at"], item["finished_at"], name) for name, item in items.items())
    for (_, finished, before), (started, _, after) in pairwise(runs):
        assert started >= finished, f"{after} started at {started}, before {before} finished at {finished}"
    # Three workers raced for one slot: the jobs that found it held waited outside the queue
    # and were woken when it was given back (released_by "limit"); none waits now.
    woken = sorted(name for name, item in items.items() if item.get("released_by") == "limit")
    assert woken, items
    assert not [name for name, item in items.items() if "limit_wait" in item or "limit_since" in item]
    # The slot item, as the console shows it in the graphs table: no holder left.
    slot = rehearsal.client("dynamodb").get_item(
        TableName=str(rehearsal.template.output("GraphsTable")),
        Key={"graph_id": {"S": "#limit#geo_api"}},
        ConsistentRead=True,
    )["Item"]
    assert (slot["holders"], slot["size"]) == ({"M": {}}, {"N": "1"})
    # What `overseer status --api` shows: GET /limits through API Gateway.
    assert api(rehearsal, "GET", "/limits") == {
        "limits": {"geo_api": {"size": 1, "running": 0, "holders": [], "waiting": 0}}
    }


def test_every_call_of_the_limit_story_was_allowed(rehearsal: Rehearsal) -> None:
    rehearsal.wait_for(lambda: queued(rehearsal) == 0, timeout=60, what="every message deleted")
    assert [call.describe_denial() for call in rehearsal.gateway.denied()] == []
    # The slot writes and reads (graphs table), the parks and wake-ups (jobs table), the
    # wake-ups' search for the oldest waiter (the sweep index), made by the workers.
    assert rehearsal.gateway.calls_needing("worker", "dynamodb:UpdateItem", "TablesGraphs")
    assert rehearsal.gateway.calls_needing("worker", "dynamodb:GetItem", "TablesGraphs")
    assert rehearsal.gateway.calls_needing("worker", "dynamodb:Query", "/index/sweep")
    assert rehearsal.gateway.calls_needing("worker", "dynamodb:BatchGetItem", "TablesJobs")
    # The sweep reads each limit's slots and counts its waiters with a Query of the index's
    # limit#geo_api partition (its report's "limits", no step failed: see the test above).
    assert rehearsal.gateway.calls_needing("sweep", "dynamodb:GetItem", "TablesGraphs")
    assert rehearsal.gateway.calls_needing("sweep", "dynamodb:Query", "/index/sweep")
    # GET /limits counts the waiting jobs with a Query of the index.
    assert rehearsal.gateway.calls_needing("api", "dynamodb:Query", "/index/sweep")
    # The scheduler needs nothing new: it sends the woken jobs as any released job.
    assert not rehearsal.gateway.calls_needing("scheduler", "dynamodb:Query", "/index/sweep")


def _limit_grant(role: str, action: str, resource: str) -> bool:
    """The grants only a stack with limits gives: the worker's slot reads and its Query of the
    sweep index, and the API's Query of that index (GET /limits)."""
    if "Api" in role:
        return action == "dynamodb:Query" and resource.endswith("/index/sweep")
    return "Workers" in role and (
        (action == "dynamodb:GetItem" and "TablesGraphs" in resource)
        or (action == "dynamodb:Query" and resource.endswith("/index/sweep"))
    )


def test_every_grant_limits_add_is_needed_by_a_call(rehearsal: Rehearsal) -> None:
    needed, unneeded = removal_report(rehearsal, exempt=lambda *_: None, considered=_limit_grant)
    print("\n".join(f"{grant}\n    -> denies {call}" for grant, call in sorted(needed.items())))
    assert unneeded == [], "granted but used by no call of the limit story:\n" + "\n".join(unneeded)
    assert sorted(needed.values()) == [
        "api dynamodb:Query",
        "worker dynamodb:GetItem",
        "worker dynamodb:Query",
    ]
