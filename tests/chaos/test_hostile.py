"""Hostile graphs through ``overseer run``: clear errors or correct runs, never a stuck graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overseer.graph import MAX_DOCUMENT_VALUES, parse_graph
from overseer.states import JobStatus
from tests.chaos import toolkit as chaos

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]
WIDE = [f"p{i}" for i in range(20001)]
HOSTILE_NAMES = ["名前", "a'; DROP TABLE jobs; --", "<script>alert(1)</script>", "../../etc/passwd"]


def overseer(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a stuck graph fails the test here
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(chaos.REPO_ROOT)},
    )
    assert time.monotonic() - started < timeout
    return done


def write(path: Path, document: dict) -> str:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return str(path)


def last_json(done: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_200_deep_chain_runs_to_the_end(tmp_path):
    jobs = {f"c{i:03d}": {"type": "write", "deps": [f"c{i - 1:03d}"] if i else []} for i in range(200)}
    graph = write(tmp_path / "chain.json", {"id": "deep-chain", "jobs": jobs})
    done = overseer(
        "run", graph, "--handlers", chaos.HANDLERS_MODULE, "--workers", "2", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = last_json(done)
    assert result["status"] == "finished"
    assert {j["status"] for j in result["jobs"].values()} == {"finished"} and len(result["jobs"]) == 200


def test_hostile_names_run_on_the_aws_backend_and_stay_inside_out(tmp_path):
    names = HOSTILE_NAMES
    jobs = {name: {"type": "write", "deps": names[:i]} for i, name in enumerate(names)}
    graph = write(tmp_path / "names.json", {"id": "hostile-names", "jobs": jobs})
    out = tmp_path / "out"
    done = overseer(
        "run", graph, "--handlers", chaos.HANDLERS_MODULE, "--backend", "aws", "--workers", "2",
        "--json", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = last_json(done)
    assert {n: j["status"] for n, j in result["jobs"].items()} == dict.fromkeys(names, "finished")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".bin"]
    assert len(written) == len(names) and all(out in p.parents for p in written)
    for name in names:
        (artifact,) = result["jobs"][name]["artifacts"]
        data = (out / artifact["bucket"] / artifact["key"]).read_bytes()
        assert data == chaos.expected_bytes("hostile-names", name)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"jobs": {"a": {"type": "write", "args": {"x": "y" * 40000}}}}, "larger than 32768 bytes"),
        ({"args": {"blob": "z" * 40000}, "jobs": {"a": "write"}}, "graph args are larger than 32768"),
        ({"id": "../../etc/passwd", "jobs": {"a": {"type": "write"}}}, "graph id '../../etc/passwd' is"),
        ({"id": "a'; DROP TABLE jobs; --", "jobs": {"a": {"type": "write"}}}, "is invalid"),
        ({"jobs": {"a#b": {"type": "write"}}}, "contains '#' or a control character"),
        ({"jobs": {"a\nb": {"type": "write"}}}, "contains '#' or a control character"),
        ({"jobs": {"x" * 500: {"type": "write"}}}, "is longer than 128 characters"),
        ({"jobs": {"<script>": {"type": "<script>"}}}, "no handler for job type '<script>'"),
        (
            {"jobs": {**{p: {"type": "noop"} for p in WIDE}, "j": {"type": "noop", "deps": WIDE}}},
            "has 20001 dependencies; the limit is 20000",
        ),
    ],
    ids=[
        "huge-job-args", "huge-graph-args", "id-traversal", "id-injection", "hash", "newline", "long",
        "type", "fan-in-limit",
    ],
)  # fmt: skip
def test_invalid_hostile_graphs_exit_2_with_a_clear_message(tmp_path, document, message):
    graph = write(tmp_path / "bad.json", document)
    done = overseer("run", graph, "--handlers", chaos.HANDLERS_MODULE, "--json", cwd=tmp_path, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr[-1000:])
    assert message in " ".join(done.stderr.split())
    assert done.stdout == ""


def test_a_yaml_alias_bomb_is_refused_in_time(tmp_path):
    lines = ["jobs:", "  a:", "    type: write", "    args:", "      l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    done = overseer("run", "bomb.yaml", "--handlers", chaos.HANDLERS_MODULE, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr[-1000:])
    message = " ".join(done.stderr.split())
    assert f"expands to more than {MAX_DOCUMENT_VALUES} values" in message, message
    assert "YAML anchors and aliases" in message, message
    assert done.stdout == ""


def test_a_10000_wide_fan_in_is_accepted_and_its_join_waits(tmp_path):
    from overseer.backends.embedded import embedded_services

    width = 10_000
    jobs = {
        **{f"p{i:05d}": {"type": "noop"} for i in range(width)},
        "join": {"type": "noop", "deps": [f"p{i:05d}" for i in range(width)]},
    }
    graph = write(tmp_path / "fanin.json", {"id": "fan-in", "jobs": jobs})
    done = overseer("validate", graph, "--handlers", chaos.HANDLERS_MODULE, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and "10001 jobs, valid" in done.stdout, done.stderr
    # Submitted (running 10,000 jobs here is too slow): the graph is whole and the join waits.
    services = embedded_services(tmp_path / "state")
    spec = parse_graph(graph, handler_types=chaos.HANDLERS.keys())
    record, created = services.store.create_graph(spec, max_attempts={})
    assert created and record.jobs_total == width + 1
    join = services.store.get_job("fan-in", "join")
    assert join.status == JobStatus.WAITING and join.deps_count == width
    assert sorted(services.store.dependencies(join)) == sorted(set(jobs) - {"join"})
    ready = [j for j in services.store.list_jobs("fan-in") if j.status == JobStatus.READY]
    assert len(ready) == width
