"""examples/pools: one graph on three worker pools (default, large, gpu), as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overseer.backends.embedded import embedded_services
from overseer.config import Settings
from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
GRAPH = str(REPO / "examples" / "pools" / "graph.yaml")
# As the README runs it: the handlers as a file.
HANDLERS = str(REPO / "examples" / "pools" / "handlers.py")


@pytest.mark.parametrize("backend", ["embedded", "aws"])
def test_each_job_runs_on_a_worker_of_its_pool(tmp_path: Path, backend: str) -> None:
    done = overseer(
        "run",
        GRAPH,
        "--handlers",
        HANDLERS,
        "--workers",
        "default=2,large=1,gpu=1",
        "--backend",
        backend,
        "--json",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    expected = {"fetch": "default", "aggregate": "large", "train": "gpu", "report": "default"}
    assert result["status"] == "finished"
    assert {name: job["pool"] for name, job in result["jobs"].items()} == expected
    # Each job's artifact says which pool's worker ran its handler.
    for name, pool in expected.items():
        (artifact,) = result["jobs"][name]["artifacts"]
        body = json.loads((tmp_path / "out" / artifact["bucket"] / artifact["key"]).read_text())
        assert body["pool"] == pool, name
    assert (
        json.loads((tmp_path / "out" / "overseer-artifacts/pools/pools-demo/report.json").read_text())[
            "model"
        ]
        == "weights-45"
    )
    if backend == "embedded":
        # The workers' own records on the jobs: the pool of the worker that claimed each.
        services = embedded_services(tmp_path / ".overseer", Settings(backend="embedded"))
        jobs = {job.name: job for job in services.store.list_jobs("pools-demo")}
        assert {name: job.worker_pool for name, job in jobs.items()} == expected
        assert all(job.worker for job in jobs.values())


def test_a_job_whose_pool_has_no_workers_is_an_invalid_graph(tmp_path: Path) -> None:
    done = overseer("run", GRAPH, "--handlers", HANDLERS, "--workers", "4", cwd=tmp_path)
    assert done.returncode == 2
    assert "job 'aggregate' runs on pool 'large' (its handler's), which has no workers here" in done.stderr
    assert "job 'train' asks for pool 'gpu', which does not exist; pools: ['default']" in done.stderr
    assert not (tmp_path / ".overseer").exists()  # nothing stored
    bad = overseer("run", GRAPH, "--handlers", HANDLERS, "--workers", "gpu=x", cwd=tmp_path)
    assert bad.returncode == 2
    assert "expected a number or POOL=N" in bad.stderr
