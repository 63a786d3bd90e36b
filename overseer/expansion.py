"""Graphs that grow at run time: a job returns ``overseer.Expand`` and gets one child job
per item, and the jobs that depend on it wait for all of them.

How it keeps its promises (a parent run twice, a duplicated message or a replayed stream
record never doubles or mixes children):

* **Committed once, by the parent's finish.** The worker writes the items to the artifact
  store (``_overseer/expansions/<graph>/<job>/attempt-<n>.json``) and then finishes the
  job with the expansion (its type, count, items' SHA-256 and where they are) in one
  atomic write that also adds the children to the graph's ``jobs_total``: the fence lets
  one attempt finish, so the first committed expansion wins, and the graph cannot end
  before the children exist. A rerun of the job keeps the committed expansion.
* **Made by the scheduler, not the worker.** The parent's "finished" record makes the
  scheduler read the committed items and write the children, ``PAGE`` at a time, each
  only if it does not exist (so a replayed record writes nothing twice), for at most its
  time budget; then it records how many exist (``expand_made``, only forward). That write
  is a record of the parent again: the next invocation goes on from there, and a crash
  resumes from the last count. Items files of attempts that did not commit are never read,
  and are deleted once the children exist.
* **Joins wait for the whole tree.** The parent's dependents are released when its tree
  has ended, not at its own end: a child whose tree ended adds its index to a counter item
  of its group of ``GROUP`` siblings (a set, so duplicates count once); the write that
  fills a group adds the group to the parent's top counter item; the write that fills that
  sets the parent's ``expand_done_at``, whose record releases the parent's dependents as
  its end would have. Children may expand again: a child's tree ends when its own
  children's do, so the outer join waits for grandchildren too. Counting in groups keeps
  every write small (about 400 bytes), so 10,000 children cost 10,100 counter writes.
* **Failure travels up.** A child that fails or is aborted aborts the dependents of its
  parent (and of every ancestor) with the reason "upstream job 'p.3' failed"; its
  siblings run on. Rerunning the child lets the tree end and releases the join.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .config import Settings
from .errors import InvalidExpansion
from .graph import MAX_ARGS_BYTES, MAX_NAME_LENGTH
from .items import child_item, child_name, expansion_entry
from .job import Artifact, Expand, Rows
from .pools import DEFAULT_POOL, Pools
from .states import GraphStatus
from .store import ArtifactStore, JobOutputs, JobRecord, JobStore

log = logging.getLogger("overseer.expansion")

# Children per counter item (see the module docstring) and per write of the materialiser.
GROUP = 100
PAGE = 100


def split_results(results: Sequence[Any]) -> tuple[list[Artifact | Rows], Expand | None]:
    """A handler's results as (artifacts and rows, its Expand or None)."""
    expands = [r for r in results if isinstance(r, Expand)]
    if len(expands) > 1:
        raise InvalidExpansion(
            f"the job returned {len(expands)} overseer.Expand; return at most one (one item per child)"
        )
    return [r for r in results if not isinstance(r, Expand)], (expands[0] if expands else None)


def items_key(graph_id: str, name: str, attempt: int) -> str:
    return f"_overseer/expansions/{graph_id}/{name}/attempt-{attempt}.json"


def prepare(
    expand: Expand,
    job: JobRecord,
    *,
    handler_types: Collection[str],
    settings: Settings,
    artifacts: ArtifactStore,
) -> dict[str, Any]:
    """Check ``expand`` and store its items; returns the expansion the job's finish commits,
    with the children's worker pool (``overseer.pools``; absent for the default pool).
    Raises ``InvalidExpansion`` (nothing stored) naming what is wrong."""
    where = f"job {job.name!r}"
    pools = Pools.from_settings(settings)
    # The worker's own handlers, and what the other pools serve (their manifests).
    known = set(handler_types) | set(pools.routes)
    for each in pools.pools.values():
        known |= each.types or set()
    if not isinstance(expand.type, str) or expand.type not in known:
        raise InvalidExpansion(
            f"{where} expands into type {expand.type!r}, which has no handler; "
            f"known types: {', '.join(sorted(known)) or 'none'}"
        )
    problem = pools.problem(expand.type, None)
    if problem:
        raise InvalidExpansion(f"{where} expands into children that cannot run: {problem}")
    pool = pools.route(expand.type)
    items = list(expand.items)
    if len(items) > settings.max_expand_items:
        raise InvalidExpansion(
            f"{where} expands into {len(items):,} items; the maximum is {settings.max_expand_items:,} "
            "(OVERSEER_MAX_EXPAND_ITEMS)"
        )
    if items and len(child_name(job.name, len(items) - 1)) > MAX_NAME_LENGTH:
        raise InvalidExpansion(
            f"{where} expands into {len(items):,} items: child names like "
            f"{child_name(job.name, len(items) - 1)[:40]!r}... pass the limit of {MAX_NAME_LENGTH} "
            "characters; use a shorter job name"
        )
    base = dict(expand.args or {})
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidExpansion(
                f"{where}: item {i} of its Expand is a {type(item).__name__}, not a mapping"
            )
    try:
        document = json.dumps(
            {"type": expand.type, "args": base, "items": [dict(i) for i in items]},
            ensure_ascii=False,
            allow_nan=False,
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidExpansion(f"{where}: the items of its Expand are not JSON data: {exc}") from exc
    if len(document) > settings.max_expand_bytes:
        raise InvalidExpansion(
            f"{where} expands into {len(document):,} bytes of items (JSON); the maximum is "
            f"{settings.max_expand_bytes:,} (OVERSEER_MAX_EXPAND_BYTES)"
        )
    for i, item in enumerate(items):
        size = len(json.dumps({**base, **item}, ensure_ascii=False, default=str))
        if size > MAX_ARGS_BYTES:
            raise InvalidExpansion(
                f"{where}: item {i} of its Expand makes args of {size:,} bytes; "
                f"the limit is {MAX_ARGS_BYTES:,}"
            )
    sha256 = hashlib.sha256(document).hexdigest()
    bucket, key = settings.artifact_bucket, items_key(job.graph_id, job.name, job.attempts)
    artifacts.put_bytes(bucket, key, document, sha256=sha256, content_type="application/json")
    expansion = {"type": expand.type, "count": len(items), "sha256": sha256, "bucket": bucket, "key": key}
    if pool != DEFAULT_POOL:
        expansion["pool"] = pool
    return expansion


class Expansions:
    """The scheduler's side: make the children of committed expansions and count their ends."""

    def __init__(
        self, store: JobStore, artifacts: ArtifactStore | None, budget_seconds: float = 30.0
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.budget_seconds = budget_seconds

    def advance(self, job: JobRecord, deadline: float) -> JobRecord | None:
        """Carry the finished ``job``'s expansion on: make the children still missing (until
        ``deadline``, a ``time.monotonic()``), and return the job when its tree has ended
        (its dependents are to be released), else None."""
        current = self.store.get_job(job.graph_id, job.name)
        if current is None or current.expansion is None or current.status != job.status:
            return None
        if current.children_pending:
            self.make_children(current, deadline)
            return None
        return current if current.tree_done else None

    def make_children(self, parent: JobRecord, deadline: float) -> None:
        assert parent.expansion is not None
        expansion = parent.expansion
        document, problem = self._items(parent)
        graph = self.store.get_graph(parent.graph_id)
        base = {**(graph.args if graph else {}), **document["args"]}
        # Children of a graph that ended meanwhile (cancelled) are made aborted, so the graph's
        # jobs are what it counted; a rerun of the graph runs them. So are those of items that
        # cannot be read (their join is aborted, saying why, and the graph ends).
        aborted = problem
        if aborted is None and (graph is None or graph.status != GraphStatus.RUNNING):
            aborted = (graph.reason if graph else None) or "graph cancelled"
        count, made, kind = int(expansion["count"]), parent.expand_made, document["type"]
        items = document["items"] or [{}] * count
        while made < count:
            page = range(made, min(count, made + PAGE))
            children = [
                child_item(parent, i, kind, {**base, **items[i]}, aborted_reason=aborted) for i in page
            ]
            self.store.put_children(parent.graph_id, children)
            made = page.stop
            if time.monotonic() > deadline:
                break
        log.info("%s: %d of %d children made", parent.id, made, count)
        if made == count:
            self._reap(parent)
        self.store.advance_expansion(parent.graph_id, parent.name, made)

    def _items(self, parent: JobRecord) -> tuple[dict[str, Any], str | None]:
        """The committed items document, or (an empty one, why it cannot be used) when the
        object is gone or no longer what the finish committed (a transient error raises:
        the record is tried again)."""
        if self.artifacts is None:
            raise RuntimeError("the scheduler has no artifact store: it cannot read expansions")
        expansion = parent.expansion
        assert expansion is not None
        where = f"s3://{expansion['bucket']}/{expansion['key']}"
        empty = {"type": expansion["type"], "args": {}, "items": []}
        if self.artifacts.stat(expansion["bucket"], expansion["key"]) is None:
            return empty, f"the items of its parent's expansion are gone ({where})"
        data = self.artifacts.get_bytes(expansion["bucket"], expansion["key"])
        if hashlib.sha256(data).hexdigest() != expansion["sha256"]:
            problem = f"the items of its parent's expansion ({where}) were changed after they were committed"
            return empty, problem
        return dict(json.loads(data)), None

    def _reap(self, parent: JobRecord) -> None:
        """Delete the items files of the parent's attempts that did not commit."""
        assert parent.expansion is not None and self.artifacts is not None
        for attempt in range(1, parent.attempts):
            key = items_key(parent.graph_id, parent.name, attempt)
            if key != parent.expansion["key"]:
                self.artifacts.delete(parent.expansion["bucket"], key)

    def child_done(self, child: JobRecord) -> None:
        """``child``'s tree ended: count it in its parent's, and when that completes the
        parent's, mark the parent's tree done (its record carries the news on)."""
        if child.parent is None or child.child_index is None or child.siblings is None:
            return
        group, index = divmod(child.child_index, GROUP)
        in_group = min(GROUP, child.siblings - group * GROUP)
        if self.store.count_done(child.graph_id, expansion_entry(child.parent, group), index) < in_group:
            return
        groups = -(-child.siblings // GROUP)
        if self.store.count_done(child.graph_id, expansion_entry(child.parent), group) < groups:
            return
        self.store.complete_expansion(child.graph_id, child.parent)


def tree_outputs(store: JobStore, job: JobRecord, deps: Sequence[str]) -> dict[str, JobOutputs]:
    """What ``job``'s dependencies left it: each dep's outputs and, for a dep that expanded
    (other than the job's own parent), every job of its tree after it, depth first in item
    order (``p``, ``p.0``, ``p.0.0``, ..., ``p.1``, ...)."""
    out: dict[str, JobOutputs] = {}

    def add(names: Sequence[str], outputs: Mapping[str, JobOutputs]) -> None:
        for name in names:
            found = outputs.get(name, JobOutputs([]))
            out[name] = found
            if found.children and name != job.parent:
                children = [child_name(name, i) for i in range(found.children)]
                add(children, store.outputs(job.graph_id, children))

    add(deps, store.outputs(job.graph_id, deps) if deps else {})
    return out
