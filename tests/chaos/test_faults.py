"""10% of AWS calls fail (throttling, 5xx, timeouts, lost responses) in the workers and in
the scheduler/sweep process: the graph finishes and nothing is lost."""

from __future__ import annotations

from collections import Counter

import pytest

from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.emulator import environment
from overseer.backends.aws.resources import stream_arn
from overseer.backends.aws.stream import StreamReader
from overseer.states import GraphStatus, JobStatus
from tests.chaos import faults, toolkit

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def test_ten_percent_of_aws_calls_failing_loses_nothing(chaos_stack, tmp_path):
    log_dir = tmp_path / "faults"
    log_dir.mkdir()
    fault_env = faults.fault_env("faults=0.1,seed=7", log_dir)
    with environment(fault_env):
        # The scheduler's, sweep's and stream reader's clients, built the way every process
        # builds them: the engine's client hook attaches the injector.
        services = build_services(chaos_stack.settings)
        reader = StreamReader(clients.client("dynamodbstreams"), stream_arn(chaos_stack.settings))
    injector = faults.current_injector()
    assert injector is not None and reader.client.meta._fault_injector is injector
    for model in (services.store.Graph, services.store.Job):  # PynamoDB's own clients too
        assert model._get_connection().connection.client.meta._fault_injector is injector

    chaos_stack.submit(toolkit.layered_graph("faults", layers=5, width=20))
    pool = chaos_stack.pool(3, **fault_env).start()
    try:
        graph = chaos_stack.drive("faults", timeout=150, services=services, reader=reader)
    finally:
        pool.stop()
    injector.write()

    jobs = chaos_stack.jobs("faults")  # read without faults
    assert graph.status == GraphStatus.FINISHED
    assert {n for n, j in jobs.items() if j.status != JobStatus.FINISHED} == set()
    assert len(jobs) == 100
    into, after = toolkit.finished_transitions(chaos_stack.stream(), "faults")
    assert into == Counter(dict.fromkeys(jobs, 1)) and after == 0
    assert toolkit.check_artifacts(chaos_stack.services, list(jobs.values())) == []

    requests, injected = faults.read_fault_logs(log_dir)
    kinds = Counter()
    for key, n in injected.items():
        kinds[key.split(" ", 1)[0]] += n
    assert set(kinds) == set(faults.KINDS), kinds
    assert 0.05 < sum(injected.values()) / requests < 0.15
    services_hit = {key.split(" ", 1)[1].split(".", 1)[0] for key in injected}
    assert {"dynamodb", "sqs", "s3"} <= services_hit, services_hit
    assert injector.total() > 0  # the scheduler's own calls failed too
