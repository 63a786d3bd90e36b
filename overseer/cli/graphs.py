"""Operating graphs: the same commands on a local stack and in AWS (see ``targets``).

``overseer submit | status | jobs | logs | cancel | rerun | graph | graphs`` on a local
stack, through a deployed stack's API or on the deployed stack directly (``targets``);
``overseer local up`` runs the local stack (see ``local_stack``).

Exit codes: 0 success; 1 an error, an unknown graph, or (``status --watch``) a graph that
ended failed or aborted; 2 invalid input (a bad graph, template, argument or status).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.live import Live

from ..errors import EXIT_FAILED, EXIT_INVALID
from ..states import GraphStatus, JobStatus
from .render import FORMATS
from .targets import Target, target_options
from .views import (
    STATUS_ORDER,
    STATUS_ROWS,
    err,
    fail,
    graphs_table,
    guard,
    jobs_table,
    out,
    status_view,
    styled,
)


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
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    help="The graph's priority, over the file's or the template's (default: theirs, else normal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON.")
@target_options
def submit(
    graph: str | None,
    template: str | None,
    arg_pairs: tuple[str, ...],
    graph_id: str | None,
    templates_dir: str | None,
    priority: str | None,
    as_json: bool,
    target: Target,
) -> None:
    """Submit GRAPH (a graph file) or --template NAME --arg k=v: idempotent on the graph id."""
    from ..graph import load_document, parse_graph

    if bool(graph) == bool(template):
        fail("give a graph file or --template NAME (one of them)", EXIT_INVALID)
    document = None
    if graph:
        document = guard(lambda: load_document(graph))
        if priority is not None:
            document = {**document, "priority": priority}
        guard(lambda: parse_graph(document, graph_id=graph_id))  # nothing is sent when invalid
    client = target.client(templates_dir)
    view = guard(lambda: client.submit(document, template, _parse_args(arg_pairs), graph_id, priority))
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, default=str))
        return
    if view.get("created"):
        out.print(
            f"graph [bold]{view['graph_id']}[/] created: {view['jobs_total']} jobs, {styled(view['status'])}"
        )
    else:
        out.print(
            f"graph [bold]{view['graph_id']}[/] exists already ({styled(view['status'])}): nothing submitted"
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
@target_options
def status(graph_id: str, watch: bool, interval: float, rows: int, as_json: bool, target: Target) -> None:
    """A graph's progress, its counts per status and its jobs (durations, attempts, errors),
    and the target's concurrency limits (size, running, holders, waiting)."""
    client = target.client()

    def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        def graph() -> dict[str, Any]:
            pools = client.pools()
            return {
                **client.graph(graph_id),
                **({"pools": pools} if pools else {}),
                "limits": client.limits(),
            }

        return guard(lambda: (graph(), client.jobs(graph_id)))

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


@click.command(name="graphs")
@click.option(
    "--status",
    "wanted",
    type=click.Choice([s.value for s in GraphStatus]),
    help="Only graphs in this status.",
)
@click.option("--since", help="Submitted at or after this ISO time (default: 30 days before --until).")
@click.option("--until", help="Submitted before this ISO time (default: now).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Graphs per page.")
@click.option("--after", help="Where the page starts: the `next` of the previous page (--json).")
@click.option("--json", "as_json", is_flag=True, help='Print {"graphs": [...], "next": ...} as JSON.')
@target_options
def graphs_command(
    wanted: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
    target: Target,
) -> None:
    """The graphs, newest first: status, counts and age, by status and time range, paged."""
    client = target.client()
    found, following = guard(lambda: client.graphs(wanted, since, until, limit, after))
    if as_json:
        click.echo(json.dumps({"graphs": found, "next": following}, ensure_ascii=False, default=str))
        return
    out.print(graphs_table(found, more=following is not None))


@click.command()
@click.argument("graph_id")
@click.option("--status", "wanted", type=click.Choice(STATUS_ORDER), help="Only the jobs in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print {name: job} as JSON.")
@target_options
def jobs(graph_id: str, wanted: str | None, as_json: bool, target: Target) -> None:
    """The jobs of a graph, optionally only those in one status."""
    client = target.client()
    found = guard(lambda: client.jobs(graph_id, wanted))
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, default=str))
        return
    title = f"{len(found)} {wanted + ' ' if wanted else ''}jobs of {graph_id}"
    out.print(jobs_table(found, title=title))


@click.command()
@click.argument("graph_id")
@click.argument("job")
@click.option("--attempt", type=click.IntRange(1), help="Only this attempt (default: every attempt).")
@target_options
def logs(graph_id: str, job: str, attempt: int | None, target: Target) -> None:
    """A job's log lines: what its handler printed and logged, attempt by attempt.

    Locally from <state-dir>/logs/<graph>/<job>.<attempt>.log; on a deployed stack (--api or
    --stack) from the workers' CloudWatch Logs group, where each of the job's lines starts
    with its id.
    """
    client = target.client()
    shown = None
    for number, line in guard(lambda: list(client.logs(graph_id, job, attempt))):
        if number != shown:
            err.rule(f"{graph_id}/{job} attempt {number}", align="left", style="dim")
            shown = number
        click.echo(line)
    if shown is None:
        err.print(f"no log lines for {graph_id}/{job}" + (f" attempt {attempt}" if attempt else ""))


@click.command()
@click.argument("graph_id")
@target_options
def cancel(graph_id: str, target: Target) -> None:
    """Cancel a graph: no new job starts, running jobs stop at their next heartbeat."""
    client = target.client()
    view = guard(lambda: client.cancel(graph_id))
    out.print(
        f"graph [bold]{view['graph_id']}[/] {styled(view['status'])}: "
        f"{view.get('jobs_aborted', 0)} jobs aborted (running ones stop at their next heartbeat)"
    )


@click.command()
@click.argument("graph_id")
@click.option(
    "--job",
    "job",
    metavar="NAME",
    help="Run this job again, finished or not (default: every failed and aborted job).",
)
@click.option("--downstream", is_flag=True, help="With --job: also every job that depends on it.")
@target_options
def rerun(graph_id: str, job: str | None, downstream: bool, target: Target) -> None:
    """Run a graph's failed and aborted jobs again; finished jobs and their artifacts are kept.

    With --job NAME, run that job again (finished or not), and with --downstream every job
    that depends on it; every other job keeps its status, attempts and artifacts. Refused
    (exit 1, nothing changed) while any of those jobs is running.
    """
    if downstream and not job:
        fail("--downstream needs --job NAME: the job whose downstream runs again", EXIT_INVALID)
    client = target.client()
    view = guard(lambda: client.rerun(graph_id, job, downstream))
    n = view.get("jobs_rerun", 0)
    head = f"graph [bold]{view['graph_id']}[/] {styled(view['status'])}"
    if job is not None:
        if not n:
            out.print(f"{head}: job {job!r} has not run yet (it runs when its deps finish): nothing to rerun")
            return
        what = f"job {job!r} and its downstream ({n} jobs) go" if downstream else f"job {job!r} goes"
        out.print(f"{head}: {what} again; every other job is kept")
        return
    if not n:
        out.print(f"{head}: nothing to rerun")
        return
    out.print(f"{head}: {n} failed or aborted jobs go again; finished jobs are kept")


@click.command(name="graph")
@click.argument("graph_or_id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="mermaid", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here (png: required)."
)
@target_options
def graph_command(graph_or_id: str, fmt: str, output: Path | None, target: Target) -> None:
    """Draw a graph file (all jobs waiting) or a stored graph (current statuses)."""
    from ..errors import GraphvizMissing
    from ..graph import parse_graph
    from .render import to_dot, to_mermaid, to_png, view_from_jobs, view_from_spec

    if Path(graph_or_id).is_file():
        view = view_from_spec(guard(lambda: parse_graph(graph_or_id)))
    else:
        client = target.client()
        found = guard(lambda: (client.graph(graph_or_id), client.jobs(graph_or_id)))
        view = view_from_jobs(graph_or_id, found[1], str(found[0]["status"]))
    if fmt == "png":
        picture = output or Path(f"{view.graph_id}.png")
        try:
            to_png(view, picture)
        except GraphvizMissing as exc:
            fail(str(exc))
        out.print(f"wrote {picture}")
        return
    text = to_mermaid(view) if fmt == "mermaid" else to_dot(view)
    if output:
        output.write_text(text)
        out.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)
