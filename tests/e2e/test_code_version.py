"""Each job records the version of the handler code that ran it: a rerun after a fix shows
which jobs ran the fixed code, in `--json` and in `overseer status`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e

BROKEN = """
import overseer


def fetch(job):
    return [overseer.Artifact(key="fetched", data=b"rows")]


def report(job):
    raise ValueError("the report template is missing")


HANDLERS = {"fetch": fetch, "report": report}
"""
FIXED = BROKEN.replace(
    'raise ValueError("the report template is missing")',
    'return [overseer.Artifact(key="report", data=b"ok")]',
)


def run(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    done = overseer(
        "run", "graph.json", "--handlers", "handlers.py", "--workers", "1", "--json", *extra, cwd=tmp_path
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_rerun_after_a_fix_records_which_code_ran_each_job(tmp_path: Path) -> None:
    (tmp_path / "graph.json").write_text(
        json.dumps(
            {"id": "versions", "jobs": {"fetch": [], "report": {"deps": ["fetch"], "max_attempts": 1}}}
        )
    )
    (tmp_path / "handlers.py").write_text(BROKEN)
    code, first = run(tmp_path)
    assert code == 1 and first["jobs"]["report"]["status"] == "failed"
    broken = first["jobs"]["fetch"]["code_version"]
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", broken)
    assert first["jobs"]["report"]["code_version"] == broken

    (tmp_path / "handlers.py").write_text(FIXED)
    code, second = run(tmp_path, "--rerun-failed")

    assert code == 0
    fixed = second["jobs"]["report"]["code_version"]
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", fixed) and fixed != broken
    assert second["jobs"]["fetch"]["code_version"] == broken  # kept: it did not run again
    status = overseer("status", "versions", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"code {fixed}: 1 job" in status.stdout and f"code {broken}: 1 job" in status.stdout
