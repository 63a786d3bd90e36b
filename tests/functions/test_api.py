"""``functions.api.handler`` with API Gateway REST proxy events, against the emulator."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import time
from typing import Any

import pytest

from functions import api
from overseer import timeutil
from overseer.backends.aws.emulator import environment
from overseer.limits import Admission, Holder
from overseer.states import FINISH, LIMIT_WAIT
from overseer.store import Fence
from tests.functions.conftest import WORKER, Deployed, FakeLambdaContext, load_event

pytestmark = pytest.mark.integration


def call(event: dict[str, Any], context: FakeLambdaContext) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = api.handler(event, context)
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    return response["statusCode"], json.loads(response["body"]), headers


def with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


def get_event(path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    event = load_event("api_get_graph")
    event["path"] = path
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    return event


def post_event(path: str) -> dict[str, Any]:
    event = load_event("api_cancel_graph")
    event["path"] = path
    return event


def test_submit_inline_graph_creates_it_once(deployed: Deployed, context: FakeLambdaContext) -> None:
    status, body, headers = call(load_event("api_submit_graph"), context)
    assert status == 201, body
    assert body["graph_id"] == "api-inline-1"
    assert body["created"] is True
    assert body["status"] == "running"
    assert body["jobs_total"] == 3
    assert body["args"] == {"company_id": 7}
    assert headers["Location"] == "/graphs/api-inline-1"
    jobs = {j.name: j for j in deployed.services.store.list_jobs("api-inline-1")}
    assert {n: j.status.value for n, j in jobs.items()} == {
        "start": "ready",
        "fetch": "waiting",
        "report": "waiting",
    }
    assert jobs["report"].type == "render_report"
    assert jobs["report"].args == {"company_id": 7, "format": "pdf"}

    status, again, _ = call(load_event("api_submit_graph"), context)
    assert status == 200
    assert again["created"] is False
    assert again["created_at"] == body["created_at"]
    assert len(list(deployed.services.store.list_jobs("api-inline-1"))) == 3


def test_submit_unwrapped_graph(deployed: Deployed, context: FakeLambdaContext) -> None:
    event = with_body(load_event("api_submit_graph"), {"id": "api-unwrapped", "jobs": {"only": []}})
    status, body, _ = call(event, context)
    assert status == 201, body
    assert deployed.services.store.get_job("api-unwrapped", "only") is not None


def test_a_submission_sets_the_graphs_priority(deployed: Deployed, context: FakeLambdaContext) -> None:
    event = with_body(
        load_event("api_submit_graph"), {"graph": {"id": "api-high", "jobs": {"a": []}}, "priority": "high"}
    )
    status, body, _ = call(event, context)
    assert (status, body["priority"]) == (201, "high")
    assert deployed.services.store.get_job("api-high", "a").priority == "high"
    template = {
        "template": "daily-report",
        "args": {"company_id": 5, "date": "2026-11-30"},
        "priority": "low",
    }
    status, body, _ = call(with_body(load_event("api_submit_graph"), template), context)
    assert (status, body["priority"]) == (201, "low")
    assert {job.priority for job in deployed.services.store.list_jobs(body["graph_id"])} == {"low"}


def test_submit_template_names_graph_from_args(deployed: Deployed, context: FakeLambdaContext) -> None:
    status, body, _ = call(load_event("api_submit_template"), context)
    assert status == 201, body
    assert body["graph_id"] == "daily-report-2026-11-26-company-42"
    assert body["args"] == {"format": "pdf", "date": "2026-11-26", "company_id": 42}
    status, again, _ = call(load_event("api_submit_template"), context)
    assert (status, again["created"]) == (200, False)


@pytest.mark.parametrize(
    ("fixture", "status", "words"),
    [
        ("api_submit_malformed_json", 400, "not valid JSON"),
        ("api_submit_unknown_template", 400, "known templates: cyclic, daily-report"),
        ("api_submit_cyclic_graph", 400, "dependency cycle"),
    ],
)
def test_submit_rejects_bad_requests(
    deployed: Deployed, context: FakeLambdaContext, fixture: str, status: int, words: str
) -> None:
    code, body, _ = call(load_event(fixture), context)
    assert code == status
    assert words in body["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("", "has no body"),
        ("[1, 2]", "must be a JSON object"),
        ({"graph": {"jobs": {"a": []}}, "extra": 1}, "with at most 'priority' beside it"),
        ({"graph": "a.yaml"}, "'graph' must hold a JSON object"),
        (
            {"graph": {"jobs": {"a": []}}, "priority": "urgent"},
            "'priority' must be one of ['high', 'normal', 'low']",
        ),
        (
            {"jobs": {"a": []}, "priority": "urgent"},
            "graph priority must be one of ['high', 'normal', 'low']",
        ),
        ({"graph": {"jobs": {"a": ["missing"]}}}, "unknown job(s) ['missing']"),
        ({"template": "daily-report", "args": {"date": "2026-11-26"}}, "needs args ['company_id']"),
        ({"template": "daily-report", "args": [1]}, "'args' an object"),
        ({"template": "cyclic", "args": {"date": "d"}}, "dependency cycle"),
        ({"nothing": "here"}, "names no graph"),
        ('{"jobs": {"a": []}, "jobs": {}}', "the key 'jobs' twice"),
    ],
)
def test_submit_explains_what_is_wrong(
    deployed: Deployed, context: FakeLambdaContext, body: Any, words: str
) -> None:
    code, answer, _ = call(with_body(load_event("api_submit_graph"), body), context)
    assert code == 400
    assert words in answer["error"]


def test_submit_refuses_a_body_over_1_mb(deployed: Deployed, context: FakeLambdaContext) -> None:
    jobs = {f"job-{n:06d}": [] for n in range(60_000)}
    event = with_body(load_event("api_submit_graph"), {"graph": {"id": "api-huge", "jobs": jobs}})
    assert len(event["body"]) > 1024 * 1024
    code, body, _ = call(event, context)
    assert code == 413
    assert "limit is 1048576" in body["error"]
    assert deployed.services.store.get_graph("api-huge") is None


def test_get_graph(deployed: Deployed, context: FakeLambdaContext) -> None:
    call(load_event("api_submit_graph"), context)
    status, body, _ = call(load_event("api_get_graph"), context)
    assert status == 200
    assert body["graph_id"] == "api-inline-1"
    assert body["jobs_total"] == 3
    assert set(body["counts"]) == {"finished", "failed", "aborted"}


def test_unknown_graph_is_404(deployed: Deployed, context: FakeLambdaContext) -> None:
    status, body, _ = call(load_event("api_get_graph_unknown"), context)
    assert status == 404
    assert "no graph 'no-such-graph'" in body["error"]
    for path in ("/graphs/no-such-graph/cancel", "/graphs/no-such-graph/rerun"):
        status, body, _ = call(post_event(path), context)
        assert status == 404, path
    status, _, _ = call(get_event("/graphs/no-such-graph/jobs"), context)
    assert status == 404


def test_unknown_route_is_404(deployed: Deployed, context: FakeLambdaContext) -> None:
    status, body, _ = call(get_event("/nowhere"), context)
    assert status == 404
    assert "no route GET /nowhere" in body["error"]


def test_list_jobs_by_status_and_page(deployed: Deployed, context: FakeLambdaContext) -> None:
    call(load_event("api_submit_graph"), context)
    status, body, _ = call(load_event("api_list_jobs"), context)
    assert status == 200
    assert list(body["jobs"]) == ["start"]
    assert body["jobs"]["start"]["status"] == "ready"
    assert body["next"] is None

    status, page, _ = call(get_event("/graphs/api-inline-1/jobs", {"limit": "2"}), context)
    assert (status, list(page["jobs"]), page["next"]) == (200, ["fetch", "report"], "report")
    status, rest, _ = call(get_event("/graphs/api-inline-1/jobs", {"after": "report"}), context)
    assert (list(rest["jobs"]), rest["next"]) == (["start"], None)

    status, bad, _ = call(get_event("/graphs/api-inline-1/jobs", {"status": "sleeping"}), context)
    assert status == 400
    assert "unknown job status 'sleeping'" in bad["error"]
    status, bad, _ = call(get_event("/graphs/api-inline-1/jobs", {"limit": "0"}), context)
    assert status == 400


def test_a_refresh_lists_only_the_jobs_written_since(deployed: Deployed, context: FakeLambdaContext) -> None:
    graph = {"id": "api-changed", "jobs": {"a": [], "b": ["a"], "c": []}}
    assert call(with_body(load_event("api_submit_graph"), {"graph": graph}), context)[0] == 201
    stamps = [str(job.updated_at) for job in deployed.services.store.list_jobs("api-changed")]
    later = timeutil.iso(timeutil.parse(max(stamps)) + dt.timedelta(milliseconds=5))
    status, body, _ = call(get_event("/graphs/api-changed/jobs", {"changed_since": later}), context)
    assert (status, body["jobs"], body["next"]) == (200, {}, None)
    while timeutil.iso() <= later:
        time.sleep(0.002)
    deployed.finish("api-changed", "c")
    status, body, _ = call(get_event("/graphs/api-changed/jobs", {"changed_since": later}), context)
    assert (status, list(body["jobs"]), body["jobs"]["c"]["status"]) == (200, ["c"], "finished")
    status, bad, _ = call(get_event("/graphs/api-changed/jobs", {"changed_since": "yesterday"}), context)
    assert status == 400 and "'changed_since' must be an ISO time" in bad["error"]


def test_cancel_then_rerun(deployed: Deployed, context: FakeLambdaContext) -> None:
    graph = {"id": "api-cancel", "jobs": {"a": [], "b": ["a"], "c": []}}
    event = with_body(load_event("api_submit_graph"), {"graph": graph})
    assert call(event, context)[0] == 201
    deployed.finish("api-cancel", "c")
    deployed.claim("api-cancel", "a")  # running when the graph is cancelled

    status, body, _ = call(post_event("/graphs/api-cancel/cancel"), context)
    assert status == 200, body
    assert body["status"] == "aborted"
    assert body["jobs_aborted"] == 2
    jobs = {j.name: j for j in deployed.services.store.list_jobs("api-cancel")}
    assert {n: j.status.value for n, j in jobs.items()} == {"a": "aborted", "b": "aborted", "c": "finished"}
    assert jobs["a"].reason == "graph cancelled"
    # The running job's worker can no longer record an outcome.
    late = deployed.services.store.transition("api-cancel", "a", FINISH, fence=Fence(1, WORKER))
    assert late is None
    status, again, _ = call(post_event("/graphs/api-cancel/cancel"), context)
    assert (status, again["jobs_aborted"], again["status"]) == (200, 0, "aborted")

    status, body, _ = call(post_event("/graphs/api-cancel/rerun"), context)
    assert status == 200, body
    assert (body["status"], body["jobs_rerun"]) == ("running", 2)
    assert body["counts"] == {"finished": 1, "failed": 0, "aborted": 0}
    jobs = {j.name: j for j in deployed.services.store.list_jobs("api-cancel")}
    assert {n: j.status.value for n, j in jobs.items()} == {"a": "ready", "b": "waiting", "c": "finished"}
    assert jobs["a"].reason is None
    assert jobs["a"].attempts == 0


def test_rerun_one_job_with_its_downstream(deployed: Deployed, context: FakeLambdaContext) -> None:
    graph = {"id": "api-rerun-job", "jobs": {"a": [], "b": ["a"], "c": ["b"], "x": []}}
    assert call(with_body(load_event("api_submit_graph"), {"graph": graph}), context)[0] == 201
    for name in ("a", "x"):
        deployed.finish("api-rerun-job", name)
    deployed.pump(context)  # b released
    deployed.claim("api-rerun-job", "b")  # b runs

    rerun = "/graphs/api-rerun-job/rerun"
    status, body, _ = call(with_body(post_event(rerun), {"job": "a", "downstream": True}), context)
    assert status == 409, body
    assert "1 of those jobs is running ('b')" in body["error"]
    status, body, _ = call(with_body(post_event(rerun), {"job": "a"}), context)  # a alone may
    assert (status, body["jobs_rerun"], body["status"]) == (200, 1, "running")
    jobs = {j.name: j.status.value for j in deployed.services.store.list_jobs("api-rerun-job")}
    assert jobs == {"a": "ready", "b": "running", "c": "waiting", "x": "finished"}

    for payload, message in [
        ({"job": "nope"}, "has no job 'nope'"),
        ({"downstream": True}, "'downstream' needs 'job'"),
        ({"job": 3}, "'job' must be a job name"),
        ({"job": "a", "downstream": "yes"}, "'downstream' true or false"),
        ({"jobs": ["a"]}, "unknown keys ['jobs']"),
    ]:
        status, body, _ = call(with_body(post_event(rerun), payload), context)
        assert (status, message in body["error"]) == (404 if "nope" in message else 400, True), body


def test_base64_body_is_decoded(deployed: Deployed, context: FakeLambdaContext) -> None:
    event = load_event("api_submit_graph")
    body = json.dumps({"graph": {"id": "api-base64", "jobs": {"x": []}}}).encode()
    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    status, answer, _ = call(event, context)
    assert (status, answer["graph_id"]) == (201, "api-base64")


def test_limits_show_each_limits_holders_and_waiters(deployed: Deployed, context: FakeLambdaContext) -> None:
    assert call(get_event("/limits"), context)[:2] == (200, {"limits": {}})  # none configured
    try:
        with environment({"OVERSEER_LIMITS": json.dumps({"geo_api": 2, "slow_db": 1})}):
            api.reset()
            graph = {"id": "api-limits", "jobs": {name: {"limit": "geo_api"} for name in ("a", "b")}}
            assert call(with_body(load_event("api_submit_graph"), {"graph": graph}), context)[0] == 201
            # What workers write: a holds a slot of geo_api, b waits for one.
            store = deployed.services.store
            holder = Holder("worker-1", 1, timeutil.iso_in(60))
            assert store.acquire_slot("geo_api", 2, "api-limits/a", holder) == Admission.HELD
            since = timeutil.iso()
            changes = {"limit_wait": "geo_api", "limit_since": since}
            assert store.transition("api-limits", "b", LIMIT_WAIT, fence=Fence(0), changes=changes)

            status, body, _ = call(get_event("/limits"), context)
            assert status == 200, body
            assert body == {
                "limits": {
                    "geo_api": {"size": 2, "running": 1, "holders": ["api-limits/a"], "waiting": 1},
                    "slow_db": {"size": 1, "running": 0, "holders": [], "waiting": 0},
                }
            }
            _, jobs, _ = call(get_event("/graphs/api-limits/jobs"), context)
            assert jobs["jobs"]["b"]["waiting_for_limit"] == {"limit": "geo_api", "since": since}

            # A graph naming a limit the stack does not configure is refused, naming its limits.
            other = {"id": "api-other", "jobs": {"x": {"limit": "other_api"}}}
            status, body, _ = call(with_body(load_event("api_submit_graph"), {"graph": other}), context)
            assert status == 400
            assert "['other_api'], which are not configured; limits: ['geo_api', 'slow_db']" in body["error"]
        with environment({"OVERSEER_LIMITS": '{"geo_api": 0}'}):
            api.reset()
            status, body, _ = call(get_event("/limits"), context)
            assert status == 500
            assert (
                "limits (OVERSEER_LIMITS) are not valid: limit 'geo_api' must be a whole number"
                in body["error"]
            )
    finally:
        api.reset()


def test_graphs_are_listed_newest_first_by_status_and_paged(
    deployed: Deployed, context: FakeLambdaContext
) -> None:
    since = timeutil.iso()
    for graph_id in ("api-list-1", "api-list-2", "api-list-3"):
        assert (
            call(
                with_body(load_event("api_submit_graph"), {"graph": {"id": graph_id, "jobs": {"x": []}}}),
                context,
            )[0]
            == 201
        )
    assert call(post_event("/graphs/api-list-2/cancel"), context)[0] == 200

    status, body, _ = call(get_event("/graphs", {"since": since}), context)
    assert status == 200, body
    assert [(g["graph_id"], g["status"]) for g in body["graphs"]] == [
        ("api-list-3", "running"),
        ("api-list-2", "aborted"),
        ("api-list-1", "running"),
    ]
    _, aborted, _ = call(get_event("/graphs", {"since": since, "status": "aborted"}), context)
    assert [g["graph_id"] for g in aborted["graphs"]] == ["api-list-2"]
    _, first, _ = call(get_event("/graphs", {"since": since, "limit": "2"}), context)
    assert [g["graph_id"] for g in first["graphs"]] == ["api-list-3", "api-list-2"] and first["next"]
    _, rest, _ = call(get_event("/graphs", {"since": since, "limit": "2", "after": first["next"]}), context)
    assert [g["graph_id"] for g in rest["graphs"]] == ["api-list-1"]
    status, refused, _ = call(get_event("/graphs", {"status": "done"}), context)
    assert status == 400 and "unknown graph status 'done'" in refused["error"]


def test_one_job_its_log_lines_and_artifact_downloads(deployed: Deployed, context: FakeLambdaContext) -> None:
    """What a page or the CLI reads through the API alone: a job, its log lines from the
    workers' CloudWatch Logs group (its own lines only, page by page) and download URLs
    that fetch its artifacts without credentials."""
    import urllib.request

    from overseer.backends.aws import clients

    graph = {"id": "api-job-1", "jobs": {"fetch": [], "fetch2": ["fetch"]}}
    assert call(with_body(load_event("api_submit_graph"), {"graph": graph}), context)[0] == 201
    s3 = clients.client("s3")
    bucket = deployed.settings.artifact_bucket
    s3.put_object(Bucket=bucket, Key="api-job-1/report.csv", Body=b"a,b\n1,2\n")
    job = deployed.claim("api-job-1", "fetch")
    artifact = {"bucket": bucket, "key": "api-job-1/report.csv", "size": 8, "sha256": "f" * 64}
    done = deployed.services.store.transition(
        "api-job-1",
        "fetch",
        FINISH,
        fence=Fence(job.attempts, WORKER),
        changes={"artifacts": [artifact]},
        remove=["lease_owner"],
    )
    assert done is not None

    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch"), context)
    assert status == 200, body
    assert (body["graph_id"], body["name"], body["status"], body["attempts"]) == (
        "api-job-1",
        "fetch",
        "finished",
        1,
    )
    assert call(get_event("/graphs/api-job-1/jobs/nope"), context)[:2] == (
        404,
        {"error": "graph 'api-job-1' has no job 'nope'"},
    )

    # The worker container's output, as the awslogs driver puts it in the group.
    logs = clients.client("logs")
    group = deployed.settings.worker_log_group
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="worker/default/api-job-1")
    now = int(timeutil.now().timestamp() * 1000)
    messages = [
        "api-job-1/fetch#1 starting",
        "api-job-1/fetch2#1 not this job's",
        "worker: claimed api-job-1/fetch",
        "api-job-1/fetch#1 <b>done</b>",
        "api-job-1/fetch#2 again",
    ]
    logs.put_log_events(
        logGroupName=group,
        logStreamName="worker/default/api-job-1",
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
    )
    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch/logs"), context)
    assert status == 200, body
    assert body["lines"] == [
        {"attempt": 1, "line": "starting"},
        {"attempt": 1, "line": "<b>done</b>"},
        {"attempt": 2, "line": "again"},
    ]
    assert body["next"] is None
    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch/logs", {"attempt": "2"}), context)
    assert body["lines"] == [{"attempt": 2, "line": "again"}]
    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch/logs", {"limit": "0"}), context)
    assert status == 400
    assert call(get_event("/graphs/api-job-1/jobs/nope/logs"), context)[0] == 404

    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch/artifacts"), context)
    assert status == 200, body
    assert body["expires_in"] == 900
    [listed] = body["artifacts"]
    assert {k: listed[k] for k in artifact} == artifact
    assert "X-Amz-Signature=" in listed["url"]
    with urllib.request.urlopen(listed["url"], timeout=10) as response:  # no credentials
        assert response.read() == b"a,b\n1,2\n"
    status, body, _ = call(get_event("/graphs/api-job-1/jobs/fetch2/artifacts"), context)
    assert (status, body["artifacts"]) == (200, [])
