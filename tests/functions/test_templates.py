"""Graph templates and fan-out (no network)."""

from __future__ import annotations

import pytest

from overseer.templates import TemplateError, UnknownTemplate, fan_out, render_template, template_files
from tests.functions.conftest import TEMPLATES


def test_render_merges_args_and_names_the_graph() -> None:
    document = render_template(
        TEMPLATES, "daily-report", {"date": "2026-11-26", "company_id": 42, "format": "csv"}
    )
    assert document["id"] == "daily-report-2026-11-26-company-42"
    assert document["args"] == {"format": "csv", "date": "2026-11-26", "company_id": 42}


def test_defaults_yield_to_template_and_given_args() -> None:
    document = render_template(
        TEMPLATES, "daily-report", {"company_id": 1}, defaults={"date": "d", "format": "x"}
    )
    assert document["args"] == {"date": "d", "format": "pdf", "company_id": 1}


def test_unknown_template_lists_the_known_ones() -> None:
    assert sorted(template_files(TEMPLATES)) == ["cyclic", "daily-report", "ingest"]
    with pytest.raises(UnknownTemplate, match="known templates: cyclic, daily-report, ingest"):
        render_template(TEMPLATES, "../daily-report", {})
    with pytest.raises(UnknownTemplate, match="OVERSEER_TEMPLATES_DIR"):
        render_template("", "daily-report", {})


def test_missing_id_args_are_named() -> None:
    with pytest.raises(TemplateError, match=r"needs args \['company_id', 'date'\]"):
        render_template(TEMPLATES, "daily-report", {})


def test_fan_out() -> None:
    assert fan_out(None) == [{}]
    assert fan_out({"date": "d", "company_ids": [1, 2]}) == [
        {"date": "d", "company_id": 1},
        {"date": "d", "company_id": 2},
    ]
    with pytest.raises(TemplateError, match="more than once"):
        fan_out({"company_ids": [1, 1]})


def test_a_template_s_timeout_reaches_the_graph(tmp_path) -> None:
    from overseer.graph import parse_graph

    (tmp_path / "nightly.yaml").write_text('id: "nightly-{date}"\ntimeout: 7200\njobs:\n  a: []\n')
    spec = parse_graph(render_template(tmp_path, "nightly", {"date": "2026-11-29"}))
    assert (spec.id, spec.timeout_seconds) == ("nightly-2026-11-29", 7200)
