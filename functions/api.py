"""``functions.api.handler``: the REST API (API Gateway REST proxy events, IAM auth).

Routes (every response body is JSON; errors are ``{"error": "what was wrong"}``):

``POST /graphs``
    Body, at most 1 MB (else 413), one of:
    ``{"graph": {"id"?, "args"?, "jobs": {...}}}`` -- an inline graph (the graph file format);
    ``{"id"?, "args"?, "jobs": {...}}`` -- the same, unwrapped;
    ``{"template": NAME, "args": {...}, "id"?: ID}`` -- start a graph template;
    beside ``graph`` or ``template``, ``"priority": "high" | "normal" | "low"`` sets the
    graph's priority over the document's (``overseer.priority``).
    201 with the graph (``{"graph_id", "status", "jobs_total", "counts", "args", ...,
    "created": true}``) and a ``Location`` header; 200 with ``"created": false`` when a
    graph with that id exists (nothing written); 400 for malformed JSON, an invalid graph
    (the validation message) or an unknown template (the known names).
``GET /graphs/{graph_id}``
    200 with the graph; 404 when unknown. Its ``counts`` are the scheduler's counters:
    exact once the graph has ended; while it runs, a chain's finished jobs are counted
    when the chain ends (the jobs route has every job's current status).
``GET /graphs/{graph_id}/jobs?status=&after=&limit=&changed_since=``
    200 with ``{"graph_id", "jobs": {name: {"type", "status", "attempts", "error",
    "artifacts", ...}}, "next": NAME | null}`` in name order, at most ``limit`` (default
    500, at most 1000) jobs after ``after``; pass ``next`` as ``after`` for the next page.
    ``changed_since`` (an ISO time) keeps the jobs written at or after it (a page's refresh).
``GET /graphs/{graph_id}/jobs/{job}``
    200 with the job (as in the jobs route, with ``graph_id``, ``name``, ``args``,
    ``max_attempts``, ``dependents`` and ``error_detail``: the last error with its
    traceback); 404 when the graph or the job is unknown.
``GET /graphs/{graph_id}/jobs/{job}/logs?attempt=&after=&limit=``
    200 with ``{"graph_id", "job", "lines": [{"attempt", "line"}], "next": TOKEN | null}``:
    the job's log lines oldest first (every attempt's, or only ``attempt``'s), at most
    ``limit`` (default 1000, at most 5000); pass ``next`` as ``after`` for more. On AWS they
    are read from the workers' CloudWatch Logs group (the job's lines start with its id).
``GET /graphs/{graph_id}/jobs/{job}/artifacts``
    200 with ``{"graph_id", "job", "artifacts": [{"bucket", "key", "size", "sha256",
    "url"}], "expires_in": 900}``: each ``url`` a presigned GET that downloads the artifact
    without credentials for ``expires_in`` seconds.
``POST /graphs/{graph_id}/cancel``
    200 with the graph and ``"jobs_aborted": n``; 404 when unknown.
``POST /graphs/{graph_id}/rerun``
    No body (or ``{}``): the graph's failed and aborted jobs run again. ``{"job": NAME,
    "downstream": false}``: that job runs again, finished or not (with ``"downstream":
    true``, every job that depends on it too). 200 with the graph and ``"jobs_rerun": n``;
    404 when the graph or the job is unknown; 409 (nothing changed) while one of those
    jobs is running; 400 for a malformed body.
``GET /limits``
    200 with ``{"limits": {name: {"size", "running", "holders", "waiting"}}}``: each
    concurrency limit of the stack (``overseer.limits``), how many jobs hold it now (their
    lease running; ``holders``: their ids, ``<graph_id>/<job>``) and how many wait for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import Lazy, publish_graph_done
from overseer import operations
from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.errors import GraphNotFound, InvalidGraph, OverseerError, RerunRefused, StoreError
from overseer.graph import PRIORITIES
from overseer.limits import limit_states, parse_limits
from overseer.operations import ARTIFACT_URL_SECONDS
from overseer.states import GraphStatus
from overseer.store import GraphRecord
from overseer.templates import TemplateError

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PAGE = 500
MAX_PAGE = 1000
# Log lines per page: a response stays far below Lambda's 6 MB (a CloudWatch event is at most 256 KB).
DEFAULT_LOG_PAGE = 1000
MAX_LOG_PAGE = 5000
_TEMPLATE_KEYS = {"template", "args", "id", "priority"}
_RERUN_KEYS = {"job", "downstream"}
_ROUTES = (
    "POST /graphs, GET /graphs, GET /graphs/{id}, GET /graphs/{id}/jobs, GET /graphs/{id}/jobs/{job}, "
    "GET /graphs/{id}/jobs/{job}/logs|artifacts, POST /graphs/{id}/cancel|rerun, GET /limits"
)
_USAGE = 'send {"graph": {"jobs": {...}}} or {"template": NAME, "args": {...}}'

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver()

_services = Lazy(build_services)
_events = Lazy(lambda: clients.client("events"))


def reset() -> None:
    """Forget the clients built at cold start (tests use a fresh environment)."""
    _services.reset()
    _events.reset()


class RequestRejected(Exception):
    """The request cannot be served as sent: ``status`` and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, ensure_ascii=False, default=str),
        headers=headers,
    )


def _graph_view(graph: GraphRecord, **extra: Any) -> dict[str, Any]:
    return {**graph.summary(), "args": graph.args, "updated_at": graph.updated_at, **extra}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RequestRejected(400, f"request body has the key {key!r} twice")
        result[key] = value
    return result


def _json_body() -> dict[str, Any]:
    raw = app.current_event.decoded_body or ""
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise RequestRejected(
            413, f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}: use a template for big graphs"
        )
    if not raw.strip():
        raise RequestRejected(400, f"the request has no body: {_USAGE}")
    try:
        body = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise RequestRejected(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRejected(400, f"request body must be a JSON object, got {type(body).__name__}: {_USAGE}")
    return body


def _priority(body: dict[str, Any]) -> str | None:
    """The submission's ``priority`` (over the graph's or the template's), or None."""
    priority = body.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise RequestRejected(400, f"'priority' must be one of {list(PRIORITIES)}, got {priority!r:.80}")
    return priority


def _announce(record: GraphRecord) -> None:
    publish_graph_done(_events.get(), _services.get().settings.event_bus, record, logger)


@app.post("/graphs")
@tracer.capture_method(capture_response=False)
def submit_graph() -> Response:
    body = _json_body()
    services = _services.get()
    if "template" in body:
        unknown = sorted(set(body) - _TEMPLATE_KEYS)
        if unknown:
            raise RequestRejected(
                400, f"unknown keys {unknown} next to 'template'; expected {sorted(_TEMPLATE_KEYS)}"
            )
        name, args, graph_id = body["template"], body.get("args") or {}, body.get("id")
        if not isinstance(name, str) or not isinstance(args, dict) or not isinstance(graph_id, str | None):
            raise RequestRejected(400, "'template' and 'id' must be strings and 'args' an object")
        graph, created = operations.submit_template(
            services, name, args, graph_id=graph_id, priority=_priority(body)
        )
    elif "graph" in body:
        if not set(body) <= {"graph", "priority"} or not isinstance(body["graph"], dict):
            raise RequestRejected(
                400, f"'graph' must hold a JSON object, with at most 'priority' beside it: {_USAGE}"
            )
        graph, created = operations.submit_graph(services, body["graph"], priority=_priority(body))
    elif "jobs" in body:
        graph, created = operations.submit_graph(services, body)
    else:
        raise RequestRejected(400, f"the body names no graph: {_USAGE}")
    logger.info("graph submitted", extra={"graph_id": graph.graph_id, "graph_created": created})
    if created:
        return _json(201, _graph_view(graph, created=True), {"Location": f"/graphs/{graph.graph_id}"})
    return _json(200, _graph_view(graph, created=False))


@app.get("/graphs/<graph_id>")
@tracer.capture_method(capture_response=False)
def get_graph(graph_id: str) -> Response:
    return _json(200, _graph_view(operations.get_graph(_services.get(), unquote(graph_id))))


def _query_int(name: str, default: int, highest: int) -> int:
    raw = app.current_event.get_query_string_value(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= highest:
        raise RequestRejected(400, f"'{name}' must be a whole number from 1 to {highest}, got {raw!r}")
    return int(raw)


@app.get("/graphs/<graph_id>/jobs")
@tracer.capture_method(capture_response=False)
def list_jobs(graph_id: str) -> Response:
    graph_id = unquote(graph_id)
    status = app.current_event.get_query_string_value("status") or None
    after = app.current_event.get_query_string_value("after") or None
    changed_since = app.current_event.get_query_string_value("changed_since") or None
    limit = _query_int("limit", DEFAULT_PAGE, MAX_PAGE)
    services = _services.get()
    try:
        # One more than asked tells whether there is a next page.
        found = operations.list_jobs(
            services, graph_id, status, after=after, limit=limit + 1, changed_since=changed_since
        )
    except ValueError as exc:  # an unknown status, a changed_since that is not a time
        raise RequestRejected(400, str(exc)) from None
    page = found[:limit]
    next_after = page[-1].name if len(found) > limit else None
    jobs = {j.name: operations.job_view(services, j) for j in page}
    return _json(200, {"graph_id": graph_id, "jobs": jobs, "next": next_after})


@app.get("/graphs/<graph_id>/jobs/<job>")
@tracer.capture_method(capture_response=False)
def get_job(graph_id: str, job: str) -> Response:
    services = _services.get()
    record = operations.get_job(services, unquote(graph_id), unquote(job))
    return _json(200, operations.job_detail(services, record))


@app.get("/graphs/<graph_id>/jobs/<job>/logs")
@tracer.capture_method(capture_response=False)
def job_logs(graph_id: str, job: str) -> Response:
    """A page of the job's log lines (CloudWatch Logs on AWS): ``?attempt=&after=&limit=``."""
    graph_id, job = unquote(graph_id), unquote(job)
    query = app.current_event.get_query_string_value
    attempt = _query_int("attempt", 0, 1_000_000) or None
    limit = _query_int("limit", DEFAULT_LOG_PAGE, MAX_LOG_PAGE)
    try:
        page = operations.job_logs(
            _services.get(), graph_id, job, attempt=attempt, after=query("after") or None, limit=limit
        )
    except ValueError as exc:
        raise RequestRejected(400, f"'after' must be the 'next' of a page: {exc}") from None
    lines = [{"attempt": number, "line": line} for number, line in page.lines]
    return _json(200, {"graph_id": graph_id, "job": job, "lines": lines, "next": page.next})


@app.get("/graphs/<graph_id>/jobs/<job>/artifacts")
@tracer.capture_method(capture_response=False)
def job_artifacts(graph_id: str, job: str) -> Response:
    """The job's artifacts, each with a presigned download URL (signed here; no request)."""
    graph_id, job = unquote(graph_id), unquote(job)
    artifacts = operations.job_artifacts(_services.get(), graph_id, job)
    body = {"graph_id": graph_id, "job": job, "artifacts": artifacts, "expires_in": ARTIFACT_URL_SECONDS}
    return _json(200, body)


@app.post("/graphs/<graph_id>/cancel")
@tracer.capture_method(capture_response=False)
def cancel_graph(graph_id: str) -> Response:
    change = operations.cancel_graph(_services.get(), unquote(graph_id), on_graph_done=_announce)
    logger.info("graph cancelled", extra={"graph_id": change.graph.graph_id, "jobs": change.jobs_changed})
    return _json(200, _graph_view(change.graph, jobs_aborted=change.jobs_changed))


@app.post("/graphs/<graph_id>/rerun")
@tracer.capture_method(capture_response=False)
def rerun_graph(graph_id: str) -> Response:
    body = _json_body() if (app.current_event.decoded_body or "").strip() else {}
    unknown = sorted(set(body) - _RERUN_KEYS)
    if unknown:
        raise RequestRejected(400, f"unknown keys {unknown}; a rerun takes {sorted(_RERUN_KEYS)}")
    job, downstream = body.get("job"), body.get("downstream", False)
    if not isinstance(job, str | None) or not isinstance(downstream, bool):
        raise RequestRejected(400, "'job' must be a job name and 'downstream' true or false")
    if downstream and job is None:
        raise RequestRejected(400, "'downstream' needs 'job': the job whose downstream runs again")
    change = operations.rerun_graph(_services.get(), unquote(graph_id), job=job, downstream=downstream)
    logger.info("graph rerun", extra={"graph_id": change.graph.graph_id, "jobs": change.jobs_changed})
    return _json(200, _graph_view(change.graph, jobs_rerun=change.jobs_changed))


@app.get("/graphs")
@tracer.capture_method(capture_response=False)
def list_graphs() -> Response:
    """Graphs newest first: ``?status=&since=&until=&limit=&after=`` (``after``: the ``next``
    of the previous page)."""
    query = app.current_event.get_query_string_value
    wanted = query("status") or None
    try:
        status = GraphStatus(wanted) if wanted else None
    except ValueError:
        valid = ", ".join(s.value for s in GraphStatus)
        raise RequestRejected(400, f"unknown graph status {wanted!r}; use one of: {valid}") from None
    limit = _query_int("limit", 50, MAX_PAGE)
    try:
        found, following = _services.get().store.list_graphs(
            status=status,
            since=query("since") or None,
            until=query("until") or None,
            limit=limit,
            after=query("after") or None,
        )
    except (ValueError, KeyError) as exc:
        raise RequestRejected(
            400, f"'since', 'until' and 'after' must be as the API gave them: {exc}"
        ) from None
    return _json(200, {"graphs": [graph.summary() for graph in found], "next": following})


@app.get("/limits")
@tracer.capture_method(capture_response=False)
def list_limits() -> Response:
    services = _services.get()
    try:
        limits = parse_limits(services.settings.limits)
    except ValueError as exc:
        raise RequestRejected(500, f"the stack's limits (OVERSEER_LIMITS) are not valid: {exc}") from None
    states = limit_states(services.store, limits)
    return _json(200, {"limits": {state.name: state.summary() for state in states}})


# -- errors: {"error": message} with the status that tells the caller what to fix ----------
def _error_handler(status: int) -> Callable[[Exception], Response]:
    def respond(exc: Exception) -> Response:
        logger.info("request rejected", extra={"status": status, "error": str(exc)})
        return _json(status, {"error": str(exc)})

    return respond


app.exception_handler([InvalidGraph, TemplateError])(_error_handler(400))
app.exception_handler(GraphNotFound)(_error_handler(404))
app.exception_handler(RerunRefused)(_error_handler(409))


@app.exception_handler(RequestRejected)
def _rejected(exc: RequestRejected) -> Response:
    logger.info("request rejected", extra={"status": exc.status, "error": exc.message})
    return _json(exc.status, {"error": exc.message})


@app.exception_handler(StoreError)
def _unavailable(exc: StoreError) -> Response:
    logger.exception("store error")
    return _json(503, {"error": f"the job store failed; try again: {exc}"})


@app.exception_handler(OverseerError)
def _engine_error(exc: OverseerError) -> Response:
    logger.exception("engine error")
    return _json(500, {"error": str(exc)})


@app.not_found
def _no_route(exc: Exception) -> Response:
    event = app.current_event
    return _json(404, {"error": f"no route {event.http_method} {event.path}; the routes are {_ROUTES}"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
