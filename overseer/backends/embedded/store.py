"""The job store on SQLite. Implements ``overseer.store.JobStore`` with the guarantees of
``overseer.backends.aws.jobstore.DynamoJobStore``.

Items are kept as JSON objects with exactly the attribute names DynamoDB uses (graph
items: graph_id, status, jobs_total, args, count_*...; job and edge-chunk items: the
attributes ``DynamoJobStore`` writes), so ``overseer.items.record_from_item`` reads them
and the change feed carries the same images as the DynamoDB stream. ``finished_deps``
is a JSON list kept as a set (a number set in the feed's images).

Every conditional write is one ``BEGIN IMMEDIATE`` transaction: read the item, check
the condition, write the item and append its feed record. Unlike DynamoDB, creating a
graph is one transaction too: the graph, its jobs, their edge chunks and the release of
the jobs without deps commit together or not at all (a crash mid-way leaves nothing
half-created); the feed still shows every job inserted as ``waiting`` before any release.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ... import timeutil
from ...graph import GraphSpec
from ...items import (
    COUNTERS,
    JOB_PREFIX,
    graph_index_values,
    graph_item,
    graph_record,
    job_entry,
    job_items,
    listing_window,
    record_from_item,
    sweep_index_values,
    transition_values,
)
from ...limits import Admission, Holder, admit, wait_key
from ...states import RELEASE, RELEASED_BY_SUBMISSION, GraphStatus, JobStatus, Transition
from ...store import Dependent, Fence, GraphRecord, JobOutputs, JobRecord
from . import feed
from .db import Database, database

_LIST_BATCH = 500


def _dumps(item: Mapping[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def _upper(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _rerun_since(item: Mapping[str, Any], dep_finished_at: str | None) -> bool:
    """Whether the job was rerun at or after a dependency's end at ``dep_finished_at``."""
    rerun_at = item.get("rerun_at")
    return dep_finished_at is not None and rerun_at is not None and rerun_at >= dep_finished_at


class SqliteJobStore:
    """Graphs and jobs in one SQLite file. See ``overseer.store.JobStore``."""

    # One connection per process: its writes run one at a time, so the engine's callers
    # make them in a row rather than from a pool of threads (``overseer.parallel``).
    writers = 1

    def __init__(self, path: object, db: Database | None = None) -> None:
        self.db = db or database(str(path))
        self.path = self.db.path

    # -- items ------------------------------------------------------------------------
    @staticmethod
    def _get(conn: sqlite3.Connection, graph_id: str, entry: str) -> dict[str, Any] | None:
        row = conn.execute(
            "SELECT item FROM jobs WHERE graph_id = ? AND entry = ?", (graph_id, entry)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _put(
        self,
        conn: sqlite3.Connection,
        item: dict[str, Any],
        old: Mapping[str, Any] | None,
        insert: bool = False,
    ) -> None:
        graph_id, entry = item["graph_id"], item["entry"]
        if insert:
            conn.execute(
                "INSERT OR REPLACE INTO jobs (graph_id, entry, item) VALUES (?, ?, ?)",
                (graph_id, entry, _dumps(item)),
            )
        else:
            conn.execute(
                "UPDATE jobs SET item = ? WHERE graph_id = ? AND entry = ?", (_dumps(item), graph_id, entry)
            )
        feed.append(self.db, conn, {"graph_id": graph_id, "entry": entry}, item, old)

    @staticmethod
    def _get_graph(conn: sqlite3.Connection, graph_id: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT item FROM graphs WHERE graph_id = ?", (graph_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @staticmethod
    def _put_graph(conn: sqlite3.Connection, item: dict[str, Any]) -> None:
        """Write a graph item, with its place in the active-graphs index."""
        for key, value in graph_index_values(GraphStatus(item["status"])).items():
            if value is None:
                item.pop(key, None)
            else:
                item[key] = value
        conn.execute(
            "INSERT OR REPLACE INTO graphs (graph_id, item) VALUES (?, ?)", (item["graph_id"], _dumps(item))
        )

    # -- creating ---------------------------------------------------------------------
    def create_graph(self, spec: GraphSpec, *, max_attempts: Mapping[str, int]) -> tuple[GraphRecord, bool]:
        stamp = timeutil.iso()
        with self.db.write() as conn:
            existing = self._get_graph(conn, spec.id)
            if existing is not None:
                return graph_record(existing), False
            graph = graph_item(spec, stamp)
            self._put_graph(conn, graph)
            roots: list[dict[str, Any]] = []
            for item in job_items(spec, max_attempts, stamp):
                self._put(conn, item, None, insert=True)
                if item.get("deps_count") == 0 and item["entry"].startswith(JOB_PREFIX):
                    roots.append(item)
            graph.update(status=GraphStatus.RUNNING.value, updated_at=timeutil.iso())
            self._put_graph(conn, graph)
            moment = timeutil.now()
            released = {
                "status": RELEASE.target.value,
                "released_by": RELEASED_BY_SUBMISSION,
                "updated_at": timeutil.iso(moment),
            }
            for old in roots:
                index = sweep_index_values(spec.id, old["job_name"], RELEASE.target, {}, moment)
                self._put(conn, {**old, **released, **index}, old)
        return graph_record(graph), True

    # -- reading ----------------------------------------------------------------------
    def get_graph(self, graph_id: str) -> GraphRecord | None:
        with self.db.read() as conn:
            item = self._get_graph(conn, graph_id)
        return None if item is None else graph_record(item)

    def running_graphs(self) -> Iterator[GraphRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT item FROM graphs WHERE json_extract(item, '$.active_status') = ? ORDER BY graph_id",
                (GraphStatus.RUNNING.value,),
            ).fetchall()
        for (text,) in rows:
            yield graph_record(json.loads(text))

    def creating_graphs(self, created_before: str) -> Iterator[GraphRecord]:
        # Never found in practice: a graph is created in one transaction (see the module
        # docstring); kept so the sweep runs the same steps on both backends.
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT item FROM graphs WHERE json_extract(item, '$.status') = ? "
                "AND json_extract(item, '$.created_at') < ? ORDER BY graph_id",
                (GraphStatus.CREATING.value, created_before),
            ).fetchall()
        for (text,) in rows:
            yield graph_record(json.loads(text))

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
        # The continuation is the last (created_at, graph_id) returned.
        query = (
            "SELECT item FROM graphs WHERE graph_id NOT LIKE '#%' "
            "AND json_extract(item, '$.created_at') >= ? AND json_extract(item, '$.created_at') < ? "
            + ("AND (json_extract(item, '$.created_at'), graph_id) < (?, ?) " if after else "")
            + ("AND json_extract(item, '$.status') = ? " if status is not None else "")
            + "ORDER BY json_extract(item, '$.created_at') DESC, graph_id DESC LIMIT ?"
        )
        params: list[Any] = [since, until, *(json.loads(after) if after else [])]
        params += [*([status.value] if status is not None else []), limit + 1]
        with self.db.read() as conn:
            rows = conn.execute(query, params).fetchall()
        graphs = [graph_record(json.loads(row[0])) for row in rows[:limit]]
        more = len(rows) > limit and graphs
        return graphs, json.dumps([graphs[-1].created_at, graphs[-1].graph_id]) if more else None

    def sweep_page(
        self, sweep_key: str, until: str, *, start: str | None = None, limit: int = 100
    ) -> tuple[list[JobRecord], str | None]:
        # The continuation is the last (sweep_at, graph_id, entry) returned, as DynamoDB's.
        after = json.loads(start) if start else ["", "", ""]
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT json_extract(item, '$.sweep_at') AS at, graph_id, entry, item FROM jobs "
                "WHERE json_extract(item, '$.sweep_key') = ? AND json_extract(item, '$.sweep_at') <= ? "
                "AND (json_extract(item, '$.sweep_at'), graph_id, entry) > (?, ?, ?) "
                "ORDER BY at, graph_id, entry LIMIT ?",
                (sweep_key, until, *after, limit),
            ).fetchall()
        records = [record_from_item(json.loads(text)) for _, _, _, text in rows]
        last = list(rows[-1][:3]) if len(rows) == limit else None
        return records, json.dumps(last) if last else None

    def get_sweep_cursor(self) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'sweep_cursor'").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_sweep_cursor(self, cursor: Mapping[str, Any] | None) -> None:
        with self.db.write() as conn:
            if cursor is None:
                conn.execute("DELETE FROM meta WHERE key = 'sweep_cursor'")
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('sweep_cursor', ?)", (_dumps(cursor),)
                )

    def get_job(self, graph_id: str, name: str) -> JobRecord | None:
        with self.db.read() as conn:
            item = self._get(conn, graph_id, job_entry(name))
        return None if item is None else record_from_item(item)

    def _query(self, graph_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        """Items whose entry starts with ``prefix``, in entry order, a page at a time."""
        after = prefix
        upper = _upper(prefix)
        while True:
            with self.db.read() as conn:
                rows = conn.execute(
                    "SELECT entry, item FROM jobs WHERE graph_id = ? AND entry > ? AND entry < ? "
                    "ORDER BY entry LIMIT ?",
                    (graph_id, after, upper, _LIST_BATCH),
                ).fetchall()
            for _, text in rows:
                yield json.loads(text)
            if len(rows) < _LIST_BATCH:
                return
            after = rows[-1][0]

    def list_jobs(self, graph_id: str, *, changed_since: str | None = None) -> Iterator[JobRecord]:
        for item in self._query(graph_id, JOB_PREFIX):
            if changed_since is None or str(item.get("updated_at") or "") >= changed_since:
                yield record_from_item(item)

    def job_rows(
        self, graph_id: str, *, changed_since: str | None = None, error_chars: int = 300
    ) -> list[dict[str, Any]]:
        """The graph's jobs as ``overseer ui`` lists them (name, type, status, attempts,
        started_at, finished_at, error text, parent, deps), built by SQLite: a 10,000-job
        graph is listed without parsing its items' args, manifests or histories. With
        ``changed_since``, only the jobs stamped (``updated_at``) at or after it."""
        error = (
            "CASE WHEN json_extract(item, '$.error_type') IS NOT NULL"
            " OR json_extract(item, '$.error_message') IS NOT NULL"
            " THEN coalesce(json_extract(item, '$.error_type'), 'Error') || ': '"
            " || coalesce(json_extract(item, '$.error_message'), '')"
            " ELSE json_extract(item, '$.reason') END"
        )  # as JobRecord.error_text
        fields = ", ".join(
            f"'{name}', json_extract(item, '$.{name}')" for name in ("started_at", "finished_at", "parent")
        )
        query = (
            f"SELECT json_object('name', coalesce(json_extract(item, '$.job_name'), substr(entry, ?)), "
            "'type', coalesce(json_extract(item, '$.job_type'), ''), "
            "'status', coalesce(json_extract(item, '$.status'), 'waiting'), "
            f"'attempts', coalesce(json_extract(item, '$.attempts'), 0), {fields}, "
            f"'error', substr({error}, 1, ?), 'deps', json(coalesce(json_extract(item, '$.deps'), 'null'))) "
            "FROM jobs WHERE graph_id = ? AND entry > ? AND entry < ?"
        )
        params: list[Any] = [len(JOB_PREFIX) + 1, error_chars, graph_id, JOB_PREFIX, _upper(JOB_PREFIX)]
        if changed_since is not None:
            query += " AND json_extract(item, '$.updated_at') >= ?"
            params.append(changed_since)
        with self.db.read() as conn:
            rows = [json.loads(text) for (text,) in conn.execute(query, params).fetchall()]
        for row in rows:
            if row["parent"] is None:
                del row["parent"]
            if row["deps"] is None:  # more deps than fit on the item: in its edge chunks
                job = self.get_job(graph_id, row["name"])
                row["deps"] = self.dependencies(job) if job is not None else []
        return rows

    def dependencies(self, job: JobRecord) -> list[str]:
        if job.deps is not None:
            return list(job.deps)
        chunks = self._query(job.graph_id, f"in#{job.name}#")
        return [str(d) for chunk in chunks for d in chunk.get("deps") or []]

    def dependents(self, job: JobRecord) -> list[Dependent]:
        if job.dependents is not None:
            return list(job.dependents)
        chunks = self._query(job.graph_id, f"out#{job.name}#")
        return [
            Dependent(str(c), int(i), int(n)) for chunk in chunks for c, i, n in chunk.get("dependents") or []
        ]

    def outputs(self, graph_id: str, names: Sequence[str]) -> dict[str, JobOutputs]:
        out: dict[str, JobOutputs] = {}
        names = list(dict.fromkeys(names))
        for start in range(0, len(names), _LIST_BATCH):
            batch = [job_entry(n) for n in names[start : start + _LIST_BATCH]]
            marks = ",".join("?" * len(batch))
            with self.db.read() as conn:
                rows = conn.execute(
                    f"SELECT item FROM jobs WHERE graph_id = ? AND entry IN ({marks})", (graph_id, *batch)
                ).fetchall()
            for (text,) in rows:
                item = json.loads(text)
                out[item.get("job_name") or ""] = JobOutputs(
                    json.loads(item.get("artifacts") or "[]"),
                    int(json.loads(item["expansion"])["count"]) if item.get("expansion") else 0,
                )
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
        values, removed = transition_values(
            transition, changes, remove, fenced=fence is not None, graph_id=graph_id, name=name
        )
        sources = {s.value for s in transition.sources}
        entry = job_entry(name)
        with self.db.write() as conn:
            old = self._get(conn, graph_id, entry)
            if old is None or old.get("status") not in sources:
                return None
            if fence is not None:
                if old.get("attempts") != fence.attempts:
                    return None
                if fence.owner is not None and old.get("lease_owner") != fence.owner:
                    return None
            if _rerun_since(old, dep_finished_at):
                return None
            if transition.requires is not None and old.get(transition.requires) is None:
                return None
            new = dict(old)
            for key, value in values.items():
                if value is None:
                    new.pop(key, None)
                else:
                    new[key] = value
            for key in removed:
                new.pop(key, None)
            self._put(conn, new, old)
            if add_jobs:
                graph = self._get_graph(conn, graph_id)
                if graph is not None:
                    graph["jobs_total"] = int(graph["jobs_total"]) + add_jobs
                    graph["updated_at"] = timeutil.iso()
                    self._put_graph(conn, graph)
        return record_from_item(new)

    def put_children(self, graph_id: str, items: Sequence[Mapping[str, Any]]) -> int:
        written = 0
        with self.db.write() as conn:
            for item in items:
                if self._get(conn, graph_id, item["entry"]) is None:
                    self._put(conn, dict(item), None, insert=True)
                    written += 1
        return written

    def advance_expansion(self, graph_id: str, name: str, made: int) -> bool:
        with self.db.write() as conn:
            old = self._get(conn, graph_id, job_entry(name))
            if old is None or int(old.get("expand_made") or 0) >= made:
                return False
            self._put(conn, {**old, "expand_made": made, "updated_at": timeutil.iso()}, old)
        return True

    def complete_expansion(self, graph_id: str, name: str) -> bool:
        with self.db.write() as conn:
            old = self._get(conn, graph_id, job_entry(name))
            if old is None or old.get("expand_done_at"):
                return False
            stamp = timeutil.iso()
            self._put(conn, {**old, "expand_done_at": stamp, "updated_at": stamp}, old)
        return True

    def count_done(self, graph_id: str, entry: str, index: int) -> int:
        with self.db.write() as conn:
            old = self._get(conn, graph_id, entry)
            done = set((old or {}).get("done") or ()) | {int(index)}
            self._put(
                conn,
                {**(old or {}), "graph_id": graph_id, "entry": entry, "done": sorted(done)},
                old,
                insert=True,
            )
        return len(done)

    def record_finished_dependency(
        self, graph_id: str, name: str, index: int, *, dep_finished_at: str | None = None
    ) -> int | None:
        entry = job_entry(name)
        with self.db.write() as conn:
            old = self._get(conn, graph_id, entry)
            if (
                old is None
                or old.get("status") != JobStatus.WAITING.value
                or _rerun_since(old, dep_finished_at)
            ):
                return None
            finished = set(old.get("finished_deps") or ())
            finished.add(int(index))
            # DynamoDB writes (and streams) an ADD to a set even when it changes nothing.
            self._put(conn, {**old, "finished_deps": sorted(finished)}, old)
        return len(finished)

    def forget_finished_dependency(self, graph_id: str, name: str, index: int, *, rerun_at: str) -> bool:
        entry = job_entry(name)
        with self.db.write() as conn:
            old = self._get(conn, graph_id, entry)
            if old is None or old.get("status") != JobStatus.WAITING.value:
                return False
            finished = set(old.get("finished_deps") or ()) - {int(index)}
            new = {**old, "finished_deps": sorted(finished), "rerun_at": rerun_at}
            if not finished:
                del new["finished_deps"]  # DynamoDB drops a set that becomes empty
            self._put(conn, new, old)
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
        entry = job_entry(name)
        with self.db.write() as conn:
            old = self._get(conn, graph_id, entry)
            if (
                old is None
                or old.get("status") != JobStatus.RUNNING.value
                or old.get("attempts") != fence.attempts
                or old.get("lease_owner") != (fence.owner or "")
            ):
                return False
            new = {**old, "lease_expires_at": lease_expires_at, "heartbeat_at": heartbeat_at}
            if lease_bucket is not None:
                new["sweep_at"] = lease_bucket
            self._put(conn, new, old)
        return True

    def add_graph_progress(self, graph_id: str, deltas: Mapping[str, int]) -> GraphRecord | None:
        for status in deltas:
            if status not in COUNTERS:
                raise ValueError(f"no counter for status {status!r}")
        if not any(deltas.values()):
            return self.get_graph(graph_id)
        with self.db.write() as conn:
            item = self._get_graph(conn, graph_id)
            if item is None or item.get("status") != GraphStatus.RUNNING.value:
                return None
            for status, n in deltas.items():
                if n:
                    item[f"count_{status}"] = int(item.get(f"count_{status}") or 0) + int(n)
            item["updated_at"] = timeutil.iso()
            self._put_graph(conn, item)
        return graph_record(item)

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
        for key in counts or {}:
            if key not in COUNTERS:
                raise ValueError(f"no counter for status {key!r}")
        allowed = {GraphStatus(s).value for s in sources}
        stamp = timeutil.iso()
        with self.db.write() as conn:
            item = self._get_graph(conn, graph_id)
            if item is None or item.get("status") not in allowed:
                return None
            item.update(status=status.value, updated_at=stamp)
            if status.terminal:
                item["finished_at"] = stamp
            for key, n in (counts or {}).items():
                item[f"count_{key}"] = int(n)
            # The reason is the latest status change's: a rerun's ``running`` clears a deadline's.
            if reason:
                item["reason"] = reason
            else:
                item.pop("reason", None)
            if deadline_at:
                item["deadline_at"] = deadline_at
            self._put_graph(conn, item)
        return graph_record(item)

    # -- retention (``overseer gc``) -------------------------------------------------------
    # A graph's end: its finished_at, set by every terminal status (updated_at for an item
    # written before that was so).
    _ENDED_AT = "COALESCE(json_extract(item, '$.finished_at'), json_extract(item, '$.updated_at'))"
    _ENDED = tuple(status.value for status in GraphStatus if status.terminal)

    def ended_graphs(self, ended_before: str) -> list[GraphRecord]:
        """The graphs that ended (finished, failed, aborted) before ``ended_before`` (ISO),
        oldest end first. Running and creating graphs are never among them."""
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT item FROM graphs WHERE json_extract(item, '$.status') IN (?, ?, ?) "
                f"AND {self._ENDED_AT} < ? ORDER BY {self._ENDED_AT}, graph_id",
                (*self._ENDED, ended_before),
            ).fetchall()
        return [graph_record(json.loads(text)) for (text,) in rows]

    def delete_graph(self, graph_id: str, *, ended_before: str) -> int | None:
        """Delete the graph, every item of its jobs (jobs, edge chunks, expansion counters)
        and the change feed's records of them that every feed reader has read, in one write
        transaction, if it is still ended before ``ended_before`` (a rerun may have brought
        it back since it was listed). Returns how many jobs went, None when it was kept."""
        with self.db.write() as conn:
            ended = conn.execute(
                f"SELECT 1 FROM graphs WHERE graph_id = ? AND json_extract(item, '$.status') IN (?, ?, ?) "
                f"AND {self._ENDED_AT} < ?",
                (graph_id, *self._ENDED, ended_before),
            ).fetchone()
            if ended is None:
                return None
            jobs = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE graph_id = ? AND entry >= ? AND entry < ?",
                (graph_id, JOB_PREFIX, _upper(JOB_PREFIX)),
            ).fetchone()[0]
            conn.execute("DELETE FROM jobs WHERE graph_id = ?", (graph_id,))
            conn.execute("DELETE FROM graphs WHERE graph_id = ?", (graph_id,))
            # Only records every reader is past (as the feed's own trim): none is lost to a reader.
            read = conn.execute("SELECT MIN(position) FROM feed_readers").fetchone()[0]
            failed = conn.execute("SELECT MIN(first_seq) FROM stream_failures").fetchone()[0]
            if read is not None:
                last = read if failed is None else min(int(read), int(failed) - 1)
                conn.execute(
                    "DELETE FROM feed WHERE seq <= ? "
                    "AND json_extract(record, '$.dynamodb.Keys.graph_id.S') = ?",
                    (last, graph_id),
                )
        return int(jobs)

    # -- rolling back, leases -----------------------------------------------------------
    def roll_back_graph(self, graph: GraphRecord) -> bool:
        with self.db.write() as conn:
            item = self._get_graph(conn, graph.graph_id)
            if (
                item is None
                or item.get("status") != GraphStatus.CREATING.value
                or item.get("created_at") != graph.created_at
            ):
                return False
            conn.execute("DELETE FROM graphs WHERE graph_id = ?", (graph.graph_id,))
            conn.execute(
                "DELETE FROM jobs WHERE graph_id = ? AND json_extract(item, '$.created_at') = ?",
                (graph.graph_id, graph.created_at),
            )
        return True

    def acquire_lease(self, name: str, owner: str, *, seconds: float) -> bool:
        with self.db.write() as conn:
            taken = conn.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE leases.expires_at < ?",
                (name, owner, timeutil.iso_in(seconds), timeutil.iso()),
            ).rowcount
        return bool(taken)

    def release_lease(self, name: str, owner: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    # -- concurrency limits (overseer.limits) ---------------------------------------------
    @staticmethod
    def _holders(conn: sqlite3.Connection, limit: str) -> dict[str, Holder] | None:
        row = conn.execute("SELECT item FROM limits WHERE name = ?", (limit,)).fetchone()
        if row is None:
            return None
        return {job: Holder.from_item(h) for job, h in json.loads(row[0])["holders"].items()}

    @staticmethod
    def _put_holders(conn: sqlite3.Connection, limit: str, holders: Mapping[str, Holder], size: int) -> None:
        item = {"holders": {job: h.to_item() for job, h in holders.items()}, "size": size}
        item["updated_at"] = timeutil.iso()
        conn.execute(
            "INSERT INTO limits (name, item) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET item = excluded.item",
            (limit, _dumps(item)),
        )

    def acquire_slot(self, limit: str, size: int, job: str, holder: Holder) -> Admission:
        with self.db.write() as conn:
            admission, holders = admit(self._holders(conn, limit) or {}, size, job, holder)
            if admission == Admission.HELD:
                self._put_holders(conn, limit, holders, size)
        return admission

    def _change_slot(self, limit: str, job: str, fence: Fence, until: str | None) -> bool:
        """Renew (``until``) or give back (None) the slot ``job`` holds for ``fence``."""
        with self.db.write() as conn:
            row = conn.execute("SELECT item FROM limits WHERE name = ?", (limit,)).fetchone()
            item = json.loads(row[0]) if row else {"holders": {}}
            held = item["holders"].get(job)
            if held is None or held.get("owner") != fence.owner or held.get("attempt") != fence.attempts:
                return False
            if until is None:
                del item["holders"][job]
            else:
                held["until"] = until
            item["updated_at"] = timeutil.iso()
            conn.execute("UPDATE limits SET item = ? WHERE name = ?", (_dumps(item), limit))
        return True

    def renew_slot(self, limit: str, job: str, fence: Fence, *, until: str) -> bool:
        return self._change_slot(limit, job, fence, until)

    def release_slot(self, limit: str, job: str, fence: Fence) -> bool:
        return self._change_slot(limit, job, fence, None)

    def slot_holders(self, limit: str) -> dict[str, Holder]:
        with self.db.read() as conn:
            return self._holders(conn, limit) or {}

    def count_waiting(self, limit: str) -> int:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE json_extract(item, '$.sweep_key') = ?", (wait_key(limit),)
            ).fetchone()
        return int(row[0])
