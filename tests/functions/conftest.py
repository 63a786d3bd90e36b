"""Fixtures for the Lambda entry points: Lambda-shaped events, a fake context, a deployed stack.

One emulator (moto server) per session; each test module gets its own tables, queues,
bucket and event bus on it, and the ``OVERSEER_*`` environment that names them, set only
while the module runs (so other test directories keep their own environment).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.emulator import emulator, environment
from overseer.backends.aws.resources import provision, stream_arn
from overseer.backends.aws.stream import StreamReader
from overseer.config import Settings
from overseer.states import CLAIM, FAIL, FINISH
from overseer.store import Fence, JobRecord, Services

HERE = Path(__file__).parent
EVENTS = HERE / "events"
TEMPLATES = HERE / "templates"
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "overseer-test",
    "POWERTOOLS_METRICS_NAMESPACE": "OverseerTest",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}
WORKER = "test-worker"


def load_event(name: str) -> dict[str, Any]:
    """A Lambda event fixture from ``tests/functions/events/<name>.json`` (a fresh copy)."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


@dataclass
class FakeLambdaContext:
    function_name: str = "overseer-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:overseer-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/overseer-test"
    log_stream_name: str = "2026/11/26/[$LATEST]test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


def reset_handlers() -> None:
    """Forget the services each function module built for the previous environment."""
    from functions import api, scheduler, sweep, trigger

    for module in (api, scheduler, sweep, trigger):
        module.reset()


@dataclass
class Deployed:
    """A provisioned stack on the emulator, and what a test checks in it."""

    settings: Settings
    services: Services
    events_queue_url: str
    reader: StreamReader

    def drain_queue(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """Every message now on the queue (dispatch queue by default), removed from it."""
        sqs = clients.client("sqs")
        url = queue_url or self.settings.queue_url
        bodies: list[dict[str, Any]] = []
        while True:
            response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def stream_event(self) -> dict[str, Any]:
        """The stream records written since the last call, as the Lambda event source delivers them."""
        return {"Records": self.reader.poll()}

    def pump(self, context: Any, rounds: int = 20) -> list[dict[str, Any]]:
        """Feed new stream records to the scheduler handler until there are none."""
        from functions import scheduler

        reports = []
        for _ in range(rounds):
            event = self.stream_event()
            if not event["Records"]:
                break
            reports.append(scheduler.handler(event, context))
        return reports

    # -- a worker's writes, for tests that need jobs to end ---------------------------
    def claim(self, graph_id: str, name: str) -> JobRecord:
        job = self.services.store.get_job(graph_id, name)
        assert job is not None
        claimed = self.services.store.transition(
            graph_id,
            name,
            CLAIM,
            fence=Fence(job.attempts),
            changes={"attempts": job.attempts + 1, "lease_owner": WORKER},
        )
        assert claimed is not None, f"{graph_id}/{name} is {job.status}, not ready"
        return claimed

    def finish(self, graph_id: str, name: str) -> JobRecord:
        job = self.claim(graph_id, name)
        done = self.services.store.transition(
            graph_id, name, FINISH, fence=Fence(job.attempts, WORKER), remove=["lease_owner"]
        )
        assert done is not None
        return done

    def fail(self, graph_id: str, name: str, message: str = "boom") -> JobRecord:
        job = self.claim(graph_id, name)
        failed = self.services.store.transition(
            graph_id,
            name,
            FAIL,
            fence=Fence(job.attempts, WORKER),
            changes={"error": {"type": "RuntimeError", "message": message}},
            remove=["lease_owner"],
        )
        assert failed is not None
        return failed


@pytest.fixture(scope="session")
def emulator_env() -> Iterator[dict[str, str]]:
    """One moto server for the session (its environment is set per module, not here)."""
    with emulator() as env:
        yield env


def _event_capture(name: str) -> tuple[str, str]:
    """An event bus whose ``overseer`` events land in an SQS queue the tests read."""
    events, sqs = clients.client("events"), clients.client("sqs")
    events.create_event_bus(Name=name)
    url = sqs.create_queue(QueueName=f"{name}-captured")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"{name}-all", EventBusName=name, EventPattern=json.dumps({"source": ["overseer"]}))
    events.put_targets(Rule=f"{name}-all", EventBusName=name, Targets=[{"Id": "capture", "Arn": arn}])
    return name, url


@pytest.fixture(scope="module")
def deployed(emulator_env: dict[str, str]) -> Iterator[Deployed]:
    """Fresh tables, queues, bucket and event bus for this module; handlers pointed at them."""
    name = f"fn{uuid.uuid4().hex[:10]}"
    with environment({**emulator_env, **POWERTOOLS_ENV}):
        bus, events_queue_url = _event_capture(f"{name}-bus")
        settings = provision(
            Settings(
                graphs_table=f"{name}-graphs",
                jobs_table=f"{name}-jobs",
                artifact_bucket=f"{name}-artifacts",
                templates_dir=str(TEMPLATES),
                event_bus=bus,
                lease_seconds=30,
            )
        )
        with environment(settings.to_env()):
            reset_handlers()
            reader = StreamReader(clients.client("dynamodbstreams"), stream_arn(settings))
            try:
                yield Deployed(settings, build_services(settings), events_queue_url, reader)
            finally:
                reset_handlers()
