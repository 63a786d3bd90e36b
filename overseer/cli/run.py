"""``overseer run | validate | worker``: a graph run to the end here, a graph checked, the
worker loop of a deployed stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import EXIT_FAILED, EXIT_INVALID, HandlersModuleError, InvalidGraph, OverseerError
from ..graph import parse_graph
from ..handlers import load_handlers
from ..pools import DEFAULT_POOL, parse_worker_counts, plan_local_run
from ..store import GraphRecord
from .targets import limit_option, state_dir_option
from .views import STATUS_STYLE, error_lines

if TYPE_CHECKING:
    from ..runner import RunResult


def _jobs_table(jobs: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="jobs")
    pooled = any(job.get("pool", DEFAULT_POOL) != DEFAULT_POOL for job in jobs.values())
    for column in ("job", "type", *(["pool"] if pooled else []), "status", "attempts", "artifacts", "error"):
        table.add_column(column)
    for name, job in jobs.items():
        style = STATUS_STYLE.get(job["status"], "")
        table.add_row(
            name,
            job["type"],
            *([job.get("pool", DEFAULT_POOL)] if pooled else []),
            f"[{style}]{job['status']}[/]",
            str(job["attempts"]),
            str(len(job["artifacts"])),
            error_lines(job, width=100),
        )
    return table


def _stored_graph_note(result: RunResult, state_dir: Path | None) -> str:
    """What ``overseer run`` did with a graph id that was stored already, and what else it can do."""
    where = str(state_dir) if state_dir is not None else "the configured tables"
    if result.rerun:
        return f"this graph id was already in {where}: its {result.rerun} failed and aborted jobs ran again"
    bad = sum(1 for job in result.jobs.values() if job["status"] in ("failed", "aborted"))
    if result.status in ("failed", "aborted") and bad:
        return (
            f"this graph id was already in {where} and ended {result.status}: run again with "
            f"--rerun-failed to rerun its {bad} failed and aborted jobs"
        )
    return (
        f"this graph id was already in {where}: it was resumed, or shown as stored if it had "
        f"ended; to run it afresh, give the graph another id"
        + (f" or remove {state_dir}" if state_dir is not None else "")
    )


@click.command()
@click.argument("graph", type=click.Path(dir_okay=False))
@click.option(
    "--handlers",
    "handlers_path",
    required=True,
    help="Handlers module: an import path or a .py file exposing HANDLERS.",
)
@click.option(
    "--workers",
    "workers_text",
    default="4",
    show_default=True,
    help="Worker processes: a number (the default pool's), or per worker pool: default=4,gpu=1.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write every artifact to OUT/<bucket>/<key> when the run ends.",
)
@click.option("--json", "as_json", is_flag=True, help="End stdout with one JSON object.")
@click.option(
    "--backend",
    type=click.Choice(["embedded", "aws"]),
    default="embedded",
    show_default=True,
    help="embedded: SQLite and local files in --state-dir; aws: the AWS adapters (DynamoDB, SQS, S3).",
)
@state_dir_option("Where the embedded backend keeps its state; running a graph id again resumes it.")
@click.option(
    "--emulator/--no-emulator",
    default=True,
    show_default=True,
    help="With --backend aws: start a local AWS emulator (--no-emulator: the configured endpoint).",
)
@click.option(
    "--rerun-failed",
    is_flag=True,
    help="When GRAPH's id is stored and ended failed or aborted: run its failed and aborted jobs "
    "again (finished jobs are kept).",
)
@limit_option(
    "A concurrency limit: at most SIZE jobs holding NAME run at once (repeat for each limit the "
    "graph's jobs or their handlers name), e.g. --limit geo_api=5."
)
def run(
    graph: str,
    handlers_path: str,
    workers_text: str,
    out: Path | None,
    as_json: bool,
    backend: str,
    state_dir: Path,
    emulator: bool,
    rerun_failed: bool,
    limits: dict[str, int],
) -> None:
    """Run GRAPH to the end locally: exit 0 finished, 1 not finished, 2 invalid input."""
    from ..limits import unconfigured_limits
    from ..runner import run_graph

    console = Console(stderr=as_json)
    errors = Console(stderr=True)
    try:
        workers = parse_worker_counts(workers_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers") from None
    try:
        handlers = load_handlers(handlers_path)
        spec = parse_graph(graph, handler_types=handlers.keys())
        # Every job's pool has workers in this run (exit 2 naming the pools otherwise).
        _, spec = plan_local_run(spec, workers, {t: h.pool for t, h in handlers.items()})
        # Every concurrency limit its jobs hold is given by --limit (exit 2 naming them otherwise).
        problem = unconfigured_limits(limits, handlers, spec)
        if problem:
            raise InvalidGraph(f"invalid graph: {problem}")
    except (InvalidGraph, HandlersModuleError) as exc:
        errors.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(EXIT_INVALID)

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    )
    task = bar.add_task(spec.id, total=len(spec.jobs), counts="")

    def show(record: GraphRecord) -> None:
        # Started at the first news of the graph, not before: its refresh is a thread, and
        # the run forks its workers while this process has none (overseer.runner.WorkerPool).
        bar.start()
        done = sum(record.counts.values())
        counts = " ".join(f"{k}={v}" for k, v in record.counts.items() if v)
        # The total grows when a job expands into children.
        bar.update(task, total=record.jobs_total, completed=min(done, record.jobs_total), counts=counts)

    try:
        result = run_graph(
            spec,
            handlers_path,
            handlers,
            backend=backend,
            workers=workers,
            out=out,
            progress=show,
            state_dir=state_dir,
            start_emulator=emulator,
            rerun_failed=rerun_failed,
            limits=limits,
        )
    except OverseerError as exc:
        bar.stop()
        errors.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_FAILED)
    finally:
        bar.stop()
    console.print(_jobs_table(result.jobs))
    style = STATUS_STYLE.get(result.status, "")
    requests = f", {sum(result.requests.values())} AWS requests" if backend == "aws" else ""
    artifacts = sum(len(job["artifacts"]) for job in result.jobs.values())
    console.print(
        f"graph [bold]{result.graph_id}[/] [{style}]{result.status}[/]"
        + (f" ({escape(result.reason)})" if result.reason else "")
        + f" in {result.seconds:.1f}s{requests}"
        + (f"; {artifacts} artifacts written under {out}/<bucket>/<key>" if out else "")
    )
    if not result.created:
        console.print(_stored_graph_note(result, state_dir if backend == "embedded" else None))
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    sys.exit(result.exit_code)


@click.command()
@click.argument("graph", type=click.Path(dir_okay=False))
@click.option("--handlers", "handlers_path", help="Also check every job type has a handler.")
def validate(graph: str, handlers_path: str | None) -> None:
    """Check GRAPH without running it: exit 0 valid, 2 invalid."""
    try:
        types = load_handlers(handlers_path).keys() if handlers_path else None
        spec = parse_graph(graph, handler_types=types)
    except (InvalidGraph, HandlersModuleError) as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_INVALID)
    click.echo(f"graph {spec.id}: {len(spec.jobs)} jobs, valid")


@click.command()
@click.option("--handlers", "handlers_path", help="Handlers module (default: OVERSEER_HANDLERS).")
@click.option("--idle-exit", type=int, help="Exit after this many idle seconds (0 = never).")
def worker(handlers_path: str | None, idle_exit: int | None) -> None:
    """Run the worker loop against the configured AWS endpoint."""
    from ..runner import run_worker

    sys.exit(run_worker(handlers_path, idle_exit))
