"""`overseer gc`: a local stack's retention. Graphs that ended long enough ago go, with their
jobs and logs; newer and running graphs, and every artifact, stay."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from overseer.backends.embedded import db_path
from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e

HANDLERS = """
import overseer


def write(job):
    print(f"writing {job.graph_id}/{job.name}")
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]


HANDLERS = {"write": write}
"""

LONG_AGO = "2020-01-01T00:00:00.000Z"
# `overseer graphs` from before LONG_AGO (by default it lists the last 30 days).
SINCE = "2019-01-01T00:00:00.000Z"


def graph_file(tmp_path: Path, graph_id: str) -> str:
    document = {"id": graph_id, "jobs": {"a": {"type": "write"}, "b": {"type": "write", "deps": ["a"]}}}
    (tmp_path / f"{graph_id}.json").write_text(json.dumps(document))
    return f"{graph_id}.json"


def set_times(state: Path, graph_id: str, **times: str) -> None:
    """Move a graph's times back, as if it had ended (or been submitted) long ago."""
    with sqlite3.connect(db_path(state)) as db:
        for key, value in times.items():
            db.execute(
                "UPDATE graphs SET item = json_set(item, ?, ?) WHERE graph_id = ?",
                (f"$.{key}", value, graph_id),
            )


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_gc_deletes_graphs_that_ended_long_ago_with_their_jobs_and_logs_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    state = tmp_path / "st"
    for graph_id in ("old", "new"):
        done = overseer(
            "run", graph_file(tmp_path, graph_id), "--handlers", "handlers.py", "--workers", "1",
            "--state-dir", "st", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    # Submitted with no stack running: it stays running, however old.
    submitted = overseer("submit", graph_file(tmp_path, "stuck"), "--state-dir", "st", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    set_times(state, "old", finished_at=LONG_AGO, updated_at=LONG_AGO)
    set_times(state, "stuck", created_at=LONG_AGO, updated_at=LONG_AGO)
    old_logs = state / "logs" / "old"
    assert files_under(old_logs) == ["a.1.log", "b.1.log"]
    log_bytes = sum(p.stat().st_size for p in old_logs.iterdir())
    artifacts = files_under(state / "artifacts")
    assert any("old/a.txt" in path for path in artifacts)

    shown = overseer("gc", "--state-dir", "st", "--dry-run", cwd=tmp_path)
    assert shown.stdout == (
        f"would delete 1 graph(s), 2 job(s), {log_bytes} bytes of logs "
        "(ended more than 90 day(s) ago)\n  old\n"
    )
    dry = overseer("gc", "--state-dir", "st", "--dry-run", "--json", cwd=tmp_path)

    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"graphs": ["old"], "jobs": 2, "log_bytes": log_bytes, "dry_run": True}
    assert old_logs.is_dir()

    collected = overseer("gc", "--state-dir", "st", "--json", cwd=tmp_path)

    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout) == {
        "graphs": ["old"],
        "jobs": 2,
        "log_bytes": log_bytes,
        "dry_run": False,
    }
    assert not old_logs.exists() and (state / "logs" / "new").is_dir()
    assert files_under(state / "artifacts") == artifacts  # artifacts are never deleted
    listed = json.loads(
        overseer("graphs", "--state-dir", "st", "--since", SINCE, "--json", cwd=tmp_path).stdout
    )
    assert sorted((g["graph_id"], g["status"]) for g in listed["graphs"]) == [
        ("new", "finished"),
        ("stuck", "running"),
    ]
    gone = overseer("status", "old", "--state-dir", "st", "--json", cwd=tmp_path)
    assert gone.returncode != 0 and "old" in gone.stderr
    with sqlite3.connect(db_path(state)) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE graph_id = 'old'").fetchone() == (0,)

    # --older-than 0: every ended graph goes; the running one still stays.
    everything = overseer("gc", "--state-dir", "st", "--older-than", "0", cwd=tmp_path)

    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.startswith("deleted 1 graph(s), 2 job(s), ") and "  new" in everything.stdout
    listed = json.loads(
        overseer("graphs", "--state-dir", "st", "--since", SINCE, "--json", cwd=tmp_path).stdout
    )
    assert [(g["graph_id"], g["status"]) for g in listed["graphs"]] == [("stuck", "running")]
    assert files_under(state / "artifacts") == artifacts


def test_gc_on_a_directory_with_no_stack_deletes_nothing_and_creates_nothing(tmp_path: Path) -> None:
    empty = overseer("gc", "--state-dir", "none", "--json", cwd=tmp_path)

    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"graphs": [], "jobs": 0, "log_bytes": 0, "dry_run": False}
    assert not (tmp_path / "none").exists()
