"""What the targets read: a local stack's log files page by page, and a deployed stack's
settings from its CloudFormation outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from overseer.backends.embedded.logs import FileJobLogs
from overseer.cli.targets import TargetError, stack_settings
from overseer.config import job_log_path


def _write(root: Path, attempt: int, lines: list[str]) -> None:
    path = job_log_path(root, "g1", "fetch data", attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def test_a_local_jobs_log_lines_come_attempt_by_attempt_and_page_by_page(tmp_path: Path) -> None:
    _write(tmp_path, 1, ["one", "two", "three"])
    _write(tmp_path, 2, ["four"])
    _write(tmp_path, 10, ["ten"])
    job_log_path(tmp_path, "g1", "fetch data", 1).with_name("fetch%20data.x.log").write_text("not an attempt")
    logs = FileJobLogs(tmp_path)
    everything = [(1, "one"), (1, "two"), (1, "three"), (2, "four"), (10, "ten")]
    assert logs.page("g1", "fetch data").lines == everything
    assert logs.page("g1", "fetch data").next is None

    seen, after, pages = [], None, 0
    while True:
        page = logs.page("g1", "fetch data", after=after, limit=2)
        seen += page.lines
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert (seen, pages) == (everything, 3)
    assert logs.page("g1", "fetch data", attempt=2).lines == [(2, "four")]
    assert logs.page("g1", "other").lines == []
    with pytest.raises(ValueError, match="not a position"):
        logs.page("g1", "fetch data", after="x")


class _CloudFormation:
    def __init__(self, outputs: dict[str, str] | None) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if self.outputs is None:
            error = {
                "Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}
            }
            raise ClientError(error, "DescribeStacks")  # type: ignore[arg-type]
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }


OUTPUTS = {
    "ApiUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/v1/",
    "GraphsTable": "Overseer-TablesGraphs-1",
    "JobsTable": "Overseer-TablesJobs-1",
    "QueueUrl": "https://sqs/q",
    "HighQueueUrl": "https://sqs/qh",
    "LowQueueUrl": "https://sqs/ql",
    "DeadLetterQueueUrl": "https://sqs/dlq",
    "ArtifactBucket": "overseer-artifacts-1",
    "WorkerLogGroup": "Overseer-WorkersLogs-1",
    "Dashboard": "Overseer",
    "Limits": '{"geo_api":2}',
    "Pools": '{"pools":{"gpu":{"queue_url":"https://sqs/gpu","types":["train"]}},"routes":{"train":"gpu"}}',
}


def test_a_stacks_settings_come_from_its_outputs() -> None:
    settings = stack_settings("Overseer", _CloudFormation(OUTPUTS))
    assert (settings.backend, settings.graphs_table, settings.jobs_table) == (
        "aws",
        "Overseer-TablesGraphs-1",
        "Overseer-TablesJobs-1",
    )
    assert (settings.queue_url, settings.high_queue_url, settings.dead_letter_queue_url) == (
        "https://sqs/q",
        "https://sqs/qh",
        "https://sqs/dlq",
    )
    assert (settings.artifact_bucket, settings.worker_log_group) == (
        "overseer-artifacts-1",
        "Overseer-WorkersLogs-1",
    )
    assert settings.limits == '{"geo_api":2}'
    assert '"gpu"' in settings.pools


def test_a_stack_that_is_not_there_or_not_overseers_is_named() -> None:
    with pytest.raises(TargetError, match="cannot read stack 'Nope': Stack with id Nope does not exist"):
        stack_settings("Nope", _CloudFormation(None))
    with pytest.raises(TargetError, match="stack 'Other' has no output JobsTable, WorkerLogGroup"):
        stack_settings(
            "Other",
            _CloudFormation({k: v for k, v in OUTPUTS.items() if k not in ("JobsTable", "WorkerLogGroup")}),
        )
