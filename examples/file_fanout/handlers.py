"""Handlers of the file fan-out graph (see graph.yaml and README.md).

``discover`` lists the CSV files of a directory when it runs and returns an
``overseer.Expand`` with one item per file; the engine makes one ``station_stats`` job per
file (``discover.0``, ``discover.1``, ...); ``summarise`` depends on ``discover`` in the
graph, so it waits for every one of them and finds their stats in ``job.inputs``, in the
order of the listing. Standard library only; no handler touches AWS.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from pathlib import Path
from typing import Any

import overseer

# The CSV files shipped with the example; a graph may name another directory (`data_dir`).
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
HEADER = ["date", "temp_min_c", "temp_max_c", "rain_mm"]
WET_DAY_MM = 1.0  # a day with at least this much rain counts as wet


def key(job: overseer.Job, name: str) -> str:
    """Where this graph keeps ``name`` in the artifact bucket."""
    return f"{job.graph_id}/{name}"


def to_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------
# discover: what to fan out over is only known when the job runs


def discover(job: overseer.Job) -> list[Any]:
    """List the directory's CSV files (by name), store the listing, and fan out: one child
    job per file."""
    data_dir = Path(job.args.get("data_dir") or DEFAULT_DATA_DIR).resolve()
    if not data_dir.is_dir():
        overseer.abort(f"data_dir {str(data_dir)!r} is not a directory")
    files = sorted(data_dir.glob(job.args.get("pattern", "*.csv")))
    listing = [
        {"file": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in files
    ]
    document = {"data_dir": str(data_dir), "files": listing}  # what discover saw
    return [
        overseer.Artifact(key=key(job, "listing.json"), data=to_json(document)),
        # Each child's args: the graph's, then these (shared by all), then its own item.
        overseer.Expand(
            type="station_stats",
            items=[{"path": str(path)} for path in files],
            args={"header": HEADER},
        ),
    ]


# ---------------------------------------------------------------------------------------
# station_stats: one job per file, in parallel


def station_stats(job: overseer.Job) -> list[overseer.Artifact]:
    """Parse one station's file and store its figures for the month."""
    path = Path(job.args["path"])
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    header = job.args["header"]  # from the Expand's args: the same for every child
    if reader.fieldnames != header:
        raise ValueError(f"{path.name}: header {reader.fieldnames} is not {header}")
    rows = list(reader)
    readings: list[tuple[str, float, float, float]] = []  # date, low, high, rain
    missing: list[str] = []  # days the station's sensor was down (blank cells)
    for row in rows:
        cells = [(row[column] or "").strip() for column in header[1:]]
        if all(cells):
            low, high, rain = (float(cell) for cell in cells)
            readings.append((row["date"], low, high, rain))
        else:
            missing.append(row["date"])
    if not readings:
        raise ValueError(f"{path.name}: no complete row of readings")
    wettest = max(readings, key=lambda r: r[3])
    stats = {
        "station": path.stem,
        "file": path.name,
        "rows": len(rows),
        "missing_days": missing,
        "first_day": rows[0]["date"],
        "last_day": rows[-1]["date"],
        "temp_low_c": min(r[1] for r in readings),
        "temp_high_c": max(r[2] for r in readings),
        "temp_mean_c": round(statistics.fmean((r[1] + r[2]) / 2 for r in readings), 2),
        "rain_total_mm": round(sum(r[3] for r in readings), 1),
        "wet_days": sum(r[3] >= WET_DAY_MM for r in readings),
        "wettest_day": {"date": wettest[0], "rain_mm": wettest[3]},
    }
    return [overseer.Artifact(key=key(job, f"stats/{path.stem}.json"), data=to_json(stats))]


# ---------------------------------------------------------------------------------------
# summarise: the join, after every child


def summarise(job: overseer.Job) -> list[overseer.Artifact]:
    """Read the listing and every child's stats (job.inputs: ``discover`` first, then
    ``discover.0``, ``discover.1``, ... in the listing's order) into one summary."""
    (listing_artifact, *_) = job.inputs["discover"]
    listing = json.loads(listing_artifact.read())
    children = [name for name in job.inputs if name != "discover"]
    stations = [json.loads(artifact.read()) for name in children for artifact in job.inputs[name]]
    listed = [f["file"] for f in listing["files"]]
    if [s["file"] for s in stations] != listed:
        # discover was rerun and listed other files: a rerun keeps the first expansion's
        # children, so they are not the files of this listing.
        overseer.abort(
            f"discover listed {len(listed)} files but its children read {len(stations)}: "
            "a rerun of discover keeps its first expansion; submit a new graph id to fan out again"
        )
    summary: dict[str, Any] = {
        "graph_id": job.graph_id,
        "data_dir": listing["data_dir"],
        "files": len(stations),
        "jobs": children,
        "rows": sum(s["rows"] for s in stations),
        "missing_days": sum(len(s["missing_days"]) for s in stations),
        "stations": stations,
    }
    if stations:
        summary["warmest"] = max(stations, key=lambda s: s["temp_mean_c"])["station"]
        summary["coldest"] = min(stations, key=lambda s: s["temp_mean_c"])["station"]
        summary["wettest"] = max(stations, key=lambda s: s["rain_total_mm"])["station"]
        summary["driest"] = min(stations, key=lambda s: s["rain_total_mm"])["station"]
    return [
        overseer.Artifact(key=key(job, "summary.json"), data=to_json(summary)),
        overseer.Artifact(key=key(job, "summary.txt"), data=render_text(summary).encode("utf-8")),
    ]


def render_text(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width table, one line per station in the listing's order."""
    header = (
        f"{'station':<10} {'days':>4} {'missing':>7} {'mean °C':>8} {'low °C':>7} {'high °C':>8} "
        f"{'rain mm':>8} {'wet days':>8}"
    )
    lines = [
        f"{summary['files']} stations, {summary['rows']} days of readings "
        f"({summary['missing_days']} missing) from {summary['data_dir']}",
        "",
        header,
        "-" * len(header),
    ]
    for s in summary["stations"]:
        lines.append(
            f"{s['station']:<10} {s['rows']:>4} {len(s['missing_days']):>7} {s['temp_mean_c']:>8.1f} "
            f"{s['temp_low_c']:>7.1f} {s['temp_high_c']:>8.1f} {s['rain_total_mm']:>8.1f} {s['wet_days']:>8}"
        )
    if summary["stations"]:
        lines += [
            "",
            f"warmest {summary['warmest']}, coldest {summary['coldest']}, "
            f"wettest {summary['wettest']}, driest {summary['driest']}",
        ]
    return "\n".join(lines) + "\n"


HANDLERS = {"discover": discover, "station_stats": station_stats, "summarise": summarise}
