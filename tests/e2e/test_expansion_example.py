"""Graphs that grow at run time through `overseer run`: the file fan-out example (a job that
lists files and fans out over them, a join that summarises), a fan-out of 1,000 children
with a join that finishes, and one of 300 with one child failing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import overseer

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "file_fanout"
DATA = EXAMPLE / "data"
FANOUT_HANDLERS = str(Path(__file__).parent / "data" / "fanout_handlers.py")


def run_json(cwd: Path, graph: Path | str, handlers: str, *options: str, env: dict[str, str] | None = None):
    """`overseer run GRAPH --json`: its exit code and its JSON object."""
    done = overseer("run", str(graph), "--handlers", handlers, "--json", *options, cwd=cwd, env=env)
    assert done.stdout.strip(), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def artifact_bytes(out: Path, job: dict[str, Any], name: str) -> bytes:
    """The bytes --out wrote for the job's artifact whose key ends with ``name``."""
    (artifact,) = [a for a in job["artifacts"] if a["key"].endswith(name)]
    return (out / artifact["bucket"] / artifact["key"]).read_bytes()


def example_graph(tmp_path: Path, data_dir: str) -> Path:
    """The example's graph with ``data_dir`` set."""
    text = (EXAMPLE / "graph.yaml").read_text()
    graph = tmp_path / "graph.yaml"
    graph.write_text(text.replace("  # data_dir: /path/to/csvs", f"  data_dir: {data_dir}"))
    assert f"data_dir: {data_dir}" in graph.read_text()
    return graph


# ---------------------------------------------------------------------------------------
# the example


def test_the_example_fans_out_over_its_csv_files_and_summarises_them_in_order(tmp_path):
    out = tmp_path / "out"
    code, result = run_json(
        ROOT,
        "examples/file_fanout/graph.yaml",
        "examples/file_fanout/handlers.py",
        "--out", str(out), "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert (code, result["status"]) == (0, "finished")
    files = sorted(p.name for p in DATA.glob("*.csv"))
    assert 8 <= len(files) <= 12
    children = [f"discover.{i}" for i in range(len(files))]
    jobs = result["jobs"]
    assert set(jobs) == {"discover", *children, "summarise"}
    assert jobs["discover"]["expansion"] == {"type": "station_stats", "count": len(files), "done": True}
    for name, file in zip(children, files, strict=True):
        job = jobs[name]
        assert (job["type"], job["status"], job["attempts"], job["parent"]) == (
            "station_stats", "finished", 1, "discover",
        )  # fmt: skip
        assert [a["key"] for a in job["artifacts"]] == [f"weather-2026-11/stats/{Path(file).stem}.json"]
    assert "parent" not in jobs["summarise"] and "expansion" not in jobs["summarise"]

    listing = json.loads(artifact_bytes(out, jobs["discover"], "listing.json"))
    assert [f["file"] for f in listing["files"]] == files
    summary = json.loads(artifact_bytes(out, jobs["summarise"], "summary.json"))
    assert summary["jobs"] == children  # job.inputs: the children in item order
    assert [s["file"] for s in summary["stations"]] == files
    # The figures are the files' own, computed here again.
    rain = {}
    for path in DATA.glob("*.csv"):
        rows = list(csv.DictReader(path.open()))
        rain[path.stem] = round(sum(float(r["rain_mm"]) for r in rows if r["rain_mm"]), 1)
        station = next(s for s in summary["stations"] if s["station"] == path.stem)
        assert station["rows"] == len(rows)
        assert station["missing_days"] == [r["date"] for r in rows if not r["temp_min_c"]]
    assert {s["station"]: s["rain_total_mm"] for s in summary["stations"]} == rain
    assert summary["wettest"] == max(rain, key=lambda s: rain[s])
    assert summary["missing_days"] == 3
    text = artifact_bytes(out, jobs["summarise"], "summary.txt").decode()
    assert f"{len(files)} stations" in text and f"wettest {summary['wettest']}" in text
    stations = [Path(f).stem for f in files]
    assert [line.split()[0] for line in text.splitlines() if line.split()[:1] in [[s] for s in stations]] == (
        stations
    )


def test_a_bad_file_fails_its_job_alone_and_a_rerun_after_the_fix_finishes(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    good = (data / "cork.csv").read_text()
    (data / "cork.csv").write_text(good.replace("date,", "day,", 1))
    graph = example_graph(tmp_path, str(data))
    handlers = str(EXAMPLE / "handlers.py")
    files = sorted(p.name for p in data.glob("*.csv"))
    bad = f"discover.{files.index('cork.csv')}"

    code, result = run_json(tmp_path, graph, handlers)
    jobs = result["jobs"]
    assert (code, result["status"]) == (1, "failed")
    assert jobs[bad]["status"] == "failed"
    assert jobs[bad]["error"].startswith("ValueError: cork.csv: header ['day', ")
    assert (jobs["summarise"]["status"], jobs["summarise"]["error"]) == (
        "aborted", f"upstream job '{bad}' failed",
    )  # fmt: skip
    siblings = [n for n in jobs if n.startswith("discover.") and n != bad]
    assert len(siblings) == len(files) - 1
    assert {jobs[n]["status"] for n in siblings} == {"finished"}

    (data / "cork.csv").write_text(good)  # the fix
    code, again = run_json(tmp_path, graph, handlers, "--rerun-failed")
    assert (code, again["status"], again["rerun"]) == (0, "finished", 2)  # the child, then the join
    rerun = again["jobs"]
    assert rerun[bad]["status"] == "finished" and rerun[bad]["started_at"] > jobs[bad]["started_at"]
    assert rerun["summarise"]["status"] == "finished"
    assert {n: rerun[n]["finished_at"] for n in ["discover", *siblings]} == {
        n: jobs[n]["finished_at"] for n in ["discover", *siblings]
    }  # kept, not run again


def test_an_empty_directory_expands_into_no_jobs_and_the_join_runs_at_once(tmp_path):
    (tmp_path / "empty").mkdir()
    graph = example_graph(tmp_path, "empty")  # relative: to where `overseer run` runs
    out = tmp_path / "out"
    code, result = run_json(tmp_path, graph, str(EXAMPLE / "handlers.py"), "--out", str(out))
    assert (code, result["status"]) == (0, "finished")
    assert set(result["jobs"]) == {"discover", "summarise"}
    assert result["jobs"]["discover"]["expansion"] == {"type": "station_stats", "count": 0, "done": True}
    summary = json.loads(artifact_bytes(out, result["jobs"]["summarise"], "summary.json"))
    assert (summary["files"], summary["jobs"], summary["stations"]) == (0, [], [])


def test_a_rerun_of_discover_keeps_its_first_expansion(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    graph = example_graph(tmp_path, str(data))
    handlers = str(EXAMPLE / "handlers.py")
    code, first = run_json(tmp_path, graph, handlers)
    assert (code, first["status"]) == (0, "finished")
    count = first["jobs"]["discover"]["expansion"]["count"]

    shutil.copy(data / "oslo.csv", data / "zurich.csv")  # one file more
    done = overseer("rerun", first["graph_id"], "--job", "discover", "--downstream", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    code, again = run_json(tmp_path, graph, handlers)  # resumes the graph
    jobs = again["jobs"]
    assert jobs["discover"]["started_at"] > first["jobs"]["discover"]["started_at"]  # it ran again
    assert jobs["discover"]["expansion"] == {"type": "station_stats", "count": count, "done": True}
    assert sorted(n for n in jobs if n.startswith("discover.")) == sorted(
        n for n in first["jobs"] if n.startswith("discover.")
    )
    assert all(jobs[n]["finished_at"] == first["jobs"][n]["finished_at"] for n in jobs if "." in n)
    # The new listing names 12 files; the children are the first expansion's 11: the
    # example's join says so rather than summarise a mix.
    assert (code, again["status"], jobs["summarise"]["status"]) == (1, "aborted", "aborted")
    assert jobs["summarise"]["error"] == (
        f"discover listed {count + 1} files but its children read {count}: a rerun of discover "
        "keeps its first expansion; submit a new graph id to fan out again"
    )


# ---------------------------------------------------------------------------------------
# Fan-outs of tests/e2e/data/fanout_handlers.py. The 1,000 children are the only fan-out
# this wide through `overseer run` (the embedded backend); tests/chaos/test_expansion.py runs
# 2,000 on the AWS adapters and bench/expand_scale.py 10,000. A failing child needs fewer.


def fan_graph(tmp_path: Path, graph_id: str, n: int) -> Path:
    graph = tmp_path / "fan.yaml"
    graph.write_text(
        f"id: {graph_id}\nargs: {{n: {n}, a: graph, b: graph}}\njobs:\n  listing: []\n  gather: [listing]\n"
    )
    return graph


def test_a_job_that_expands_into_1000_children_finishes_with_each_run_once(tmp_path):
    out = tmp_path / "out"
    graph = fan_graph(tmp_path, "fan-1000", 1000)
    code, result = run_json(tmp_path, graph, FANOUT_HANDLERS, "--workers", "4", "--out", str(out))
    assert (code, result["status"]) == (0, "finished")
    jobs = result["jobs"]
    children = [f"listing.{i}" for i in range(1000)]
    assert set(jobs) == {"listing", *children, "gather"}
    assert jobs["listing"]["expansion"] == {"type": "item", "count": 1000, "done": True}
    for name in children:
        assert (jobs[name]["status"], jobs[name]["attempts"]) == ("finished", 1), name
    # Each child's args: the graph's, then the Expand's args, then its item.
    written = [f"{name} a=item b=expand n=1000" for name in children]
    stored = [artifact_bytes(out, jobs[name], f"items/{i}.txt").decode() for i, name in enumerate(children)]
    assert stored == written
    gathered = json.loads(artifact_bytes(out, jobs["gather"], "gathered.json"))
    assert gathered == [
        ["listing", ["listed"]],
        *([name, [w]] for name, w in zip(children, written, strict=True)),
    ]


def test_one_failing_child_of_300_aborts_the_join_and_299_finish(tmp_path):
    graph = fan_graph(tmp_path, "fan-300-one-bad", 300)
    code, result = run_json(
        tmp_path, graph, FANOUT_HANDLERS, "--workers", "4", env={"FANOUT_FAIL_ITEM": "217"}
    )
    assert (code, result["status"]) == (1, "failed")
    jobs = result["jobs"]
    assert (jobs["listing.217"]["status"], jobs["listing.217"]["error"]) == (
        "failed", "ValueError: item 217 is bad",
    )  # fmt: skip
    assert (jobs["gather"]["status"], jobs["gather"]["error"]) == (
        "aborted",
        "upstream job 'listing.217' failed",
    )
    finished = [n for n, j in jobs.items() if n.startswith("listing.") and j["status"] == "finished"]
    assert len(finished) == 299
    assert jobs["listing"]["expansion"] == {"type": "item", "count": 300, "done": False}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("OVERSEER_MAX_EXPAND_ITEMS=3", "expands into 4 items; the maximum is 3 (OVERSEER_MAX_EXPAND_ITEMS)"),
        (
            "OVERSEER_MAX_EXPAND_BYTES=50",
            "bytes of items (JSON); the maximum is 50 (OVERSEER_MAX_EXPAND_BYTES)",
        ),
    ],
)
def test_an_expansion_over_a_cap_fails_its_job_naming_the_setting(tmp_path, setting, message):
    name, value = setting.split("=")
    code, result = run_json(
        tmp_path, fan_graph(tmp_path, "fan-capped", 4), FANOUT_HANDLERS, env={name: value}
    )
    jobs = result["jobs"]
    assert (code, result["status"], set(jobs)) == (1, "failed", {"listing", "gather"})
    assert jobs["listing"]["status"] == "failed"
    assert jobs["listing"]["error"].startswith("InvalidExpansion: job 'listing' expands into ")
    assert message in jobs["listing"]["error"]
    assert jobs["gather"]["status"] == "aborted"
