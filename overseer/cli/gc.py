"""``overseer gc``: a local stack's retention. Deletes the graphs that ended more than DAYS
ago, with their jobs and job logs, from a state directory (a deployed stack's tables expire
them by themselves: DynamoDB's time to live, ``retentionDays``).

Safe while ``overseer local up`` runs on the same directory: each graph goes in one SQLite
write transaction (``SqliteJobStore.delete_graph``) that checks again that it has ended, so
a graph a rerun brought back meanwhile is kept; running and creating graphs are never read
as candidates. Artifacts are kept: handlers choose their keys and graphs share them (a
rerun or a later graph skips what exists), so no graph owns them.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from .. import timeutil
from ..backends.embedded import db_path
from ..backends.embedded.store import SqliteJobStore
from ..config import logs_dir
from .targets import state_dir_option

DEFAULT_OLDER_THAN_DAYS = 90


@dataclass
class Collected:
    """What a collection removed (or, dry, would remove)."""

    graphs: list[str] = field(default_factory=list)
    jobs: int = 0
    log_bytes: int = 0
    dry_run: bool = False


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def collect(state_dir: Path, older_than_days: int, *, dry_run: bool = False) -> Collected:
    """Delete from the local stack in ``state_dir`` every graph that ended more than
    ``older_than_days`` days ago, its jobs and its job logs (``logs/<graph>/``)."""
    collected = Collected(dry_run=dry_run)
    if not db_path(state_dir).exists():
        return collected  # no local stack here: nothing to collect (and nothing created)
    store = SqliteJobStore(db_path(state_dir))
    cutoff = timeutil.iso(timeutil.now() - dt.timedelta(days=older_than_days))
    for graph in store.ended_graphs(cutoff):
        deleted = graph.jobs_total if dry_run else store.delete_graph(graph.graph_id, ended_before=cutoff)
        if deleted is None:
            continue  # brought back by a rerun since it was listed
        logs = logs_dir(state_dir) / graph.graph_id
        if logs.is_dir():
            collected.log_bytes += _size(logs)
            if not dry_run:
                shutil.rmtree(logs, ignore_errors=True)
        collected.graphs.append(graph.graph_id)
        collected.jobs += deleted
    return collected


@click.command(name="gc")
@state_dir_option("The local stack's state directory.")
@click.option(
    "--older-than",
    "older_than_days",
    type=click.IntRange(min=0),
    default=DEFAULT_OLDER_THAN_DAYS,
    show_default=True,
    metavar="DAYS",
    help="Delete graphs that ended more than this many days ago (0: every ended graph).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what it deleted as one JSON object.")
def gc_command(state_dir: Path, older_than_days: int, dry_run: bool, as_json: bool) -> None:
    """Delete graphs that ended (finished, failed, aborted) more than DAYS ago from a local
    stack, with their jobs and their job logs.

    Running and creating graphs are never touched, and it is safe while `overseer local up`
    runs on the same directory. Artifacts are NOT deleted: handlers choose their keys and
    graphs share them; delete them from the artifacts directory yourself. A deployed stack
    needs no gc: its tables expire ended graphs after cdk.json's retentionDays.
    """
    collected = collect(state_dir, older_than_days, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(asdict(collected)))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {len(collected.graphs)} graph(s), {collected.jobs} job(s), "
        f"{collected.log_bytes} bytes of logs (ended more than {older_than_days} day(s) ago)"
    )
    for graph_id in collected.graphs:
        click.echo(f"  {graph_id}")
