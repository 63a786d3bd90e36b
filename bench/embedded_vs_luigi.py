"""The embedded backend against Luigi's local scheduler, on the same graphs of no-op tasks.

    python bench/embedded_vs_luigi.py            # a table
    python bench/embedded_vs_luigi.py --json     # one JSON object at the end of stdout

Shapes (as in bench/shapes.py): ``chain-50`` (each job depends on the one before),
``fanout-200-join`` (one root, 200 jobs on it, one join on all 200) and
``layered-10x10-full`` (10 layers of 10 jobs, each job depends on the whole previous layer).

**Overseer, embedded**: a fresh state directory (SQLite + files) per shape; the main
process submits the graph and pumps the change feed into the scheduler (as
``overseer run`` does); 4 worker processes (``multiprocessing``) each run
``overseer.worker.Worker`` on the same SQLite file. Timed from starting the workers to
the graph's terminal status.

**Luigi**: ``luigi.build(tasks, local_scheduler=True, workers=4)``; one task class whose
``requires()`` gives the task's deps and whose ``output()`` is one ``LocalTarget`` file
per task in a fresh temp dir, written by ``run()``. Timed around ``luigi.build``.

Tasks/second = jobs in the graph / wall seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chain(n: int) -> dict[str, list[str]]:
    return {f"c{i:03d}": [f"c{i - 1:03d}"] if i else [] for i in range(n)}


def fanout_join(n: int) -> dict[str, list[str]]:
    jobs: dict[str, list[str]] = {"root": []}
    for i in range(n):
        jobs[f"f{i:04d}"] = ["root"]
    jobs["join"] = [f"f{i:04d}" for i in range(n)]
    return jobs


def layered_full(layers: int, width: int) -> dict[str, list[str]]:
    jobs: dict[str, list[str]] = {}
    for k in range(layers):
        previous = [f"l{k - 1:02d}-{i:02d}" for i in range(width)] if k else []
        for i in range(width):
            jobs[f"l{k:02d}-{i:02d}"] = previous
    return jobs


SHAPES = {
    "chain-50": lambda: chain(50),
    "fanout-200-join": lambda: fanout_join(200),
    "layered-10x10-full": lambda: layered_full(10, 10),
}


# -- Overseer, embedded ------------------------------------------------------------------
def _settings(directory: Path) -> Any:
    from overseer.config import Settings

    return Settings(
        backend="embedded",
        state_dir=str(directory),
        receive_wait_seconds=1,
        lease_seconds=60,
        scratch_dir=str(directory / "scratch"),
    )


def _noop(job: Any) -> None:
    return None


def _worker_main(directory: str, stop: Any) -> None:
    from overseer.backends.embedded import embedded_services
    from overseer.handlers import to_spec
    from overseer.worker import Worker

    logging.disable(logging.INFO)
    services = embedded_services(Path(directory), _settings(Path(directory)))
    worker = Worker(services, {"noop": to_spec("noop", _noop)})
    threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True).start()
    worker.run()


def run_embedded_shape(jobs: dict[str, list[str]], workers: int) -> dict[str, Any]:
    from overseer.backends.embedded import embedded_services, feed_reader
    from overseer.graph import parse_graph
    from overseer.scheduler import Scheduler

    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="overseer-bench-") as tmp:
        directory = Path(tmp)
        services = embedded_services(directory, _settings(directory))
        scheduler = Scheduler(services.store, services.queue)
        reader = feed_reader(directory)
        spec = parse_graph({"id": "bench", "jobs": {n: {"type": "noop", "deps": d} for n, d in jobs.items()}})
        context = multiprocessing.get_context("fork")
        stop = context.Event()
        started = time.perf_counter()
        processes = [context.Process(target=_worker_main, args=(tmp, stop)) for _ in range(workers)]
        for p in processes:
            p.start()
        try:
            services.store.create_graph(spec, max_attempts={})
            while True:
                records = reader.poll()
                if records:
                    scheduler.process_stream_event({"Records": records})
                    graph = services.store.get_graph(spec.id)
                    if graph is not None and graph.status.terminal:
                        break
                else:
                    time.sleep(0.001)
            seconds = time.perf_counter() - started
        finally:
            stop.set()
            for p in processes:
                p.join(10)
                if p.is_alive():
                    p.terminate()
        counts = graph.counts
    return {"seconds": seconds, "status": graph.status.value, "finished": counts["finished"]}


# -- Luigi ------------------------------------------------------------------------------
_LUIGI: dict[str, Any] = {"graph": {}, "dir": ""}


def _luigi_task_class() -> Any:
    import luigi

    class Noop(luigi.Task):  # type: ignore[misc]
        name = luigi.Parameter()

        def requires(self) -> list[Any]:
            return [Noop(name=d) for d in _LUIGI["graph"][self.name]]

        def output(self) -> Any:
            return luigi.LocalTarget(str(Path(_LUIGI["dir"]) / f"{self.name}.done"))

        def run(self) -> None:
            with self.output().open("w") as handle:
                handle.write("")

    return Noop


def run_luigi_shape(jobs: dict[str, list[str]], workers: int) -> dict[str, Any]:
    import luigi

    for name in ("luigi", "luigi-interface", "luigi.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    task = _luigi_task_class()
    with tempfile.TemporaryDirectory(prefix="luigi-bench-") as tmp:
        _LUIGI.update(graph=jobs, dir=tmp)
        started = time.perf_counter()
        ok = luigi.build(
            [task(name=n) for n in jobs], local_scheduler=True, workers=workers, log_level="ERROR"
        )
        seconds = time.perf_counter() - started
        done = sum(1 for n in jobs if (Path(tmp) / f"{n}.done").exists())
    return {
        "seconds": seconds,
        "status": "finished" if ok and done == len(jobs) else "failed",
        "finished": done,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="default: all")
    parser.add_argument("--repeat", type=int, default=1, help="runs per shape and system; the best counts")
    parser.add_argument("--skip-luigi", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for shape in args.shape or list(SHAPES):
        jobs = SHAPES[shape]()
        row: dict[str, Any] = {"shape": shape, "jobs": len(jobs), "edges": sum(len(d) for d in jobs.values())}
        systems = {"overseer_embedded": run_embedded_shape}
        if not args.skip_luigi:
            systems["luigi_local"] = run_luigi_shape
        for system, run in systems.items():
            results = [run(jobs, args.workers) for _ in range(args.repeat)]
            best = min(results, key=lambda r: r["seconds"])
            row[system] = {
                "seconds": round(best["seconds"], 3),
                "tasks_per_second": round(len(jobs) / best["seconds"], 1),
                "status": best["status"],
                "finished": best["finished"],
            }
        if "luigi_local" in row:
            row["speedup"] = round(
                row["overseer_embedded"]["tasks_per_second"] / row["luigi_local"]["tasks_per_second"], 2
            )
        rows.append(row)
        print(f"{shape}: done", file=sys.stderr)

    header = f"{'shape':<20} {'jobs':>5} {'overseer/s':>11} {'luigi/s':>9} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        luigi_rate = row.get("luigi_local", {}).get("tasks_per_second", float("nan"))
        print(
            f"{row['shape']:<20} {row['jobs']:>5} {row['overseer_embedded']['tasks_per_second']:>11.1f} "
            f"{luigi_rate:>9.1f} {row.get('speedup', float('nan')):>7.2f}x"
        )
    if args.json:
        print(json.dumps({"workers": args.workers, "cpus": multiprocessing.cpu_count(), "shapes": rows}))
    ok = all(
        r["overseer_embedded"]["status"] == "finished"
        and r.get("luigi_local", {}).get("status", "finished") == "finished"
        for r in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
