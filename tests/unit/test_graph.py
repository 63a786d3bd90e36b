"""Graphs as data: forms, args, and every validation error naming its problem."""

from __future__ import annotations

import json

import pytest

from overseer.errors import InvalidGraph, UnknownHandler
from overseer.graph import MAX_ARGS_BYTES, definition_digest, parse_graph


def test_compact_and_full_forms_with_merged_args():
    spec = parse_graph(
        """
        id: nightly-2026-11-26-company-42
        args: {company_id: 42, date: 2026-11-26, format: csv}
        jobs:
          start: []
          fetch: [start]
          report:
            type: render_report
            deps: [fetch]
            args: {format: pdf}
            max_attempts: 3
        """
    )
    assert spec.id == "nightly-2026-11-26-company-42"
    assert spec.jobs["fetch"].deps == ("start",)
    assert spec.jobs["report"].type == "render_report"
    assert spec.jobs["report"].args == {"company_id": 42, "date": "2026-11-26", "format": "pdf"}
    assert spec.jobs["report"].max_attempts == 3
    assert spec.order.index("start") < spec.order.index("fetch") < spec.order.index("report")
    assert spec.dependents()["fetch"] == [("report", 0, 1)]


def test_json_text_and_dicts_parse_the_same():
    doc = {"id": "g1", "jobs": {"a": [], "b": ["a"]}}
    assert parse_graph(json.dumps(doc)) == parse_graph(doc)


def test_a_missing_id_is_generated():
    assert parse_graph({"jobs": {"a": []}}).id.startswith("graph-")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"jobs": {"a": ["b"], "b": ["c"], "c": ["a"]}}, "dependency cycle a -> c -> b -> a"),
        ({"jobs": {"a": ["a"]}}, "dependency cycle a -> a"),
        ({"jobs": {"a": ["ghost"]}}, "job 'a' depends on unknown job(s) ['ghost']"),
        ({"jobs": {}}, "graph has no jobs"),
        ({"id": "g", "args": {}}, "graph has no jobs"),
        ({"jobs": {"a": {"args": {"when": {1, 2}}}}}, "args of job 'a' are not JSON"),
        ({"jobs": {"a": {"args": {"x": float("nan")}}}}, "args of job 'a' are not JSON"),
        ({"jobs": {"a": {"args": {"blob": "x" * MAX_ARGS_BYTES}}}}, "larger than 32768 bytes"),
        ({"jobs": {"a": ["b", "b"], "b": []}}, "lists a dependency more than once"),
        ({"jobs": {"a#1": []}}, "contains '#'"),
        ({"id": "../etc", "jobs": {"a": []}}, "graph id '../etc' is invalid"),
        ({"jobs": {"a": {"deps": "", "colour": 1}}}, "unknown keys ['colour']"),
        ({"jobs": {"a": {"max_attempts": 0}}}, "max_attempts must be a positive integer"),
        ({"jobs": ["a", "b"]}, "'jobs' must be a mapping"),
        ({"graph": 1, "jobs": {"a": []}}, "unknown top-level keys ['graph']"),
        ({"timeout": 0, "jobs": {"a": []}}, "graph timeout (seconds) must be a positive integer, got 0"),
        ({"timeout": "1h", "jobs": {"a": []}}, "graph timeout (seconds) must be a positive integer, got '1h"),
    ],
)
def test_invalid_graphs_are_rejected_with_a_message_naming_the_problem(document, message):
    with pytest.raises(InvalidGraph) as error:
        parse_graph(document)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "jobs:\n  a: []\n  a: [b]\n",
        '{"jobs": {"a": [], "a": []}}',
    ],
)
def test_duplicate_job_names_are_rejected(text):
    with pytest.raises(InvalidGraph, match="duplicate key 'a'"):
        parse_graph(text)


def test_malformed_text_is_rejected():
    with pytest.raises(InvalidGraph, match="not valid YAML or JSON"):
        parse_graph("jobs: [a: b: c")
    with pytest.raises(InvalidGraph, match="must be a mapping"):
        parse_graph("just a string")


def test_a_job_type_without_handler_is_rejected():
    with pytest.raises(UnknownHandler, match="no handler for job type 'render' \\(used by \\['report'\\]\\)"):
        parse_graph({"jobs": {"report": {"type": "render"}}}, handler_types={"fetch"})


def test_many_problems_are_reported_together():
    with pytest.raises(InvalidGraph) as error:
        parse_graph({"jobs": {"a": ["x"], "b": ["y"]}})
    assert "'a' depends on unknown" in str(error.value) and "'b' depends on unknown" in str(error.value)


def test_wide_fan_in_and_hostile_names_parse():
    names = [f"p{i}" for i in range(10_000)]
    jobs = {n: [] for n in names}
    jobs["join"] = names
    jobs["名前 'OR 1=1; --"] = ["join"]
    spec = parse_graph({"jobs": jobs})
    assert len(spec.jobs["join"].deps) == 10_000
    assert spec.order[-1] == "名前 'OR 1=1; --"


def test_a_graph_timeout_is_part_of_its_definition():
    with_timeout = parse_graph({"id": "g", "timeout": 3600, "jobs": {"a": []}})
    without = parse_graph({"id": "g", "jobs": {"a": []}})
    assert (with_timeout.timeout_seconds, without.timeout_seconds) == (3600, None)
    assert definition_digest(with_timeout) != definition_digest(without)
    # A graph without a timeout keeps the digest it had before timeouts existed.
    assert definition_digest(without) == "8e1414c3085fbb3e580298276ace3d784aa4499f9d94c5b4331a17b7665f9c53"
