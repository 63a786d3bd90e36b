"""The console side of operating graphs: the failed-jobs index, the dashboard and the alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

pytestmark = pytest.mark.infra


def test_jobs_table_has_the_sparse_failed_jobs_index(synth: Any) -> None:
    jobs = synth.resources[synth.logical_id(synth.stack.tables.jobs_table)]
    (index,) = [i for i in jobs["Properties"]["GlobalSecondaryIndexes"] if i["IndexName"] == "failed-jobs"]
    assert index["KeySchema"] == [
        {"AttributeName": "failed_on", "KeyType": "HASH"},
        {"AttributeName": "finished_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    types = {a["AttributeName"]: a["AttributeType"] for a in jobs["Properties"]["AttributeDefinitions"]}
    assert types["failed_on"] == "S" and types["finished_at"] == "S"
    from overseer.backends.aws.models import FailedJobsIndex

    assert FailedJobsIndex.Meta.index_name == index["IndexName"]


def _dashboard_body(synth: Any) -> str:
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    return json.dumps(dashboard["Properties"]["DashboardBody"])


def test_dashboard_shows_graphs_jobs_queue_workers_and_job_types(synth: Any) -> None:
    body = _dashboard_body(synth)
    for title in (
        "Graphs ended, by status",
        "Jobs ended, by status",
        "Jobs running (in flight) / workers started",
        "Job duration by type: p50 / p90 / p99 (s)",
        "Failed jobs by type",
        "Ready jobs (queue depth)",
        "Age of oldest ready job (s)",
    ):
        assert title in body, title
    for metric in ("GraphsFailed", "JobsAborted", "WorkersStarted", "ApproximateAgeOfOldestMessage"):
        assert metric in body, metric
    assert "SEARCH(" in body and "JobDuration" in body and "p99" in body


def test_alarms_dead_letters_failed_jobs_and_oldest_message(synth: Any) -> None:
    alarms = synth.of_type("AWS::CloudWatch::Alarm").values()
    by_metric = {a["Properties"].get("MetricName"): a["Properties"] for a in alarms}
    assert by_metric["JobsFailed"]["Namespace"] == "Overseer"
    assert by_metric["JobsFailed"]["Dimensions"] == [{"Name": "service", "Value": "overseer-scheduler"}]
    oldest = synth.resources[synth.logical_id(synth.stack.monitoring.alarms["OldestReadyJob"])]
    assert oldest["Properties"]["Threshold"] == 3600  # of the high and normal queues (test_priorities.py)
    assert by_metric["ApproximateNumberOfMessagesVisible"]["Threshold"] == 0
