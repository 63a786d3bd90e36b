"""The job store on DynamoDB (PynamoDB models). Implements ``overseer.store.JobStore``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, PynamoDBException, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from ... import timeutil
from ...errors import StoreError
from ...graph import GraphSpec
from ...items import (
    JOB_PREFIX,
    graph_item,
    graph_record,
    job_entry,
    job_items,
    record_from_item,
    transition_values,
)
from ...parallel import in_parallel
from ...states import RELEASE, RELEASED_BY_SUBMISSION, GraphStatus, JobStatus, Transition
from ...store import Dependent, Fence, GraphRecord, JobRecord
from .models import GraphItemBase, JobItemBase, graph_model, job_model


def _graph_record(item: GraphItemBase) -> GraphRecord:
    return graph_record(item.attribute_values)


def _condition_failed(exc: PynamoDBException) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


_ITEMS_PER_WRITER = 1000


class DynamoJobStore:
    """Graphs and jobs in two DynamoDB tables. See ``overseer.store.JobStore``."""

    def __init__(self, graphs_table: str, jobs_table: str) -> None:
        self.Graph = graph_model(graphs_table)
        self.Job = job_model(jobs_table)

    # -- creating ---------------------------------------------------------------------
    def create_graph(self, spec: GraphSpec, *, max_attempts: Mapping[str, int]) -> tuple[GraphRecord, bool]:
        stamp = timeutil.iso()
        graph = self.Graph(**graph_item(spec, stamp))
        try:
            graph.save(condition=self.Graph.graph_id.does_not_exist())
        except PutError as exc:
            if _condition_failed(exc):
                existing = self.get_graph(spec.id)
                if existing is not None:
                    return existing, False
            raise StoreError(f"cannot create graph {spec.id!r}: {exc}") from exc

        items = [self.Job(**item) for item in job_items(spec, max_attempts, stamp)]
        roots = [name for name in spec.order if not spec.jobs[name].deps]
        self._write_all(items)
        self.set_graph_status(spec.id, GraphStatus.RUNNING, sources=[GraphStatus.CREATING])
        released = {"released_by": RELEASED_BY_SUBMISSION}

        def release(name: str) -> JobRecord | None:
            return self.transition(spec.id, name, RELEASE, changes=released)

        in_parallel(release, roots, inline_up_to=1)
        record = self.get_graph(spec.id)
        assert record is not None
        return record, True

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
        for item in self.Graph.scan(self.Graph.status == GraphStatus.RUNNING.value):
            yield _graph_record(item)

    def get_job(self, graph_id: str, name: str) -> JobRecord | None:
        try:
            item = self.Job.get(graph_id, job_entry(name), consistent_read=True)
        except DoesNotExist:
            return None
        return record_from_item({**item.attribute_values})

    def list_jobs(self, graph_id: str) -> Iterator[JobRecord]:
        for item in self.Job.query(graph_id, self.Job.entry.startswith(JOB_PREFIX), consistent_read=True):
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

    def manifests(self, graph_id: str, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        keys = [(graph_id, job_entry(n)) for n in names]
        out: dict[str, list[dict[str, Any]]] = {}
        attrs = ["job_name", "artifacts"]
        for item in self.Job.batch_get(keys, consistent_read=True, attributes_to_get=attrs):
            out[item.job_name or ""] = json.loads(item.artifacts or "[]")
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
    ) -> JobRecord | None:
        J = self.Job
        values, removed = transition_values(transition, changes, remove, fenced=fence is not None)
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
        item = J(graph_id, job_entry(name))
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot {transition.name} job {graph_id}/{name}: {exc}") from exc
        return record_from_item({**item.attribute_values})

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
        self, graph_id: str, name: str, fence: Fence, *, lease_expires_at: str, heartbeat_at: str
    ) -> bool:
        J = self.Job
        try:
            J(graph_id, job_entry(name)).update(
                actions=[J.lease_expires_at.set(lease_expires_at), J.heartbeat_at.set(heartbeat_at)],
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
    ) -> GraphRecord | None:
        G = self.Graph
        stamp = timeutil.iso()
        actions: list[Action] = [G.status.set(status.value), G.updated_at.set(stamp)]
        if status.terminal:
            actions.append(G.finished_at.set(stamp))
        for key, n in (counts or {}).items():
            actions.append(getattr(G, f"count_{key}").set(n))
        item = G(graph_id)
        try:
            item.update(actions=actions, condition=G.status.is_in(*[s.value for s in sources]))
        except UpdateError as exc:
            if _condition_failed(exc):
                return None
            raise StoreError(f"cannot set graph {graph_id!r} to {status}: {exc}") from exc
        return _graph_record(item)
