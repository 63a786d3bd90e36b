"""Listing graphs on both backends: newest first, by status and time range, paged."""

from __future__ import annotations

import time

from overseer import timeutil
from overseer.operations import cancel_graph
from overseer.states import GraphStatus

from .driver import Backend


def test_graphs_are_listed_newest_first_filtered_and_paged(backend: Backend) -> None:
    start = timeutil.iso()
    ids = [backend.gid(f"listed-{n}") for n in range(3)]
    for graph_id in ids:
        backend.submit({"id": graph_id, "jobs": {"a": []}})
        time.sleep(0.01)  # distinct submission times (milliseconds)
    cancel_graph(backend.services, ids[1])  # the middle one ends aborted
    store = backend.store

    def listed(**options: object) -> list[str]:
        graphs, _ = store.list_graphs(since=start, **options)
        return [g.graph_id for g in graphs if g.graph_id in ids]

    assert listed() == ids[::-1]
    assert listed(status=GraphStatus.ABORTED) == [ids[1]]
    assert listed(status=GraphStatus.RUNNING) == [ids[2], ids[0]]
    # Paged: two, then the rest from where the first page stopped.
    first, after = store.list_graphs(since=start, limit=2)
    assert [g.graph_id for g in first] == ids[:0:-1] and after is not None
    rest, _ = store.list_graphs(since=start, limit=2, after=after)
    assert [g.graph_id for g in rest][:1] == [ids[0]]
    # A time range: only what was submitted before the last one.
    last = store.get_graph(ids[2])
    assert listed(until=last.created_at) == [ids[1], ids[0]]
