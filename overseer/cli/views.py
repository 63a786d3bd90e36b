"""How the commands show things: rich tables and progress views, status colours, and
errors turned into a message and an exit code (0 success; 1 an error or an unknown graph;
2 invalid input)."""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from rich.console import Console, Group
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import timeutil
from ..errors import (
    EXIT_FAILED,
    EXIT_INVALID,
    ApiError,
    GraphNotFound,
    InvalidGraph,
    OverseerError,
    TemplateError,
)
from ..states import JobStatus

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
# Holders of a concurrency limit named on its status line (the JSON views have them all).
HOLDERS_SHOWN = 5

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    sys.exit(code)


def guard(action: Callable[[], Any]) -> Any:
    """``action()``; an engine or API error ends the command with its message and exit code."""
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


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def status_counts(jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for job in jobs.values():
        counts[str(job.get("status"))] = counts.get(str(job.get("status")), 0) + 1
    return counts


# Attempts' errors a table row shows (the JSON views have them all).
ERRORS_SHOWN = 5


def error_lines(job: Mapping[str, Any], width: int = 160) -> str:
    """A job's error cell: the error of each attempt (``attempt 2: ConnectionError: ...``),
    then the job's own error or reason when it is not the last of them."""
    lines = []
    last = ""
    for entry in job.get("errors") or []:
        last = f"{entry.get('type')}: {entry.get('message')}"
        lines.append(f"attempt {entry.get('attempt')}: {last}"[:width])
    error = str(job.get("error") or "")
    if error and error != last:
        lines.append(error[:width])
    return "\n".join(lines[-ERRORS_SHOWN:])


def job_status_text(job: Mapping[str, Any]) -> str:
    """A job's status cell: ``ready (waiting for geo_api)`` for a job waiting for a slot of
    a concurrency limit, outside the queue (``overseer.limits``)."""
    text = styled(str(job.get("status")))
    waiting = job.get("waiting_for_limit")
    if waiting:
        text += f" (waiting for {escape(str(waiting.get('limit')))})"
    return text


def jobs_table(
    jobs: Mapping[str, Mapping[str, Any]], *, limit: int | None = None, title: str = "jobs"
) -> Table:
    now = timeutil.now()
    table = Table(title=title, title_justify="left")
    pooled = any(job.get("pool", "default") != "default" for job in jobs.values())
    columns = (
        "job",
        "type",
        *(["pool"] if pooled else []),
        "status",
        "attempts",
        "duration",
        "started",
        "error",
    )
    for column in columns:
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
            *([str(job.get("pool", "default"))] if pooled else []),
            job_status_text(job),
            str(job.get("attempts", 0)),
            format_duration(_seconds(job, now)),
            started[11:19] if len(started) >= 19 else started,
            Text(error_lines(job)),
        )
    if hidden:
        table.caption = f"... and {hidden} more jobs (overseer jobs shows them all)"
    return table


def graphs_table(graphs: list[Mapping[str, Any]], *, more: bool = False) -> Table:
    """Graphs as `overseer graphs` shows them: id, status, jobs ended of all, age."""
    now = timeutil.now()
    table = Table(title=f"{len(graphs)} graphs, newest first", title_justify="left")
    for column in ("graph", "status", "finished", "failed", "aborted", "jobs", "submitted", "age"):
        table.add_column(column, no_wrap=True)
    for graph in graphs:
        counts = graph.get("counts") or {}
        created = str(graph.get("created_at") or "")
        age = (now - timeutil.parse(created)).total_seconds() if created else None
        table.add_row(
            str(graph["graph_id"]),
            styled(str(graph["status"])),
            *(str(counts.get(k, 0)) for k in ("finished", "failed", "aborted")),
            str(graph.get("jobs_total", "")),
            created[:19].replace("T", " "),
            format_duration(age),
        )
    if more:
        table.caption = "more: --after the `next` of --json"
    return table


def status_view(graph: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]], *, rows: int) -> Group:
    counts = status_counts(jobs)
    total = int(graph.get("jobs_total") or len(jobs))
    done = counts["finished"] + counts["failed"] + counts["aborted"]
    header = Table.grid(padding=(0, 1))
    header.add_row(
        Text.from_markup(f"graph [bold]{graph['graph_id']}[/] {styled(str(graph['status']))}"),
        ProgressBar(total=max(total, 1), completed=done, width=40),
        Text(f"{done}/{total} done"),
    )
    line = "  ".join(f"{styled(s)} {n}" for s, n in counts.items() if n)
    if graph.get("priority"):
        line += f"  (priority {escape(str(graph['priority']))})"
    if graph.get("reason"):
        line += f"  ({escape(str(graph['reason']))})"
    elif graph.get("deadline_at") and graph["status"] == "running":
        line += f"  (deadline {graph['deadline_at']})"
    return Group(
        header,
        Text.from_markup(line or "no jobs"),
        *pools_lines(graph, jobs),
        *limits_lines(graph.get("limits") or {}),
        *code_lines(jobs),
        jobs_table(jobs, limit=rows),
    )


def code_lines(jobs: Mapping[str, Mapping[str, Any]]) -> list[Text]:
    """The versions of the handler code that ran the jobs (a rerun after a fix shows two),
    newest-run first, with how many jobs each ran."""
    runs: dict[str, tuple[int, str]] = {}
    for job in jobs.values():
        version = job.get("code_version")
        if version:
            count, latest = runs.get(str(version), (0, ""))
            runs[str(version)] = (
                count + 1,
                max(latest, str(job.get("finished_at") or job.get("started_at") or "")),
            )
    ordered = sorted(runs.items(), key=lambda item: item[1][1], reverse=True)
    return [
        Text(f"code {version}: {count} job{'s' if count != 1 else ''}") for version, (count, _) in ordered
    ]


def limits_lines(limits: Mapping[str, Mapping[str, Any]]) -> list[Text]:
    """One line per concurrency limit of the target (``overseer.limits``): how many of its
    slots are held, by which jobs (the first ``HOLDERS_SHOWN``), and how many jobs wait."""
    lines = []
    for name, state in limits.items():
        holders = [str(h) for h in state.get("holders") or []]
        shown = ", ".join(holders[:HOLDERS_SHOWN])
        more = f" and {len(holders) - HOLDERS_SHOWN} more" if len(holders) > HOLDERS_SHOWN else ""
        lines.append(
            Text.from_markup(
                f"limit [bold]{escape(name)}[/]: running {state.get('running', 0)} of {state.get('size')}, "
                f"waiting {state.get('waiting', 0)}"
                + (f"  (held by {escape(shown)}{more})" if holders else "")
            )
        )
    return lines


def pools_lines(graph: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]]) -> list[Text]:
    """One line per worker pool when the graph's jobs use more than the default pool, or the
    target reports its pools: the graph's jobs there by status, the pool's queue depth and
    workers (``overseer.pools``)."""
    by_pool: dict[str, Counter[str]] = {}
    for job in jobs.values():
        by_pool.setdefault(str(job.get("pool", "default")), Counter())[str(job.get("status"))] += 1
    reported: Mapping[str, Mapping[str, Any]] = graph.get("pools") or {}
    if set(by_pool) <= {"default"} and set(reported) <= {"default"}:
        return []
    lines = []
    for pool in dict.fromkeys([*reported, *by_pool]):
        counts = "  ".join(f"{styled(s)} {n}" for s, n in sorted(by_pool.get(pool, Counter()).items()))
        about = reported.get(pool, {})
        queue = f"queue {about['queue_depth']}" if "queue_depth" in about else ""
        workers = f"{about['workers']} workers" if "workers" in about else ""
        extra = ", ".join(filter(None, [queue, workers]))
        lines.append(
            Text.from_markup(
                f"pool [bold]{escape(pool)}[/]: {counts or 'no jobs'}" + (f"  ({extra})" if extra else "")
            )
        )
    return lines
