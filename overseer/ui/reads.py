"""What the pages read, over the CLI's ``Client`` (``overseer.cli.targets``), which the
command hands the server: this package imports neither the command line nor a backend.

Every target answers through the ``Client`` protocol. A local stack's client also has its
``Services``; the graph page, which polls, then reads its rows from the embedded store
(``SqliteJobStore.job_rows``, built by SQLite), and a refresh reads only the jobs whose
``updated_at`` is at or after the previous refresh (every transition stamps it), so a
10,000-job graph costs a few rows every two seconds, not 10,000. On a deployed stack the
refresh asks the same of the jobs table (``changed_since``: a filter of the graph's
Query, so DynamoDB still reads every job but sends back only the changed ones).

A row is what the graph page shows of a job: name, type, status, attempts, start, end,
error text, and its deps while the graph is small enough to be drawn job by job
(``COLLAPSE_ABOVE``); above that the page draws one node per job type, and gets the
edges between types once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import operations, timeutil
from ..store import Services

if TYPE_CHECKING:  # the UI is handed a client by the command (``overseer.cli.ui``)
    from ..cli.targets import Client

# Above this many jobs, the graph is drawn one node per job type (with counts per status).
COLLAPSE_ABOVE = 500
# A refresh reads the jobs stamped from this long before the previous one: a write is
# stamped before it commits, so one stamped just before a read may commit just after it.
STAMP_SLACK_SECONDS = 5.0
# What a row keeps of an error (the job page has all of it).
ROW_ERROR_CHARS = 300


def local_services(client: Client) -> Services | None:
    """The services of a local stack's client (``LocalClient.services``), else None."""
    services = getattr(client, "services", None)
    return services if isinstance(services, Services) else None


def _row(name: str, summary: Mapping[str, Any], deps: Iterable[str] | None) -> dict[str, Any]:
    error = summary.get("error")
    row = {
        "name": name,
        "type": summary.get("type") or "",
        "status": summary.get("status"),
        "attempts": summary.get("attempts") or 0,
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "error": error[:ROW_ERROR_CHARS] if isinstance(error, str) else None,
    }
    if summary.get("parent"):
        row["parent"] = summary["parent"]
    if deps is not None:
        row["deps"] = list(deps)
    return row


def _shifted(stamp: str, seconds: float) -> str:
    return timeutil.iso(timeutil.parse(stamp) + dt.timedelta(seconds=seconds))


def graph_state(client: Client, graph_id: str, since: str | None = None) -> dict[str, Any]:
    """The graph page's data: the graph, its job rows (all of them, or with ``since`` only
    those changed since that cursor, when the target can tell), and the cursor to pass next.

    ``{"graph", "jobs": [row], "complete": bool, "cursor", "collapsed": bool,
    "type_edges": [[from_type, to_type]] (collapsed only)}``. ``complete`` is false when
    ``jobs`` holds only the changed jobs.
    """
    graph = client.graph(graph_id)
    collapsed = int(graph.get("jobs_total") or 0) > COLLAPSE_ABOVE
    local = local_services(client)
    cursor = timeutil.iso()
    start = _shifted(since, -STAMP_SLACK_SECONDS) if since else None
    if local is not None:
        rows = _local_rows(local, graph_id, changed_since=start)
    else:
        rows = [
            _row(name, job, job.get("deps") or [])
            for name, job in client.jobs(graph_id, changed_since=start).items()
        ]
    state: dict[str, Any] = {"graph": graph, "jobs": rows, "complete": since is None, "cursor": cursor}
    if collapsed and since is None:
        state["type_edges"] = _type_edges(rows)
    if collapsed:
        for row in rows:
            del row["deps"]
    state["collapsed"] = collapsed
    return state


def _type_edges(rows: list[dict[str, Any]]) -> list[list[str]]:
    types = {row["name"]: row["type"] for row in rows}
    edges = {
        (types[dep], row["type"])
        # An expansion's children come from their parent, though they do not depend on it.
        for row in rows
        for dep in [*row["deps"], *([row["parent"]] if row.get("parent") else [])]
        if dep in types and types[dep] != row["type"]
    }
    return sorted(map(list, edges))


def _local_rows(services: Services, graph_id: str, changed_since: str | None) -> list[dict[str, Any]]:
    """The graph's job rows on a local stack, only those of jobs stamped at or after
    ``changed_since`` when given. The embedded store builds them in SQLite
    (``SqliteJobStore.job_rows``: unchanged jobs are not read into Python); another store
    lists every job."""
    store = services.store
    job_rows = getattr(store, "job_rows", None)
    if job_rows is None:
        jobs = operations.list_jobs(services, graph_id, changed_since=changed_since)
        return [_row(job.name, job.summary(), store.dependencies(job)) for job in jobs]
    rows: list[dict[str, Any]] = job_rows(graph_id, changed_since=changed_since, error_chars=ROW_ERROR_CHARS)
    if not rows and changed_since is None:
        operations.get_graph(services, graph_id)  # GraphNotFound for an unknown graph
    return rows


def jobs_page(
    client: Client, graph_id: str, status: str | None, after: str | None, limit: int
) -> dict[str, Any]:
    """``{"jobs": {name: summary}, "next": name | None}``: at most ``limit`` jobs in name
    order after ``after`` (the API's ``GET /graphs/{id}/jobs`` page)."""
    # One more than asked tells whether there is a next page.
    found = client.jobs(graph_id, status, after=after, limit=limit + 1)
    names = list(found)[:limit]
    return {"jobs": {name: found[name] for name in names}, "next": names[-1] if len(found) > limit else None}


def job_detail(client: Client, graph_id: str, name: str) -> dict[str, Any]:
    """Everything the job page shows: the job, its args, its error's traceback, its deps and
    its dependents (``operations.job_detail``, through the API on a deployed stack)."""
    return client.job(graph_id, name)


def artifacts(client: Client, graph_id: str, name: str) -> list[dict[str, Any]]:
    """The job's artifacts: bucket, key, size, sha256 and a ``url`` that downloads it (the
    stored file's ``file://`` URL on a local stack, a presigned https URL on AWS)."""
    return client.artifacts(graph_id, name)


def download_href(graph_id: str, name: str, key: str) -> str:
    """The UI server's route that downloads one of the job's artifacts."""
    return f"/api/graphs/{quote(graph_id, safe='')}/jobs/{quote(name, safe='')}/artifacts/{quote(key)}"
