"""`overseer run` against a Luigi script, both timed as whole processes, as a user times them.

    pip install -e '.[bench]'                  # Luigi
    python bench/run_vs_luigi.py               # 5 rounds, a table
    python bench/run_vs_luigi.py --rounds 3 --case chain-50 --json

Each run is a fresh ``python`` process, started the same way, with a fresh output/state
directory, and timed from just before it is started to its exit:

- **overseer**: ``overseer run graph.json --handlers h.py --workers N --state-dir <fresh>
  --json`` (the console script next to this interpreter); every job returns one 8-byte
  ``overseer.Artifact``.
- **Luigi**: ``python luigi_pipeline.py graph.json <fresh dir> N``, which reads the same
  graph.json and calls ``luigi.build([...], local_scheduler=True, workers=N)``; one task
  class whose ``requires()`` are the job's deps and whose ``output()`` is one
  ``LocalTarget``, into which ``run()`` writes 8 bytes. ``luigi.build`` is given the
  graph's sinks (the jobs nothing depends on), as a Luigi user asks for the final
  targets, with ``log_level="WARNING"``. Giving it every job and keeping Luigi's default
  DEBUG log makes Luigi slower (docs/performance.md): a baseline too easy to beat.
  overseer keeps its defaults (its table on stderr).

Both programs and the graph documents are written once into a temporary work directory;
the processes' stdout and stderr are captured, not shown. The two tools alternate within a round,
and which one goes first alternates from round to round. Reported: the median over the
rounds, and the ratio of the medians (overseer / Luigi; above 1 means overseer is slower).

Cases: ``chain-50``, ``fanout-200-join`` (a start, 200 jobs on it, a join on all 200),
``layered-10x10-full`` (10 layers of 10, each job on the whole previous layer), all with 4
workers; ``one-job-w1`` and ``one-job-w4`` (one job, 1 and 4 workers); ``chain-10`` and
``chain-100``. The chains of 10, 50 and 100 give a least-squares line through the medians:
its slope is the cost of one more link, its intercept the fixed cost of starting and
stopping. ``floor`` times ``python -c 'import overseer.cli'`` and ``python -c 'import
luigi'``: what starting the interpreter and importing the tool costs before any work.

Where the time goes, per run, from the timestamps each tool leaves (wall clock, this
machine's; overseer's stored timestamps are whole milliseconds):

- overseer (from ``--json``): *to submitted* = the graph's ``created_at`` - process start;
  *to first job* = the earliest job ``started_at`` - process start; *running* = the last
  job ``finished_at`` - the first ``started_at``; *end noticed* = the graph's
  ``finished_at`` - the last job's; *shutdown* = process exit - the graph's ``finished_at``.
- Luigi (from its output files' modification times): *to first output* = the earliest
  output's mtime - process start; *running* = latest mtime - earliest; *shutdown* =
  process exit - latest mtime. (An output is written at the end of its task, so Luigi's
  *to first output* includes one no-op task and overseer's *to first job* does not.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedded_vs_luigi import chain, fanout_join, layered_full

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = b"01234567"  # the 8 bytes every job writes

HANDLERS_SOURCE = '''"""One handler: a no-op job that stores one 8-byte artifact."""
import overseer


def write_8_bytes(job):
    return [overseer.Artifact(key=f"{job.name}.out", data=b"01234567")]


HANDLERS = {"write_8_bytes": write_8_bytes}
'''

LUIGI_SOURCE = '''"""luigi_pipeline.py GRAPH_JSON OUT_DIR WORKERS: the graph's jobs as Luigi tasks."""
import json
import sys
from pathlib import Path

import luigi

JOBS = json.loads(Path(sys.argv[1]).read_text())["jobs"]
OUT_DIR = Path(sys.argv[2])
WORKERS = int(sys.argv[3])
# The jobs nothing depends on: what a Luigi user asks for (the rest follows from requires()).
SINKS = set(JOBS) - {dep for job in JOBS.values() for dep in job["deps"]}


class Job(luigi.Task):
    name = luigi.Parameter()

    def requires(self):
        return [Job(name=dep) for dep in JOBS[self.name]["deps"]]

    def output(self):
        return luigi.LocalTarget(str(OUT_DIR / f"{self.name}.out"))

    def run(self):
        with self.output().open("w") as handle:
            handle.write("01234567")


if __name__ == "__main__":
    ok = luigi.build(
        [Job(name=name) for name in sorted(SINKS)], local_scheduler=True, workers=WORKERS, log_level="WARNING"
    )
    sys.exit(0 if ok else 1)
'''


# -- Graphs: the shapes of bench/embedded_vs_luigi.py (name -> deps) ------------------------


# name -> (graph, workers); the first three are issue 17's shapes
CASES: dict[str, tuple[Callable[[], dict[str, list[str]]], int]] = {
    "chain-50": (lambda: chain(50), 4),
    "fanout-200-join": (lambda: fanout_join(200), 4),
    "layered-10x10-full": (lambda: layered_full(10, 10), 4),
    "one-job-w1": (lambda: chain(1), 1),
    "one-job-w4": (lambda: chain(1), 4),
    "chain-10": (lambda: chain(10), 4),
    "chain-100": (lambda: chain(100), 4),
}
SHAPES = ("chain-50", "fanout-200-join", "layered-10x10-full")
CHAIN_LENGTHS = {"chain-10": 10, "chain-50": 50, "chain-100": 100}


def graph_document(name: str, jobs: dict[str, list[str]]) -> dict[str, Any]:
    return {"id": name, "jobs": {job: {"type": "write_8_bytes", "deps": deps} for job, deps in jobs.items()}}


# -- Running one process ---------------------------------------------------------------
def epoch(iso: str) -> float:
    """Seconds since the epoch of overseer's stored timestamps (``2026-11-30T01:35:10.847Z``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def run_process(
    command: list[str], cwd: Path
) -> tuple[float, float, float, subprocess.CompletedProcess[str]]:
    """Start ``command`` and wait for its exit: (wall-clock start, wall-clock exit, seconds, result)."""
    started_wall = time.time()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    return started_wall, started_wall + seconds, seconds, result


def failure(result: subprocess.CompletedProcess[str]) -> str:
    tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
    return f"exit {result.returncode}: " + " | ".join(tail)


def run_overseer(
    overseer: str, work: Path, case: str, jobs: dict[str, list[str]], workers: int
) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    try:
        command = [
            overseer,
            "run",
            f"{case}.json",
            "--handlers",
            "h.py",
            "--workers",
            str(workers),
            "--state-dir",
            str(state_dir),
            "--json",
        ]
        started, exited, seconds, result = run_process(command, work)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    run: dict[str, Any] = {"seconds": seconds, "ok": False}
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        run["error"] = failure(result)
        return run
    stored = report["jobs"].values()
    wrote_8_bytes = [
        j for j in stored if j["status"] == "finished" and [a["size"] for a in j["artifacts"]] == [8]
    ]
    run["ok"] = result.returncode == 0 and report["status"] == "finished" and len(wrote_8_bytes) == len(jobs)
    if not run["ok"]:
        run["error"] = f"status {report['status']}, {len(wrote_8_bytes)}/{len(jobs)} jobs wrote 8 bytes"
        return run
    first_start = min(epoch(j["started_at"]) for j in stored)
    last_finish = max(epoch(j["finished_at"]) for j in stored)
    graph_finished = epoch(report["finished_at"])
    run.update(
        to_submitted=epoch(report["created_at"]) - started,
        to_first_job=first_start - started,
        running=last_finish - first_start,
        end_noticed=graph_finished - last_finish,
        shutdown=exited - graph_finished,
    )
    return run


def run_luigi(work: Path, case: str, jobs: dict[str, list[str]], workers: int) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(prefix="luigi-out-", dir=work))
    try:
        command = [sys.executable, "luigi_pipeline.py", f"{case}.json", str(out_dir), str(workers)]
        started, exited, seconds, result = run_process(command, work)
        outputs = [out_dir / f"{job}.out" for job in jobs]
        written = [p for p in outputs if p.exists() and p.read_bytes() == PAYLOAD]
        mtimes = [p.stat().st_mtime for p in written]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    run: dict[str, Any] = {"seconds": seconds, "ok": result.returncode == 0 and len(written) == len(jobs)}
    if not run["ok"]:
        run["error"] = f"{len(written)}/{len(jobs)} outputs of 8 bytes; {failure(result)}"
        return run
    run.update(
        to_first_output=min(mtimes) - started,
        running=max(mtimes) - min(mtimes),
        shutdown=exited - max(mtimes),
    )
    return run


def run_floor(command: list[str], work: Path) -> dict[str, Any]:
    _, _, seconds, result = run_process(command, work)
    return {
        "seconds": seconds,
        "ok": result.returncode == 0,
        **({} if result.returncode == 0 else {"error": failure(result)}),
    }


# -- Summaries ---------------------------------------------------------------------------
def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every timed field over the runs that succeeded, in seconds (rounded to ms)."""
    good = [r for r in runs if r["ok"]]
    fields = [k for k in good[0] if k != "ok"] if good else []
    summary: dict[str, Any] = {k: round(statistics.median(r[k] for r in good), 4) for k in fields}
    if good:  # the spread says how far to trust a median on a shared machine
        summary["seconds_min"] = round(min(r["seconds"] for r in good), 4)
        summary["seconds_max"] = round(max(r["seconds"] for r in good), 4)
    summary["runs"] = len(runs)
    summary["failed"] = len(runs) - len(good)
    errors = [r["error"] for r in runs if not r["ok"]]
    if errors:
        summary["errors"] = errors
    return summary


def line_fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares y = intercept + slope * x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return {"per_link_ms": round(slope * 1000, 2), "fixed_s": round(mean_y - slope * mean_x, 3)}


def ratio(row: dict[str, Any]) -> float | None:
    over, luigi = row["overseer"].get("seconds"), row["luigi"].get("seconds")
    return round(over / luigi, 2) if over and luigi else None


def machine() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "uptime": uptime,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "overseer_commit": commit,
    }


def print_tables(rows: list[dict[str, Any]], floor: dict[str, Any], fits: dict[str, Any]) -> None:
    def cell(value: Any, scale: float = 1.0, digits: int = 2) -> str:
        return f"{value * scale:.{digits}f}" if isinstance(value, int | float) else "-"

    def spread(summary: dict[str, Any]) -> str:
        return f"{cell(summary.get('seconds_min'))}-{cell(summary.get('seconds_max'))}"

    header = (
        f"{'case':<20} {'jobs':>5} {'wk':>3} {'overseer s':>11} {'(min-max)':>11} {'luigi s':>8} "
        f"{'(min-max)':>11} {'ratio':>7} {'failed':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        over, luigi = row["overseer"], row["luigi"]
        print(
            f"{row['case']:<20} {row['jobs']:>5} {row['workers']:>3} {cell(over.get('seconds')):>11} "
            f"{spread(over):>11} {cell(luigi.get('seconds')):>8} {spread(luigi):>11} "
            f"{cell(row['ratio']):>6}x {over['failed'] + luigi['failed']:>7}"
        )
    print()
    print("where the time goes (medians, ms)")
    overseer_parts = ("to_submitted", "to_first_job", "running", "end_noticed", "shutdown")
    luigi_parts = ("to_first_output", "running", "shutdown")
    header = (
        f"{'case':<20} | {'submitted':>9} {'1st job':>8} {'running':>8} {'end':>6} {'shutdown':>8} "
        f"| {'1st out':>8} {'running':>8} {'shutdown':>8}"
    )
    print(f"{'':<20} | {'overseer':<45} | luigi")
    print(header)
    print("-" * len(header))
    for row in rows:
        over = [cell(row["overseer"].get(part), 1000, 0) for part in overseer_parts]
        luigi = [cell(row["luigi"].get(part), 1000, 0) for part in luigi_parts]
        print(
            f"{row['case']:<20} | {over[0]:>9} {over[1]:>8} {over[2]:>8} {over[3]:>6} {over[4]:>8} "
            f"| {luigi[0]:>8} {luigi[1]:>8} {luigi[2]:>8}"
        )
    print()
    for tool, by_measure in fits.items():
        for measure, fit in by_measure.items():
            what = "whole process" if measure == "seconds" else "first job to last"
            print(
                f"chains 10/50/100, {tool}, {what}: {fit['per_link_ms']:.1f} ms per link, "
                f"{fit['fixed_s']:.2f} s fixed"
            )
    for tool, summary in floor.items():
        print(f"floor, {tool}: python + import {cell(summary.get('seconds'))} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", action="append", choices=list(CASES), help="default: all")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON object")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("luigi") is None:
        print(
            f"Luigi is not installed in {sys.executable}: "
            "pip install -e '.[bench]' (or pip install 'luigi>=3.5')",
            file=sys.stderr,
        )
        return 2
    beside = Path(sys.executable).parent / "overseer"
    overseer = str(beside) if beside.exists() else shutil.which("overseer")
    if overseer is None:
        print("No `overseer` command beside this python or on PATH: pip install -e .", file=sys.stderr)
        return 2

    cases = args.case or list(CASES)
    graphs = {case: CASES[case][0]() for case in cases}
    about = machine()
    work = Path(tempfile.mkdtemp(prefix="run-vs-luigi-"))
    (work / "h.py").write_text(HANDLERS_SOURCE)
    (work / "luigi_pipeline.py").write_text(LUIGI_SOURCE)
    for case, jobs in graphs.items():
        (work / f"{case}.json").write_text(json.dumps(graph_document(case, jobs)))

    overseer_runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    luigi_runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    floor_runs: dict[str, list[dict[str, Any]]] = {"overseer": [], "luigi": []}
    floor_commands = {
        "overseer": [sys.executable, "-c", "import overseer.cli"],
        "luigi": [sys.executable, "-c", "import luigi"],
    }
    try:
        for round_number in range(args.rounds):
            order = ["overseer", "luigi"] if round_number % 2 == 0 else ["luigi", "overseer"]
            for tool in order:
                floor_runs[tool].append(run_floor(floor_commands[tool], work))
            for case in cases:
                workers = CASES[case][1]
                for tool in order:
                    if tool == "overseer":
                        overseer_runs[case].append(run_overseer(overseer, work, case, graphs[case], workers))
                    else:
                        luigi_runs[case].append(run_luigi(work, case, graphs[case], workers))
                last = (overseer_runs[case][-1]["seconds"], luigi_runs[case][-1]["seconds"])
                print(
                    f"round {round_number + 1}/{args.rounds} {case}: overseer {last[0]:.2f} s, "
                    f"luigi {last[1]:.2f} s",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for case in cases:
        row: dict[str, Any] = {
            "case": case,
            "jobs": len(graphs[case]),
            "workers": CASES[case][1],
            "overseer": medians(overseer_runs[case]),
            "luigi": medians(luigi_runs[case]),
        }
        row["ratio"] = ratio(row)
        rows.append(row)
    floor = {tool: medians(runs) for tool, runs in floor_runs.items()}
    by_case = {row["case"]: row for row in rows}
    # Per link and fixed cost: a line through the chains' medians, of the whole process
    # ("seconds") and of the part between the first job and the last ("running"), which
    # start-up's noise does not reach.
    fits: dict[str, dict[str, dict[str, float]]] = {}
    if all(case in by_case for case in CHAIN_LENGTHS):
        for tool in ("overseer", "luigi"):
            for measure in ("seconds", "running"):
                values = [by_case[case][tool].get(measure) for case in CHAIN_LENGTHS]
                if all(isinstance(v, float | int) for v in values):
                    points = [
                        (float(n), float(v)) for n, v in zip(CHAIN_LENGTHS.values(), values, strict=True)
                    ]
                    fits.setdefault(tool, {})[measure] = line_fit(points)

    print_tables(rows, floor, fits)
    print(f"{about['date']}, {args.rounds} rounds; load before: {about['uptime']}")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.json:
        about["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        print(
            json.dumps(
                {"machine": about, "rounds": args.rounds, "cases": rows, "floor": floor, "chain_fit": fits}
            )
        )
    failed = sum(row["overseer"]["failed"] + row["luigi"]["failed"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
