"""Timestamps are ISO 8601 UTC strings with milliseconds: readable in the console, sortable."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None = None) -> str:
    moment = moment or now()
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_in(seconds: float) -> str:
    return iso(now() + dt.timedelta(seconds=seconds))


def parse(text: str) -> dt.datetime:
    """An ISO 8601 timestamp; one without an offset is taken as UTC."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def seconds_until(text: str | None) -> float:
    if not text:
        return 0.0
    return (parse(text) - now()).total_seconds()
