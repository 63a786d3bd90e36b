"""Graph outcomes as EventBridge events, so users can react to a graph ending.

One event per graph that ends: source ``overseer``, detail-type ``Graph Finished``,
``Graph Failed`` or ``Graph Aborted``, detail ``GraphRecord.summary()``. A rule such as
``{"source": ["overseer"], "detail-type": ["Graph Failed"]}`` then pages someone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ...errors import StoreError
from ...states import GraphStatus
from ...store import GraphRecord

log = logging.getLogger("overseer.events")

EVENT_SOURCE = "overseer"
DETAIL_TYPES = {
    GraphStatus.FINISHED: "Graph Finished",
    GraphStatus.FAILED: "Graph Failed",
    GraphStatus.ABORTED: "Graph Aborted",
}


def graph_event(record: GraphRecord, bus_name: str) -> dict[str, Any]:
    """The PutEvents entry announcing that ``record``'s graph ended."""
    detail_type = DETAIL_TYPES.get(record.status)
    if detail_type is None:
        raise ValueError(f"graph {record.graph_id!r} has not ended (status {record.status})")
    return {
        "Source": EVENT_SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps(record.summary(), ensure_ascii=False, default=str),
        "Resources": [],
        "EventBusName": bus_name,
    }


class EventBridgePublisher:
    """Puts one event on ``bus_name`` per graph that ends (``graph_done`` is a scheduler callback).

    Example
    -------
    >>> publisher = EventBridgePublisher(clients.client("events"), "overseer")
    >>> Scheduler(store, queue, on_graph_done=publisher.graph_done)
    """

    def __init__(self, client: Any, bus_name: str) -> None:
        self.client = client
        self.bus_name = bus_name

    def graph_done(self, record: GraphRecord) -> None:
        """Publish the graph's outcome. Raises ``StoreError`` when EventBridge refuses it."""
        response = self.client.put_events(Entries=[graph_event(record, self.bus_name)])
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise StoreError(
                f"EventBridge refused the event of graph {record.graph_id!r} on bus {self.bus_name!r}: "
                f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )
        log.info("published %s for graph %s", DETAIL_TYPES[record.status], record.graph_id)
