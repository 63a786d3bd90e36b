"""Chaos tooling: fault injection into AWS calls, duplicated messages, killed workers.

* ``FaultInjector``: registered on botocore's ``before-send`` event of a client, it fails a
  share of the requests the way AWS does under load: a throttling error (HTTP 400
  ``ThrottlingException`` for the JSON services, ``Throttling`` for SQS, 503 ``SlowDown``
  for S3), a 500 ``InternalError``, a read or connect timeout before the request leaves,
  or a *lost response*: the request is sent and applied, then the client sees a read
  timeout (so a retried write finds its own earlier effect). botocore's standard retry
  mode (``overseer.aws.clients.CLIENT_CONFIG``; PynamoDB's own retries for the store)
  absorbs them. Every process whose environment has ``OVERSEER_CHAOS`` (e.g.
  ``OVERSEER_CHAOS="faults=0.1,seed=7"``) attaches one to each client it builds; the
  faults it injected are written to ``OVERSEER_CHAOS_LOG/chaos-<pid>.json``.
* ``DuplicatingQueue``: a ``DispatchQueue`` that sends every message twice.
* ``WorkerPool``: real ``overseer worker`` processes, killed and replaced as a supervisor
  (AWS Batch, systemd) would.
* ``stream_records`` / ``finished_transitions`` / ``table_items``: what the jobs table and
  its stream say happened, read raw (no filter), for audits after a run.
* ``HANDLERS``: the job types the chaos suite and ``bench/chaos.py`` run
  (``OVERSEER_HANDLERS=overseer.chaos``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from .job import Artifact, Job, job_seed
from .store import Delivery, DispatchQueue, JobMessage

ENV_SPEC = "OVERSEER_CHAOS"
ENV_LOG = "OVERSEER_CHAOS_LOG"
ENV_RUNS = "OVERSEER_CHAOS_RUNS"
KINDS = ("throttle", "5xx", "read_timeout", "connect_timeout", "lost_response")
_ATTEMPT = re.compile(r"attempt=(\d+);\s*max=(\d+)")


# -- fault injection ----------------------------------------------------------------------
@dataclass(frozen=True)
class FaultSpec:
    """``faults``: probability that a request fails; ``seed``: of the RNG (mixed with the
    pid, so processes differ); ``kinds``: which failures (see ``KINDS``); ``spare_last``:
    never fail a request's last attempt (the client's retries always absorb the faults)."""

    faults: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    spare_last: bool = False

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``"faults=0.1,seed=7,kinds=throttle+5xx,spare_last=1"`` (every key optional)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key = key.strip()
            if key == "faults":
                values["faults"] = float(value)
            elif key == "seed":
                values["seed"] = int(value)
            elif key == "kinds":
                kinds = tuple(k for k in value.split("+") if k)
                unknown = set(kinds) - set(KINDS)
                if unknown:
                    raise ValueError(f"{ENV_SPEC}: unknown fault kinds {sorted(unknown)}; known: {KINDS}")
                values["kinds"] = kinds
            elif key == "spare_last":
                values["spare_last"] = value.strip().lower() in ("1", "true", "yes")
            else:
                raise ValueError(f"{ENV_SPEC}: unknown key {key!r} in {text!r}")
        spec = cls(**values)
        if not 0.0 <= spec.faults <= 1.0:
            raise ValueError(f"{ENV_SPEC}: faults must be between 0 and 1, got {spec.faults}")
        return spec

    def to_env(self) -> str:
        return (
            f"faults={self.faults},seed={self.seed},kinds={'+'.join(self.kinds)},"
            f"spare_last={int(self.spare_last)}"
        )


class _Body:
    """The ``raw`` of an ``AWSResponse``: what botocore reads the body from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def error_response(protocol: str, service: str, url: str, kind: str) -> AWSResponse:
    """A throttling (``kind="throttle"``) or internal (``"5xx"``) error response that the
    service's parser turns into the error code AWS sends."""
    request_id = f"chaos-{random.getrandbits(32):08x}"
    headers = {"x-amzn-requestid": request_id, "x-amz-request-id": request_id}
    throttle = kind == "throttle"
    if protocol in ("json", "rest-json"):
        status = 400 if throttle else 500
        code = "ThrottlingException" if throttle else "InternalServerError"
        if service == "sqs":
            # SQS answers JSON but keeps its query-era codes in this header.
            headers["x-amzn-query-error"] = ("Throttling" if throttle else "InternalError") + ";Sender"
        body = json.dumps({"__type": code, "message": "injected by overseer.chaos"}).encode()
        headers["content-type"] = "application/x-amz-json-1.0"
    elif protocol == "rest-xml":  # S3
        status, code = (503, "SlowDown") if throttle else (500, "InternalError")
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>injected by overseer.chaos</Message><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers["content-type"] = "application/xml"
    else:  # query / ec2
        status, code = (400, "Throttling") if throttle else (500, "InternalError")
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>injected by overseer.chaos</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>"
        ).encode()
        headers["content-type"] = "text/xml"
    headers["content-length"] = str(len(body))
    return AWSResponse(url, status, HTTPHeaders.from_dict(headers), _Body(body))


class FaultInjector:
    """Fails a share of the requests of the clients it is attached to. Thread-safe."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.rng = random.Random(f"{spec.seed}-{os.getpid()}")
        self.counts: Counter[str] = Counter()  # "kind service.Operation" -> faults
        self.requests = 0
        self._lock = threading.Lock()
        self._log_path: Path | None = None
        self._last_write = 0.0

    # -- wiring
    def attach(self, client: Any) -> Any:
        """Register on ``client``'s ``before-send`` (once per client); returns the client."""
        if getattr(client.meta, "_overseer_chaos", None) is self:
            return client
        model = client.meta.service_model
        protocol = model.protocol
        service = model.endpoint_prefix
        endpoint = getattr(client, "_endpoint", None)

        def before_send(request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
            return self._maybe_fail(request, event_name, protocol, service, endpoint)

        client.meta.events.register("before-send", before_send)
        client.meta._overseer_chaos = self
        return client

    def log_to(self, directory: str | Path) -> None:
        """Write the counts to ``directory/chaos-<pid>.json`` now and then and at exit
        (a SIGKILLed process keeps what it wrote last)."""
        self._log_path = Path(directory) / f"chaos-{os.getpid()}.json"
        atexit.register(self.write)

    def write(self) -> None:
        path = self._log_path
        if path is None or not path.parent.is_dir():
            return
        with self._lock:
            data = {"requests": self.requests, "faults": dict(self.counts)}
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            tmp.replace(path)

    def total(self) -> int:
        return sum(self.counts.values())

    def by_kind(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, n in self.counts.items():
            out[key.split(" ", 1)[0]] += n
        return out

    # -- the hook
    def _maybe_fail(
        self, request: Any, event_name: str, protocol: str, service: str, endpoint: Any
    ) -> AWSResponse | None:
        if self.spec.spare_last:
            header = request.headers.get("amz-sdk-request", "")
            if isinstance(header, bytes):
                header = header.decode("utf-8", "replace")
            match = _ATTEMPT.search(header)
            if match and int(match.group(1)) >= int(match.group(2)):
                with self._lock:
                    self.requests += 1
                return None
        with self._lock:
            self.requests += 1
            if self.rng.random() >= self.spec.faults:
                return None
            kind = self.rng.choice(self.spec.kinds)
            operation = event_name.rsplit(".", 1)[-1] or "unknown"
            self.counts[f"{kind} {service}.{operation}"] += 1
            now = time.monotonic()
            flush = self._log_path is not None and now - self._last_write > 0.5
            if flush:
                self._last_write = now
        if flush:
            self.write()
        if kind in ("throttle", "5xx"):
            return error_response(protocol, service, request.url, kind)
        if kind == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if kind == "lost_response" and endpoint is not None:
            # The request reaches the service and is applied; only its answer is lost.
            with contextlib.suppress(Exception):
                endpoint.http_session.send(request)
        raise ReadTimeoutError(endpoint_url=request.url)


_injector: FaultInjector | None = None
_injector_spec: str | None = None


def process_injector() -> FaultInjector | None:
    """This process's injector when ``OVERSEER_CHAOS`` is set (and not 0 faults), else None."""
    global _injector, _injector_spec
    text = os.environ.get(ENV_SPEC, "").strip()
    if not text:
        return None
    if _injector is None or _injector_spec != text:
        spec = FaultSpec.parse(text)
        if spec.faults <= 0:
            return None
        _injector, _injector_spec = FaultInjector(spec), text
        directory = os.environ.get(ENV_LOG)
        if directory:
            _injector.log_to(directory)
    return _injector


def attach_from_env(client: Any) -> Any:
    """Attach this process's injector to ``client`` when ``OVERSEER_CHAOS`` asks for one."""
    injector = process_injector()
    return injector.attach(client) if injector is not None else client


def read_fault_logs(directory: str | Path) -> tuple[int, Counter[str]]:
    """(requests seen, faults by "kind service.Operation") over every process's log."""
    requests = 0
    faults: Counter[str] = Counter()
    for path in Path(directory).glob("chaos-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        requests += int(data.get("requests", 0))
        faults.update(data.get("faults", {}))
    return requests, faults


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


# -- the suite's handlers (OVERSEER_HANDLERS=overseer.chaos) ----------------------------------
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
