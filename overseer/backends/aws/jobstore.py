"""The job store on DynamoDB (PynamoDB models). Implements ``overseer.store.JobStore``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from pynamodb.exceptions import (
    DeleteError,
    DoesNotExist,
    PutError,
    PynamoDBException,
    TransactWriteError,
    UpdateError,
)
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.condition import size as size_of
from pynamodb.expressions.operand import Path
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from ... import timeutil
from ...errors import StoreError
from ...graph import GraphSpec, definition_digest
from ...items import (
    CHUNK_RETENTION_FACTOR,
    EXPIRES_AT,
    JOB_PREFIX,
    expires_at,
    graph_index_values,
    graph_item,
    graph_record,
    job_entry,
    job_items,
    listing_window,
    record_from_item,
    transition_values,
)
from ...limits import Admission, Holder, admit, wait_key
from ...parallel import in_parallel
from ...states import RELEASE, RELEASED_BY_SUBMISSION, GraphStatus, JobStatus, Transition
from ...store import Dependent, Fence, GraphRecord, JobOutputs, JobRecord
from .models import GraphItemBase, JobItemBase, graph_model, job_model, lease_model


def _graph_record(item: GraphItemBase) -> GraphRecord:
    return graph_record(item.attribute_values)


def _holder_value(holder: Holder) -> dict[str, Any]:
    return {
        "M": {
            "owner": {"S": holder.owner},
            "attempt": {"N": str(holder.attempt)},
            "until": {"S": holder.until},
        }
    }


def _condition_failed(exc: PynamoDBException) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


_ITEMS_PER_WRITER = 1000
_deserializer = TypeDeserializer()
# Leases live in the graphs table under this prefix (no graph id starts with "#").
LEASE_PREFIX = "#lease#"
# Concurrency limits' slots live in the graphs table under this prefix.
LIMIT_PREFIX = "#limit#"
# Optimistic writes of a full limit's holders (on its version) tried this often.
SLOT_WRITE_TRIES = 20
# The sweep's cursor: one item of the graphs table, under an id no graph can have.
SWEEP_CURSOR_ID = "#sweep-cursor"


class DynamoJobStore:
    """Graphs and jobs in two DynamoDB tables. See ``overseer.store.JobStore``.

    ``retention_days`` (0 = for ever): ended graphs and jobs carry ``expires_at`` for the
    tables' time to live, written in the writes that end them (``overseer.items``)."""

    def __init__(self, graphs_table: str, jobs_table: str, *, retention_days: int = 0) -> None:
        self.Graph = graph_model(graphs_table)
        self.Job = job_model(jobs_table)
        self.Lease = lease_model(graphs_table)
        self.retention_days = retention_days

    # -- creating ---------------------------------------------------------------------
    def create_graph(self, spec: GraphSpec, *, max_attempts: Mapping[str, int]) -> tuple[GraphRecord, bool]:
        """The graph item (``creating``), its jobs (batches of 25), the graph ``running``, then
        its roots released. A submission that stopped between these writes is completed by
        the next submission of the same id and definition (``_resume``), or rolled back by
        the sweep (``roll_back_graph``)."""
        stamp = timeutil.iso()
        graph = self.Graph(**graph_item(spec, stamp))
        try:
            graph.save(condition=self.Graph.graph_id.does_not_exist())
        except PutError as exc:
            if _condition_failed(exc):
                existing = self.get_graph(spec.id)
                if existing is not None:
                    return self._resume(spec, existing, max_attempts)
            raise StoreError(f"cannot create graph {spec.id!r}: {exc}") from exc
        self._write_all(self._items(spec, stamp, max_attempts))
        return self._start(spec), True

    def _resume(
        self, spec: GraphSpec, existing: GraphRecord, max_attempts: Mapping[str, int]
    ) -> tuple[GraphRecord, bool]:
        """The same graph submitted again. If an earlier submission stopped half-way (same
        definition), finish its work: write the jobs it did not write, start the graph,
        release the roots still waiting (one conditional write per root)."""
        if existing.definition_sha256 != definition_digest(spec) or existing.status not in (
            GraphStatus.CREATING,
            GraphStatus.RUNNING,
        ):
            return existing, False
        if existing.status == GraphStatus.RUNNING:
            self._release_roots(spec)
            return self.get_graph(spec.id) or existing, False
        J = self.Job
        stored = {item.entry for item in J.query(spec.id, consistent_read=True, attributes_to_get=["entry"])}
        stamp = existing.created_at or timeutil.iso()
        self._write_all([item for item in self._items(spec, stamp, max_attempts) if item.entry not in stored])
        return self._start(spec), True

    def _items(self, spec: GraphSpec, stamp: str, max_attempts: Mapping[str, int]) -> list[JobItemBase]:
        """Every item of the graph's jobs and edge chunks, as first written (``waiting``);
        edge chunks with their expiry already (no later write touches them)."""
        chunk_expiry = expires_at(stamp, CHUNK_RETENTION_FACTOR * self.retention_days)
        items = []
        for values in job_items(spec, max_attempts, stamp):
            if chunk_expiry is not None and "job_name" not in values:
                values[EXPIRES_AT] = chunk_expiry
            items.append(self.Job(**values))
        return items

    def _start(self, spec: GraphSpec) -> GraphRecord:
        """Every job is stored: the graph runs, and its roots are released."""
        started = self.set_graph_status(spec.id, GraphStatus.RUNNING, sources=[GraphStatus.CREATING])
        if started is None and self.get_graph(spec.id) is None:
            raise StoreError(
                f"graph {spec.id!r} was rolled back by the sweep while it was being created "
                "(its submission had stopped for minutes); submit it again"
            )
        self._release_roots(spec)
        record = self.get_graph(spec.id)
        assert record is not None
        return record

    def _release_roots(self, spec: GraphSpec) -> None:
        released = {"released_by": RELEASED_BY_SUBMISSION}

        def release(name: str) -> JobRecord | None:
            return self.transition(spec.id, name, RELEASE, changes=released)

        roots = [name for name in spec.order if not spec.jobs[name].deps]
        in_parallel(release, roots, inline_up_to=1)

    def _write_all(self, items: list[JobItemBase]) -> None:
        """Batch-write ``items`` (25 per request), several batches in parallel for big graphs."""

        def write(part: list[JobItemBase]) -> None:
            with self.Job.batch_write() as batch:
                for item in part:
                    batch.save(item)

        parts = [items[i : i + _ITEMS_PER_WRITER] for i in range(0, len(items), _ITEMS_PER_WRITER)]
        in_parallel(write, parts, inline_up_to=1)

    # -- reading ----------------------------------------------------------------------
    def get_graph(self, graph_id: str) -> GraphRecord | None:
        try:
            return _graph_record(self.Graph.get(graph_id, consistent_read=True))
        except DoesNotExist:
            return None

    def running_graphs(self) -> Iterator[GraphRecord]:
        yield from self._active_graphs(GraphStatus.RUNNING)

    def _active_graphs(self, status: GraphStatus, created_before: str | None = None) -> Iterator[GraphRecord]:
        """The graphs in ``status`` (not terminal), from the keys-only active-graphs index
        and a batched read of their items (the index may lag them by a moment)."""
        G = self.Graph
        keys = [item.graph_id for item in G.active_graphs.query(status.value)]
        for start in range(0, len(keys), 100):
            for item in G.batch_get(keys[start : start + 100]):
                if item.status != status.value:
                    continue
                if created_before is None or (item.created_at or "") < created_before:
                    yield _graph_record(item)

    def list_graphs(
        self,
        *,
        status: GraphStatus | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> tuple[list[GraphRecord], str | None]:
        until, since = listing_window(since, until)
        G = self.Graph
        index = G.graphs_by_day.Meta.index_name
        # The continuation: the day being read and the index key of the last graph returned.
        cursor = json.loads(after) if after else {"day": until[:10], "start": None}
        day, start = str(cursor["day"]), cursor["start"]
        found: list[GraphRecord] = []
        while day >= since[:10]:
            page = G._get_connection().query(
                day,
                range_key_condition=G.created_at.between(since, until),
                index_name=index,
                scan_index_forward=False,
                exclusive_start_key=start,
                limit=100,
            )
            keys = [(item["graph_id"]["S"], item["created_at"]["S"]) for item in page.get("Items", [])]
            records = {g.graph_id: _graph_record(g) for g in G.batch_get([gid for gid, _ in keys])}
            for graph_id, created_at in keys:
                record = records.get(graph_id)
                if created_at >= until or record is None or (status is not None and record.status != status):
                    continue
                found.append(record)
                if len(found) == limit:
                    key = {
                        "created_on": {"S": day},
                        "created_at": {"S": created_at},
                        "graph_id": {"S": graph_id},
                    }
                    return found, json.dumps({"day": day, "start": key})
            start = page.get("LastEvaluatedKey")
            if start is None:
                day = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        return found, None

    def sweep_page(
        self, sweep_key: str, until: str, *, start: str | None = None, limit: int = 100
    ) -> tuple[list[JobRecord], str | None]:
        J = self.Job
        page = J._get_connection().query(
            sweep_key,
            range_key_condition=J.sweep_at <= until,
            index_name=J.sweep_index.Meta.index_name,
            exclusive_start_key=json.loads(start) if start else None,
            limit=limit,
        )
        keys = [(key["graph_id"]["S"], key["entry"]["S"]) for key in page.get("Items", [])]
        found = {
            (item.graph_id, item.entry): record_from_item({**item.attribute_values})
            for item in J.batch_get(keys, consistent_read=True)
        }
        after = page.get("LastEvaluatedKey")
        return [found[key] for key in keys if key in found], json.dumps(after) if after else None

    def get_sweep_cursor(self) -> dict[str, Any] | None:
        item = self.Graph._get_connection().get_item(SWEEP_CURSOR_ID, consistent_read=True).get("Item")
        cursor = (item or {}).get("cursor", {}).get("S")
        return json.loads(cursor) if cursor else None

    def put_sweep_cursor(self, cursor: Mapping[str, Any] | None) -> None:
        # An update (it creates the item), so the sweep needs no PutItem on the graphs table.
        kept = Path("cursor").set({"S": json.dumps(cursor)}) if cursor else Path("cursor").remove()
        self.Graph._get_connection().update_item(
            SWEEP_CURSOR_ID, actions=[kept, Path("updated_at").set({"S": timeutil.iso()})]
        )

    def creating_graphs(self, created_before: str) -> Iterator[GraphRecord]:
        yield from self._active_graphs(GraphStatus.CREATING, created_before)

    def get_job(self, graph_id: str, name: str) -> JobRecord | None:
        try:
            item = self.Job.get(graph_id, job_entry(name), consistent_read=True)
        except DoesNotExist:
            return None
        return record_from_item({**item.attribute_values})

    def list_jobs(self, graph_id: str, *, changed_since: str | None = None) -> Iterator[JobRecord]:
        # A filter: DynamoDB still reads (and bills) every job of the graph, but sends back
        # only the changed ones (a page's refresh of a large graph stays small). That read is
        # eventually consistent, at half the cost: a refresh already overlaps the previous
        # one by seconds, as writes are stamped just before they commit.
        changed = self.Job.updated_at >= changed_since if changed_since is not None else None
        for item in self.Job.query(
            graph_id,
            self.Job.entry.startswith(JOB_PREFIX),
            filter_condition=changed,
            consistent_read=changed_since is None,
        ):
            yield record_from_item({**item.attribute_values})

    def _chunks(self, graph_id: str, kind: str, name: str) -> Iterator[JobItemBase]:
        yield from self.Job.query(
            graph_id, self.Job.entry.startswith(f"{kind}#{name}#"), consistent_read=True
        )

    def dependencies(self, job: JobRecord) -> list[str]:
        if job.deps is not None:
            return list(job.deps)
        return [str(d) for chunk in self._chunks(job.graph_id, "in", job.name) for d in chunk.deps or []]

    def dependents(self, job: JobRecord) -> list[Dependent]:
        if job.dependents is not None:
            return list(job.dependents)
        return [
            Dependent(str(c), int(i), int(n))
            for chunk in self._chunks(job.graph_id, "out", job.name)
            for c, i, n in chunk.dependents or []
        ]

    def outputs(self, graph_id: str, names: Sequence[str]) -> dict[str, JobOutputs]:
        keys = [(graph_id, job_entry(n)) for n in dict.fromkeys(names)]
        out: dict[str, JobOutputs] = {}
        attrs = ["job_name", "artifacts", "expansion"]
        for item in self.Job.batch_get(keys, consistent_read=True, attributes_to_get=attrs):
            children = int(json.loads(item.expansion)["count"]) if item.expansion else 0
            out[item.job_name or ""] = JobOutputs(json.loads(item.artifacts or "[]"), children)
        return out

    # -- writing ----------------------------------------------------------------------
    def transition(
        self,
        graph_id: str,
        name: str,
        transition: Transition,
        *,
        fence: Fence | None = None,
        changes: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        dep_finished_at: str | None = None,
        add_jobs: int = 0,
    ) -> JobRecord | None:
        J = self.Job
        values, removed = transition_values(
            transition,
            changes,
            remove,
            fenced=fence is not None,
            graph_id=graph_id,
            name=name,
            retention_days=self.retention_days,
        )
        actions = [
            getattr(J, k).set(v) if v is not None else getattr(J, k).remove() for k, v in values.items()
        ]
        actions += [getattr(J, key).remove() for key in removed]
        condition: Condition = J.status.is_in(*[s.value for s in transition.sources])
        if fence is not None:
            condition &= J.attempts == fence.attempts
            if fence.owner is not None:
                condition &= J.lease_owner == fence.owner
        if dep_finished_at is not None:
            condition &= self._not_rerun_since(dep_finished_at)
        if transition.requires is not None:
            condition &= getattr(J, transition.requires).exists()
        item = J(graph_id, job_entry(name))
        if add_jobs:
            return self._transition_adding_jobs(item, actions, condition, add_jobs, transition)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot {transition.name} job {graph_id}/{name}: {exc}") from exc
        return record_from_item({**item.attribute_values})

    def _transition_adding_jobs(
        self,
        item: JobItemBase,
        actions: list[Action],
        condition: Condition,
        add_jobs: int,
        transition: Transition,
    ) -> JobRecord | None:
        """The job's write and the graph's new ``jobs_total`` in one transaction."""
        G = self.Graph
        graph = G(item.graph_id)
        grow: list[Action] = [G.jobs_total.add(add_jobs), G.updated_at.set(timeutil.iso())]
        try:
            with TransactWrite(connection=self.Job._get_connection().connection) as tx:
                tx.update(item, actions=actions, condition=condition)
                tx.update(graph, actions=grow, condition=G.graph_id.exists())
        except TransactWriteError as exc:
            reasons = [reason.code for reason in exc.cancellation_reasons if reason]
            if "ConditionalCheckFailed" in reasons:
                return None
            raise StoreError(f"cannot {transition.name} job {item.graph_id}/{item.entry}: {exc}") from exc
        return self.get_job(item.graph_id, str(item.entry)[len(JOB_PREFIX) :])

    def put_children(self, graph_id: str, items: Sequence[Mapping[str, Any]]) -> int:
        J = self.Job

        def put(values: Mapping[str, Any]) -> bool:
            item = dict(values)
            # A child written aborted (its graph was cancelled) has ended already.
            expiry = expires_at(item["finished_at"], self.retention_days) if "finished_at" in item else None
            if expiry is not None:
                item[EXPIRES_AT] = expiry
            try:
                J(**item).save(condition=J.entry.does_not_exist())
            except PutError as exc:
                if _condition_failed(exc):
                    return False
                raise StoreError(f"cannot write job {graph_id}/{values['job_name']}: {exc}") from exc
            return True

        return sum(in_parallel(put, list(items)))

    def advance_expansion(self, graph_id: str, name: str, made: int) -> bool:
        J = self.Job
        condition = J.expand_made.does_not_exist() | (J.expand_made < made)
        return self._update(graph_id, job_entry(name), [J.expand_made.set(made)], condition)

    def complete_expansion(self, graph_id: str, name: str) -> bool:
        J = self.Job
        stamp = timeutil.iso()
        actions: list[Action] = [J.expand_done_at.set(stamp), J.updated_at.set(stamp)]
        return self._update(graph_id, job_entry(name), actions, J.expand_done_at.does_not_exist())

    def _update(self, graph_id: str, entry: str, actions: list[Action], condition: Condition) -> bool:
        J = self.Job
        try:
            J(graph_id, entry).update(actions=actions, condition=condition & J.entry.exists())
        except UpdateError as exc:
            if _condition_failed(exc):
                return False
            raise StoreError(f"cannot update {graph_id}/{entry}: {exc}") from exc
        return True

    def count_done(self, graph_id: str, entry: str, index: int) -> int:
        J = self.Job
        actions: list[Action] = [J.done.add({index})]
        expiry = expires_at(timeutil.now(), self.retention_days)
        if expiry is not None:  # the counter's last count is when its children's trees ended
            actions.append(J.expires_at.set(expiry))
        try:
            data = J._get_connection().update_item(
                graph_id, range_key=entry, actions=actions, return_values="UPDATED_NEW"
            )
        except UpdateError as exc:
            raise StoreError(f"cannot count {graph_id}/{entry}: {exc}") from exc
        done = data.get("Attributes", {}).get("done")
        if done is None:
            # The index was in the set already, and the emulator returns nothing for an ADD
            # that changed nothing: read the set.
            try:
                return len(J.get(graph_id, entry, consistent_read=True).done or ())
            except DoesNotExist:
                return 0
        return len(done.get("NS", ()))

    def _not_rerun_since(self, moment: str) -> Condition:
        J = self.Job
        return J.rerun_at.does_not_exist() | (J.rerun_at < moment)

    def record_finished_dependency(
        self, graph_id: str, name: str, index: int, *, dep_finished_at: str | None = None
    ) -> int | None:
        J = self.Job
        condition: Condition = J.status == JobStatus.WAITING.value
        if dep_finished_at is not None:
            condition &= self._not_rerun_since(dep_finished_at)
        try:
            # Only the set comes back (UPDATED_NEW), not the whole item: a wide layer makes
            # one of these writes per edge, and parsing the item was a fifth of their CPU.
            data = J._get_connection().update_item(
                graph_id,
                range_key=job_entry(name),
                actions=[J.finished_deps.add({index})],
                condition=condition,
                return_values="UPDATED_NEW",
            )
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot record a finished dependency of {graph_id}/{name}: {exc}") from exc
        finished = data.get("Attributes", {}).get("finished_deps")
        if finished is None:
            # The index was in the set already (a duplicate record), and the emulator
            # returns nothing for an ADD that changed nothing: read the set.
            job = self.get_job(graph_id, name)
            return job.finished_deps if job is not None else None
        return len(finished.get("NS", ()))

    def forget_finished_dependency(self, graph_id: str, name: str, index: int, *, rerun_at: str) -> bool:
        J = self.Job
        try:
            J(graph_id, job_entry(name)).update(
                actions=[J.finished_deps.delete({index}), J.rerun_at.set(rerun_at)],
                condition=J.status == JobStatus.WAITING.value,
            )
        except UpdateError as exc:
            if _condition_failed(exc):
                return False
            raise StoreError(f"cannot forget a finished dependency of {graph_id}/{name}: {exc}") from exc
        return True

    def renew_lease(
        self,
        graph_id: str,
        name: str,
        fence: Fence,
        *,
        lease_expires_at: str,
        heartbeat_at: str,
        lease_bucket: str | None = None,
    ) -> bool:
        J = self.Job
        actions: list[Action] = [J.lease_expires_at.set(lease_expires_at), J.heartbeat_at.set(heartbeat_at)]
        if lease_bucket is not None:
            actions.append(J.sweep_at.set(lease_bucket))
        try:
            J(graph_id, job_entry(name)).update(
                actions=actions,
                condition=(J.status == JobStatus.RUNNING.value)
                & (J.attempts == fence.attempts)
                & (J.lease_owner == (fence.owner or "")),
            )
        except UpdateError as exc:
            if _condition_failed(exc):
                return False
            raise StoreError(f"cannot renew the lease of {graph_id}/{name}: {exc}") from exc
        return True

    def add_graph_progress(self, graph_id: str, deltas: Mapping[str, int]) -> GraphRecord | None:
        G = self.Graph
        actions = [getattr(G, f"count_{status}").add(n) for status, n in deltas.items() if n]
        if not actions:
            return self.get_graph(graph_id)
        actions.append(G.updated_at.set(timeutil.iso()))
        item = G(graph_id)
        try:
            item.update(actions=actions, condition=G.status == GraphStatus.RUNNING.value)
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot count progress of graph {graph_id!r}: {exc}") from exc
        return _graph_record(item)

    def set_graph_status(
        self,
        graph_id: str,
        status: GraphStatus,
        *,
        sources: Iterable[GraphStatus],
        counts: Mapping[str, int] | None = None,
        reason: str | None = None,
        deadline_at: str | None = None,
    ) -> GraphRecord | None:
        G = self.Graph
        stamp = timeutil.iso()
        actions: list[Action] = [G.status.set(status.value), G.updated_at.set(stamp)]
        active = graph_index_values(status)["active_status"]
        actions.append(G.active_status.set(active) if active else G.active_status.remove())
        sources = list(sources)
        if status.terminal:
            actions.append(G.finished_at.set(stamp))
            expiry = expires_at(stamp, self.retention_days)
            if expiry is not None:
                actions.append(G.expires_at.set(expiry))
        elif any(source.terminal for source in sources):
            actions.append(G.expires_at.remove())  # a rerun: the graph is not ended any more
        for key, n in (counts or {}).items():
            actions.append(getattr(G, f"count_{key}").set(n))
        # The reason is the latest status change's: a rerun's ``running`` clears a deadline's.
        actions.append(G.reason.set(reason) if reason else G.reason.remove())
        if deadline_at:
            actions.append(G.deadline_at.set(deadline_at))
        item = G(graph_id)
        try:
            item.update(actions=actions, condition=G.status.is_in(*[s.value for s in sources]))
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot set graph {graph_id!r} to {status}: {exc}") from exc
        return _graph_record(item)

    # -- rolling back, leases -----------------------------------------------------------
    def roll_back_graph(self, graph: GraphRecord) -> bool:
        G, J = self.Graph, self.Job
        try:
            G(graph.graph_id).delete(
                condition=(G.status == GraphStatus.CREATING.value)
                & (G.created_at == (graph.created_at or ""))
            )
        except DeleteError as exc:
            if _condition_failed(exc):
                return False
            raise StoreError(f"cannot roll back graph {graph.graph_id!r}: {exc}") from exc
        # Only the items of this submission: a new submission of the same id writes new ones.
        mine = J.created_at == (graph.created_at or "")
        for item in J.query(graph.graph_id, consistent_read=True, attributes_to_get=["entry", "created_at"]):
            if item.created_at != graph.created_at:
                continue
            try:
                J(graph.graph_id, item.entry).delete(condition=mine)
            except DeleteError as exc:
                if not _condition_failed(exc):
                    raise StoreError(f"cannot roll back graph {graph.graph_id!r}: {exc}") from exc
        return True

    def acquire_lease(self, name: str, owner: str, *, seconds: float) -> bool:
        L = self.Lease
        lease = L(LEASE_PREFIX + name, lease_owner=owner, lease_expires_at=timeutil.iso_in(seconds))
        try:
            lease.save(condition=L.graph_id.does_not_exist() | (L.lease_expires_at < timeutil.iso()))
        except PutError as exc:
            if _condition_failed(exc):
                return False
            raise StoreError(f"cannot take the lease {name!r}: {exc}") from exc
        return True

    def release_lease(self, name: str, owner: str) -> None:
        L = self.Lease
        try:
            L(LEASE_PREFIX + name).delete(condition=L.lease_owner == owner)
        except DeleteError as exc:
            if not _condition_failed(exc):
                raise StoreError(f"cannot release the lease {name!r}: {exc}") from exc

    # -- concurrency limits (overseer.limits) ---------------------------------------------
    # Each limit is an item of the graphs table, ``#limit#<name>``: ``holders`` (a map of job
    # id -> {owner, attempt, until}), ``version`` (every write adds 1), ``size`` and ``updated_at``.
    def _slot_write(self, limit: str, actions: list[Action], condition: Condition) -> bool:
        stamp: list[Action] = [Path("version").add({"N": "1"}), Path("updated_at").set({"S": timeutil.iso()})]
        try:
            self.Graph._get_connection().update_item(
                LIMIT_PREFIX + limit, actions=[*actions, *stamp], condition=condition
            )
        except UpdateError as exc:
            # A nested path under a map that is not there yet is refused like a condition.
            if _condition_failed(exc) or getattr(exc, "cause_response_code", None) == "ValidationException":
                return False
            raise StoreError(f"cannot change the slots of limit {limit!r}: {exc}") from exc
        return True

    def _slot_item(self, limit: str) -> dict[str, Any] | None:
        item = self.Graph._get_connection().get_item(LIMIT_PREFIX + limit, consistent_read=True).get("Item")
        return {key: _deserializer.deserialize(value) for key, value in item.items()} if item else None

    def acquire_slot(self, limit: str, size: int, job: str, holder: Holder) -> Admission:
        held = Path(["holders", job])
        entry = _holder_value(holder)
        sized = Path("size").set({"N": str(size)})
        # While there is room: one write.
        room = Path("holders").exists() & (size_of(Path("holders")) < size) & held.does_not_exist()
        if self._slot_write(limit, [held.set(entry), sized], room):
            return Admission.HELD
        for _ in range(SLOT_WRITE_TRIES):
            item = self._slot_item(limit)
            holders = {j: Holder.from_item(h) for j, h in (item or {}).get("holders", {}).items()}
            admission, kept = admit(holders, size, job, holder)
            if admission != Admission.HELD:
                return admission
            everyone = Path("holders").set({"M": {j: _holder_value(h) for j, h in kept.items()}})
            unchanged = (
                Path("graph_id").does_not_exist()
                if item is None
                else Path("version") == {"N": str(int(item.get("version") or 0))}
            )
            if self._slot_write(limit, [everyone, sized], unchanged):
                return Admission.HELD
        raise StoreError(f"the slots of limit {limit!r} changed {SLOT_WRITE_TRIES} times while taking one")

    @staticmethod
    def _holds(job: str, fence: Fence) -> Condition:
        return (Path(["holders", job, "owner"]) == {"S": fence.owner or ""}) & (
            Path(["holders", job, "attempt"]) == {"N": str(fence.attempts)}
        )

    def renew_slot(self, limit: str, job: str, fence: Fence, *, until: str) -> bool:
        until_set = Path(["holders", job, "until"]).set({"S": until})
        return self._slot_write(limit, [until_set], self._holds(job, fence))

    def release_slot(self, limit: str, job: str, fence: Fence) -> bool:
        return self._slot_write(limit, [Path(["holders", job]).remove()], self._holds(job, fence))

    def slot_holders(self, limit: str) -> dict[str, Holder]:
        item = self._slot_item(limit) or {}
        return {job: Holder.from_item(h) for job, h in item.get("holders", {}).items()}

    def count_waiting(self, limit: str) -> int:
        return int(self.Job.sweep_index.count(wait_key(limit)))
