"""Operating graphs from the command line: the same commands on a local stack and in AWS.

``overseer submit | status | jobs | logs | cancel | rerun | graph`` talk to

* a **local stack** (default): the embedded backend's state directory (``--state-dir``,
  default ``.overseer``, or ``OVERSEER_STATE_DIR``) that ``overseer local up`` runs. They
  open its SQLite file directly; no server is involved;
* the **deployed stack** with ``--api URL`` (or ``OVERSEER_API_URL``): its REST API, with
  SigV4-signed requests (credentials and region from the standard AWS configuration).
  ``overseer logs --api`` reads the worker's CloudWatch Logs.

``overseer local up`` runs the local stack (see ``overseer.local``).

Exit codes: 0 success; 1 an error, an unknown graph, or (``status --watch``) a graph that
ended failed or aborted; 2 invalid input (a bad graph, template, argument or status).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import timeutil
from .config import DEFAULT_STATE_DIR
from .errors import (
    EXIT_FAILED,
    EXIT_INVALID,
    GraphNotFound,
    HandlersModuleError,
    InvalidGraph,
    OverseerError,
    TemplateError,
)
from .render import FORMATS
from .states import JobStatus

STATUS_STYLE = {
    "finished": "green",
    "failed": "red",
    "aborted": "yellow",
    "running": "cyan",
    "ready": "blue",
    "waiting": "dim",
}
STATUS_ORDER = tuple(status.value for status in JobStatus)
# Rows the status table shows before it summarises the rest (failed/running first).
STATUS_ROWS = 40

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    sys.exit(code)


# -- clients: one interface, a local stack or the deployed API ---------------------------------
class Client(Protocol):
    where: str

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
    ) -> dict[str, Any]: ...

    def graph(self, graph_id: str) -> dict[str, Any]: ...

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]: ...

    def cancel(self, graph_id: str) -> dict[str, Any]: ...

    def rerun(self, graph_id: str) -> dict[str, Any]: ...

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]: ...


def _graph_view(graph: Any, **extra: Any) -> dict[str, Any]:
    return {**graph.summary(), "args": graph.args, "updated_at": graph.updated_at, **extra}


class LocalClient:
    """The embedded backend in ``state_dir`` (what ``overseer local up`` runs on)."""

    def __init__(self, state_dir: Path, templates_dir: str | None = None) -> None:
        from .backends.embedded import embedded_services
        from .local import local_settings

        self.state_dir = Path(state_dir)
        self.where = f"local stack {self.state_dir}"
        settings = local_settings(templates_dir=templates_dir).with_(
            backend="embedded", state_dir=str(self.state_dir.resolve())
        )
        self.services = embedded_services(self.state_dir, settings)

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
    ) -> dict[str, Any]:
        from . import operations

        if template:
            graph, created = operations.submit_template(self.services, template, args, graph_id=graph_id)
        else:
            assert document is not None
            graph, created = operations.submit_graph(self.services, document, graph_id=graph_id)
        return _graph_view(graph, created=created)

    def graph(self, graph_id: str) -> dict[str, Any]:
        from . import operations

        return _graph_view(operations.get_graph(self.services, graph_id))

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]:
        from . import operations

        jobs = {}
        for job in operations.list_jobs(self.services, graph_id, status):
            summary = operations.job_view(self.services, job)
            if job.reason and job.error:
                summary["reason"] = job.reason
            jobs[job.name] = summary
        return jobs

    def cancel(self, graph_id: str) -> dict[str, Any]:
        from . import operations

        change = operations.cancel_graph(self.services, graph_id)
        return _graph_view(change.graph, jobs_aborted=change.jobs_changed)

    def rerun(self, graph_id: str) -> dict[str, Any]:
        from . import operations

        change = operations.rerun_graph(self.services, graph_id)
        return _graph_view(change.graph, jobs_rerun=change.jobs_changed)

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]:
        from .isolation import job_log_path
        from .local import logs_dir

        self.services.store.get_job(graph_id, job) or _unknown_job(graph_id, job)
        first = job_log_path(logs_dir(self.state_dir), graph_id, job, 1)
        found: list[tuple[int, Path]] = []
        for path in first.parent.glob(first.name[: -len(".1.log")] + ".*.log"):
            suffix = path.name[: -len(".log")].rsplit(".", 1)[-1]
            if suffix.isdigit() and (attempt is None or int(suffix) == attempt):
                found.append((int(suffix), path))
        for number, path in sorted(found):
            yield f"attempt {number}: {path}", path.read_text(errors="replace").splitlines()


def _unknown_job(graph_id: str, job: str) -> NoReturn:
    raise GraphNotFound(f"graph {graph_id!r} has no job {job!r}")


class ApiClient:
    """The deployed stack's API (SigV4); logs from CloudWatch Logs."""

    def __init__(self, url: str, log_group: str | None = None) -> None:
        from .remote import DEFAULT_WORKER_LOG_GROUP, RemoteApi

        self.api = RemoteApi(url)
        self.where = f"API {url}"
        self.log_group = log_group or os.environ.get("OVERSEER_WORKER_LOG_GROUP") or DEFAULT_WORKER_LOG_GROUP

    def submit(
        self,
        document: Mapping[str, Any] | None,
        template: str | None,
        args: dict[str, Any],
        graph_id: str | None,
    ) -> dict[str, Any]:
        if template:
            body: dict[str, Any] = {"template": template, "args": args}
            if graph_id:
                body["id"] = graph_id
        else:
            assert document is not None
            body = {"graph": {**document, **({"id": graph_id} if graph_id else {})}}
        return self.api.submit(body)

    def graph(self, graph_id: str) -> dict[str, Any]:
        return self.api.get_graph(graph_id)

    def jobs(self, graph_id: str, status: str | None = None) -> dict[str, dict[str, Any]]:
        return self.api.list_jobs(graph_id, status)

    def cancel(self, graph_id: str) -> dict[str, Any]:
        return self.api.cancel(graph_id)

    def rerun(self, graph_id: str) -> dict[str, Any]:
        return self.api.rerun(graph_id)

    def logs(self, graph_id: str, job: str, attempt: int | None) -> Iterator[tuple[str, list[str]]]:
        from .remote import job_log_lines

        logs = self.api.session.client("logs", region_name=self.api.region)
        lines = list(job_log_lines(logs, graph_id, job, log_group=self.log_group, attempt=attempt))
        yield f"CloudWatch Logs {self.log_group}", lines


def make_client(state_dir: Path, api: str | None, templates_dir: str | None = None) -> Client:
    if api:
        return ApiClient(api)
    return LocalClient(state_dir, templates_dir)


def _target_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "--api",
        envvar="OVERSEER_API_URL",
        help="The deployed stack's API URL (its ApiUrl output); default: the local stack.",
    )(function)
    function = click.option(
        "--state-dir",
        envvar="OVERSEER_STATE_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_STATE_DIR,
        show_default=True,
        help="The local stack's state directory (as given to `overseer local up`).",
    )(function)
    return function


def _guard(action: Callable[[], Any]) -> Any:
    from .errors import ApiError

    try:
        return action()
    except (InvalidGraph, TemplateError, ValueError) as exc:
        fail(str(exc), EXIT_INVALID)
    except ApiError as exc:
        fail(
            exc.message + (f" (HTTP {exc.status})" if exc.status else ""),
            EXIT_INVALID if exc.status == 400 else EXIT_FAILED,
        )
    except (GraphNotFound, OverseerError) as exc:
        fail(str(exc))


# -- formatting ------------------------------------------------------------------------------
def _seconds(job: Mapping[str, Any], now: dt.datetime) -> float | None:
    started = job.get("started_at")
    if not started:
        return None
    end = job.get("finished_at")
    if job.get("status") == "running" or not end:
        if job.get("status") != "running":
            return None
        return (now - timeutil.parse(started)).total_seconds()
    return (timeutil.parse(end) - timeutil.parse(started)).total_seconds()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def status_counts(jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for job in jobs.values():
        counts[str(job.get("status"))] = counts.get(str(job.get("status")), 0) + 1
    return counts


def jobs_table(
    jobs: Mapping[str, Mapping[str, Any]], *, limit: int | None = None, title: str = "jobs"
) -> Table:
    now = timeutil.now()
    table = Table(title=title, title_justify="left")
    for column in ("job", "type", "status", "attempts", "duration", "started", "error"):
        table.add_column(column, no_wrap=column != "error")
    names = list(jobs)
    hidden = 0
    if limit is not None and len(names) > limit:
        rank = {"failed": 0, "running": 1, "aborted": 2, "ready": 3, "waiting": 4, "finished": 5}
        keep = set(sorted(names, key=lambda n: (rank.get(str(jobs[n].get("status")), 9), n))[:limit])
        hidden = len(names) - len(keep)
        names = [n for n in names if n in keep]
    for name in names:
        job = jobs[name]
        started = job.get("started_at") or ""
        table.add_row(
            name,
            str(job.get("type", "")),
            _styled(str(job.get("status"))),
            str(job.get("attempts", 0)),
            format_duration(_seconds(job, now)),
            started[11:19] if len(started) >= 19 else started,
            Text((job.get("error") or "")[:160]),
        )
    if hidden:
        table.caption = f"... and {hidden} more jobs (overseer jobs shows them all)"
    return table


def status_view(graph: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]], *, rows: int) -> Group:
    counts = status_counts(jobs)
    total = int(graph.get("jobs_total") or len(jobs))
    done = counts["finished"] + counts["failed"] + counts["aborted"]
    header = Table.grid(padding=(0, 1))
    header.add_row(
        Text.from_markup(f"graph [bold]{graph['graph_id']}[/] {_styled(str(graph['status']))}"),
        ProgressBar(total=max(total, 1), completed=done, width=40),
        Text(f"{done}/{total} done"),
    )
    line = "  ".join(f"{_styled(s)} {n}" for s, n in counts.items() if n)
    return Group(header, Text.from_markup(line or "no jobs"), jobs_table(jobs, limit=rows))


def _parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``k=v`` pairs; a value that is JSON (``42``, ``true``, ``[1, 2]``) is taken as such."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--arg wants KEY=VALUE, got {pair!r}", EXIT_INVALID)
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return args


# -- the commands ----------------------------------------------------------------------------
@click.command()
@click.argument("graph", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--template", help="Start this graph template instead of a graph file.")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE", help="Template argument (repeat).")
@click.option("--id", "graph_id", help="The graph id (default: the file's or template's id).")
@click.option(
    "--templates-dir",
    envvar="OVERSEER_TEMPLATES_DIR",
    type=click.Path(file_okay=False),
    help="Where the templates are (local stack; the API has its own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
@_target_options
def submit(
    graph: str | None,
    template: str | None,
    arg_pairs: tuple[str, ...],
    graph_id: str | None,
    templates_dir: str | None,
    as_json: bool,
    state_dir: Path,
    api: str | None,
) -> None:
    """Submit GRAPH (a graph file) or --template NAME --arg k=v: idempotent on the graph id."""
    from .graph import load_document, parse_graph

    if bool(graph) == bool(template):
        fail("give a graph file or --template NAME (one of them)", EXIT_INVALID)
    document = None
    if graph:
        document = _guard(lambda: load_document(graph))
        _guard(lambda: parse_graph(document, graph_id=graph_id))  # nothing is sent when invalid
    client = make_client(state_dir, api, templates_dir)
    view = _guard(lambda: client.submit(document, template, _parse_args(arg_pairs), graph_id))
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, default=str))
        return
    if view.get("created"):
        out.print(
            f"graph [bold]{view['graph_id']}[/] created: {view['jobs_total']} jobs, {_styled(view['status'])}"
        )
    else:
        out.print(
            f"graph [bold]{view['graph_id']}[/] exists already ({_styled(view['status'])}): nothing submitted"
        )
    out.print(f"  follow it: overseer status {view['graph_id']} --watch")


@click.command()
@click.argument("graph_id")
@click.option(
    "--watch", is_flag=True, help="Refresh until the graph ends: exit 0 finished, 1 failed/aborted."
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between refreshes.",
)
@click.option(
    "--rows", default=STATUS_ROWS, show_default=True, type=click.IntRange(1), help="Most job rows shown."
)
@click.option("--json", "as_json", is_flag=True, help="Print the graph and its jobs as JSON.")
@_target_options
def status(
    graph_id: str, watch: bool, interval: float, rows: int, as_json: bool, state_dir: Path, api: str | None
) -> None:
    """A graph's progress, its counts per status and its jobs (durations, attempts, errors)."""
    client = make_client(state_dir, api)

    def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        return _guard(lambda: (client.graph(graph_id), client.jobs(graph_id)))

    graph, jobs = read()
    if as_json and not watch:
        click.echo(json.dumps({**graph, "jobs": jobs}, ensure_ascii=False, default=str))
        return
    if not watch:
        out.print(status_view(graph, jobs, rows=rows))
        return
    terminal = {status.value for status in JobStatus if status.terminal}
    if not out.is_terminal:  # a log or a pipe: no live redraws, the final view once
        while graph["status"] not in terminal:
            time.sleep(interval)
            graph, jobs = read()
        if as_json:
            click.echo(json.dumps({**graph, "jobs": jobs}, ensure_ascii=False, default=str))
        else:
            out.print(status_view(graph, jobs, rows=rows))
        sys.exit(0 if graph["status"] == "finished" else EXIT_FAILED)
    with Live(
        status_view(graph, jobs, rows=rows), console=out, refresh_per_second=4, transient=False
    ) as live:
        while graph["status"] not in terminal:
            time.sleep(interval)
            graph, jobs = read()
            live.update(status_view(graph, jobs, rows=rows))
    if as_json:
        click.echo(json.dumps({**graph, "jobs": jobs}, ensure_ascii=False, default=str))
    sys.exit(0 if graph["status"] == "finished" else EXIT_FAILED)


@click.command()
@click.argument("graph_id")
@click.option("--status", "wanted", type=click.Choice(STATUS_ORDER), help="Only the jobs in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print {name: job} as JSON.")
@_target_options
def jobs(graph_id: str, wanted: str | None, as_json: bool, state_dir: Path, api: str | None) -> None:
    """The jobs of a graph, optionally only those in one status."""
    client = make_client(state_dir, api)
    found = _guard(lambda: client.jobs(graph_id, wanted))
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, default=str))
        return
    title = f"{len(found)} {wanted + ' ' if wanted else ''}jobs of {graph_id}"
    out.print(jobs_table(found, title=title))


@click.command()
@click.argument("graph_id")
@click.argument("job")
@click.option("--attempt", type=click.IntRange(1), help="Only this attempt (default: every attempt).")
@click.option("--log-group", envvar="OVERSEER_WORKER_LOG_GROUP", help="With --api: the workers' log group.")
@_target_options
def logs(
    graph_id: str, job: str, attempt: int | None, log_group: str | None, state_dir: Path, api: str | None
) -> None:
    """A job's log lines: what its handler printed and logged, attempt by attempt.

    Locally from <state-dir>/logs/<graph>/<job>.<attempt>.log; with --api from CloudWatch
    Logs (FilterLogEvents on the workers' log group, lines prefixed with the job id).
    """
    client: Client = ApiClient(api, log_group) if api else LocalClient(state_dir)
    sections = _guard(lambda: list(client.logs(graph_id, job, attempt)))
    if not any(lines for _, lines in sections):
        err.print(f"no log lines for {graph_id}/{job}" + (f" attempt {attempt}" if attempt else ""))
        return
    for title, lines in sections:
        err.rule(title, align="left", style="dim")
        for line in lines:
            click.echo(line)


@click.command()
@click.argument("graph_id")
@_target_options
def cancel(graph_id: str, state_dir: Path, api: str | None) -> None:
    """Cancel a graph: no new job starts, running jobs stop at their next heartbeat."""
    client = make_client(state_dir, api)
    view = _guard(lambda: client.cancel(graph_id))
    out.print(
        f"graph [bold]{view['graph_id']}[/] {_styled(view['status'])}: "
        f"{view.get('jobs_aborted', 0)} jobs aborted (running ones stop at their next heartbeat)"
    )


@click.command()
@click.argument("graph_id")
@_target_options
def rerun(graph_id: str, state_dir: Path, api: str | None) -> None:
    """Run a graph's failed and aborted jobs again; finished jobs and their artifacts are kept."""
    client = make_client(state_dir, api)
    view = _guard(lambda: client.rerun(graph_id))
    n = view.get("jobs_rerun", 0)
    if not n:
        out.print(f"graph [bold]{view['graph_id']}[/] {_styled(view['status'])}: nothing to rerun")
        return
    out.print(
        f"graph [bold]{view['graph_id']}[/] {_styled(view['status'])}: {n} failed or aborted jobs go again; "
        "finished jobs are kept"
    )


@click.command(name="graph")
@click.argument("graph_or_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="mermaid", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here (png: required)."
)
@_target_options
def graph_command(graph_or_id: str, fmt: str, output: Path | None, state_dir: Path, api: str | None) -> None:
    """Draw a graph file (all jobs waiting) or a stored graph (current statuses)."""
    from .errors import GraphvizMissing
    from .graph import parse_graph
    from .render import to_dot, to_mermaid, to_png, view_from_jobs, view_from_spec

    if Path(graph_or_id).is_file():
        view = view_from_spec(_guard(lambda: parse_graph(graph_or_id)))
    else:
        client = make_client(state_dir, api)
        found = _guard(lambda: (client.graph(graph_or_id), client.jobs(graph_or_id)))
        view = view_from_jobs(graph_or_id, found[1], str(found[0]["status"]))
    if fmt == "png":
        target = output or Path(f"{view.graph_id}.png")
        try:
            to_png(view, target)
        except GraphvizMissing as exc:
            fail(str(exc))
        out.print(f"wrote {target}")
        return
    text = to_mermaid(view) if fmt == "mermaid" else to_dot(view)
    if output:
        output.write_text(text)
        out.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


# -- the local stack -------------------------------------------------------------------------
@click.group()
def local() -> None:
    """A long-running local stack (embedded backend): scheduler, sweep and workers."""


@local.command()
@click.option(
    "--state-dir",
    envvar="OVERSEER_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the stack keeps its state (kept between runs).",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--handlers",
    "handlers_path",
    envvar="OVERSEER_HANDLERS",
    required=True,
    help="Handlers module: an import path or a .py file exposing HANDLERS.",
)
def up(state_dir: Path, workers: int, handlers_path: str) -> None:
    """Run the local stack in the foreground until Ctrl-C / SIGTERM."""
    from .errors import StackAlreadyRunning
    from .handlers import load_handlers
    from .local import up as run_up

    try:
        load_handlers(handlers_path)
    except HandlersModuleError as exc:
        fail(str(exc), EXIT_INVALID)

    def event(message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        err.print(f"[dim]{stamp}[/] {message}")

    try:
        run_up(state_dir, handlers_path, workers, on_event=event)
    except StackAlreadyRunning as exc:
        fail(str(exc))


@local.command()
@click.option(
    "--state-dir",
    envvar="OVERSEER_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
)
def down(state_dir: Path) -> None:
    """Stop the local stack running on --state-dir (its state is kept)."""
    from .local import down as run_down

    pid = run_down(state_dir)
    if pid is None:
        out.print(f"no local stack runs on {state_dir}")
    else:
        out.print(f"stopped the local stack on {state_dir} (pid {pid})")


# Registered on the ``overseer`` group by overseer.cli.
COMMANDS = (submit, status, jobs, logs, cancel, rerun, graph_command, local)
