"""``functions.trigger.handler``: an EventBridge rule's target that starts a graph template.

Accepted events (``args`` is optional in each):

1. The constant input of a rule target::

       {"template": "daily-report", "args": {"company_id": 42}}

   optionally with the envelope the stack's rules add (``infra/triggers.py``)::

       {"template": ..., "args": ..., "trigger": "nightly",
        "event": {"id": ..., "time": "2026-11-26T02:00:00Z", "source": ..., "detail": ...}}

2. An EventBridge event whose ``detail`` names the template::

       {"source": "my.app", "detail-type": "Report Wanted", "time": "2026-11-26T02:00:00Z",
        "detail": {"template": "daily-report", "args": {"company_id": 42}}}

``args.company_ids: [1, 2, ...]`` starts one graph per company, each with ``company_id``
set. Every graph gets ``date``, the UTC date of the event's ``time`` (the scheduled time
of a cron rule), unless the args set it; with a template id such as
``daily-report-{date}-company-{company_id}`` a redelivered event starts nothing new.

**The event's data** (an event-pattern trigger, ``infra/triggers.py``): the input also
carries ``"eventArgs": {ARG: PATH}``, each ``PATH`` (``$.detail.object.key``) read from the
``event`` envelope into the graph's args (by default ``{"detail": "$.detail"}``: the whole
detail), and ``"graphIdFrom"``: ``"event"`` (the default: the event's id) or the name of an
arg, appended to each graph id (``operations.graph_id_with``), so two uploads on one day
are two graphs and an event delivered twice is one.

Returns ``{"template": NAME, "graphs": [{"graph_id", "status", "created"}, ...],
"created": n}``. An invalid event, template or graph raises (nothing is written), so the
event lands in the rule's dead-letter queue after EventBridge's retries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import Lazy
from overseer import operations
from overseer.backends import build_services
from overseer.errors import InvalidTriggerEvent

logger = Logger()
tracer = Tracer()

_services = Lazy(build_services)


def reset() -> None:
    """Forget the clients built at cold start (tests use a fresh environment)."""
    _services.reset()


def _event_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _at_path(envelope: Mapping[str, Any], path: str, arg: str) -> Any:
    """The value at ``path`` (``$.detail.object.key``) in the event envelope."""
    value: Any = envelope
    for part in path.removeprefix("$.").split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise InvalidTriggerEvent(f"the event has nothing at {path} (eventArgs {arg!r} of the trigger)")
        value = value[part]
    return value


def event_data(event: Mapping[str, Any], args: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``args`` with the trigger's ``eventArgs`` read from the event envelope, and what each
    graph id ends with (``graphIdFrom``: the event's id, or one of the args), if anything."""
    envelope = event.get("event") if isinstance(event.get("event"), Mapping) else {}
    paths = event.get("eventArgs") or {}
    if not isinstance(paths, Mapping):
        raise InvalidTriggerEvent(f"'eventArgs' must map arg names to paths, got {paths!r:.80}")
    args = {
        **args,
        **{str(arg): _at_path(envelope or {}, str(path), str(arg)) for arg, path in paths.items()},
    }
    source = event.get("graphIdFrom")
    if not source:
        return args, None
    if source == "event":
        suffix = (envelope or {}).get("id")
        if not isinstance(suffix, str) or not suffix:
            raise InvalidTriggerEvent("graphIdFrom is 'event' but the event carries no id")
        return args, suffix
    if source not in args or args[source] in (None, ""):
        raise InvalidTriggerEvent(f"graphIdFrom names the arg {source!r}, which the event did not give")
    return args, str(args[source])


def parse_trigger_event(event: Mapping[str, Any]) -> tuple[str, dict[str, Any], dt.datetime | None]:
    """(template name, args, event time) from one of the accepted event shapes."""
    envelope = event.get("event") if isinstance(event.get("event"), Mapping) else {}
    source: Mapping[str, Any] = event
    if "template" not in event:
        detail = event.get("detail") or (envelope or {}).get("detail")
        if not isinstance(detail, Mapping) or "template" not in detail:
            raise InvalidTriggerEvent(
                'the event names no template: send {"template": NAME, "args": {...}} as the rule '
                "target's input, or put them in the event's detail"
            )
        source = detail
    name, args = source["template"], source.get("args") or {}
    if not isinstance(name, str) or not name:
        raise InvalidTriggerEvent(f"'template' must be a template name, got {name!r}")
    if not isinstance(args, Mapping):
        raise InvalidTriggerEvent(f"'args' must be an object, got {type(args).__name__}")
    moment = _event_time(event.get("time")) or _event_time((envelope or {}).get("time"))
    return name, dict(args), moment


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    name, args, moment = parse_trigger_event(event)
    args, suffix = event_data(event, args)
    started = operations.trigger_template(_services.get(), name, args, event_time=moment, id_suffix=suffix)
    graphs = [{"graph_id": g.graph_id, "status": str(g.status), "created": created} for g, created in started]
    summary = {"template": name, "graphs": graphs, "created": sum(created for _, created in started)}
    logger.info("template triggered", extra={"template": name, "graphs": len(graphs)})
    return summary
