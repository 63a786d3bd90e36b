"""Worker pools in the stack: cdk.json's ``pools`` read, checked and synthesised.

One stack mixes three pools: ``default`` (cdk.json's workers), ``gpu`` (4 vCPUs, 15000 MiB,
1 GPU on On-Demand g5.xlarge with a 100 GiB root volume, its own handlers and image, a
worker lifetime) and ``etl`` (the default's machines and image, its own queues and role with
a policy of its own). It is synthesised once per session (conftest.py); the configuration
errors need no synthesis.

Three, not more: with a queue per priority, every pool besides the default adds about
950 bytes to the sweep's environment (six URLs and ARNs in OVERSEER_POOLS), and a fourth
pool would take it over Lambda's 4 KB (``test_a_lambda_environment_over_4_kb_fails_synthesis``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

import aws_cdk as cdk

from infra.app import build_app
from infra.config import ConfigError, DeploymentConfig
from infra.pool_plan import GRACE_SECONDS, plan_pools
from overseer.config import Settings
from overseer.pools import Pools
from tests.infra.test_stack import CONTEXT, Synthesis, _actions, _statements

pytestmark = pytest.mark.infra

READ_REFERENCE = {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reference-data/*"]}
POOLS: dict[str, Any] = {
    "default": {"backlogPerWorker": 20},
    "gpu": {
        "vcpus": 4,
        "memoryMiB": 15000,
        "gpus": 1,
        "instanceTypes": ["g5.xlarge"],
        "spot": False,
        "maxVcpus": 8,
        "maxWorkers": 2,
        "backlogPerWorker": 5,
        "rootVolumeGiB": 100,
        "handlersModule": "tests.infra.data.gpu_handlers",
        "handlersDir": "tests/infra/data",
        "workerLifetimeSeconds": 3600,
    },
    "etl": {"maxWorkers": 8, "workerPolicies": [READ_REFERENCE]},
}
POOLS_CONTEXT: dict[str, Any] = {**CONTEXT, "pools": POOLS}
GPU_TYPES = {"embed", "train"}
DAILY_REPORT_TYPES = {
    "fetch_orders", "fetch_sessions", "fetch_tickets", "revenue", "funnel", "retention",
    "tickets", "anomalies", "summary", "render_report",
}  # fmt: skip


# The fixture ``pools`` (this configuration, synthesised once per session) is in conftest.py.


def _env(properties: dict[str, Any]) -> dict[str, Any]:
    """A job definition's container environment as a dict."""
    return {e["Name"]: e["Value"] for e in properties["ContainerProperties"]["Environment"]}


def _definition(synth: Synthesis, pool: str) -> dict[str, Any]:
    return synth.resources[synth.logical_id(synth.stack.pools[pool].job_definition)]["Properties"]


def _requirements(definition: dict[str, Any]) -> dict[str, str]:
    return {r["Type"]: r["Value"] for r in definition["ContainerProperties"]["ResourceRequirements"]}


def _as_text(value: Any) -> str:
    """A CloudFormation string value with each intrinsic replaced by ``<Ref:Id>`` /
    ``<Att:Id.Attr>``, as deploy time would replace it by the resource's name or ARN."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_as_text(p) for p in parts)
    if "Ref" in value:
        return f"<Ref:{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<Att:{'.'.join(value['Fn::GetAtt'])}>"
    raise AssertionError(f"unexpected intrinsic {value}")


def _pools_of(synth: Synthesis, variables: dict[str, Any]) -> Pools:
    """The pools a process with these environment variables sees (as the engine reads them)."""
    return Pools.from_settings(
        Settings(
            pools=_as_text(variables["OVERSEER_POOLS"]),
            queue_url=_as_text(variables["OVERSEER_QUEUE_URL"]),
            high_queue_url=_as_text(variables.get("OVERSEER_HIGH_QUEUE_URL", "")),
            low_queue_url=_as_text(variables.get("OVERSEER_LOW_QUEUE_URL", "")),
            max_workers=int(variables.get("OVERSEER_MAX_WORKERS", 16)),
            jobs_per_worker=int(variables.get("OVERSEER_JOBS_PER_WORKER", 50)),
        )
    )


def _lambda_env(synth: Synthesis, function: Any) -> dict[str, Any]:
    variables: dict[str, Any] = synth.resources[synth.logical_id(function)]["Properties"]["Environment"][
        "Variables"
    ]
    return variables


def _ref(synth: Synthesis, construct: Any) -> str:
    return f"<Ref:{synth.logical_id(construct)}>"


# --- the synthesised stack -----------------------------------------------------------------


def test_every_pool_has_a_job_definition_with_its_resources(pools: Synthesis) -> None:
    assert len(pools.of_type("AWS::Batch::JobDefinition")) == 3
    assert _requirements(_definition(pools, "default")) == {"VCPU": "1", "MEMORY": "3584"}
    assert _requirements(_definition(pools, "gpu")) == {"VCPU": "4", "MEMORY": "15000", "GPU": "1"}
    assert _requirements(_definition(pools, "etl")) == {"VCPU": "1", "MEMORY": "3584"}


def test_the_gpu_pool_runs_on_demand_g5_with_the_nvidia_image(pools: Synthesis) -> None:
    gpu = pools.stack.pools["gpu"]
    environment = pools.resources[pools.logical_id(gpu.compute_environment)]["Properties"]
    resources = environment["ComputeResources"]
    assert resources["InstanceTypes"] == ["g5.xlarge"]
    assert resources["Type"] == "EC2"  # On-Demand
    assert resources["MinvCpus"] == 0 and resources["MaxvCpus"] == 8
    assert resources["Ec2Configuration"] == [{"ImageType": "ECS_AL2023_NVIDIA"}]
    queue = pools.resources[pools.logical_id(gpu.job_queue)]["Properties"]
    assert queue["ComputeEnvironmentOrder"][0]["ComputeEnvironment"] == {
        "Fn::GetAtt": [pools.logical_id(gpu.compute_environment), "ComputeEnvironmentArn"]
    }
    others = [
        e["Properties"]["ComputeResources"]["Ec2Configuration"]
        for e in pools.of_type("AWS::Batch::ComputeEnvironment").values()
        if e is not pools.resources[pools.logical_id(gpu.compute_environment)]
    ]
    assert others == [[{"ImageType": "ECS_AL2023"}]]
    template = pools.resources[pools.logical_id(gpu.launch_template)]["Properties"]
    devices = {d["DeviceName"]: d["Ebs"] for d in template["LaunchTemplateData"]["BlockDeviceMappings"]}
    assert devices["/dev/xvda"]["VolumeSize"] == 100  # rootVolumeGiB
    assert devices["/dev/xvdb"]["VolumeSize"] == 1024  # scratch


def test_pools_with_other_instance_needs_get_their_own_compute_environment(pools: Synthesis) -> None:
    workers = pools.stack.pools
    # default and etl ask for the same machines: one compute environment, one image.
    assert workers["etl"].compute_environment is workers["default"].compute_environment
    assert workers["etl"].image is workers["default"].image
    assert workers["gpu"].image is not workers["default"].image
    assert len(pools.of_type("AWS::Batch::ComputeEnvironment")) == 2
    # Every pool has a job queue of its own, so the sweep can count each pool's workers.
    assert len(pools.of_type("AWS::Batch::JobQueue")) == 3


def test_every_pool_has_its_own_queue_and_dead_letter_queue(pools: Synthesis) -> None:
    queues = pools.stack.dispatch.pool_queues
    assert list(queues) == ["default", "gpu", "etl"]
    for pair in queues.values():
        queue = pools.resources[pools.logical_id(pair.queue)]["Properties"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [pools.logical_id(pair.dead_letter_queue), "Arn"]
        }
        assert queue["VisibilityTimeout"] == CONTEXT["leaseSeconds"]
    # The default pool keeps the queues it had before pools.
    assert pools.logical_id(queues["default"].queue) == pools.logical_id(pools.stack.dispatch.queue)


def test_adding_pools_renames_none_of_the_existing_resources(pools: Synthesis, synth: Synthesis) -> None:
    assert set(synth.resources) <= set(pools.resources)


def test_each_worker_role_reaches_its_own_pool_queues_only(pools: Synthesis) -> None:
    queues = pools.stack.dispatch.pool_queues
    for name, workers in pools.stack.pools.items():
        statements = _statements(pools, pools.logical_id(workers.job_role))
        received = [s["Resource"] for s in statements if "sqs:ReceiveMessage" in _actions([s])]
        # Its queue of each priority (one statement: the grants are merged).
        (arns,) = received
        assert {arn["Fn::GetAtt"][0] for arn in arns} == {
            pools.logical_id(queue) for queue in queues[name].dispatch_queues
        }, name
        # The pool's own additions only.
        assert ("reference-data" in json.dumps(statements)) == (name == "etl"), name


def test_scheduler_and_sweep_reach_every_pool(pools: Synthesis) -> None:
    stack = pools.stack
    queues = {pools.logical_id(q) for p in stack.dispatch.pool_queues.values() for q in p.dispatch_queues}
    dead_letters = {pools.logical_id(q.dead_letter_queue) for q in stack.dispatch.pool_queues.values()}

    def targets(function: Any, action: str) -> set[str]:
        statements = _statements(pools, pools.logical_id(function.role))
        found = set()
        for statement in statements:
            if action in _actions([statement]):
                resources = statement["Resource"]
                for resource in resources if isinstance(resources, list) else [resources]:
                    found.add(resource["Fn::GetAtt"][0] if "Fn::GetAtt" in resource else json.dumps(resource))
        return found

    assert queues <= targets(stack.scheduler.function, "sqs:SendMessage")
    assert queues <= targets(stack.sweep.function, "sqs:SendMessage")
    assert queues <= targets(stack.sweep.function, "sqs:GetQueueAttributes")
    assert dead_letters <= targets(stack.sweep.function, "sqs:ReceiveMessage")
    assert dead_letters <= targets(stack.sweep.function, "sqs:DeleteMessage")
    (submit,) = [
        s
        for s in _statements(pools, pools.logical_id(stack.sweep.function.role))
        if s["Action"] == "batch:SubmitJob"
    ]
    submitted = {r["Ref"] if "Ref" in r else r["Fn::GetAtt"][0] for r in submit["Resource"]}
    assert submitted == {
        pools.logical_id(resource)
        for workers in stack.pools.values()
        for resource in (workers.job_queue, workers.job_definition)
    }


def test_the_lambdas_route_each_job_type_to_its_pool(pools: Synthesis) -> None:
    stack = pools.stack
    gpu_queues, gpu_workers = stack.dispatch.pool_queues["gpu"], stack.pools["gpu"]
    queue_urls = (_ref(pools, gpu_queues.queue), _ref(pools, gpu_queues.dead_letter_queue))
    batch = (
        f"<Att:{pools.logical_id(gpu_workers.job_queue)}.JobQueueArn>",
        _ref(pools, gpu_workers.job_definition),
    )
    # What each function uses (Lambda allows 4 KB of variables): the API and the trigger
    # route (types and routes), the scheduler sends to the pools' queues, the sweep also
    # starts workers (neither routes a job: no types).
    expected = {
        stack.api.function: (("", ""), ("", ""), True),
        stack.triggers.function: (("", ""), ("", ""), True),
        stack.scheduler.function: (queue_urls, ("", ""), False),
        stack.sweep.function: (queue_urls, batch, False),
    }
    for function, (urls, batch_names, routes) in expected.items():
        env = _lambda_env(pools, function)
        assert env["OVERSEER_JOBS_PER_WORKER"] == "20"  # pools.default.backlogPerWorker
        seen = _pools_of(pools, env)
        assert sorted(seen.names) == ["default", "etl", "gpu"]
        if routes:
            assert seen.routes == {"embed": "gpu", "train": "gpu"}
            assert seen["gpu"].types == GPU_TYPES and seen["default"].types == DAILY_REPORT_TYPES
            # The graph's pool > the handler's > the pool serving the type > default.
            assert seen.route("train") == "gpu" and seen.route("revenue") == "default"
            assert seen.route("revenue", "etl") == "etl"
        else:
            assert (seen.routes, seen["gpu"].types) == ({}, None)
        gpu = seen["gpu"]
        assert (gpu.queue_url, gpu.dead_letter_queue_url) == urls
        assert (gpu.batch_job_queue, gpu.batch_job_definition) == batch_names
        assert (gpu.max_workers, gpu.backlog_per_worker) == (2, 5)
        assert (seen["etl"].max_workers, seen["etl"].backlog_per_worker) == (8, 50)
        # The default pool's URLs are OVERSEER_QUEUE_URL's and the like.
        assert seen.default.queue_url == _ref(pools, stack.dispatch.queue)
        assert seen.default.backlog_per_worker == 20


def test_each_worker_knows_its_pool_handlers_lifetime_and_deadline(pools: Synthesis) -> None:
    gpu = _definition(pools, "gpu")
    env = _env(gpu)
    assert env["OVERSEER_POOL"] == "gpu"
    assert env["OVERSEER_HANDLERS"] == "tests.infra.data.gpu_handlers"
    assert env["OVERSEER_WORKER_LIFETIME_SECONDS"] == "3600"
    # lifetime + the longest handler timeout (embed, 5400 s) + the grace.
    assert gpu["Timeout"]["AttemptDurationSeconds"] == 3600 + 5400 + GRACE_SECONDS
    assert env["OVERSEER_WORKER_DEADLINE_SECONDS"] == str(3600 + 5400)
    seen = _pools_of(pools, env)
    assert seen.routes == {"embed": "gpu", "train": "gpu"}  # where an expansion's children go
    assert seen["gpu"].queue_url == _ref(pools, pools.stack.dispatch.pool_queues["gpu"].queue)
    assert seen["gpu"].batch_job_definition == ""  # a job definition cannot name itself

    default = _definition(pools, "default")
    assert _env(default)["OVERSEER_POOL"] == "default"
    assert _env(default)["OVERSEER_HANDLERS"] == CONTEXT["handlersModule"]
    assert default["Timeout"]["AttemptDurationSeconds"] == 86400  # no lifetime: as before pools
    assert _env(default)["OVERSEER_WORKER_DEADLINE_SECONDS"] == str(86400 - GRACE_SECONDS)


def test_outputs_dashboard_and_alarms_per_pool(pools: Synthesis) -> None:
    outputs = pools.template.to_json()["Outputs"]
    for prefix in ("Gpu", "Etl"):
        assert {f"{prefix}QueueUrl", f"{prefix}BatchJobQueue", f"{prefix}BatchJobDefinition"} <= set(outputs)
    # `overseer --stack NAME` routes jobs as the API does and shows each pool's queue depth:
    # the workers' pools document (types, routes, queues).
    (workers,) = {json.dumps(_env(_definition(pools, name))["OVERSEER_POOLS"]) for name in ("gpu", "etl")}
    assert json.dumps(outputs["Pools"]["Value"]) == workers
    alarms = pools.stack.monitoring.alarms
    assert {"DeadLetters", "DeadLettersGpu", "DeadLettersEtl"} <= set(alarms)
    (dashboard,) = pools.of_type("AWS::CloudWatch::Dashboard").values()
    body = _as_text(dashboard["Properties"]["DashboardBody"])
    for name in ("default", "gpu", "etl"):
        assert f"Pool {name}: ready jobs / workers running" in body
        assert f'"WorkersRunning","Pool","{name}","service","overseer-sweep"' in body
    (rule,) = [
        r
        for r in pools.of_type("AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("detail-type") == ["Batch Job Queue Blocked"]
    ]
    assert len(rule["Properties"]["EventPattern"]["detail"]["jobQueue"]) == 3


def test_the_pools_stack_has_no_nag_finding_or_lint_error(pools: Synthesis) -> None:
    from cfnlint.api import ManualArgs, lint_file

    report = pools.outdir / "validation-report.json"
    findings = []
    if report.exists():
        for plugin in json.loads(report.read_text())["pluginReports"]:
            findings += [
                f"{v['ruleName']} {[c['constructPath'] for c in v['violatingConstructs']]}"
                for v in plugin["violations"]
            ]
    assert findings == [] and pools.validation_error is None, findings
    matches = lint_file(pools.outdir / pools.stack.template_file, ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


def test_a_stack_without_pools_sets_no_pools_but_tells_its_workers_their_pool(synth: Synthesis) -> None:
    env = _lambda_env(synth, synth.stack.sweep.function)
    assert "OVERSEER_POOLS" not in env and env["OVERSEER_JOBS_PER_WORKER"] == "50"
    worker = _env(_definition(synth, "default"))
    assert "OVERSEER_POOLS" not in worker
    assert (worker["OVERSEER_POOL"], worker["OVERSEER_WORKER_LIFETIME_SECONDS"]) == ("default", "0")
    # dispatch (high, normal, low), DLQ, stream / delivery failures, blocked
    assert len(synth.of_type("AWS::SQS::Queue")) == 7


# --- configuration errors (no synthesis) ---------------------------------------------------


def _plan(pools: dict[str, Any]) -> Any:
    return plan_pools(DeploymentConfig.from_mapping({**CONTEXT, "pools": pools}))


def test_a_pool_that_fits_none_of_its_instance_types_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        _plan({"large": {"vcpus": 16, "memoryMiB": 131072, "instanceTypes": ["r6i.2xlarge"]}})
    message = str(error.value)
    assert message.startswith("pools.large: 16 vCPUs and 131072 MiB fit none of its instance types")
    assert "r6i.2xlarge: 8 vCPUs, 63848 MiB usable" in message and "choose a larger type" in message
    # The full 64 GiB of an r6i.2xlarge is not there for a job: the OS and the ECS agent keep some.
    with pytest.raises(ConfigError, match="fit none"):
        _plan({"large": {"vcpus": 8, "memoryMiB": 65536, "instanceTypes": ["r6i.2xlarge"]}})
    assert _plan({"large": {"vcpus": 8, "memoryMiB": 60000, "instanceTypes": ["r6i.2xlarge"]}}).warnings == ()
    with pytest.raises(ConfigError, match=r"pools.gpu: 4 vCPUs, 15000 MiB and 1 GPU fit none"):
        _plan({"gpu": {"vcpus": 4, "memoryMiB": 15000, "gpus": 1, "instanceTypes": ["m6i.4xlarge"]}})
    # A family lets Batch choose the size; a type the table does not know is not checked.
    assert _plan({"large": {"vcpus": 16, "memoryMiB": 100000, "instanceTypes": ["r6i"]}}).warnings == ()
    (warning,) = _plan(
        {"huge": {"vcpus": 64, "memoryMiB": 900000, "instanceTypes": ["x2idn.16xlarge"]}}
    ).warnings
    assert warning.startswith("pools.huge: its instance types ['x2idn.16xlarge'] are not in")


def test_a_batch_timeout_shorter_than_lifetime_longest_job_and_grace_is_refused() -> None:
    with pytest.raises(ConfigError) as error:
        _plan(
            {"slow": {"workerLifetimeSeconds": 3600, "longestJobSeconds": 7200, "batchTimeoutSeconds": 7200}}
        )
    message = str(error.value)
    assert message.startswith("pools.slow.batchTimeoutSeconds is 7200 s")
    assert (
        f"3600 s) + the longest job (7200 s) + the grace ({GRACE_SECONDS} s) = {10800 + GRACE_SECONDS} s"
        in message
    )
    plan = _plan({"slow": {"workerLifetimeSeconds": 3600, "longestJobSeconds": 7200}})
    assert plan.pools["slow"].batch_timeout_seconds == 10800 + GRACE_SECONDS
    # Without a longestJobSeconds or handler timeouts, a job is taken to last an hour.
    assert _plan({"slow": {"workerLifetimeSeconds": 600}}).pools["slow"].longest_job_seconds == 3600


def test_pool_keys_are_validated_naming_the_pool_and_key() -> None:
    with pytest.raises(
        ConfigError, match=r"pools.gpu: unknown keys \['gpuCount'\]; a pool's keys are \[.*'gpus'"
    ):
        DeploymentConfig.from_mapping({"pools": {"gpu": {"gpuCount": 1}}})
    bad = {
        "vcpus": (0, r"'pools.p.vcpus' must be >= 1"),
        "memoryMiB": ("lots", r"'pools.p.memoryMiB' must be an integer"),
        "spot": ("maybe", r"'pools.p.spot' must be true or false"),
        "rootVolumeGiB": (8, r"pools.p.rootVolumeGiB must be 0 .* or at least 30"),
        "workerPolicies": ([{"actions": ["s3:GetObject"]}], r"pools.p.workerPolicies: every entry"),
        "workerSecrets": ({"OVERSEER_X": "arn"}, r"pools.p.workerSecrets: 'OVERSEER_X'"),
        "workerManagedPolicies": (["read"], r"'pools.p.workerManagedPolicies': 'read' is not"),
        "batchTimeoutSeconds": (10, r"'pools.p.batchTimeoutSeconds' must be >= 60"),
        "handlersModule": ("", r"pools.p.handlersModule must be a non-empty string"),
    }
    for key, (value, message) in bad.items():
        with pytest.raises(ConfigError, match=message):
            DeploymentConfig.from_mapping({"pools": {"p": {key: value}}})
    with pytest.raises(ConfigError, match="'GPU' is not a pool name"):
        DeploymentConfig.from_mapping({"pools": {"GPU": {}}})
    with pytest.raises(ConfigError, match="'g-1' and 'g1' make the same resource names"):
        DeploymentConfig.from_mapping({"pools": {"g-1": {}, "g1": {}}})


def test_pools_fall_back_to_the_top_level_keys() -> None:
    config = DeploymentConfig.from_mapping(
        {**CONTEXT, "workerVcpus": 2, "pools": json.dumps({"default": {"maxWorkers": 3}, "io": {"gpus": 0}})}
    )
    default, io = config.pools["default"], config.pools["io"]
    assert (default.vcpus, default.max_workers, default.backlog_per_worker) == (2, 3, 50)
    assert (io.vcpus, io.instance_types, io.handlers_module) == (
        2,
        tuple(CONTEXT["instanceTypes"]),
        CONTEXT["handlersModule"],
    )
    assert config.pools_declared and not DeploymentConfig.from_mapping(CONTEXT).pools_declared


def test_a_handler_naming_an_unknown_pool_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"pools: handler 'render' names pool 'nowhere', which does not exist"
    ):
        _plan({"render": {"handlersModule": "tests.infra.data.stray_pool_handlers"}})


def test_a_module_that_cannot_be_imported_needs_its_job_types() -> None:
    module = "tests.infra.data.needs_missing_package_handlers"
    with pytest.raises(ConfigError) as error:
        _plan({"ml": {"handlersModule": module}})
    message = str(error.value)
    assert message.startswith(f"pools.ml: cannot import handlers module '{module}' at synthesis")
    assert "No module named 'overseer_test_package_not_installed'" in message
    assert "pools.ml.jobTypes" in message
    plan = _plan({"ml": {"handlersModule": module, "jobTypes": ["infer"]}})
    assert plan.pools["ml"].types == {"infer"}
    assert plan.routes == {"infer": "ml"}


def test_the_pools_example_of_the_deploy_guide_is_a_valid_configuration() -> None:
    from tests.infra.test_stack import REPO_ROOT

    guide = (REPO_ROOT / "docs" / "deploy.md").read_text()
    example = re.search(r'```json\n"pools": (\{.*?\n\})\n```', guide, re.S)
    assert example is not None
    plan = _plan(json.loads(example.group(1)))
    assert plan.routes == {"embed": "gpu", "train": "gpu"}  # from its jobTypes
    assert plan.pools["gpu"].batch_timeout_seconds == 14400 + 7200 + GRACE_SECONDS


def test_a_lambda_environment_over_4_kb_fails_synthesis(tmp_path: Any) -> None:
    many = {f"p{n}": {"jobTypes": [f"type_{n}_{t}" for t in range(20)]} for n in range(6)}
    app = cdk.App(outdir=str(tmp_path), context={**CONTEXT, "pools": many})
    build_app(app)
    with pytest.raises(
        RuntimeError, match=r"pools: the sweep function's environment would be about \d+ bytes"
    ):
        app.synth()
