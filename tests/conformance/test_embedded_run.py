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
