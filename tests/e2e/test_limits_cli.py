"""``overseer run --limit NAME=SIZE``: a concurrency limit over a local run, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli import overseer
from tests.support import most_at_once

pytestmark = pytest.mark.e2e

# Each job records when its handler started and ended, as its artifact.
HANDLERS = """
import json
import time

import overseer


def geocode(job):
    started = time.time()
    time.sleep(0.3)
    times = {"start": started, "end": time.time()}
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.json", data=json.dumps(times).encode())]


HANDLERS = {
    "geocode": geocode,
    # The same handler, holding the limit through its spec rather than the graph.
    "geocode_spec": {"process": geocode, "limit": "geo_api"},
}
"""


def write_graph(path: Path, *, job_type: str = "geocode", in_graph: bool = True) -> Path:
    body = {"type": job_type, **({"limit": "geo_api"} if in_graph else {})}
    path.write_text(json.dumps({"id": "geo", "jobs": {f"g{i}": body for i in range(6)}}))
    return path


@pytest.mark.parametrize(
    ("holder", "backend"), [("graph", "embedded"), ("handler spec", "embedded"), ("graph", "aws")]
)
def test_at_most_size_jobs_holding_a_limit_run_at_once(tmp_path: Path, holder: str, backend: str) -> None:
    (tmp_path / "geo_handlers.py").write_text(HANDLERS)
    graph = (
        write_graph(tmp_path / "geo.json")
        if holder == "graph"
        else write_graph(tmp_path / "geo.json", job_type="geocode_spec", in_graph=False)
    )
    done = overseer(
        "run", str(graph), "--handlers", "geo_handlers.py", "--workers", "4", "--limit", "geo_api=2",
        "--backend", backend, "--json", "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["status"] == "finished"
    assert {job["status"] for job in result["jobs"].values()} == {"finished"}
    assert {job["limit"] for job in result["jobs"].values()} == {"geo_api"}
    intervals = []
    for job in result["jobs"].values():
        (artifact,) = job["artifacts"]
        times = json.loads((tmp_path / "out" / artifact["bucket"] / artifact["key"]).read_text())
        intervals.append((times["start"], times["end"]))
    assert len(intervals) == 6
    assert most_at_once(intervals) <= 2


def test_a_limit_not_given_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "geo_handlers.py").write_text(HANDLERS)
    graph = write_graph(tmp_path / "geo.json")
    refused = overseer("run", str(graph), "--handlers", "geo_handlers.py", cwd=tmp_path)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert (
        "jobs 'g0', 'g1', 'g2', 'g3', 'g4' (and 1 more) hold the concurrency limit 'geo_api', "
        "which is not configured here (limits: none); pass --limit geo_api=N"
    ) in message
    assert not (tmp_path / ".overseer").exists()  # nothing stored

    # Through a handler spec: the job and its type are named.
    spec_graph = write_graph(tmp_path / "spec.json", job_type="geocode_spec", in_graph=False)
    refused = overseer(
        "run", str(spec_graph), "--handlers", "geo_handlers.py", "--limit", "other=1", cwd=tmp_path
    )
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert (
        "of type 'geocode_spec' (through its handler spec) hold the concurrency limit 'geo_api', "
        "which is not configured here (limits: other=1); pass --limit geo_api=N"
    ) in message
    assert not (tmp_path / ".overseer").exists()


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("x", "--limit takes NAME=SIZE, such as geo_api=5, got 'x'"),
        ("geo_api=0", "limit 'geo_api' must be a whole number from 1 to 1000, got 0"),
        ("9lives=2", "a limit's name must be a limit name"),
    ],
)
def test_a_bad_limit_flag_is_a_usage_error(tmp_path: Path, flag: str, says: str) -> None:
    (tmp_path / "geo_handlers.py").write_text(HANDLERS)
    graph = write_graph(tmp_path / "geo.json")
    bad = overseer("run", str(graph), "--handlers", "geo_handlers.py", "--limit", flag, cwd=tmp_path)
    assert bad.returncode == 2
    message = " ".join(bad.stderr.split())
    assert "Invalid value for '--limit'" in message
    assert says in message
    assert not (tmp_path / ".overseer").exists()
