"""A high-priority graph submitted behind a backlog of low-priority jobs: when does it start?

    python bench/priority.py                          # both backends, 4 workers, 500 x 0.2 s
    python bench/priority.py --backend aws --workers 8 --low 500 --seconds 0.5 --json

What it does, per backend (``embedded``: SQLite in a temporary directory; ``aws``: the AWS
adapters on a fresh local emulator, SQS queues per priority), as ``overseer run`` does it:
the worker processes start, a graph of ``--low`` independent low-priority jobs (each
sleeping ``--seconds``) is submitted, and once the scheduler has queued them and every
worker has taken one, a one-job high-priority graph is submitted. Every job's start time
is read from its record at the end. It prints how many low-priority jobs had started
before the high job started (the issue asks for fewer than 50, counted from the first low
job), how many started between the high graph's submission and its job's start, and that
wait in seconds.

The receive policy (``overseer/priority.py``) checks an empty high queue once every 4 jobs
of a worker and at most once a second, so the wait is about that long whatever the backlog.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overseer import timeutil
from overseer.handlers import load_handlers
from overseer.operations import submit_graph
from overseer.pools import Pools
from overseer.runner import Pump, WorkerPool, _on_aws, _on_embedded, handlers_env

HANDLERS = """
import time


def nap(job):
    time.sleep(float(job.args["seconds"]))


HANDLERS = {"nap": nap}
"""


def measure(backend: str, workers: int, low: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="overseer-priority-") as tmp:
        handlers_file = Path(tmp) / "priority_handlers.py"
        handlers_file.write_text(HANDLERS)
        load_handlers(str(handlers_file))
        env = handlers_env(str(handlers_file))
        pools = Pools.local({"default": workers}, {"nap": None})
        place = (
            _on_embedded(Path(tmp) / "state", None, env, pools)
            if backend == "embedded"
            else _on_aws(None, env, True, pools)
        )
        with place as where:
            services = where.services
            pump = Pump(services, where.reader)
            jobs = {f"l{i:04d}": {"type": "nap", "args": {"seconds": seconds}} for i in range(low)}
            with WorkerPool(workers, where.worker_env, where.log_dir):
                submit_graph(services, {"id": "backlog", "priority": "low", "jobs": jobs})
                # Every low job queued (the scheduler has sent what the submission made ready):
                # then the high graph comes, while the workers are busy with the backlog.
                while pump.feed() or services.queue.depth() < low // 2:
                    time.sleep(0.01)
                # ... and every worker busy with it.
                while sum(1 for j in services.store.list_jobs("backlog") if j.started_at) < workers:
                    pump.feed() or time.sleep(0.05)
                submitted = timeutil.now()
                submit_graph(
                    services,
                    {
                        "id": "urgent",
                        "priority": "high",
                        "jobs": {"h": {"type": "nap", "args": {"seconds": seconds}}},
                    },
                )
                depth_at_submission = services.queue.depth()
                for graph_id in ("urgent", "backlog"):
                    while not services.store.get_graph(graph_id).status.terminal:
                        pump.tick()
                        pump.feed() or time.sleep(0.01)
            (high,) = services.store.list_jobs("urgent")
            starts = sorted(timeutil.parse(j.started_at) for j in services.store.list_jobs("backlog"))
    high_start = timeutil.parse(high.started_at)
    return {
        "backend": backend,
        "workers": workers,
        "low_jobs": low,
        "job_seconds": seconds,
        "queued_when_submitted": depth_at_submission,
        "low_started_before_high": sum(1 for s in starts if s < high_start),
        "low_started_while_high_waited": sum(1 for s in starts if submitted <= s < high_start),
        "high_wait_seconds": round((high_start - submitted).total_seconds(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["embedded", "aws", "both"], default="both")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--low", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ["embedded", "aws"] if args.backend == "both" else [args.backend]
    results = [measure(b, args.workers, args.low, args.seconds) for b in backends]
    if args.json:
        print(json.dumps({"runs": results}))
        return
    columns = [
        "backend",
        "workers",
        "low jobs x seconds",
        "queued at submission",
        "low started before the high job",
        "of them while it waited",
        "high job's wait (s)",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        cells = [
            r["backend"],
            r["workers"],
            f"{r['low_jobs']} x {r['job_seconds']}",
            r["queued_when_submitted"],
            r["low_started_before_high"],
            r["low_started_while_high_waited"],
            r["high_wait_seconds"],
        ]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
