"""`overseer graphs`: the graphs run in a state directory, newest first, with their statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e

HANDLERS = """
def ok(job):
    return None


def broken(job):
    raise RuntimeError("no input")


HANDLERS = {"ok": ok, "broken": broken}
"""


def test_overseer_graphs_lists_two_runs_newest_first_with_their_statuses(tmp_path: Path) -> None:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    (tmp_path / "good.json").write_text(json.dumps({"id": "good", "jobs": {"a": {"type": "ok"}}}))
    (tmp_path / "bad.json").write_text(
        json.dumps({"id": "bad", "jobs": {"a": {"type": "broken", "max_attempts": 1}}})
    )
    for graph, code in (("good.json", 0), ("bad.json", 1)):
        done = overseer(
            "run", graph, "--handlers", "handlers.py", "--workers", "1", "--state-dir", "st", cwd=tmp_path
        )
        assert done.returncode == code, done.stderr

    listed = overseer("graphs", "--state-dir", "st", "--json", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert [(g["graph_id"], g["status"]) for g in answer["graphs"]] == [
        ("bad", "failed"),
        ("good", "finished"),
    ]
    assert answer["graphs"][0]["counts"]["failed"] == 1 and answer["next"] is None
    failed = json.loads(
        overseer("graphs", "--state-dir", "st", "--status", "failed", "--json", cwd=tmp_path).stdout
    )
    assert [g["graph_id"] for g in failed["graphs"]] == ["bad"]
    table = overseer("graphs", "--state-dir", "st", cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.index("bad") < table.stdout.index("good")
    paged = json.loads(overseer("graphs", "--state-dir", "st", "--limit", "1", "--json", cwd=tmp_path).stdout)
    assert [g["graph_id"] for g in paged["graphs"]] == ["bad"] and paged["next"]
    rest = overseer(
        "graphs", "--state-dir", "st", "--limit", "1", "--after", paged["next"], "--json", cwd=tmp_path
    )
    assert [g["graph_id"] for g in json.loads(rest.stdout)["graphs"]] == ["good"]
