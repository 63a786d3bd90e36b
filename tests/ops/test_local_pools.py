"""``overseer local up --workers default=1,large=1,gpu=1``: a long-running local stack with
worker pools; ``overseer submit`` routes each job to its pool, ``overseer status`` shows
each pool's jobs, queue depth and workers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ops.conftest import start_stack, stop_stack

REPO = Path(__file__).resolve().parents[2]


def test_a_local_stack_runs_each_job_on_its_pool_and_status_shows_the_pools(tmp_path: Path) -> None:
    handlers = REPO / "examples" / "pools" / "handlers.py"
    stack = start_stack(tmp_path, tmp_path / "state", handlers, workers="default=1,large=1,gpu=1")  # type: ignore[arg-type]
    try:
        assert stack.info()["worker_pools"] == {"default": 1, "large": 1, "gpu": 1}
        assert len(stack.info()["workers"]) == 3
        stack.cli("submit", str(REPO / "examples" / "pools" / "graph.yaml"))
        stack.cli("status", "pools-demo", "--watch", "--interval", "0.2")

        def drained() -> dict | None:
            # Workers delete handled messages in batches, once their queue is empty.
            found = json.loads(stack.cli("status", "pools-demo", "--json").stdout)
            return found if all(p["queue_depth"] == 0 for p in found["pools"].values()) else None

        status = stack.wait_for(drained, timeout=15, what="the handled messages to be deleted")
        assert status["pools"] == {
            "default": {"queue_depth": 0, "workers": 1},
            "large": {"queue_depth": 0, "workers": 1},
            "gpu": {"queue_depth": 0, "workers": 1},
        }
        assert {name: job["pool"] for name, job in status["jobs"].items()} == {
            "fetch": "default",
            "aggregate": "large",
            "train": "gpu",
            "report": "default",
        }
        text = stack.cli("status", "pools-demo").output
        assert "pool gpu: finished 1  (queue 0, 1 workers)" in text
        assert "pool default: finished 2  (queue 0, 1 workers)" in text

        # A pool the stack does not run is refused at submission, naming the pools it runs.
        (tmp_path / "tpu.yaml").write_text("id: tpu\njobs:\n  a: {type: fetch, pool: tpu}\n")
        refused = stack.cli("submit", str(tmp_path / "tpu.yaml"), expect=2)
        assert "asks for pool 'tpu', which does not exist; pools: ['default', 'large', 'gpu']" in " ".join(
            refused.output.split()
        )
    finally:
        assert stop_stack(stack) == 0
