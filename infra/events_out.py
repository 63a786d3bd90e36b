"""Events out: where the scheduler publishes "Graph Finished" / "Graph Failed" events."""

from __future__ import annotations

from aws_cdk import aws_events as events
from constructs import Construct


class GraphEvents(Construct):
    """The EventBridge bus for graph events: the account's default bus (``bus_name`` empty
    or ``default``; rules on it, including this stack's triggers, can react to graph
    events) or a dedicated bus of that name.

    Attributes
    ----------
    bus:
        The bus (``IEventBus``).
    bus_name:
        The value of ``OVERSEER_EVENT_BUS``.
    """

    SOURCE = "overseer"

    def __init__(self, scope: Construct, construct_id: str, *, bus_name: str = "") -> None:
        super().__init__(scope, construct_id)
        if bus_name in ("", "default"):
            self.bus: events.IEventBus = events.EventBus.from_event_bus_name(self, "Bus", "default")
        else:
            self.bus = events.EventBus(self, "Bus", event_bus_name=bus_name)
        self.bus_name = self.bus.event_bus_name
