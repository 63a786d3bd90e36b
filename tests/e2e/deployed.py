"""A deployed stack, on the emulator, as the CLI's ``--api`` and ``--stack`` targets see it.

What AWS runs as managed services runs here in this process or beside it, from the same
code: the tables, queues, bucket and log group are created on the emulator; a
CloudFormation stack there carries the outputs the real stack has (``infra.stack``), which
``--stack NAME`` reads; the API is ``functions.api`` behind ``tests.api_server`` (SigV4
checked); the scheduler reads the jobs table's stream; a real ``overseer worker`` process
takes jobs from SQS, and its output goes to CloudWatch Logs as the awslogs driver puts a
Batch container's (one event per line, in the workers' log group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.emulator import emulator, environment
from overseer.backends.aws.resources import provision, stream_arn
from overseer.backends.aws.stream import StreamReader
from overseer.config import Settings
from overseer.runner import Pump
from tests.api_server import REGION, SIGNING_ENV, signed_api
from tests.support import stop_process


@dataclass
class DeployedStack:
    name: str  # the CloudFormation stack's name (--stack)
    api_url: str  # its ApiUrl (--api)
    settings: Settings
    env: dict[str, str]  # what a user's shell has: the AWS configuration (endpoint, keys, region)


def _outputs(settings: Settings, api_url: str) -> dict[str, str]:
    return {
        "ApiUrl": api_url,
        "GraphsTable": settings.graphs_table,
        "JobsTable": settings.jobs_table,
        "QueueUrl": settings.queue_url,
        "HighQueueUrl": settings.high_queue_url,
        "LowQueueUrl": settings.low_queue_url,
        "DeadLetterQueueUrl": settings.dead_letter_queue_url,
        "ArtifactBucket": settings.artifact_bucket,
        "WorkerLogGroup": settings.worker_log_group,
    }


def _ship_logs(stream: Iterator[bytes], group: str, name: str) -> None:
    """The awslogs driver: each line the container writes becomes an event of its stream."""
    logs = clients.client("logs")
    logs.create_log_stream(logGroupName=group, logStreamName=name)
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if line:
            event = {"timestamp": int(time.time() * 1000), "message": line}
            logs.put_log_events(logGroupName=group, logStreamName=name, logEvents=[event])


@contextmanager
def deployed_stack(handlers: Path, lease_seconds: int = 6) -> Iterator[DeployedStack]:
    name = f"overseer-e2e-{uuid.uuid4().hex[:8]}"
    with emulator() as aws:
        shell = {**aws, **SIGNING_ENV, "AWS_DEFAULT_REGION": REGION, "AWS_SESSION_TOKEN": ""}
        with environment(shell):
            os.environ.pop("AWS_SESSION_TOKEN")
            shell.pop("AWS_SESSION_TOKEN")
            settings = provision(
                Settings(
                    graphs_table=f"{name}-graphs",
                    jobs_table=f"{name}-jobs",
                    artifact_bucket=f"{name}-artifacts",
                    worker_log_group=f"/aws/batch/{name}",
                    event_bus="",
                    lease_seconds=lease_seconds,
                    receive_wait_seconds=1,
                    fault_backoff_seconds=0.0,
                    sweep_interval_seconds=2,
                )
            )
            clients.client("logs").create_log_group(logGroupName=settings.worker_log_group)
            with environment({**settings.to_env(), "OVERSEER_BACKEND": "aws"}), signed_api() as (url, _):
                outputs = _outputs(settings, url)
                template = {
                    "Resources": {"Marker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                    "Outputs": {key: {"Value": value} for key, value in outputs.items()},
                }
                clients.client("cloudformation").create_stack(
                    StackName=name, TemplateBody=json.dumps(template)
                )
                with _scheduler(settings), _worker(settings, handlers, shell):
                    yield DeployedStack(name, url, settings, shell)


@contextmanager
def _scheduler(settings: Settings) -> Iterator[None]:
    """The stream's records to the scheduler (the stream-triggered Lambda), and the sweep."""
    services = build_services(settings)
    pump = Pump(services, StreamReader(clients.client("dynamodbstreams"), stream_arn(settings)))
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            if not pump.feed():
                stop.wait(0.05)
            pump.tick()

    thread = threading.Thread(target=run, name="scheduler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


@contextmanager
def _worker(settings: Settings, handlers: Path, shell: dict[str, str]) -> Iterator[None]:
    """One ``overseer worker`` (a Batch container), its output shipped to CloudWatch Logs."""
    env = {
        **os.environ,
        **shell,
        **settings.to_env(),
        "OVERSEER_HANDLERS": str(handlers),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH", "")])),
    }
    env.pop("AWS_SESSION_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "overseer", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    shipper = threading.Thread(
        target=_ship_logs,
        args=(
            iter(process.stdout.readline, b""),
            settings.worker_log_group,
            f"worker/default/{uuid.uuid4().hex}",
        ),
        daemon=True,
    )
    shipper.start()
    try:
        yield
    finally:
        stop_process(process, timeout=30)
        shipper.join(timeout=10)
