"""Graphs that grow at run time (``overseer.Expand``) under chaos: worker processes killed
during a 2,000-child expansion while every message is sent twice; a parent killed between
storing its items and its finish; the scheduler cut off half-way through writing a page of
children; a retried parent that lists other items; every stream record delivered twice and
the parent's records replayed. After each, nothing is lost or doubled
(``assert_nothing_lost_or_doubled``):

* every child exists once: one record of the jobs table created it (the stream on AWS, the
  feed on the embedded backend), named and argued after its item of the committed list;
* every job moved into ``finished`` exactly once and never out of it, and ran to its
  outcome once: a handler notes each run as it returns its artifact (just before the
  worker writes it). A killed attempt may have started, or even returned, without
  finishing: a note of an attempt other than the committed one is allowed only for an
  attempt whose worker was killed (or lost its lease), and no attempt ran twice;
* the join ran once and was given the parent and then every child in item order, each
  with its artifact; the items file of the committed attempt is the only one left;
* the graph finished with exact counters (``counts``, ``jobs_total``), no job left
  waiting, ready or running.

The 2,000-child expansion runs real ``overseer worker`` processes on the embedded backend:
on the emulator each job costs about half a second in process, so it would take ~15
minutes. The other scenarios run in process on both backends (the conformance driver),
small enough for the emulator.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overseer.backends.embedded import embedded_services, feed_reader
from overseer.backends.embedded.feed import FeedReader
from overseer.config import Settings
from overseer.errors import StoreError
from overseer.expansion import items_key
from overseer.handlers import HandlerSpec, to_spec
from overseer.scheduler import Scheduler
from overseer.states import GraphStatus, JobStatus
from overseer.store import JobRecord, Services
from overseer.sweep import sweep
from overseer.worker import Worker
from tests.chaos import toolkit
from tests.chaos.conftest import CHAOS_SETTINGS, ChaosStack

# aws_shared: the session's stack on the emulator, a fixture of the conformance suite's.
from tests.conformance.conftest import aws_backend, aws_shared, embedded_backend  # noqa: F401
from tests.conformance.driver import Backend, Interrupted

pytestmark = [pytest.mark.chaos]
HANDLERS = toolkit.HANDLERS


# Where the emulator adds nothing but minutes (about half a second a job), a test runs on
# the embedded backend only.
EMBEDDED_ONLY = pytest.mark.parametrize("backend", ["embedded"], indirect=True)


@pytest.fixture(params=["embedded", pytest.param("aws", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The conformance suite's in-process stack, on each backend."""
    if request.param == "aws":
        yield aws_backend(request.getfixturevalue("aws_shared"))
    else:
        yield embedded_backend(tmp_path / "stack")


# -- what happened, read back ------------------------------------------------------------
@dataclasses.dataclass
class Notes:
    """The runs of ``toolkit``'s expansion handlers: (job, attempt, worker pid) of each run
    started and of each run that reached its artifact write."""

    started_log: Path
    returned_log: Path

    def started(self, graph_id: str) -> list[tuple[str, int, int]]:
        return [(n, a, pid) for g, n, a, pid in toolkit.read_runs(self.started_log) if g == graph_id]

    def returned(self, graph_id: str) -> list[tuple[str, int, int]]:
        return [(n, a, pid) for g, n, a, pid in toolkit.read_runs(self.returned_log) if g == graph_id]


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Notes:
    """In-process handlers note their runs as the worker processes do."""
    found = Notes(tmp_path / "started.log", tmp_path / "returned.log")
    monkeypatch.setenv(toolkit.ENV_RUNS, str(found.started_log))
    monkeypatch.setenv(toolkit.ENV_RETURNS, str(found.returned_log))
    return found


def stream_of(reader: Any) -> list[dict[str, Any]]:
    """The records of every write to the jobs table: the stream from its start (AWS), or
    the whole feed read by a reader of its own (embedded: the records the scheduler is
    given, which include every insert, every end and every write to a finished job)."""
    if isinstance(reader, FeedReader):
        audit = FeedReader(reader.db.path, name=f"audit-{uuid.uuid4().hex[:8]}")
        records: list[dict[str, Any]] = []
        while batch := audit.poll():
            records.extend(batch)
        return records
    return toolkit.stream_records(reader.client, reader.stream_arn)


def _status(image: Mapping[str, Any] | None) -> str | None:
    return ((image or {}).get("status") or {}).get("S")


def _name(record: Mapping[str, Any]) -> str | None:
    """The job a record is of, or None for other items (graphs, counters)."""
    entry = record["dynamodb"]["Keys"]["entry"]["S"]
    return entry[len("job#") :] if entry.startswith("job#") else None


@dataclasses.dataclass
class Ledger:
    """What the jobs table's records say was written to one graph's jobs."""

    created: Counter[str]
    into_finished: Counter[str]
    out_of_finished: list[str]
    # Job -> attributes a write changed while it stayed finished.
    changed_while_finished: dict[str, set[str]]


def ledger(records: Iterable[Mapping[str, Any]], graph_id: str) -> Ledger:
    book = Ledger(Counter(), Counter(), [], {})
    for record in records:
        body = record["dynamodb"]
        name = _name(record)
        if body["Keys"]["graph_id"]["S"] != graph_id or name is None:
            continue
        old, new = body.get("OldImage"), body.get("NewImage")
        if record["eventName"] == "INSERT":
            book.created[name] += 1
        if _status(new) == "finished" and _status(old) != "finished":
            book.into_finished[name] += 1
        elif _status(old) == "finished" and _status(new) != "finished":
            book.out_of_finished.append(name)
        elif _status(old) == "finished" and old and new:
            changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            book.changed_while_finished.setdefault(name, set()).update(changed)
    return book


def items_files(services: Services, graph_id: str, name: str, attempts: int) -> set[int]:
    """The attempts (1 to ``attempts``) whose items file is in the artifact store."""
    found = set()
    for attempt in range(1, attempts + 1):
        try:
            services.artifacts.get_bytes(
                services.settings.artifact_bucket, items_key(graph_id, name, attempt)
            )
        except Exception:
            continue
        found.add(attempt)
    return found


def listed(count: int, by: int | None = None) -> list[dict[str, int]]:
    """The items ``toolkit.listing`` lists (with ``relist``: those of attempt ``by``)."""
    return [{"i": i, **({"listed_by": by} if by else {})} for i in range(count)]


def assert_nothing_lost_or_doubled(
    services: Services,
    reader: Any,
    graph_id: str,
    items: Sequence[Mapping[str, Any]],
    notes: Notes,
    *,
    lost: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset(),
) -> dict[str, JobRecord]:
    """The checks of the module docstring for ``toolkit.expansion_graph`` (``start`` with
    ``items``, ``join``); ``lost``: the attempts (job, attempt) whose worker was killed or
    lost its lease, which may have returned without finishing. Returns the jobs."""
    store = services.store
    children = [f"start.{i}" for i in range(len(items))]
    names = {"start", "join", *children}
    graph = store.get_graph(graph_id)
    jobs = {job.name: job for job in store.list_jobs(graph_id)}
    # The graph finished with exact counters; every job, and no other, exists and finished.
    assert graph is not None and graph.status == GraphStatus.FINISHED
    assert (graph.jobs_total, graph.counts) == (
        len(names),
        {"finished": len(names), "failed": 0, "aborted": 0},
    )
    assert set(jobs) == names
    assert {n: j.status for n, j in jobs.items() if j.status != JobStatus.FINISHED} == {}
    # The children are those of the committed list, each made from its item.
    assert [
        {key: jobs[c].args.get(key) for key in item} for c, item in zip(children, items, strict=True)
    ] == [dict(item) for item in items]
    start = jobs["start"]
    assert start.summary()["expansion"] == {"type": "item", "count": len(items), "done": True}
    assert (start.expand_made, start.expansion and start.expansion["key"]) == (
        len(items),
        items_key(graph_id, "start", start.attempts),
    )
    # One record created each child, one moved each job into finished, none moved one out;
    # only the parent's expansion moved on while it was finished.
    book = ledger(stream_of(reader), graph_id)
    assert {n: c for n, c in book.created.items() if n not in ("start", "join")} == dict.fromkeys(children, 1)
    assert book.into_finished == Counter(dict.fromkeys(names, 1))
    assert book.out_of_finished == []
    assert set(book.changed_while_finished) <= {"start"}
    assert book.changed_while_finished.get("start", set()) <= {"expand_made", "expand_done_at", "updated_at"}
    # No attempt ran twice; each job returned once from its committed attempt, and other
    # attempts returned only where their worker was lost.
    started = Counter((n, a) for n, a, _ in notes.started(graph_id))
    assert {run: k for run, k in started.items() if k > 1} == {}
    committed = {(n, j.attempts) for n, j in jobs.items()}
    returned = Counter((n, a) for n, a, _ in notes.returned(graph_id))
    assert Counter({run: k for run, k in returned.items() if run in committed}) == Counter(
        dict.fromkeys(committed, 1)
    )
    assert set(returned) - committed <= set(lost)
    # Every artifact is there with its bytes; the join saw the parent, then each child in
    # item order with its artifact.
    assert toolkit.check_artifacts(services, [jobs[n] for n in ["start", *children]]) == []
    bucket = services.settings.artifact_bucket
    gathered = json.loads(services.artifacts.get_bytes(bucket, toolkit.gathered_key(graph_id, "join")))
    assert gathered == [[n, [toolkit.artifact_key(graph_id, n)]] for n in ["start", *children]]
    # The committed attempt's items file is the only one left.
    files = items_files(services, graph_id, "start", start.attempts + 1)
    assert start.attempts in files
    left = sorted(files - {start.attempts})
    assert left == [], f"the items files of start's attempts {left}, which did not commit, are left"
    return jobs


# -- 1. killed workers and doubled messages, 2,000 children ------------------------------
@pytest.fixture
def embedded_chaos(tmp_path: Path) -> ChaosStack:
    """The chaos suite's stack on the embedded backend: the same settings, worker processes
    (``toolkit.WorkerPool``) and pump loop (``ChaosStack.drive``), on SQLite and a directory
    (what ``ChaosStack`` uses of a ``LocalStack``: its settings, services and reader)."""
    state = tmp_path / "stack"
    settings = Settings(
        backend="embedded",
        state_dir=str(state),
        artifact_bucket="artifacts",
        scratch_dir=str(tmp_path / "scratch"),
        **CHAOS_SETTINGS,
    )
    stack = SimpleNamespace(
        settings=settings, services=embedded_services(state, settings), reader=feed_reader(state)
    )
    started, returned = tmp_path / "started.log", tmp_path / "returned.log"
    env = {**settings.to_env(), toolkit.ENV_RUNS: str(started), toolkit.ENV_RETURNS: str(returned)}
    return ChaosStack(stack, env, tmp_path, started)


def test_a_2000_child_expansion_with_workers_killed_and_messages_doubled_loses_and_doubles_nothing(
    embedded_chaos: ChaosStack,
) -> None:
    chaos, children = embedded_chaos, 2000
    services = chaos.services
    chaos.submit(toolkit.expansion_graph("wide", children))
    queue = toolkit.DuplicatingQueue(services.queue)
    scheduler = Scheduler(services.store, queue, artifacts=services.artifacts)
    pool = chaos.pool(3).start()
    try:
        # A kill a second: the run takes several seconds however loaded the machine is.
        with toolkit.Killer(pool, interval=1.0, seed=5) as killer:
            chaos.drive("wide", timeout=150, scheduler=scheduler)
    finally:
        pool.stop()

    notes = Notes(chaos.runs_path, chaos.tmp / "returned.log")
    killed = set(killer.killed)
    lost = {(n, a) for n, a, pid in notes.returned("wide") if pid in killed}
    jobs = assert_nothing_lost_or_doubled(
        services, chaos.stack.reader, "wide", listed(children), notes, lost=lost
    )
    # A kill loses at most the attempt its worker was running.
    committed = {(n, j.attempts) for n, j in jobs.items()}
    assert len({(n, a) for n, a, _ in notes.returned("wide")} - committed) <= len(killed)
    # Every message was sent twice; workers were killed, and some kills took a job down mid-run.
    assert queue.duplicates >= len(jobs) == children + 2
    assert len(killed) >= 3
    assert any(j.attempts > 1 for j in jobs.values()), "no kill hit a running job"


# -- 2. a kill between the items and their commit; the scheduler cut off mid-page ---------
class WorkerKilled(BaseException):
    """The worker's process died here (SIGKILL): nothing after this point happens."""


class DiesAfterWriting:
    """An artifact store whose process dies right after it has written ``key``."""

    def __init__(self, artifacts: Any, key: str) -> None:
        self.artifacts = artifacts
        self.key = key

    def put_bytes(self, bucket: str, key: str, data: bytes, **options: Any) -> None:
        self.artifacts.put_bytes(bucket, key, data, **options)
        if key == self.key:
            raise WorkerKilled(f"killed after writing {key}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.artifacts, name)


def specs(handlers: Mapping[str, Any] = HANDLERS) -> dict[str, HandlerSpec]:
    return {t: to_spec(t, h) for t, h in handlers.items()}


def with_lease(backend: Backend, seconds: int, **services: Any) -> Services:
    """The backend's services with a short lease (a worker's claims expire soon)."""
    settings = backend.settings.with_(lease_seconds=seconds)
    return dataclasses.replace(backend.services, settings=settings, **services)


def expire_lease(backend: Backend, graph_id: str, name: str) -> JobRecord:
    """Sweep until the running job's lease has expired and it is ready again."""
    deadline = time.monotonic() + 30
    while (job := backend.store.get_job(graph_id, name)).status == JobStatus.RUNNING:
        assert time.monotonic() < deadline, f"the lease of {name} never expired"
        time.sleep(0.25)
        sweep(backend.services, clock_skew_seconds=0)
    return job


def kill_after_storing_items(backend: Backend, graph_id: str) -> None:
    """Run attempt 1 of ``start`` on a worker that dies once it has stored the items (before
    the finish that would commit them), and sweep until its lease has expired."""
    artifacts = DiesAfterWriting(backend.services.artifacts, items_key(graph_id, "start", 1))
    doomed = Worker(with_lease(backend, 1, artifacts=artifacts), specs(), worker_id="doomed")
    backend.pump()
    with pytest.raises(WorkerKilled):
        backend.work_once(doomed)
    # No expansion was committed and the graph still counts 2 jobs.
    start = backend.store.get_job(graph_id, "start")
    assert (start.status, start.attempts, start.expansion) == (JobStatus.RUNNING, 1, None)
    assert items_files(backend.services, graph_id, "start", 3) == {1}
    assert backend.store.get_graph(graph_id).jobs_total == 2
    assert expire_lease(backend, graph_id, "start").error["type"] == "LeaseExpired"


def test_a_parent_killed_between_storing_its_items_and_its_finish_gets_its_retrys_children_only(
    backend: Backend, notes: Notes
) -> None:
    g = backend.gid("killed-after-items")
    backend.submit(toolkit.expansion_graph(g, 2, relist=True), HANDLERS)
    kill_after_storing_items(backend, g)  # attempt 1 listed 2 items

    assert backend.drive(g, HANDLERS).status == GraphStatus.FINISHED
    # Attempt 2 listed 3 other items: only its children exist; attempt 1's items are deleted.
    jobs = assert_nothing_lost_or_doubled(
        backend.services, backend.reader, g, listed(3, by=2), notes, lost={("start", 1)}
    )
    assert jobs["start"].attempts == 2


PAGE = 2  # children per write of the scheduler here: 5 children are pages 0-1, 2-3, 4


@pytest.mark.parametrize(
    ("backend", "cut_at"),
    [
        pytest.param("embedded", 1, id="embedded-first-child"),
        pytest.param("embedded", 4, id="embedded-mid-second-page"),
        pytest.param("embedded", 6, id="embedded-the-count-after-the-last-page"),
        # DynamoDB is where a page is left half-written.
        pytest.param("aws", 4, id="aws-mid-second-page", marks=pytest.mark.integration),
    ],
    indirect=["backend"],
)
def test_a_scheduler_cut_off_while_writing_children_resumes_from_the_redelivered_record(
    backend: Backend, notes: Notes, monkeypatch: pytest.MonkeyPatch, cut_at: int
) -> None:
    monkeypatch.setattr("overseer.expansion.PAGE", PAGE)
    children = 5
    g = backend.gid(f"cut-children-{cut_at}")
    backend.submit(toolkit.expansion_graph(g, children), HANDLERS)
    worker = backend.worker(HANDLERS)
    backend.pump()
    backend.work_once(worker)  # start lists 5 items and commits them
    # The scheduler's invocation for start's finish stops at its `cut_at`-th write: a child
    # of the pages, or the count of children made (``expand_made``) after the last page.
    with pytest.raises(Interrupted), backend.interrupt_writes(cut_at):
        backend.pump()
    batch = backend.events[-1]

    # The pages before the cut are there. SQLite writes a page in one transaction, so none
    # of the cut page is; DynamoDB writes it child by child, so those before the cut are.
    made = {int(n.rsplit(".", 1)[1]) for n in backend.jobs(g) if n != "start" and n != "join"}
    if cut_at > children:  # the cut is the count's write: every child is there
        written = children
    elif backend.kind == "embedded":  # one transaction a page
        written = (cut_at - 1) // PAGE * PAGE
    else:
        written = cut_at - 1
    assert made == set(range(written))
    assert backend.store.get_job(g, "start").expand_made == 0

    # The children written meanwhile run (on DynamoDB their records may be on other
    # shards than the parent's), then the batch is delivered again, as Lambda retries it.
    while backend.pump() + backend.work_once(worker):
        pass
    backend.scheduler.process_stream_event(batch)
    assert backend.drive(g, HANDLERS).status == GraphStatus.FINISHED
    assert_nothing_lost_or_doubled(backend.services, backend.reader, g, listed(children), notes)


class FailsToDelete:
    """An artifact store whose deletes fail (S3 throttled past the retries, or the process
    killed there)."""

    def __init__(self, artifacts: Any) -> None:
        self.artifacts = artifacts

    def delete(self, bucket: str, key: str) -> None:
        raise Interrupted(f"the delete of s3://{bucket}/{key}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.artifacts, name)


@EMBEDDED_ONLY
def test_a_scheduler_cut_off_while_deleting_a_dead_attempts_items_deletes_them_when_redelivered(
    backend: Backend, notes: Notes
) -> None:
    g = backend.gid("cut-while-deleting")
    backend.submit(toolkit.expansion_graph(g, 2, relist=True), HANDLERS)
    kill_after_storing_items(backend, g)
    backend.pump()
    backend.work_once(backend.worker(HANDLERS))  # attempt 2 lists 3 items and commits them
    # The invocation for attempt 2's finish makes the children and counts them, then stops
    # as it deletes attempt 1's items file.
    expansions = backend.scheduler.expansions
    expansions.artifacts = FailsToDelete(backend.services.artifacts)
    with pytest.raises(Interrupted):
        backend.pump()
    expansions.artifacts = backend.services.artifacts
    assert len(backend.jobs(g)) == 2 + 3
    assert items_files(backend.services, g, "start", 3) == {1, 2}

    backend.scheduler.process_stream_event(backend.events[-1])  # the batch, retried
    assert backend.drive(g, HANDLERS).status == GraphStatus.FINISHED
    assert_nothing_lost_or_doubled(
        backend.services, backend.reader, g, listed(3, by=2), notes, lost={("start", 1)}
    )


# -- 3. a retried parent that lists other items ---------------------------------------------
@EMBEDDED_ONLY
def test_a_parent_that_faults_after_listing_gets_its_retrys_other_children_only(
    backend: Backend, notes: Notes
) -> None:
    g = backend.gid("faulted-after-listing")
    graph = backend.run(toolkit.expansion_graph(g, 2, relist=True, fault_after_listing=[1]), HANDLERS)
    assert graph.status == GraphStatus.FINISHED
    # Attempt 1 listed 2 items and faulted; attempt 2 listed 3 others, which alone exist.
    jobs = assert_nothing_lost_or_doubled(backend.services, backend.reader, g, listed(3, by=2), notes)
    assert [(e["attempt"], e["type"]) for e in jobs["start"].errors] == [(1, "Fault")]
    assert ("start", 1) in {(n, a) for n, a, _ in notes.started(g)}


class CutOff:
    """A store a worker cannot renew its lease through (it lost the table while its
    handler runs): the lease expires under the handler."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def renew_lease(self, *args: Any, **kwargs: Any) -> bool:
        raise StoreError("the jobs table cannot be reached from this worker")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize(
    ("backend", "returns"),
    [
        ("embedded", "before-the-children-exist"),
        pytest.param("aws", "before-the-children-exist", marks=pytest.mark.integration),
        ("embedded", "after-the-children-exist"),
    ],
    indirect=["backend"],
)
def test_a_parent_attempt_that_outlived_its_lease_commits_nothing_and_its_items_are_deleted(
    backend: Backend, notes: Notes, returns: str
) -> None:
    g = backend.gid(f"outlived-{returns}")
    backend.submit(toolkit.expansion_graph(g, 2, relist=True), HANDLERS)

    def listing_while_taken_over(job: Any) -> Any:
        # While attempt 1 runs, its lease expires and attempt 2 runs on another worker,
        # lists 3 items and commits them; then attempt 1 returns its own 2, before or after
        # the scheduler has made attempt 2's children (and deleted the other items files).
        expire_lease(backend, g, "start")
        backend.pump()
        backend.work_once(backend.worker(HANDLERS, worker_id="second"))
        if returns == "after-the-children-exist":
            while backend.pump():
                pass
            assert len(backend.jobs(g)) == 2 + 3
        return toolkit.listing(job)

    slow = Worker(
        with_lease(backend, 1, store=CutOff(backend.store)),
        specs({**HANDLERS, "listing": listing_while_taken_over}),
        worker_id="cut-off",
    )
    backend.pump()
    backend.work_once(slow)

    # Both attempts stored their items; attempt 2's finish committed, attempt 1's was refused
    # (a worker may delete its items then: none of its attempt's children can exist).
    assert [o.kind for o in backend.outcomes] == ["finished", "lost"]
    start = backend.store.get_job(g, "start")
    assert (start.attempts, start.expansion["count"]) == (2, 3)
    assert items_files(backend.services, g, "start", 3) in ({1, 2}, {2})
    assert backend.store.get_graph(g).jobs_total == 2 + 3

    assert backend.drive(g, HANDLERS).status == GraphStatus.FINISHED
    assert_nothing_lost_or_doubled(
        backend.services, backend.reader, g, listed(3, by=2), notes, lost={("start", 1)}
    )


# -- 4. every record twice, the parent's records replayed, every message twice --------------
def test_records_delivered_twice_and_the_parents_records_replayed_double_nothing(
    backend: Backend, notes: Notes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overseer.expansion.PAGE", 2)
    children = 5
    services = backend.services
    queue = toolkit.DuplicatingQueue(services.queue)
    # One page an invocation, so start's finish, each count of children made (a page each)
    # and its tree's end are records of their own, each delivered again and again below.
    scheduler = Scheduler(services.store, queue, artifacts=services.artifacts, expand_budget_seconds=0)
    g = backend.gid("twice")
    backend.submit(toolkit.expansion_graph(g, children), HANDLERS)
    worker = backend.worker(HANDLERS)

    def deliver(records: list[dict[str, Any]]) -> None:
        scheduler.process_stream_event({"Records": records})

    delivered: list[dict[str, Any]] = []
    for _ in range(400):
        records = backend.reader.poll()
        delivered += records
        if records:
            deliver(records)
            deliver(records)  # the invocation retried after it did its work
            if any(_name(r) == "start" for r in records):
                # Every record of start's so far again: its finish while its children are
                # being made, each count of children made, its tree's end before the join ran.
                deliver([r for r in delivered if _name(r) == "start"])
        worked = backend.work_once(worker)
        if backend.store.get_graph(g).status.terminal:
            break
        if not records and not worked:
            time.sleep(0.02)

    def state() -> tuple[Any, ...]:
        graph = backend.store.get_graph(g)
        jobs = {n: (j.status, j.attempts, j.updated_at) for n, j in backend.jobs(g).items()}
        return graph.status, graph.counts, graph.jobs_total, jobs

    before = state()
    # The whole stream once more, newest first (start's tree's end after the join ran and
    # the graph ended), and the messages it sends taken by a worker.
    assert sum(_name(r) == "start" for r in delivered) >= 5
    for record in reversed(delivered):
        deliver([record])
    while backend.work_once(worker):
        pass
    assert state() == before
    assert_nothing_lost_or_doubled(services, backend.reader, g, listed(children), notes)
    assert queue.duplicates >= children + 2
