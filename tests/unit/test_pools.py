"""Routing jobs to worker pools: the rules, the ``--workers`` flag, and their error messages."""

from __future__ import annotations

import json

import pytest

from overseer.config import Settings
from overseer.errors import HandlersModuleError, InvalidGraph
from overseer.graph import parse_graph
from overseer.handlers import to_spec
from overseer.pools import Pools, parse_worker_counts, plan_local_run, routes_from_manifests


def test_a_stack_without_pools_has_the_default_pool_only_and_checks_no_types() -> None:
    pools = Pools.from_settings(Settings(queue_url="q", max_workers=3, jobs_per_worker=7))
    assert pools.names == ["default"]
    assert (pools.default.queue_url, pools.default.max_workers, pools.default.backlog_per_worker) == (
        "q",
        3,
        7,
    )
    spec = pools.assign(parse_graph({"id": "g", "jobs": {"anything": []}}))
    assert spec.jobs["anything"].pool is None
    with pytest.raises(
        InvalidGraph, match=r"asks for pool 'gpu', which does not exist; pools: \['default'\]"
    ):
        pools.assign(parse_graph({"id": "g", "jobs": {"a": {"pool": "gpu"}}}))


def test_the_graph_wins_then_the_route_then_the_pool_serving_the_type() -> None:
    settings = Settings(
        pools=json.dumps(
            {
                "pools": {"default": {"types": ["a", "b"]}, "gpu": {"types": ["a", "train"]}, "big": {}},
                "routes": {"b": "big"},
            }
        )
    )
    pools = Pools.from_settings(settings)
    assert pools.route("a") == "default"  # served by default and gpu: the default wins
    assert pools.route("a", "gpu") == "gpu"  # the graph's pool
    assert pools.route("b") == "big"  # the route (a handler spec's pool)
    assert pools.route("train") == "gpu"  # the one pool serving it
    assert Pools.from_settings(Settings(pools=pools.to_json())) == pools  # what a stack writes reads back


def test_manifests_make_routes_and_ambiguities_are_named() -> None:
    assert routes_from_manifests({"default": {"a": None}, "gpu": {"train": None, "a": None}}) == {
        "train": "gpu"
    }
    assert routes_from_manifests({"default": {"a": None, "j": "big"}, "big": {"j": None}}) == {"j": "big"}
    with pytest.raises(ValueError, match=r"job type 'x' is served by pools \['gpu', 'big'\]"):
        routes_from_manifests({"default": {}, "gpu": {"x": None}, "big": {"x": None}})
    with pytest.raises(ValueError, match=r"handler 'a' names pool 'tpu', which does not exist"):
        routes_from_manifests({"default": {"a": "tpu"}})
    with pytest.raises(ValueError, match=r"handler 'a' names pool 'gpu', whose handlers do not serve it"):
        routes_from_manifests({"default": {"a": "gpu"}, "gpu": {"b": None}})


@pytest.mark.parametrize(
    ("text", "counts"),
    [("4", {"default": 4}), ("default=4,gpu=1", {"default": 4, "gpu": 1}), ("gpu=2", {"gpu": 2})],
)
def test_the_workers_flag(text: str, counts: dict[str, int]) -> None:
    assert parse_worker_counts(text) == counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default=x", "expected a number or POOL=N"),
        ("GPU=1", "expected a number or POOL=N"),
        ("gpu=1,gpu=2", "pool 'gpu' is given twice"),
        ("0", "at least one worker"),
        ("default=65", "at most 64"),
    ],
)
def test_a_bad_workers_flag_says_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_worker_counts(text)


def test_a_local_run_refuses_a_job_whose_pool_has_no_workers() -> None:
    handlers = {"fetch": None, "train": "gpu"}  # type -> the pool its spec names
    spec = parse_graph(
        {"id": "g", "jobs": {"fetch": [], "train": ["fetch"], "big": {"type": "fetch", "pool": "large"}}}
    )
    pools, routed = plan_local_run(spec, {"default": 2, "gpu": 1, "large": 1}, handlers)
    assert {n: j.pool for n, j in routed.jobs.items()} == {"fetch": None, "train": "gpu", "big": "large"}
    assert pools.names == ["default", "gpu", "large"]
    with pytest.raises(
        InvalidGraph, match=r"job 'train' runs on pool 'gpu' \(its handler's\), which has no workers here"
    ):
        plan_local_run(spec, {"default": 2, "large": 1}, handlers)
    with pytest.raises(
        InvalidGraph,
        match=r"job 'fetch' runs on pool 'default'.*no workers in this run \(--workers gpu=1,large=1\)",
    ):
        plan_local_run(spec, {"gpu": 1, "large": 1}, handlers)


def test_a_handler_spec_names_its_pool() -> None:
    assert to_spec("train", {"process": print, "pool": "gpu"}).pool == "gpu"
    with pytest.raises(HandlersModuleError, match="handler 'train' pool must be a pool name"):
        to_spec("train", {"process": print, "pool": "GPU!"})
