"""Concurrency limits in the stack (``overseer.limits``): cdk.json's ``limits`` read and
checked, given to the processes that use them, the grants the slots and wake-ups need, and
the dashboard's row.

One more synthesis: the pools stack of test_pools.py (default, gpu, etl) with
``limits: {"geo_api": 2}`` (``limited``), so that every pool's workers are seen; it is
compared with the same stack without limits (``pools``). The configuration errors need no
synthesis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("aws_cdk", reason="the infra tests need the infra extra (aws-cdk-lib)")

import aws_cdk as cdk

from infra.app import build_app
from infra.config import ConfigError, DeploymentConfig
from infra.pool_plan import plan_pools
from overseer.config import Settings
from overseer.limits import parse_limits
from tests.infra.test_pools import POOLS_CONTEXT, _as_text, _definition, _env, _lambda_env
from tests.infra.test_stack import CONTEXT, Synthesis, _actions, _statements, _synthesise

pytestmark = pytest.mark.infra

LIMITS = {"geo_api": 2}
LIMITS_CONTEXT: dict[str, Any] = {**POOLS_CONTEXT, "limits": LIMITS}
LIMITED_HANDLERS = "tests.infra.data.limited_handlers"  # geocode holds geo_api, enrich crm_api


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesis]:
    """The pools stack with ``limits: {"geo_api": 2}``."""
    yield _synthesise(tmp_path_factory.mktemp("cdk.out.limits"), LIMITS_CONTEXT)


def _functions(synth: Synthesis) -> dict[str, Any]:
    stack = synth.stack
    return {
        "api": stack.api.function,
        "trigger": stack.triggers.function,
        "scheduler": stack.scheduler.function,
        "sweep": stack.sweep.function,
    }


def _arn(synth: Synthesis, construct: Any) -> dict[str, Any]:
    return {"Fn::GetAtt": [synth.logical_id(construct), "Arn"]}


def _granted(synth: Synthesis, role: Any, resource: Any) -> set[str]:
    """The actions ``role`` may do on ``resource`` (a CloudFormation value)."""
    return _actions(
        [
            s
            for s in _statements(synth, synth.logical_id(role))
            if resource in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
        ]
    )


def _sweep_index(synth: Synthesis) -> dict[str, Any]:
    jobs = synth.stack.tables.jobs_table
    return {"Fn::Join": ["", [_arn(synth, jobs), f"/index/{synth.stack.tables.SWEEP_INDEX}"]]}


def _widgets(synth: Synthesis) -> dict[str, dict[str, Any]]:
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    body = json.loads(_as_text(dashboard["Properties"]["DashboardBody"]))
    return {w["properties"].get("title", ""): w for w in body["widgets"]}


# --- the synthesised stack -----------------------------------------------------------------


def test_the_processes_that_use_limits_get_them_as_compact_json(limited: Synthesis) -> None:
    functions = {name: _lambda_env(limited, function) for name, function in _functions(limited).items()}
    workers = {name: _env(_definition(limited, name)) for name in limited.stack.pools}
    assert sorted(workers) == ["default", "etl", "gpu"]
    # The API and the trigger refuse a graph naming an unknown limit, the sweep wakes waiters,
    # every pool's workers take slots; the scheduler sends the limit stored on each job.
    for process, env in {**functions, **{f"{name} worker": env for name, env in workers.items()}}.items():
        if process == "scheduler":
            assert "OVERSEER_LIMITS" not in env
            continue
        assert env["OVERSEER_LIMITS"] == '{"geo_api":2}', process
        # As the engine reads it.
        settings = Settings.from_env(environ={"OVERSEER_LIMITS": env["OVERSEER_LIMITS"]})
        assert parse_limits(settings.limits) == LIMITS


def test_the_limits_are_an_output_for_the_cli(limited: Synthesis, synth: Synthesis) -> None:
    """`overseer submit --stack NAME` refuses a graph naming a limit the stack lacks."""
    assert limited.template.to_json()["Outputs"]["Limits"]["Value"] == '{"geo_api":2}'
    assert "Limits" not in synth.template.to_json()["Outputs"]


def test_a_stack_without_limits_has_none_of_them(synth: Synthesis, pools: Synthesis) -> None:
    assert DeploymentConfig.from_mapping(CONTEXT).limits == {}
    for synthesis in (synth, pools):
        for function in _functions(synthesis).values():
            assert "OVERSEER_LIMITS" not in _lambda_env(synthesis, function)
        for name in synthesis.stack.pools:
            assert "OVERSEER_LIMITS" not in _env(_definition(synthesis, name))
        assert not [title for title in _widgets(synthesis) if title.startswith("Limit")]
        for workers in synthesis.stack.pools.values():
            role = workers.job_role
            assert _granted(synthesis, role, _arn(synthesis, synthesis.stack.tables.graphs_table)) == {
                "dynamodb:UpdateItem"
            }
            assert not _granted(synthesis, role, _sweep_index(synthesis))


def test_limits_change_only_the_limits_processes_worker_grants_and_dashboard(
    limited: Synthesis, pools: Synthesis
) -> None:
    """As `cdk diff` would show adding limits to the pools stack."""
    changed_functions = {
        pools.logical_id(f) for name, f in _functions(pools).items() if name in ("api", "trigger", "sweep")
    }
    worker_policies = {
        policy_id
        for policy_id, policy in pools.of_type("AWS::IAM::Policy").items()
        for workers in pools.stack.pools.values()
        if {"Ref": pools.logical_id(workers.job_role)} in policy["Properties"]["Roles"]
    }
    # The API's role: GET /limits counts each limit's waiting jobs (Query of the sweep index).
    api_policies = {
        policy_id
        for policy_id, policy in pools.of_type("AWS::IAM::Policy").items()
        if {"Ref": pools.logical_id(pools.stack.api.function.role)} in policy["Properties"]["Roles"]
    }
    assert set(limited.resources) == set(pools.resources)
    changed = {k for k, resource in pools.resources.items() if limited.resources[k] != resource}
    assert changed == {
        *changed_functions,
        *(pools.logical_id(w.job_definition) for w in pools.stack.pools.values()),
        *worker_policies,
        *api_policies,
        pools.logical_id(pools.stack.monitoring.dashboard),
    }
    # The functions and job definitions: one variable more, nothing else.
    for logical_id in changed_functions:
        before = pools.resources[logical_id]["Properties"]["Environment"]["Variables"]
        after = dict(limited.resources[logical_id]["Properties"]["Environment"]["Variables"])
        assert after.pop("OVERSEER_LIMITS") == '{"geo_api":2}' and after == before


def test_every_worker_role_may_read_slots_and_find_the_oldest_waiter(limited: Synthesis) -> None:
    stack = limited.stack
    graphs, jobs = _arn(limited, stack.tables.graphs_table), _arn(limited, stack.tables.jobs_table)
    for name, workers in stack.pools.items():
        role = workers.job_role
        # Slots: conditional UpdateItems, a consistent GetItem when the limit is full.
        assert _granted(limited, role, graphs) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}, name
        # A slot given back wakes the oldest waiter: the sweep index's limit#<name> partition,
        # the jobs it names, the wake-up itself. Still no put, delete or scan.
        assert _granted(limited, role, _sweep_index(limited)) == {"dynamodb:Query"}, name
        assert {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"} <= _granted(limited, role, jobs), name
        assert not {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Scan"} & _actions(
            _statements(limited, limited.logical_id(role))
        ), name
    # The sweep had all it needs already: the slots, and the waiters counted and woken.
    sweep = stack.sweep.function.role
    assert "dynamodb:GetItem" in _granted(limited, sweep, graphs)
    assert "dynamodb:Query" in _granted(limited, sweep, _sweep_index(limited))
    assert {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"} <= _granted(limited, sweep, jobs)


def test_the_dashboard_shows_each_limits_running_jobs_against_its_size_and_its_waiters(
    limited: Synthesis,
) -> None:
    widget = _widgets(limited)["Limit geo_api: jobs running / waiting"]["properties"]
    metrics = {tuple(m[:-1]) if isinstance(m[-1], dict) else tuple(m): m for m in widget["metrics"]}
    # As functions/sweep.py emits them: namespace Overseer, the sweep's service, Limit.
    expected = {
        name: ("Overseer", name, "Limit", "geo_api", "service", "overseer-sweep")
        for name in ("LimitRunning", "LimitWaiting")
    }
    assert set(expected.values()) == set(metrics)
    assert metrics[expected["LimitRunning"]][-1].get("yAxis", "left") == "left"
    assert metrics[expected["LimitWaiting"]][-1]["yAxis"] == "right"
    assert widget["annotations"]["horizontal"] == [{"value": 2, "label": "size 2", "yAxis": "left"}]


def test_the_limits_stack_has_no_nag_finding_or_lint_error(limited: Synthesis) -> None:
    from cfnlint.api import ManualArgs, lint_file

    report = limited.outdir / "validation-report.json"
    findings = []
    if report.exists():
        for plugin in json.loads(report.read_text())["pluginReports"]:
            findings += [v["ruleName"] for v in plugin["violations"]]
    assert findings == [] and limited.validation_error is None, findings
    matches = lint_file(limited.outdir / limited.stack.template_file, ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


# --- configuration errors (no synthesis) ---------------------------------------------------


def test_limits_are_read_from_cdk_json_or_the_command_line() -> None:
    assert DeploymentConfig.from_mapping({**CONTEXT, "limits": LIMITS}).limits == LIMITS
    # cdk deploy -c limits='{"geo_api": 2, "crm-api": 1000}'
    given = DeploymentConfig.from_mapping({"limits": '{"geo_api": 2, "crm-api": 1000}'})
    assert given.limits == {"geo_api": 2, "crm-api": 1000}
    assert DeploymentConfig.from_mapping({"limits": None}).limits == {}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"geo api": 2},
            "context 'limits': a limit's name must be a limit name such as 'geo_api' (a letter, then "
            "letters, digits, _ or -), got 'geo api'",
        ),
        ({"2geo": 2}, "got '2geo'"),
        ({"geo_api": 0}, "context 'limits': limit 'geo_api' must be a whole number from 1 to 1000, got 0"),
        ({"geo_api": 1001}, "limit 'geo_api' must be a whole number from 1 to 1000, got 1001"),
        ({"geo_api": "5"}, "limit 'geo_api' must be a whole number from 1 to 1000, got '5'"),
        ({"geo_api": True}, "limit 'geo_api' must be a whole number from 1 to 1000, got True"),
        (["geo_api"], "context 'limits' must be an object {limit name: size}, got ['geo_api']"),
        ("geo_api=5", "context 'limits' must be a JSON object, got 'geo_api=5'"),
    ],
)
def test_a_bad_limit_fails_synthesis_naming_the_entry(limits: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        DeploymentConfig.from_mapping({**CONTEXT, "limits": limits})
    assert message in str(error.value)


def _plan(**context: Any) -> Any:
    return plan_pools(DeploymentConfig.from_mapping({**CONTEXT, **context}))


def test_a_handler_spec_naming_a_limit_the_stack_does_not_configure_fails_synthesis() -> None:
    with pytest.raises(ConfigError) as error:
        _plan(handlersModule=LIMITED_HANDLERS, limits={"geo_api": 2})
    assert str(error.value) == (
        f"limits: handler 'enrich' of the default pool ({LIMITED_HANDLERS}) holds the concurrency "
        "limit 'crm_api', not configured in cdk.json 'limits' (configured: ['geo_api']): add it with "
        'a size, e.g. "limits": {"crm_api": 5}, or take it out of the handler spec; otherwise each '
        "of its jobs fails when a worker takes it"
    )
    # No limits at all: both handlers are named.
    with pytest.raises(ConfigError, match=r"handler 'geocode' .* 'geo_api'; handler 'enrich' .* 'crm_api'"):
        _plan(handlersModule=LIMITED_HANDLERS)
    # A pool's handlers are checked too, the message naming the pool.
    with pytest.raises(ConfigError, match=r"handler 'geocode' of pools.geo \(tests.infra.data.limited"):
        _plan(pools={"geo": {"handlersModule": LIMITED_HANDLERS}}, limits={"crm_api": 1})
    plan = _plan(handlersModule=LIMITED_HANDLERS, limits={"geo_api": 2, "crm_api": 1})
    assert plan.limits_warning is None
    assert _plan(pools={"geo": {"handlersModule": LIMITED_HANDLERS}}, limits={"geo_api": 2, "crm_api": 1})


def test_a_stack_without_pools_whose_handlers_cannot_be_imported_warns_that_limits_are_unchecked() -> None:
    # Without pools, nothing else needs the module at synthesis: a warning, not an error.
    plan = _plan(handlersModule="tests.infra.data.needs_missing_package_handlers")
    assert plan.limits_warning is not None
    assert plan.limits_warning.startswith(
        "cannot import handlers module 'tests.infra.data.needs_missing_package_handlers' at synthesis"
    )
    assert plan.limits_warning.endswith(
        "the concurrency limits its handler specs name are not checked against cdk.json 'limits'"
    )
    assert _plan().limits_warning is None  # cdk.json's module imports


def test_limits_that_take_a_lambda_environment_over_4_kb_fail_synthesis(tmp_path: Any) -> None:
    many = {f"limit_{n:02d}_{'x' * 50}": 5 for n in range(50)}
    app = cdk.App(outdir=str(tmp_path), context={**CONTEXT, "limits": many})
    build_app(app)
    with pytest.raises(
        RuntimeError,
        match=r"limits: the (api|trigger|sweep) function's environment would be about \d+ bytes, over "
        r"Lambda's 4096 \(OVERSEER_LIMITS every concurrency limit\): use fewer concurrency limits, or "
        "shorter names",
    ):
        app.synth()
