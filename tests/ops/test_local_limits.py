"""``overseer local up --limit geo_api=1``: a local stack with a concurrency limit. Its jobs
wait for a slot outside the queue, ``overseer status`` shows the limit (running, waiting,
holders) and the jobs waiting for it, and a graph naming a limit the stack does not
configure is refused. ``overseer status --api`` shows the deployed stack's limits
(``GET /limits``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from overseer import timeutil
from overseer.backends.embedded import embedded_services
from overseer.cli import main
from overseer.config import Settings
from overseer.limits import Admission, Holder
from overseer.states import LIMIT_WAIT
from overseer.store import Fence
from tests.api_server import SIGNING_ENV, signed_api
from tests.ops.conftest import start_stack, stop_stack

HANDLERS = """
import time


def hold(job):
    time.sleep(1.0)


HANDLERS = {"hold": hold, "hold_by_spec": {"process": hold, "limit": "geo_api"}}
"""
GRAPH = {"id": "geo", "jobs": {f"g{i}": {"type": "hold", "limit": "geo_api"} for i in range(3)}}


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_local_stack_runs_one_job_holding_the_limit_at_a_time(tmp_path: Path) -> None:
    handlers = tmp_path / "geo_handlers.py"
    handlers.write_text(HANDLERS)
    stack = start_stack(tmp_path, tmp_path / "state", handlers, workers=2, args=["--limit", "geo_api=1"])
    try:
        assert stack.info()["limits"] == {"geo_api": 1}
        (tmp_path / "geo.json").write_text(json.dumps(GRAPH))
        stack.cli("submit", str(tmp_path / "geo.json"))

        seen: dict[str, Any] = {}

        def one_runs_others_wait() -> bool:
            status = json.loads(stack.cli("status", "geo", "--json").stdout)
            limit = status["limits"]["geo_api"]
            waiting = {
                n: j["waiting_for_limit"] for n, j in status["jobs"].items() if "waiting_for_limit" in j
            }
            if limit["running"] == 1 and limit["waiting"] >= 1 and waiting:
                seen.update(limit=limit, waiting=waiting, jobs=status["jobs"])
                return True
            return False

        stack.wait_for(one_runs_others_wait, timeout=20, what="a job holding the limit and one waiting")
        assert seen["limit"]["size"] == 1
        (holder,) = seen["limit"]["holders"]
        assert holder in {f"geo/g{i}" for i in range(3)}
        assert {w["limit"] for w in seen["waiting"].values()} == {"geo_api"}
        assert all(seen["jobs"][name]["status"] == "ready" for name in seen["waiting"])

        # The human view: the limit's line and the jobs waiting for it.
        def shown_waiting() -> str | None:
            text = flat(stack.cli("status", "geo").output)
            return text if "(waiting for geo_api)" in text else None

        text = stack.wait_for(shown_waiting, timeout=10, what="a job shown waiting for geo_api")
        assert "ready (waiting for geo_api)" in text
        assert "limit geo_api: running" in text

        stack.cli("status", "geo", "--watch", "--interval", "0.2")
        done = json.loads(stack.cli("status", "geo", "--json").stdout)
        assert {job["status"] for job in done["jobs"].values()} == {"finished"}
        assert done["limits"]["geo_api"] == {"size": 1, "running": 0, "holders": [], "waiting": 0}
        assert "limit geo_api: running 0 of 1, waiting 0" in flat(stack.cli("status", "geo").output)

        # A limit the stack does not configure is refused at submission, naming its limits.
        (tmp_path / "other.json").write_text(
            json.dumps({"id": "other", "jobs": {"a": {"type": "hold", "limit": "other_api"}}})
        )
        refused = flat(stack.cli("submit", str(tmp_path / "other.json"), expect=2).output)
        assert "job(s) ['a'] hold the concurrency limit(s) ['other_api'], which are not configured" in refused
        assert "limits: ['geo_api']" in refused
    finally:
        assert stop_stack(stack) == 0


def test_local_up_refuses_a_limit_not_given_and_a_bad_flag(tmp_path: Path) -> None:
    handlers = tmp_path / "geo_handlers.py"
    handlers.write_text(HANDLERS)
    state = str(tmp_path / "state")

    def up(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            main, ["local", "up", "--state-dir", state, "--handlers", str(handlers), *args]
        )
        return result.exit_code, flat(result.output)

    code, output = up()
    assert code == 2
    assert "handler 'hold_by_spec' holds the concurrency limit 'geo_api'" in output
    assert "pass --limit geo_api=N" in output
    code, output = up("--limit", "x")
    assert code == 2
    assert "Invalid value for '--limit': --limit takes NAME=SIZE, such as geo_api=5, got 'x'" in output
    code, output = up("--limit", "geo_api=1", "--limit", "geo_api=2")
    assert code == 2
    assert "limit 'geo_api' is given twice" in output
    assert not (tmp_path / "state" / "local.json").exists()


@pytest.fixture
def limited_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """The API's code on the embedded backend, with the limit geo_api=2 configured."""
    state = tmp_path / "remote-state"
    for name, value in {
        "OVERSEER_BACKEND": "embedded",
        "OVERSEER_STATE_DIR": str(state),
        "OVERSEER_EVENT_BUS": "",
        "OVERSEER_LIMITS": json.dumps({"geo_api": 2}),
        **SIGNING_ENV,
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with signed_api() as (url, _signatures):
        yield url, state


def test_status_through_the_api_shows_the_limits(limited_api: tuple[str, Path], tmp_path: Path) -> None:
    url, state = limited_api
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, [*args, "--api", url], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    (tmp_path / "geo.json").write_text(json.dumps(GRAPH))
    cli("submit", str(tmp_path / "geo.json"))
    # What workers would write: g0 holds a slot, g1 waits for one.
    store = embedded_services(state, Settings(backend="embedded", state_dir=str(state))).store
    holder = Holder("worker-1", 1, timeutil.iso_in(60))
    assert store.acquire_slot("geo_api", 2, "geo/g0", holder) == Admission.HELD
    parked = store.transition(
        "geo",
        "g1",
        LIMIT_WAIT,
        fence=Fence(0),
        changes={"limit_wait": "geo_api", "limit_since": timeutil.iso()},
    )
    assert parked is not None

    status = json.loads(cli("status", "geo", "--json"))
    assert status["limits"] == {"geo_api": {"size": 2, "running": 1, "holders": ["geo/g0"], "waiting": 1}}
    assert status["jobs"]["g1"]["waiting_for_limit"]["limit"] == "geo_api"
    text = flat(cli("status", "geo"))
    assert "limit geo_api: running 1 of 2, waiting 1 (held by geo/g0)" in text
    assert "ready (waiting for geo_api)" in text
