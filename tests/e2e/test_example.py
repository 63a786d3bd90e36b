"""The README's example pipeline runs to the end and leaves its artifacts in --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run_example(out: Path, *options: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "overseer",
            "run",
            "examples/daily_report/graph.yaml",
            "--handlers",
            "examples/daily_report/handlers.py",
            "--out",
            str(out),
            "--json",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_daily_report_finishes_with_its_artifacts_in_out(tmp_path):
    result = run_example(tmp_path / "out", "--state-dir", str(tmp_path / "state"))
    assert result["status"] == "finished"
    assert len(result["jobs"]) >= 8
    assert all(job["status"] == "finished" for job in job_values(result))
    artifacts = [a for job in job_values(result) for a in job["artifacts"]]
    for artifact in artifacts:
        stored = tmp_path / "out" / artifact["bucket"] / artifact["key"]
        assert stored.stat().st_size == artifact["size"]
    assert any(a["key"].endswith(".html") for a in artifacts)

    # Same graph id again, from scratch on the other backend: bit-identical artifacts
    # (job.random is seeded from the job id).
    again = run_example(tmp_path / "again", "--backend", "aws")
    assert sorted((a["key"], a["sha256"]) for j in job_values(again) for a in j["artifacts"]) == sorted(
        (a["key"], a["sha256"]) for a in artifacts
    )


def job_values(result: dict) -> list[dict]:
    return list(result["jobs"].values())
