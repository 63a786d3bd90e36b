"""``run_graph`` on the embedded backend: a whole run on worker processes, and resuming an
interrupted graph."""

from __future__ import annotations

from pathlib import Path

from overseer.backends.embedded import embedded_services
from overseer.graph import parse_graph
from overseer.handlers import load_handlers
from overseer.runner import local_settings, run_graph
from overseer.states import CLAIM
from overseer.store import Fence

HANDLERS = str(Path(__file__).resolve().parents[2] / "examples" / "noop" / "handlers.py")


def test_a_run_finishes_and_an_interrupted_graph_resumes(tmp_path: Path) -> None:
    handlers = load_handlers(HANDLERS)
    jobs = {f"c{i}": {"type": "tiny", "deps": [f"c{i - 1}"] if i else []} for i in range(6)}
    spec = parse_graph({"id": "resume", "jobs": jobs}, handler_types=handlers.keys())
    state = tmp_path / "state"
    # A runner died: the graph exists, its first job is held by a dead worker whose lease ran out.
    services = embedded_services(state, local_settings(state))
    services.store.create_graph(spec, max_attempts={})
    services.store.transition(
        "resume",
        "c0",
        CLAIM,
        fence=Fence(0),
        changes={"attempts": 1, "lease_owner": "dead", "lease_expires_at": "2000-01-01T00:00:00.000Z"},
    )
    result = run_graph(
        spec, HANDLERS, handlers, backend="embedded", workers=2, out=tmp_path / "out", state_dir=state
    )
    assert (result.status, result.created, result.exit_code) == ("finished", False, 0)
    assert result.jobs["c0"]["attempts"] == 2
    assert all(job["attempts"] == 1 for name, job in result.jobs.items() if name != "c0")
    assert len(list((tmp_path / "out").rglob("*.bin"))) == 6
    again = run_graph(spec, HANDLERS, handlers, backend="embedded", workers=1, state_dir=state)
    assert (again.status, again.jobs) == ("finished", result.jobs)


class _FailingScheduler:
    def process_stream_event(self, event: dict[str, object]) -> None:
        raise RuntimeError("the scheduler fails on every batch")


def test_the_local_loop_gives_up_a_failing_batch_and_the_sweep_replays_it(tmp_path: Path) -> None:
    from overseer.backends.embedded import feed_reader
    from overseer.runner import Pump
    from overseer.sweep import sweep

    handlers = load_handlers(HANDLERS)
    state = tmp_path / "state"
    services = embedded_services(state, local_settings(state))
    spec = parse_graph({"id": "given-up", "jobs": {"a": {"type": "tiny"}}}, handler_types=handlers.keys())
    services.store.create_graph(spec, max_attempts={})
    pump = Pump(
        services,
        feed_reader(state),
        scheduler=_FailingScheduler(),
        skip_failed_batches=True,
        wait=lambda _: False,
    )
    handled = pump.feed()  # every attempt fails: the batch is given up on, not raised
    assert handled > 0
    assert services.stream_failures is not None
    [noted] = services.stream_failures.receive()
    assert noted.size == handled
    report = sweep(services)
    assert (report.stream_batches_replayed, report.stream_records_replayed) == (1, handled)
    assert services.stream_failures.receive() == []
