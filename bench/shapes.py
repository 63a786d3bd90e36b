"""Time, jobs/s and AWS requests per job for a few graph shapes, on no-op jobs.

    python bench/shapes.py --workers 4
    python bench/shapes.py --workers 4 --json

Shapes:

* ``chain-50``: 50 jobs, each depending on the one before (no parallelism at all).
* ``fanout-200-join``: one root, 200 jobs depending on it, one join depending on all 200.
* ``layered-10x10-full``: 10 layers of 10 jobs, each job depending on the whole previous
  layer (900 edges).

Each shape runs on a fresh emulator with ``overseer.runner.run_graph``, so the
wall time includes starting the emulator, provisioning and starting the workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import NOOP_HANDLERS, run_shape, summarize


def chain(n: int) -> dict[str, Any]:
    return {f"c{i:03d}": {"type": "noop", "deps": [f"c{i - 1:03d}"] if i else []} for i in range(n)}


def fanout_join(n: int) -> dict[str, Any]:
    jobs: dict[str, Any] = {"root": {"type": "noop", "deps": []}}
    for i in range(n):
        jobs[f"f{i:04d}"] = {"type": "noop", "deps": ["root"]}
    jobs["join"] = {"type": "noop", "deps": [f"f{i:04d}" for i in range(n)]}
    return jobs


def layered_full(layers: int, width: int) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    for k in range(layers):
        previous = [f"l{k - 1:02d}-{i:02d}" for i in range(width)] if k else []
        for i in range(width):
            jobs[f"l{k:02d}-{i:02d}"] = {"type": "noop", "deps": previous}
    return jobs


SHAPES = {
    "chain-50": lambda: chain(50),
    "fanout-200-join": lambda: fanout_join(200),
    "layered-10x10-full": lambda: layered_full(10, 10),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--only", choices=sorted(SHAPES), action="append", help="run only these shapes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = {}
    ok = True
    for name in args.only or list(SHAPES):
        jobs = SHAPES[name]()
        document = {"id": f"bench-{name}-{stamp}", "args": {}, "jobs": jobs}
        if not args.json:
            edges = sum(len(j["deps"]) for j in jobs.values())
            print(f"running {name}: {len(jobs)} jobs, {edges} edges, {args.workers} workers ...", flush=True)
        result = run_shape(document, NOOP_HANDLERS, args.workers)
        summary = summarize(result, len(jobs), args.workers, name)
        summary["edges"] = sum(len(j["deps"]) for j in jobs.values())
        results[name] = summary
        ok = ok and result.status == "finished"
        if not args.json:
            print(
                f"  {summary['status']}: {summary['seconds']:.1f} s, "
                f"{summary['jobs_per_second']:.1f} jobs/s, "
                f"{summary['requests_per_job']:.2f} requests/job "
                f"({summary['requests_per_job_excluding_provisioning']:.2f} excluding provisioning)"
            )
            top = list(summary["requests_per_job_by_operation"].items())[:6]
            print("  top operations per job: " + ", ".join(f"{op} {n:.2f}" for op, n in top))
    if args.json:
        print(json.dumps(results))
    else:
        print()
        print(
            f"{'shape':<22}{'jobs':>6}{'edges':>7}{'seconds':>9}{'jobs/s':>8}{'req/job':>9}{'excl.prov':>10}"
        )
        for name, s in results.items():
            print(
                f"{name:<22}{s['jobs']:>6}{s['edges']:>7}{s['seconds']:>9.1f}{s['jobs_per_second']:>8.1f}"
                f"{s['requests_per_job']:>9.2f}{s['requests_per_job_excluding_provisioning']:>10.2f}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
