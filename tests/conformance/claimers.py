"""Worker-process bodies for the concurrency test (importable by spawned processes)."""

from __future__ import annotations

from pathlib import Path

from overseer.states import CLAIM, FINISH
from overseer.store import Fence


def claim_all(directory: str, owner: str) -> list[str]:
    """Take messages until the queue is empty; claim, finish, and count each job in the join."""
    from overseer.backends.embedded import embedded_services

    services = embedded_services(Path(directory))
    store, queue = services.store, services.queue
    claimed: list[str] = []
    empty = 0
    while empty < 3:
        deliveries = queue.receive(max_messages=3, wait_seconds=0, visibility_seconds=60)
        if not deliveries:
            empty += 1
            continue
        empty = 0
        for d in deliveries:
            m = d.message
            job = store.transition(
                m.graph_id,
                m.job_name,
                CLAIM,
                fence=Fence(m.attempts),
                changes={"attempts": 1, "lease_owner": owner},
            )
            if job is not None:
                claimed.append(m.job_name)
                store.transition(m.graph_id, m.job_name, FINISH, fence=Fence(1, owner))
                store.record_finished_dependency(m.graph_id, "join", int(m.job_name[1:]))
                store.add_graph_progress(m.graph_id, {"finished": 1})
            queue.delete([d.receipt])
    return claimed
