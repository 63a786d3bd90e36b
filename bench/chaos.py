"""Chaos at size: one graph run while workers are SIGKILLed, every message is sent twice
and a share of all AWS calls fail (workers and scheduler), then the whole stream is
replayed. Prints what was survived and what was lost (must be 0).

    python bench/chaos.py                       # 1,000 jobs, a kill every second, 10% faults
    python bench/chaos.py --jobs 300 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from overseer.backends import build_services
from overseer.backends.aws import clients
from overseer.backends.aws.emulator import emulator, environment
from overseer.backends.aws.resources import provision, stream_arn
from overseer.backends.aws.stream import StreamReader, lambda_record
from overseer.config import Settings
from overseer.graph import parse_graph
from overseer.handlers import load_handlers
from overseer.runner import pump_until_done
from overseer.scheduler import Scheduler
from overseer.states import JobStatus

# The chaos tooling is test code (tests/chaos), importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.chaos import faults as chaos_faults
from tests.chaos import toolkit


def run(
    jobs: int, workers: int, kill_every: float, faults: float, seed: int, timeout: float, max_attempts: int
) -> dict[str, Any]:
    width = 50 if jobs >= 500 else 30
    layers = max(1, jobs // width)
    name = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(
        graphs_table=f"{name}-graphs",
        jobs_table=f"{name}-jobs",
        artifact_bucket=f"{name}-artifacts",
        receive_wait_seconds=1,
        lease_seconds=3,
        clock_skew_seconds=1,
        sweep_interval_seconds=1,
        fault_backoff_seconds=0.1,
        fault_backoff_max_seconds=1.0,
        handlers=toolkit.HANDLERS_MODULE,
        # A kill every second is far beyond a real fleet's: give each job room for them.
        default_max_attempts=max_attempts,
    )
    with (
        tempfile.TemporaryDirectory(prefix="overseer-chaos-") as tmp,
        emulator() as aws_env,
        environment(aws_env),
    ):
        work = Path(tmp)
        (work / "faults").mkdir()
        configured = provision(settings)
        clean = build_services(configured)  # for the audit: no faults
        fault_env = chaos_faults.fault_env(f"faults={faults},seed={seed}", work / "faults")
        with environment(fault_env if faults > 0 else {}):
            services = build_services(configured)
            reader = StreamReader(clients.client("dynamodbstreams"), stream_arn(configured))
        handlers = load_handlers(toolkit.HANDLERS_MODULE)
        spec = parse_graph(toolkit.layered_graph("chaos-bench", layers, width), handler_types=handlers.keys())
        clean.store.create_graph(spec, max_attempts={})
        queue = toolkit.DuplicatingQueue(services.queue)
        scheduler = Scheduler(services.store, queue)
        env = {**aws_env, **configured.to_env(), **(fault_env if faults > 0 else {})}
        pool = toolkit.WorkerPool(workers, env, work).start()
        started = time.monotonic()
        deadline = started + timeout

        def in_time(*_: Any) -> bool:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the graph did not finish in {timeout} s")
            return True

        try:
            with toolkit.Killer(pool, kill_every, seed=seed) as killer:
                graph = pump_until_done(
                    services, scheduler, reader, "chaos-bench", progress=in_time, alive=in_time
                )
        finally:
            pool.stop()
        seconds = time.monotonic() - started
        injector = chaos_faults.current_injector()
        if injector is not None:
            injector.write()

        records = list(clean.store.list_jobs("chaos-bench"))
        stream = toolkit.stream_records(clients.client("dynamodbstreams"), stream_arn(configured))
        into, after = toolkit.finished_transitions(stream, "chaos-bench")
        missing = toolkit.check_artifacts(clean, records)
        ddb = clean.store.Job._get_connection().connection.client
        before = toolkit.table_items(ddb, configured.jobs_table)
        replayer = Scheduler(clean.store, clean.queue)
        shaped = [lambda_record(r, reader.stream_arn, "us-east-1") for r in stream]
        for order in (shaped, shaped[::-1]):
            for start in range(0, len(order), 100):
                replayer.process_stream_event({"Records": order[start : start + 100]})
        after_replay = toolkit.table_items(ddb, configured.jobs_table)
        changed = sum(1 for k in before.keys() | after_replay.keys() if before.get(k) != after_replay.get(k))
        requests, injected = chaos_faults.read_fault_logs(work / "faults")
        by_kind: Counter[str] = Counter()
        for key, n in injected.items():
            by_kind[key.split(" ", 1)[0]] += n
        not_finished = sum(1 for j in records if j.status != JobStatus.FINISHED)
        errors = Counter((j.error_text() or "")[:160] for j in records if j.status == JobStatus.FAILED)
        return {
            "graph": graph.status.value,
            "jobs": len(records),
            "seconds": round(seconds, 1),
            "workers": workers,
            "kills": len(killer.killed),
            "worker_processes_started": pool.started,
            "duplicated_messages": queue.duplicates,
            "aws_requests_seen_by_injectors": requests,
            "injected_faults": sum(injected.values()),
            "injected_by_kind": dict(sorted(by_kind.items())),
            "retried_attempts": sum(max(0, j.attempts - 1) for j in records),
            "max_attempts_used": max((j.attempts for j in records), default=0),
            "failed_errors": dict(errors.most_common(3)),
            "lost": {
                "jobs_not_finished": not_finished,
                "jobs_not_finished_exactly_once": sum(1 for j in records if into.get(j.name) != 1),
                "changes_after_finished": after,
                "artifacts_missing_or_wrong": len(missing),
                "job_items_changed_by_replay": changed,
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--kill-every", type=float, default=1.0, help="seconds between SIGKILLs")
    parser.add_argument("--faults", type=float, default=0.1, help="share of AWS calls that fail")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--max-attempts", type=int, default=20, help="per job (kills count as attempts)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(
        args.jobs, args.workers, args.kill_every, args.faults, args.seed, args.timeout, args.max_attempts
    )
    lost = sum(result["lost"].values())
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"graph {result['graph']}: {result['jobs']} jobs, {result['seconds']} s, {args.workers} workers"
        )
        print(f"survived: {result['kills']} SIGKILLs ({result['worker_processes_started']} worker processes)")
        print(f"          {result['duplicated_messages']} duplicated messages")
        print(
            f"          {result['injected_faults']} injected AWS faults of "
            f"{result['aws_requests_seen_by_injectors']} requests {result['injected_by_kind']}"
        )
        print(f"          {result['retried_attempts']} attempts retried after a kill or a lost claim")
        print(f"          (the most attempts one job took: {result['max_attempts_used']})")
        print(f"lost:     {lost} {result['lost']}")
        if result["failed_errors"]:
            print(f"failed:   {result['failed_errors']}")
    return 0 if lost == 0 and result["graph"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
