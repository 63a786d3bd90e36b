"""Throughput of the whole local system (emulator + scheduler + N worker processes) on no-op jobs.

    python bench/throughput.py --jobs 1000 --workers 4
    python bench/throughput.py --jobs 1000 --workers 4 --shape wide --json

Shapes:

* ``layered`` (default): ``--layers`` layers of jobs/layers jobs; job i of layer k depends
  on job i of layer k-1 (so jobs/layers independent chains, released layer by layer).
* ``wide``: N independent jobs (no edges at all).

Every figure comes from ``overseer.runner.run_graph``: wall time includes
starting the emulator, provisioning tables/queues/bucket and starting the workers, so
the jobs/s figure is end to end. Requests are every AWS call any process made
(``RunResult.requests``), including the workers' idle long polls and provisioning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from overseer.graph import parse_graph
from overseer.handlers import load_handlers
from overseer.runner import run_graph

ROOT = Path(__file__).resolve().parent.parent
NOOP_HANDLERS = str(ROOT / "examples" / "noop" / "handlers.py")

# Calls made once per run to create or inspect resources, not per job.
PROVISIONING = {
    "CreateTable",
    "DescribeTable",
    "UpdateTimeToLive",
    "CreateQueue",
    "GetQueueAttributes",
    "GetQueueUrl",
    "CreateBucket",
    "HeadBucket",
    "DescribeStream",
    "GetShardIterator",
    "ListStreams",
}


def is_provisioning(operation: str) -> bool:
    return operation.rsplit(".", 1)[-1] in PROVISIONING


def build_graph(shape: str, jobs: int, layers: int, job_type: str, graph_id: str) -> dict[str, Any]:
    document: dict[str, Any] = {"id": graph_id, "args": {}, "jobs": {}}
    if shape == "wide":
        for i in range(jobs):
            document["jobs"][f"j{i:06d}"] = {"type": job_type, "deps": []}
        return document
    if shape != "layered":
        raise ValueError(f"unknown shape {shape!r}")
    width = max(1, jobs // layers)
    for k in range(layers):
        for i in range(width):
            deps = [f"l{k - 1:03d}-{i:06d}"] if k else []
            document["jobs"][f"l{k:03d}-{i:06d}"] = {"type": job_type, "deps": deps}
    return document


def describe(shape: str, jobs: int, layers: int) -> str:
    if shape == "wide":
        return f"wide: {jobs} independent jobs"
    width = max(1, jobs // layers)
    return f"layered: {layers} layers x {width} jobs, each job depends on one job of the previous layer"


def summarize(result: Any, job_count: int, workers: int, shape: str) -> dict[str, Any]:
    requests: Counter[str] = result.requests
    total = sum(requests.values())
    provisioning = sum(n for op, n in requests.items() if is_provisioning(op))
    statuses = Counter(job["status"] for job in result.jobs.values())
    return {
        "shape": shape,
        "jobs": job_count,
        "workers": workers,
        "status": result.status,
        "job_statuses": dict(statuses),
        "seconds": round(result.seconds, 3),
        "jobs_per_second": round(job_count / result.seconds, 2),
        "aws_requests": total,
        "aws_requests_provisioning": provisioning,
        "requests_per_job": round(total / job_count, 2),
        "requests_per_job_excluding_provisioning": round((total - provisioning) / job_count, 2),
        "requests_per_job_by_operation": {
            op: round(n / job_count, 3) for op, n in sorted(requests.items(), key=lambda kv: -kv[1])
        },
    }


def run_shape(document: dict[str, Any], handlers_path: str, workers: int) -> Any:
    handlers = load_handlers(handlers_path)
    spec = parse_graph(document, handler_types=handlers.keys())
    return run_graph(spec, handlers_path, handlers, workers=workers)


def print_summary(summary: dict[str, Any], label: str) -> None:
    print(label)
    print(f"  jobs: {summary['jobs']}  workers: {summary['workers']}  status: {summary['status']}")
    print(f"  job statuses: {summary['job_statuses']}")
    print(f"  wall time: {summary['seconds']:.1f} s  ({summary['jobs_per_second']:.1f} jobs/s, end to end)")
    print(
        f"  AWS requests: {summary['aws_requests']} total, {summary['requests_per_job']:.2f}/job; "
        f"{summary['requests_per_job_excluding_provisioning']:.2f}/job excluding "
        f"{summary['aws_requests_provisioning']} provisioning calls"
    )
    print("  requests per job by operation:")
    for op, per_job in summary["requests_per_job_by_operation"].items():
        mark = "  (provisioning)" if is_provisioning(op) else ""
        print(f"    {op:<40} {per_job:>8.3f}{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="number of jobs (default 1000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--shape", choices=["layered", "wide"], default="layered")
    parser.add_argument("--layers", type=int, default=10, help="layers for --shape layered (default 10)")
    parser.add_argument(
        "--handler",
        choices=["noop", "tiny"],
        default="noop",
        help="noop: no artifact; tiny: one 16-byte artifact per job",
    )
    parser.add_argument("--handlers", default=NOOP_HANDLERS, help="handlers module (default examples/noop)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    graph_id = f"bench-{args.shape}-{args.jobs}-{time.strftime('%Y%m%dT%H%M%S')}"
    document = build_graph(args.shape, args.jobs, args.layers, args.handler, graph_id)
    job_count = len(document["jobs"])
    label = describe(args.shape, job_count, args.layers) + f", handler {args.handler}"
    if not args.json:
        print(f"running {label} on {args.workers} workers ...", flush=True)
    result = run_shape(document, args.handlers, args.workers)
    summary = summarize(result, job_count, args.workers, args.shape)
    summary["description"] = label
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary, label)
    return 0 if result.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
