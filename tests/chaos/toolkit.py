"""The chaos suite's tools (test code: none of it ships in the wheel, the Lambda asset or
the worker image).

* ``HANDLERS``: the job types the chaos suite and ``bench/chaos.py`` run
  (``OVERSEER_HANDLERS=tests.chaos.toolkit``, importable with the repository root on the
  path, which ``WorkerPool`` puts on its workers' ``PYTHONPATH``); each run is noted in
  ``OVERSEER_CHAOS_RUNS``.
* ``DuplicatingQueue``: a ``DispatchQueue`` that sends every message twice.
* ``WorkerPool`` / ``Killer``: real ``overseer worker`` processes, killed and replaced as a
  supervisor (AWS Batch, systemd) would.
* ``stream_records`` / ``finished_transitions`` / ``table_items`` / ``check_artifacts``: what
  the jobs table, its stream and the artifact bucket say happened, read raw, for audits.

Fault injection into AWS calls is in ``tests.chaos.faults``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from overseer.errors import fault
from overseer.job import Artifact, Expand, Job, job_seed
from overseer.store import Delivery, DispatchQueue, JobMessage

HANDLERS_MODULE = __name__
ENV_RUNS = "OVERSEER_CHAOS_RUNS"
# The directory from which ``tests.chaos.toolkit`` imports.
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- duplicated messages ------------------------------------------------------------------
class DuplicatingQueue:
    """A ``DispatchQueue`` whose ``send`` sends every message twice (at-least-once, worst case)."""

    def __init__(self, queue: DispatchQueue) -> None:
        self.queue = queue
        self.sent = 0
        self.duplicates = 0

    def send(self, messages: Sequence[JobMessage]) -> None:
        messages = list(messages)
        self.queue.send(messages)
        self.queue.send(messages)
        self.sent += 2 * len(messages)
        self.duplicates += len(messages)

    def receive(
        self, *, max_messages: int = 1, wait_seconds: int = 20, visibility_seconds: int | None = None
    ) -> list[Delivery]:
        return self.queue.receive(
            max_messages=max_messages, wait_seconds=wait_seconds, visibility_seconds=visibility_seconds
        )

    def delete(self, receipts: Sequence[str]) -> None:
        self.queue.delete(receipts)

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        self.queue.extend_visibility(receipt, seconds)

    def depth(self) -> int:
        return self.queue.depth()


# -- killed and replaced workers ------------------------------------------------------------
class WorkerPool:
    """``count`` real ``overseer worker`` processes, each in its own process group (so a
    kill takes its handler process too, like a lost host), replaced when killed or dead."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path) -> None:
        self.count = count
        self.env = {**os.environ, **env}
        # The workers import their handlers (this module) from the repository root.
        paths = (str(REPO_ROOT), self.env.get("PYTHONPATH", ""))
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.born: dict[int, float] = {}  # pid -> when it was started (monotonic)
        self.started = 0
        self.kills = 0
        self.restarts = 0
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        with (self.log_dir / f"worker-{self.started}.log").open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "overseer", "worker"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.born[process.pid] = time.monotonic()
        return process

    def start(self) -> WorkerPool:
        with self._lock:
            self.processes = [self._spawn() for _ in range(self.count)]
        return self

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill_one(self, rng: random.Random, min_age: float = 0.0) -> int | None:
        """SIGKILL a random live worker at least ``min_age`` seconds old (and its handler
        process), start a replacement. On a slow machine the age keeps replacements, which
        take a while to start, from being killed before they do any work."""
        with self._lock:
            now = time.monotonic()
            live = [
                i
                for i, p in enumerate(self.processes)
                if p.poll() is None and now - self.born.get(p.pid, 0.0) >= min_age
            ]
            if not live:
                return None
            index = rng.choice(live)
            victim = self.processes[index]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            self.kills += 1
            self.processes[index] = self._spawn()
            return victim.pid

    def replace_dead(self) -> int:
        """Restart workers that exited on their own (a supervisor would); returns how many."""
        with self._lock:
            replaced = 0
            for i, p in enumerate(self.processes):
                if p.poll() is not None:
                    self.processes[i] = self._spawn()
                    replaced += 1
            self.restarts += replaced
            return replaced

    def stop(self, timeout: float = 15.0) -> None:
        with self._lock:
            for p in self.processes:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + timeout
            for p in self.processes:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


class Killer:
    """A thread that kills a random worker of ``pool`` every ``interval`` seconds (one that
    has lived at least ``min_age``, by default ``interval``)."""

    def __init__(
        self, pool: WorkerPool, interval: float, seed: int = 0, min_age: float | None = None
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.min_age = interval if min_age is None else min_age
        self.rng = random.Random(seed)
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval * self.rng.uniform(0.75, 1.25)):
            pid = self.pool.kill_one(self.rng, self.min_age)
            if pid is not None:
                self.killed.append(pid)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


# -- audits ---------------------------------------------------------------------------------
def stream_records(client: Any, stream_arn: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Every record of the stream from TRIM_HORIZON, unfiltered, shard by shard."""
    shards = client.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    records: list[dict[str, Any]] = []
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=limit)
            batch = response.get("Records", [])
            records.extend(batch)
            iterator = response.get("NextShardIterator")
            if not batch:
                break
    return records


def _status(image: dict[str, Any] | None) -> str | None:
    return ((image or {}).get("status") or {}).get("S")


def finished_transitions(records: Sequence[dict[str, Any]], graph_id: str) -> tuple[Counter[str], int]:
    """(job name -> records that moved it into ``finished``, records that moved a job out
    of ``finished`` or changed a finished job) for one graph."""
    into: Counter[str] = Counter()
    after = 0
    for raw in records:
        body = raw.get("dynamodb", {})
        keys = body.get("Keys", {})
        if keys.get("graph_id", {}).get("S") != graph_id:
            continue
        entry = keys.get("entry", {}).get("S", "")
        if not entry.startswith("job#"):
            continue
        old, new = _status(body.get("OldImage")), _status(body.get("NewImage"))
        if new == "finished" and old != "finished":
            into[entry[len("job#") :]] += 1
        elif old == "finished":
            after += 1
    return into, after


def table_items(client: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of a jobs table (consistent scan), keyed by (graph_id, entry)."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            items[(item["graph_id"]["S"], item["entry"]["S"])] = item
    return items


def artifact_key(graph_id: str, name: str) -> str:
    """Where the ``write`` handler stores a job's artifact (safe for any job name)."""
    return f"chaos/{graph_id}/{hashlib.sha1(name.encode()).hexdigest()[:16]}.bin"


def expected_bytes(graph_id: str, name: str, size: int = 256) -> bytes:
    """What the ``write`` handler stores: ``size`` bytes of the job's ``job.random``."""
    return random.Random(job_seed(f"{graph_id}/{name}")).randbytes(size)


def check_artifacts(services: Any, jobs: Sequence[Any]) -> list[str]:
    """Problems with the ``write`` jobs' artifacts: missing, wrong bytes, wrong SHA-256."""
    problems = []
    for job in jobs:
        key = artifact_key(job.graph_id, job.name)
        stored = [a for a in job.artifacts if a["key"] == key]
        if len(stored) != 1:
            problems.append(f"{job.name}: manifest {job.artifacts!r} lacks {key}")
            continue
        try:
            data = services.artifacts.get_bytes(stored[0]["bucket"], key)
        except Exception as exc:
            problems.append(f"{job.name}: s3://{stored[0]['bucket']}/{key} unreadable: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != stored[0]["sha256"]:
            problems.append(f"{job.name}: SHA-256 {digest} != recorded {stored[0]['sha256']}")
        elif data != expected_bytes(job.graph_id, job.name, int(job.args.get("size", 256))):
            problems.append(f"{job.name}: bytes differ from what job.random gives")
    return problems


# -- the suite's handlers (OVERSEER_HANDLERS=tests.chaos.toolkit) -------------------------
def _note_run(job: Job) -> None:
    path = os.environ.get(ENV_RUNS)
    if path:
        line = json.dumps([job.graph_id, job.name, job.attempt, os.getppid()]) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write under PIPE_BUF: atomic on O_APPEND
        finally:
            os.close(fd)


def write(job: Job) -> list[Artifact]:
    _note_run(job)
    if job.args.get("sleep"):
        time.sleep(float(job.args["sleep"]))
    data = job.random.randbytes(int(job.args.get("size", 256)))
    return [Artifact(key=artifact_key(job.graph_id, job.name), data=data)]


def spans(job: Job) -> None:
    """Sleeps ``sleep`` seconds, noting in ``OVERSEER_CHAOS_RUNS`` when it started and ended
    (``["start"|"end", job, attempt, worker pid, time]``): how many ran at once."""
    path = os.environ[ENV_RUNS]

    def note(kind: str) -> None:
        line = json.dumps([kind, job.name, job.attempt, os.getppid(), time.time()]) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    note("start")
    time.sleep(float(job.args.get("sleep", 0.5)))
    note("end")


def noop(job: Job) -> None:
    _note_run(job)


def hog(job: Job) -> None:
    """Allocates without bound (and touches what it gets)."""
    _note_run(job)
    held = []
    while True:
        held.append(bytearray(b"x" * (16 * 1024 * 1024)))


def segfault(job: Job) -> None:
    _note_run(job)
    ctypes.string_at(0)


def exit3(job: Job) -> None:
    _note_run(job)
    os._exit(3)


def suicide(job: Job) -> None:
    _note_run(job)
    os.kill(os.getpid(), signal.SIGKILL)


def hang(job: Job) -> None:
    _note_run(job)
    time.sleep(3600)


HANDLERS: dict[str, Any] = {
    "write": write,
    "noop": noop,
    "spans": spans,
    "hog": {"process": hog, "max_attempts": 2},
    "segfault": {"process": segfault, "max_attempts": 2},
    "exit3": {"process": exit3, "max_attempts": 2},
    "suicide": {"process": suicide, "max_attempts": 2},
    "hang": {"process": hang, "max_attempts": 2, "timeout_seconds": 1},
}


def read_runs(path: str | Path) -> list[tuple[str, str, int, int]]:
    """The handler runs noted in ``OVERSEER_CHAOS_RUNS``: (graph id, job, attempt, worker pid)."""
    file = Path(path)
    if not file.exists():
        return []
    return [tuple(json.loads(line)) for line in file.read_text().splitlines() if line]


def layered_graph(graph_id: str, layers: int, width: int, **job_args: Any) -> dict[str, Any]:
    """``layers`` x ``width`` ``write`` jobs; each depends on two jobs of the layer above."""
    jobs: dict[str, Any] = {}
    for layer in range(layers):
        for i in range(width):
            deps = [] if layer == 0 else sorted({f"j{layer - 1}-{i}", f"j{layer - 1}-{(i + 7) % width}"})
            jobs[f"j{layer}-{i}"] = {"type": "write", "deps": deps, "args": dict(job_args)}
    return {"id": graph_id, "jobs": jobs}


# --- a submission killed between writes ------------------------------------------------

ENV_DIE_AT_WRITE = "OVERSEER_CHAOS_DIE_AT_WRITE"
DIE_AT_WRITE_HOOK = f"{__name__}:die_at_write"
_DYNAMODB_WRITES = frozenset({"PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem"})
_writes = 0
_writes_lock = threading.Lock()


def die_at_write(client: Any) -> None:
    """Client hook: the process SIGKILLs itself just before its N-th DynamoDB write
    (``OVERSEER_CHAOS_DIE_AT_WRITE=N``), counted over every client it builds."""
    at = int(os.environ[ENV_DIE_AT_WRITE])

    def before_call(model: Any, **_: Any) -> None:
        global _writes
        if model.name in _DYNAMODB_WRITES:
            with _writes_lock:
                _writes += 1
                if _writes == at:
                    os.kill(os.getpid(), signal.SIGKILL)

    client.meta.events.register("before-call", before_call)


def submit_in_a_process(document: dict[str, Any], env: dict[str, str], die_at_write: int) -> int:
    """Submit ``document`` with the store of a new process that dies at the given write;
    returns its exit code (``-SIGKILL`` when it died, 0 when the submission took fewer writes)."""
    script = (
        "import json, sys\n"
        "from overseer.backends import build_services\n"
        "from overseer.graph import parse_graph\n"
        "build_services().store.create_graph(parse_graph(json.loads(sys.argv[1])), max_attempts={})\n"
    )
    hooked = {**env, "OVERSEER_CLIENT_HOOK": DIE_AT_WRITE_HOOK, ENV_DIE_AT_WRITE: str(die_at_write)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(document)],
        env=hooked,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=120,
    )
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"the submitting process failed: {done.stderr.decode()[-2000:]}")
    return done.returncode


# --- a stream batch dropped after the scheduler's retries -------------------------------


class DroppingScheduler:
    """The scheduler behind an event source mapping that gives up on every ``every``-th
    batch holding a job's end (as Lambda does after its retries): those go to the
    on-failure queue, unapplied, and only the sweep can apply them."""

    def __init__(self, scheduler: Any, give_up: Any, *, every: int = 2) -> None:
        self.scheduler = scheduler
        self.give_up = give_up
        self.every = every
        self.with_ends = 0
        self.dropped = 0

    def process_stream_event(self, event: dict[str, Any]) -> Any:
        records = event["Records"]
        if any(_status(r["dynamodb"].get("NewImage")) in ("finished", "failed", "aborted") for r in records):
            self.with_ends += 1
            if self.with_ends % self.every == 0:
                self.give_up(records)
                self.dropped += 1
                return None
        return self.scheduler.process_stream_event(event)


# --- graphs that grow at run time (``overseer.Expand``) ---------------------------------

# Where the expansion handlers note each run that reached its artifact write (the line
# ``_note_run`` writes, to a file of its own): a killed attempt may have started without.
ENV_RETURNS = "OVERSEER_CHAOS_RETURNS"


def _note_return(job: Job) -> None:
    path = os.environ.get(ENV_RETURNS)
    if path:
        line = json.dumps([job.graph_id, job.name, job.attempt, os.getppid()]) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def listing(job: Job) -> list[Any]:
    """Lists ``n`` items and expands into one ``item`` child per item (and writes its own
    ``write`` artifact). With ``relist``, each attempt lists other items (attempt ``k``:
    ``n + k - 1`` of them, each saying ``listed_by: k``); an attempt in
    ``fault_after_listing`` faults once it has listed."""
    _note_run(job)
    count = int(job.args["n"]) + (job.attempt - 1 if job.args.get("relist") else 0)
    items = [{"i": i, **({"listed_by": job.attempt} if job.args.get("relist") else {})} for i in range(count)]
    if job.attempt in job.args.get("fault_after_listing", ()):
        fault(f"attempt {job.attempt} listed {count} items, then lost its connection")
    data = job.random.randbytes(int(job.args.get("size", 256)))
    _note_return(job)
    return [Artifact(key=artifact_key(job.graph_id, job.name), data=data), Expand(type="item", items=items)]


def item(job: Job) -> list[Artifact]:
    """A child: the ``write`` artifact, noted as it is returned."""
    _note_run(job)
    if job.args.get("sleep"):
        time.sleep(float(job.args["sleep"]))
    data = job.random.randbytes(int(job.args.get("size", 256)))
    _note_return(job)
    return [Artifact(key=artifact_key(job.graph_id, job.name), data=data)]


def gathered_key(graph_id: str, name: str) -> str:
    return f"chaos/{graph_id}/{name}.gathered.json"


def gather(job: Job) -> list[Artifact]:
    """A join: stores what it was given, ``[[input name, [artifact keys]], ...]`` in order."""
    _note_run(job)
    seen = [[name, [a.key for a in artifacts]] for name, artifacts in job.inputs.items()]
    _note_return(job)
    return [Artifact(key=gathered_key(job.graph_id, job.name), data=json.dumps(seen).encode())]


HANDLERS.update(listing=listing, item=item, gather=gather)


def expansion_graph(graph_id: str, children: int, **job_args: Any) -> dict[str, Any]:
    """``start`` lists ``children`` items (``item`` jobs); ``join`` gathers them."""
    return {
        "id": graph_id,
        "args": {"n": children, **job_args},
        "jobs": {"start": {"type": "listing"}, "join": {"type": "gather", "deps": ["start"]}},
    }
