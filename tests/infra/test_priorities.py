"""Priorities in the stack (``overseer.priority``): each pool's queues of high- and
low-priority jobs, which processes know them, who may use them, and what shows them.

On the stack as cdk.json configures it (``synth``) and on the pools stack of
test_pools.py (``pools``: default, gpu, etl).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

from infra.dispatch import MAX_RECEIVE_COUNT
from overseer.backends.aws import resources
from overseer.pools import DEFAULT_POOL
from tests.infra.test_pools import _as_text, _definition, _env, _lambda_env, _pools_of, _ref
from tests.infra.test_stack import Synthesis, _actions, _statements

pytestmark = pytest.mark.infra

# What a priority's queue shares with its pool's normal queue.
SHARED_SETTINGS = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "RedrivePolicy",
)


def _properties(synth: Synthesis, construct: Any) -> dict[str, Any]:
    properties: dict[str, Any] = synth.resources[synth.logical_id(construct)]["Properties"]
    return properties


def _granted(synth: Synthesis, role: Any, action: str) -> set[str]:
    """The logical ids of the queues (or other resources) ``role`` may do ``action`` on."""
    found = set()
    for statement in _statements(synth, synth.logical_id(role)):
        if action in _actions([statement]):
            resources = statement["Resource"]
            for resource in resources if isinstance(resources, list) else [resources]:
                found.add(resource["Fn::GetAtt"][0] if "Fn::GetAtt" in resource else json.dumps(resource))
    return found


def test_each_pool_has_a_high_and_a_low_queue_dead_lettering_into_its_own_dlq(pools: Synthesis) -> None:
    stack = pools.stack
    for name, queues in stack.dispatch.pool_queues.items():
        normal = _properties(pools, queues.queue)
        suffix = stack.pools[name].pool.id_suffix
        for priority, queue in (("High", queues.high_queue), ("Low", queues.low_queue)):
            assert queue.node.path == f"{stack.stack_name}/Dispatch/Queue{suffix}{priority}"
            properties = _properties(pools, queue)
            assert {k: properties[k] for k in SHARED_SETTINGS} == {k: normal[k] for k in SHARED_SETTINGS}
            assert properties["RedrivePolicy"] == {
                "deadLetterTargetArn": {"Fn::GetAtt": [pools.logical_id(queues.dead_letter_queue), "Arn"]},
                "maxReceiveCount": MAX_RECEIVE_COUNT,
            }
    # Three dispatch queues and one DLQ per pool; stream / delivery failures, blocked workers.
    assert len(pools.of_type("AWS::SQS::Queue")) == 4 * 3 + 3
    # As the emulator's queues (overseer.backends.aws.resources.create_priority_queues).
    assert MAX_RECEIVE_COUNT == resources.MAX_RECEIVE_COUNT


@pytest.mark.parametrize("which", ["synth", "pools"])
def test_every_process_that_sends_or_receives_jobs_knows_every_priority_queue(
    which: str, request: pytest.FixtureRequest
) -> None:
    synthesis: Synthesis = request.getfixturevalue(which)
    stack = synthesis.stack
    pool_queues = stack.dispatch.pool_queues
    processes = {
        "scheduler": _lambda_env(synthesis, stack.scheduler.function),
        "sweep": _lambda_env(synthesis, stack.sweep.function),
        **{f"{name} worker": _env(_definition(synthesis, name)) for name in stack.pools},
    }
    for process, env in processes.items():
        if "OVERSEER_POOLS" not in env:  # the stack without pools
            env = {**env, "OVERSEER_POOLS": "{}"}
        seen = _pools_of(synthesis, env)
        for name, queues in pool_queues.items():
            # The default pool's from OVERSEER_HIGH_QUEUE_URL / OVERSEER_LOW_QUEUE_URL, the
            # others' from OVERSEER_POOLS.
            assert (seen[name].high_queue_url, seen[name].low_queue_url) == (
                _ref(synthesis, queues.high_queue),
                _ref(synthesis, queues.low_queue),
            ), (process, name)
    # The API and the trigger function send no message.
    for function in (stack.api.function, stack.triggers.function):
        env = _lambda_env(synthesis, function)
        assert not {"OVERSEER_HIGH_QUEUE_URL", "OVERSEER_LOW_QUEUE_URL"} & set(env)
        assert "queue_url" not in _as_text(env.get("OVERSEER_POOLS", ""))


def test_workers_take_from_their_own_pools_queues_and_scheduler_and_sweep_reach_them_all(
    pools: Synthesis,
) -> None:
    stack = pools.stack
    pool_queues = stack.dispatch.pool_queues
    every = {pools.logical_id(q) for queues in pool_queues.values() for q in queues.dispatch_queues}
    assert len(every) == 3 * 3
    for name, workers in stack.pools.items():
        own = {pools.logical_id(q) for q in pool_queues[name].dispatch_queues}
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
            assert _granted(pools, workers.job_role, action) == own, (name, action)
        assert not _granted(pools, workers.job_role, "sqs:SendMessage")
    # The scheduler also sends to its on-failure destination.
    failures = pools.logical_id(stack.dispatch.stream_failures)
    assert _granted(pools, stack.scheduler.function.role, "sqs:SendMessage") == every | {failures}
    assert _granted(pools, stack.sweep.function.role, "sqs:SendMessage") == every
    assert _granted(pools, stack.sweep.function.role, "sqs:GetQueueAttributes") == every
    for role in (stack.scheduler.function.role, stack.sweep.function.role):
        assert not _granted(pools, role, "sqs:ReceiveMessage") & every


def test_outputs_name_each_pools_priority_queues(synth: Synthesis, pools: Synthesis) -> None:
    outputs = synth.template.to_json()["Outputs"]
    dispatch = synth.stack.dispatch
    assert outputs["HighQueueUrl"]["Value"] == {"Ref": synth.logical_id(dispatch.high_queue)}
    assert outputs["LowQueueUrl"]["Value"] == {"Ref": synth.logical_id(dispatch.low_queue)}
    outputs = pools.template.to_json()["Outputs"]
    for name, prefix in (("gpu", "Gpu"), ("etl", "Etl")):
        queues = pools.stack.dispatch.pool_queues[name]
        assert outputs[f"{prefix}HighQueueUrl"]["Value"] == {"Ref": pools.logical_id(queues.high_queue)}
        assert outputs[f"{prefix}LowQueueUrl"]["Value"] == {"Ref": pools.logical_id(queues.low_queue)}


def _queue_names(synth: Synthesis, metrics: list[Any]) -> set[str]:
    """The queues named by a dashboard widget's metrics (``<Att:Id.QueueName>``)."""
    return {m[3].removeprefix("<Att:").removesuffix(".QueueName>") for m in metrics if "QueueName" in m}


def test_dashboard_shows_each_priority_and_the_oldest_job_alarm_covers_high_and_normal(
    synth: Synthesis, pools: Synthesis
) -> None:
    (dashboard,) = pools.of_type("AWS::CloudWatch::Dashboard").values()
    widgets = json.loads(_as_text(dashboard["Properties"]["DashboardBody"]))["widgets"]
    titles = {w["properties"].get("title"): w["properties"] for w in widgets}
    for name, queues in pools.stack.dispatch.pool_queues.items():
        three = {pools.logical_id(q) for q in queues.dispatch_queues}
        ready = titles[f"Pool {name}: ready jobs / workers running"]["metrics"]
        assert _queue_names(pools, ready) == three, name
        if name == DEFAULT_POOL:
            assert _queue_names(pools, titles["Ready jobs (queue depth)"]["metrics"]) == three
            assert _queue_names(pools, titles["Age of oldest ready job (s)"]["metrics"]) == three

    dispatch = synth.stack.dispatch
    alarm = _properties(synth, synth.stack.monitoring.alarms["OldestReadyJob"])
    assert alarm["Threshold"] == 3600
    ages = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert {a["MetricName"] for a in ages} == {"ApproximateAgeOfOldestMessage"}
    assert [d["Value"]["Fn::GetAtt"][0] for a in ages for d in a["Dimensions"]] == [
        synth.logical_id(dispatch.high_queue),
        synth.logical_id(dispatch.queue),
    ]
