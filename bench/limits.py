"""A concurrency limit as a user runs it: ``overseer run --limit geo_api=2 --workers 8``.

    python bench/limits.py                         # both backends, 8 workers, 12 jobs x 0.5 s
    python bench/limits.py --backend aws --workers 8 --jobs 12 --seconds 0.5 --limit 2 --json

Per backend (``embedded``: SQLite in a temporary directory; ``aws``: the AWS adapters on a
local emulator, ``--emulator``), the whole command runs a graph of ``--jobs`` independent
jobs holding the limit ``geo_api``, each sleeping ``--seconds`` and recording its handler's
own start and end time as its artifact, and once more the same graph without the limit.
It prints, from those times and from the jobs' records (``started_at`` / ``finished_at``
in ``--json``): the most jobs that ran at once (never more than the limit), the command's
wall time beside the ideal (``jobs / limit * seconds``), and on the AWS backend the AWS
requests per job of the run with and without the limit (what a limit costs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overseer.timeutil import parse
from tests.support import most_at_once

HANDLERS = """
import json
import time

import overseer


def geocode(job):
    started = time.time()
    time.sleep(float(job.args["seconds"]))
    times = {"start": started, "end": time.time()}
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.json", data=json.dumps(times).encode())]


HANDLERS = {"geocode": geocode}
"""


def run(backend: str, workers: int, jobs: int, seconds: float, limit: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="overseer-limits-") as tmp:
        handlers = Path(tmp) / "geo_handlers.py"
        handlers.write_text(HANDLERS)
        body: dict[str, Any] = {"type": "geocode", "args": {"seconds": seconds}}
        if limit:
            body["limit"] = "geo_api"
        graph = Path(tmp) / "graph.json"
        graph.write_text(json.dumps({"id": "geo", "jobs": {f"g{n:02d}": body for n in range(jobs)}}))
        out = Path(tmp) / "out"
        command = [
            sys.executable, "-m", "overseer", "run", str(graph), "--handlers", str(handlers),
            "--workers", str(workers), "--out", str(out), "--json",
            "--state-dir", str(Path(tmp) / "state"),
        ]  # fmt: skip
        if limit:
            command += ["--limit", f"geo_api={limit}"]
        if backend == "aws":
            command += ["--backend", "aws", "--emulator"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=os.environ.copy())
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"overseer run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        records = result["jobs"].values()
        recorded = [
            (parse(j["started_at"]).timestamp(), parse(j["finished_at"]).timestamp()) for j in records
        ]
        handled = []
        for path in out.rglob("*.json"):
            times = json.loads(path.read_text())
            handled.append((times["start"], times["end"]))
        return {
            "status": result["status"],
            "jobs": len(result["jobs"]),
            "attempts": sum(j["attempts"] for j in records),
            "most_at_once_handlers": most_at_once(handled),
            "most_at_once_records": most_at_once(recorded),
            "wall_seconds": round(wall, 2),
            "aws_requests_per_job": result["stats"]["aws_requests_per_job"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["embedded", "aws", "both"], default="both")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ["embedded", "aws"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    for backend in backends:
        limited = run(backend, args.workers, args.jobs, args.seconds, args.limit)
        free = run(backend, args.workers, args.jobs, args.seconds, None)
        results[backend] = {"limited": limited, "unlimited": free}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    ideal = args.jobs / args.limit * args.seconds
    print(
        f"{args.jobs} jobs of {args.seconds} s, {args.workers} workers, limit {args.limit} "
        f"(ideal {ideal:.1f} s of handler time; load {os.getloadavg()[0]:.2f})"
    )
    for backend, pair in results.items():
        for kind, r in pair.items():
            cost = f", {r['aws_requests_per_job']} AWS requests/job" if backend == "aws" else ""
            print(
                f"  {backend:8} {kind:9}: {r['status']}, {r['attempts']} attempts, most at once "
                f"{r['most_at_once_handlers']} (handlers) / {r['most_at_once_records']} (records), "
                f"whole command {r['wall_seconds']:.2f} s{cost}"
            )


if __name__ == "__main__":
    main()
