"""The scheduler's metrics by job type (EMF), which the dashboard's percentiles and failures read."""

from __future__ import annotations

import json

import pytest

from functions import scheduler


def test_job_metrics_by_type(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler.emit_job_metrics(
        [
            ("fetch", "finished", 1.5),
            ("fetch", "finished", 2.5),
            ("fetch", "failed", 0.3),
            ("report", "aborted", None),
        ],
        namespace="OverseerTest",
    )
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_type = {d["JobType"]: d for d in documents}
    fetch = by_type["fetch"]
    assert fetch["JobDuration"] == [1.5, 2.5]  # failed attempts do not skew the durations
    assert fetch["JobsFinished"] in (2, [2.0]) and fetch["JobsFailed"] in (1, [1.0])
    (directive,) = fetch["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "OverseerTest"
    assert ["JobType"] in [d[:1] for d in directive["Dimensions"]]
    assert by_type["report"]["JobsAborted"] in (1, [1.0])
    totals = scheduler.metrics.serialize_metric_set()
    assert totals["JobsFinished"] == [2.0] and totals["JobsFailed"] == [1.0]
    scheduler.metrics.clear_metrics()
