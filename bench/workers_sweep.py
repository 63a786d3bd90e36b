"""Jobs per second for the standard shapes with 1, 2 and 4 workers, on each backend.

    python bench/workers_sweep.py                      # both backends, a table and the plot
    python bench/workers_sweep.py --backend embedded   # SQLite + files only (about a minute)
    python bench/workers_sweep.py --backend aws --json # the emulator only, one JSON object

Shapes (as in bench/shapes.py, no-op handlers from examples/noop/handlers.py):
``chain-50``, ``fanout-200-join`` (root, 200 jobs on it, a join on all 200) and
``layered-10x10-full`` (10 layers of 10, each job depending on the whole previous layer).

Each (backend, shape, workers) runs once, as ``overseer run`` does:

* ``embedded``: ``overseer.runner.run_graph`` on a fresh state directory
  (N ``overseer worker`` processes on one SQLite file, the change feed pumped into the
  scheduler by this process).
* ``aws``: ``overseer.runner.run_graph`` on a fresh moto server (DynamoDB +
  stream, SQS, S3), N ``overseer worker`` processes, the stream pumped into the scheduler
  by this process.

Two rates per run:

* ``end_to_end``: jobs / wall time of the whole run (includes starting the emulator,
  provisioning, starting and stopping the workers);
* ``running``: jobs / (last ``finished_at`` - first ``started_at`` of the graph's jobs),
  the rate once the workers are up. The plot shows this one.

The load average (``os.getloadavg()``, 1 minute) is sampled before and after each run:
the figures are only comparable at similar load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shapes import SHAPES
from tables import load_cell, print_table
from throughput import NOOP_HANDLERS, run_shape

from overseer import timeutil
from overseer.graph import parse_graph
from overseer.handlers import load_handlers

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "docs" / "img" / "throughput.png"
WORKERS = (1, 2, 4)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def running_seconds(jobs: dict[str, dict[str, Any]]) -> float:
    starts = [timeutil.parse(j["started_at"]) for j in jobs.values() if j.get("started_at")]
    ends = [timeutil.parse(j["finished_at"]) for j in jobs.values() if j.get("finished_at")]
    if not starts or not ends:
        return float("nan")
    return (max(ends) - min(starts)).total_seconds()


def run_once(backend: str, shape: str, workers: int) -> dict[str, Any]:
    jobs = SHAPES[shape]()
    document = {"id": f"sweep-{shape}-{workers}-{time.strftime('%Y%m%dT%H%M%S')}", "args": {}, "jobs": jobs}
    load_before = load()
    if backend == "aws":
        result = run_shape(document, NOOP_HANDLERS, workers)
    else:
        from overseer.runner import run_graph

        handlers = load_handlers(NOOP_HANDLERS)
        spec = parse_graph(document, handler_types=handlers.keys())
        with tempfile.TemporaryDirectory(prefix="overseer-sweep-") as state_dir:
            result = run_graph(
                spec, NOOP_HANDLERS, handlers, backend="embedded", workers=workers, state_dir=Path(state_dir)
            )
    running = running_seconds(result.jobs)
    return {
        "backend": backend,
        "shape": shape,
        "workers": workers,
        "jobs": len(jobs),
        "status": result.status,
        "seconds": round(result.seconds, 3),
        "running_seconds": round(running, 3),
        "jobs_per_second_end_to_end": round(len(jobs) / result.seconds, 2),
        "jobs_per_second_running": round(len(jobs) / running, 2) if running > 0 else None,
        "load_before": load_before,
        "load_after": load(),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Throughput (running rate) against workers, one line per shape and backend."""
    path.parent.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        if row["jobs_per_second_running"]:
            series.setdefault((row["backend"], row["shape"]), []).append(
                (row["workers"], row["jobs_per_second_running"])
            )
    loads = [r["load_before"] for r in rows] + [r["load_after"] for r in rows]
    note = f"2-core shared machine, 1-min load avg {min(loads):.1f}-{max(loads):.1f} during the runs"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        svg = path.with_suffix(".svg")
        svg.write_text(_svg(series, note))
        return str(svg)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    markers = {"chain-50": "o", "fanout-200-join": "s", "layered-10x10-full": "^"}
    for (backend, shape), points in sorted(series.items()):
        points.sort()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            linestyle="-" if backend == "embedded" else "--",
            marker=markers.get(shape, "o"),
            label=f"{shape} ({backend})",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(WORKERS), [str(w) for w in WORKERS])
    ax.set_yscale("log")
    ax.set_xlabel("worker processes")
    ax.set_ylabel("jobs / s (first start to last finish)")
    ax.set_title("No-op jobs: throughput against workers", fontsize=11)
    ax.text(0.01, 0.01, note, transform=ax.transAxes, fontsize=7, color="dimgray")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _svg(series: dict[tuple[str, str], list[tuple[int, float]]], note: str) -> str:
    """A hand-drawn polyline chart (stdlib only) when matplotlib is not installed."""
    import math

    width, height, left, top, plot_w, plot_h = 760, 440, 70, 40, 440, 330
    values = [v for points in series.values() for _, v in points] or [1.0]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    hi = max(hi, lo + 1)

    def xy(workers: int, value: float) -> tuple[float, float]:
        x = left + plot_w * math.log2(workers) / 2
        y = top + plot_h * (1 - (math.log10(value) - lo) / (hi - lo))
        return x, y

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    out.append('<rect width="100%" height="100%" fill="white"/>')
    for decade in range(lo, hi + 1):
        _, y = xy(1, 10**decade)
        out.append(f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{10**decade:g}</text>')
    for w in WORKERS:
        x, _ = xy(w, 10**lo)
        out.append(f'<text x="{x}" y="{top + plot_h + 16}" text-anchor="middle">{w}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">workers</text>')
    out.append(f'<text x="{left}" y="{top - 14}">jobs / s (first start to last finish), log scale</text>')
    for i, ((backend, shape), points) in enumerate(sorted(series.items())):
        colour = colours[i % len(colours)]
        dash = "" if backend == "embedded" else ' stroke-dasharray="6,4"'
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(w, v) for w, v in sorted(points)))
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        ly = top + 20 * i
        out.append(f'<line x1="530" y1="{ly}" x2="560" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="566" y="{ly + 4}">{shape} ({backend})</text>')
    out.append(f'<text x="{left}" y="{height - 8}" fill="gray" font-size="9">{note}</text>')
    out.append("</svg>")
    return "\n".join(out)


def print_rows(rows: list[dict[str, Any]]) -> None:
    def running_rate(r: dict[str, Any]) -> str:
        return f"{r['jobs_per_second_running'] or float('nan'):.1f}"

    print_table(
        [
            ("backend", "<9", lambda r: r["backend"]),
            ("shape", "<20", lambda r: r["shape"]),
            ("workers", ">8", lambda r: str(r["workers"])),
            ("jobs", ">6", lambda r: str(r["jobs"])),
            ("wall s", ">9", lambda r: f"{r['seconds']:.2f}"),
            ("run s", ">8", lambda r: f"{r['running_seconds']:.2f}"),
            ("jobs/s e2e", ">11", lambda r: f"{r['jobs_per_second_end_to_end']:.1f}"),
            ("jobs/s run", ">11", running_rate),
            ("load", ">12", load_cell),
            ("  status", "<10", lambda r: f"  {r['status']}"),
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "aws", "both"], default="both")
    parser.add_argument("--workers", type=int, action="append", help="default: 1, 2 and 4")
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append", help="default: all three")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="where to write the plot")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    backends = ["embedded", "aws"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        for shape in args.shape or list(SHAPES):
            for workers in args.workers or WORKERS:
                row = run_once(backend, shape, workers)
                rows.append(row)
                print(
                    f"{backend} {shape} x{workers}: {row['status']} {row['seconds']:.1f} s, "
                    f"{row['jobs_per_second_running']} jobs/s running (load {row['load_before']})",
                    file=sys.stderr,
                    flush=True,
                )
    written = None if args.no_plot else plot(rows, Path(args.plot))
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "plot": written, "runs": rows}))
    else:
        print(f"machine: {os.cpu_count()} CPUs, shared with other work: see the load column (1-min avg)")
        print_rows(rows)
        if written:
            print(f"plot: {written}")
    return 0 if all(r["status"] == "finished" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
