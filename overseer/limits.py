"""Concurrency limits: at most N jobs holding a named limit run at once, across all workers.

A limit is a name and a size (``geo_api: 5``), configured for a stack (``limits`` in
cdk.json) or a local run (``--limit geo_api=5``), and held by the jobs of a graph that name
it (``limit: geo_api``) or whose handler spec does (``{"process": geocode, "limit":
"geo_api"}``; the graph's wins). The sender of a job's message writes its type and
graph-given limit into it, so a worker knows the limit before it claims the job, without a
read.

**Slots.** Each limit is one item (``#limit#<name>`` in the graphs table; a row of the
``limits`` table locally) whose ``holders`` map job ids to ``{owner, attempt, until}``. A
worker takes a slot before it claims the job, in one conditional write while there is room
(``size(holders) < cap``); when there is none, it reads the item, leaves out the holders
whose lease passed (a killed worker's) and writes the result back on the item's version
(``admit`` decides, the same on both backends). The holder's lease is renewed with the job's
(every lease / 3) and the slot given back when the job's outcome is recorded; every write
on a slot names its owner, so a release or a renewal by a worker that lost it changes
nothing.

**Waiting outside the queue.** A job that finds its limit full is *parked*: it stays
``ready`` with ``limit_wait`` = the limit's name, its message is deleted (no attempt, no
receive counted; the queue's depth, which scales the workers, no longer counts it), and it
moves from the sweep's ``due`` index to the limit's ``limit#<name>`` partition, ordered by
when it first found the limit full. A worker that gives a slot back wakes the oldest waiter
(``wake``): the job loses ``limit_wait`` and is marked ``released_by: limit``, and the
scheduler enqueues it from that record as it does any released job. A woken job that finds
the limit full again (a job that arrived meanwhile took the slot) is parked again in its
old place. A worker that parks a job looks again at once, so a slot given back while it was
parking is not missed; the sweep wakes as many waiters as there are free slots on each run
(after a holder's lease ran out, or a missed wake-up).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from . import timeutil
from .states import LIMIT_WAKE, RELEASED_BY_LIMIT

if TYPE_CHECKING:
    from .graph import GraphSpec
    from .store import JobRecord, JobStore


class HoldsLimit(Protocol):
    """A handler spec as the limits see it (``overseer.handlers.HandlerSpec``, which the
    Lambdas do not ship)."""

    @property
    def limit(self) -> str | None: ...


# A limit's name: it becomes part of index keys, metric dimensions and CLI flags.
LIMIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Each holder adds about 100 bytes to the limit's item (DynamoDB items stop at 400 KB, and a
# write costs a unit per KB of the item): limits are for scarce resources.
MAX_LIMIT = 1000
# The sweep index partition of a limit's waiting jobs (``overseer.items``).
WAIT_PREFIX = "limit#"
# sweep_at of waiting jobs is a full timestamp; every one of them sorts before this.
WAITERS_UNTIL = "9999"


def wait_key(limit: str) -> str:
    return WAIT_PREFIX + limit


def check_name(name: Any, what: str) -> str | None:
    """A problem with ``name`` as a limit's name, or None."""
    if isinstance(name, str) and LIMIT_NAME.match(name):
        return None
    return (
        f"{what} must be a limit name such as 'geo_api' (a letter, then letters, digits, _ or -), "
        f"got {name!r:.80}"
    )


def parse_limits(value: str | Mapping[str, Any] | None) -> dict[str, int]:
    """Limits from JSON (``{"geo_api": 5}``, ``Settings.limits``) or a mapping. Raises
    ``ValueError`` naming what is wrong."""
    if not value:
        return {}
    raw = json.loads(value) if isinstance(value, str) else value
    if not isinstance(raw, Mapping):
        raise ValueError(f"limits must be a mapping of name to size, got {type(raw).__name__}")
    limits: dict[str, int] = {}
    for name, size in raw.items():
        problem = check_name(name, "a limit's name")
        if problem:
            raise ValueError(problem)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_LIMIT:
            raise ValueError(f"limit {name!r} must be a whole number from 1 to {MAX_LIMIT}, got {size!r}")
        limits[str(name)] = size
    return limits


def parse_limit_flags(flags: Iterable[str]) -> dict[str, int]:
    """``--limit geo_api=5`` flags (repeatable) as limits. Raises ``ValueError``."""
    limits: dict[str, Any] = {}
    for flag in flags:
        name, sep, size = flag.partition("=")
        if not sep or not size.strip().isdigit():
            raise ValueError(f"--limit takes NAME=SIZE, such as geo_api=5, got {flag!r}")
        limits[name.strip()] = int(size)
    return parse_limits(limits)


@dataclass(frozen=True)
class Holder:
    """A job holding one of a limit's slots: which worker, for which attempt, until when."""

    owner: str
    attempt: int
    until: str

    def to_item(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_item(cls, value: Mapping[str, Any]) -> Holder:
        return cls(str(value["owner"]), int(value["attempt"]), str(value["until"]))


class Admission(StrEnum):
    HELD = "held"  # the slot is the caller's
    FULL = "full"  # every slot is held by others: wait
    TAKEN = "taken"  # another worker holds this job's attempt (a duplicate message)


def live_holders(holders: Mapping[str, Holder], now: str | None = None) -> dict[str, Holder]:
    """The holders whose lease has not passed."""
    moment = now or timeutil.iso()
    return {job: h for job, h in holders.items() if h.until > moment}


def admit(
    holders: Mapping[str, Holder], cap: int, job: str, holder: Holder, now: str | None = None
) -> tuple[Admission, dict[str, Holder]]:
    """Whether ``holder`` may hold a slot for ``job`` among ``holders``, and the holders to
    write if so (the lapsed ones left out). The same worker asking again renews its slot; a
    newer attempt of the job replaces an older one's slot (that attempt ended)."""
    live = live_holders(holders, now)
    current = live.get(job)
    if current is not None and current.owner != holder.owner and current.attempt >= holder.attempt:
        return Admission.TAKEN, live
    others = {j: h for j, h in live.items() if j != job}
    if current is None and len(others) >= cap:
        return Admission.FULL, live
    return Admission.HELD, {**others, job: holder}


@dataclass(frozen=True)
class LimitState:
    """A limit as ``overseer status`` and the sweep show it."""

    name: str
    size: int
    holders: dict[str, Holder]
    waiting: int

    def summary(self) -> dict[str, Any]:
        live = live_holders(self.holders)
        return {"size": self.size, "running": len(live), "holders": sorted(live), "waiting": self.waiting}


def unconfigured_limits(
    limits: Mapping[str, int], handlers: Mapping[str, HoldsLimit], spec: GraphSpec | None = None
) -> str | None:
    """What holds a concurrency limit that ``limits`` does not give, and the flags to pass;
    None when nothing does. With ``spec``: its jobs (the limit the graph gives each, else its
    handler spec's); without: every handler spec (a local stack runs whatever is submitted).
    The handler specs of children made at run time (``Expand``) are checked when they run."""
    phrases: list[str] = []
    missing: set[str] = set()
    if spec is not None:
        # (limit, the job type whose handler spec names it, or None: the graph) -> jobs
        held: dict[tuple[str, str | None], list[str]] = {}
        for job in spec.jobs.values():
            handler = handlers.get(job.type)
            limit = job.limit or (handler.limit if handler is not None else None)
            if limit is not None and limit not in limits:
                held.setdefault((limit, None if job.limit else job.type), []).append(job.name)
        for (limit, via), names in held.items():
            more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
            who = ", ".join(repr(name) for name in names[:5]) + more
            through = f" of type {via!r} (through its handler spec)" if via else ""
            verb = "holds" if len(names) == 1 else "hold"
            phrases.append(
                f"job{'s' if len(names) > 1 else ''} {who}{through} {verb} the concurrency limit {limit!r}"
            )
            missing.add(limit)
    else:
        for job_type, handler in handlers.items():
            if handler.limit is not None and handler.limit not in limits:
                phrases.append(f"handler {job_type!r} holds the concurrency limit {handler.limit!r}")
                missing.add(handler.limit)
    if not phrases:
        return None
    given = ",".join(f"{name}={size}" for name, size in limits.items()) or "none"
    which = "which is not" if len(missing) == 1 else f"and none of {sorted(missing)} is"
    flags = " ".join(f"--limit {name}=N" for name in sorted(missing))
    return f"{'; '.join(phrases[:5])}, {which} configured here (limits: {given}); pass {flags}"


def limit_states(store: JobStore, limits: Mapping[str, int]) -> list[LimitState]:
    return [
        LimitState(name, size, store.slot_holders(name), store.count_waiting(name))
        for name, size in limits.items()
    ]


def wake(store: JobStore, limit: str, count: int = 1) -> list[JobRecord]:
    """Wake up to ``count`` of the oldest jobs waiting for ``limit``: each loses its
    ``limit_wait`` and the scheduler enqueues it from that record. Returns the jobs woken."""
    woken: list[JobRecord] = []
    start: str | None = None
    while len(woken) < count:
        wanted = count - len(woken) + 2
        page, start = store.sweep_page(wait_key(limit), WAITERS_UNTIL, start=start, limit=wanted)
        for job in page:
            # The index may lag the item: only a job still parked on this limit is woken.
            if job.limit_wait != limit or len(woken) >= count:
                continue
            done = store.transition(
                job.graph_id,
                job.name,
                LIMIT_WAKE,
                changes={"released_by": RELEASED_BY_LIMIT},
                remove=["limit_wait"],
            )
            if done is not None and done.limit_wait is None:
                woken.append(done)
        if start is None:
            break
    return woken
