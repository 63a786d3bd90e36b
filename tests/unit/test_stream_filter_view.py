"""The embedded feed decides whether to keep a write's record from the attributes the
filter patterns look at: it must decide as the full record would."""

from __future__ import annotations

import itertools

from overseer.backends.embedded.feed import image
from overseer.stream import passes_stream_filters, write_passes_stream_filters

STATUSES = [None, "waiting", "ready", "running", "finished", "failed", "aborted"]
RELEASED_BY = [None, "submission", "rerun", "expansion", "limit", "scheduler"]


def full_record(keys, new, old):
    body = {"Keys": {k: {"S": v} for k, v in keys.items()}, "NewImage": image(new)}
    if old is not None:
        body["OldImage"] = image(old)
    return {"eventName": "INSERT" if old is None else "MODIFY", "dynamodb": body}


def test_the_light_view_decides_as_the_full_record_for_every_status_change():
    decided = set()
    for entry, before, after, released_by, waiting in itertools.product(
        ["job#a", "in#a#00000", "exp#a"], STATUSES, STATUSES[1:], RELEASED_BY, [None, "geo_api"]
    ):
        keys = {"graph_id": "g", "entry": entry}
        new = {"graph_id": "g", "entry": entry, "status": after, "attempts": 1, "finished_deps": [1, 2]}
        new |= {k: v for k, v in (("released_by", released_by), ("limit_wait", waiting)) if v}
        old = None if before is None else {"graph_id": "g", "entry": entry, "status": before, "attempts": 0}
        expected = passes_stream_filters(full_record(keys, new, old))
        assert write_passes_stream_filters(keys, new, old) == expected, (
            entry,
            before,
            after,
            released_by,
            waiting,
        )
        decided.add(expected)
    assert decided == {True, False}
