"""The handler API: Job, Artifact validation, stages and harness, randomness, states."""

from __future__ import annotations

from pathlib import Path

import pytest

import overseer
from overseer.artifacts import check_key, persist_artifacts
from overseer.errors import InvalidArtifact
from overseer.handlers import normalize_result, to_spec
from overseer.job import Job, job_seed
from overseer.states import TRANSITIONS, JobStatus, allowed
from overseer.store import ObjectInfo
from overseer.worker import backoff_seconds


def make_job(tmp_path: Path, name: str = "fetch", graph_id: str = "g1") -> Job:
    return Job(
        graph_id=graph_id,
        name=name,
        type=name,
        args={"company_id": 42},
        attempt=1,
        max_attempts=5,
        scratch=tmp_path,
    )


def test_job_random_is_seeded_from_the_job_id(tmp_path):
    first = [make_job(tmp_path).random.random() for _ in range(1)]
    assert first == [make_job(tmp_path).random.random()]
    assert make_job(tmp_path, "other").random.random() != first[0]
    assert job_seed("g1/fetch") == int.from_bytes(
        __import__("hashlib").sha256(b"g1/fetch").digest()[:8], "big"
    )


def test_stage_map_handlers_run_pre_process_then_post_process(tmp_path):
    seen: list[str] = []
    spec = to_spec(
        "fetch",
        {
            "pre_process": lambda job: seen.append("pre") or job,
            "process": lambda job: seen.append("process") or [overseer.Artifact(key="a", data=b"1")],
            "post_process": lambda job, result: seen.append("post") or None,
        },
    )
    assert [a.key for a in spec.run(make_job(tmp_path))] == ["a"]
    assert seen == ["pre", "process", "post"]


def test_harness_wraps_one_stage(tmp_path):
    calls: list[str] = []

    def logging_middleware(process):
        def run(job):
            calls.append(f"before {job.name}")
            return process(job)

        return run

    handler = overseer.harness(lambda job: None, logging_middleware)
    assert to_spec("fetch", handler).run(make_job(tmp_path)) == []
    assert calls == ["before fetch"]
    with pytest.raises(ValueError, match="unknown stage"):
        overseer.harness(lambda job: None, logging_middleware, stage="nope")


def test_a_handler_returning_something_else_is_a_clear_error():
    with pytest.raises(InvalidArtifact, match="handler 'x' returned dict"):
        normalize_result({"key": "a"}, "x")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "./a", "a\x00b", "x" * 1025])
def test_bad_keys_are_rejected(key):
    with pytest.raises(InvalidArtifact):
        check_key(key)


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}

    def stat(self, bucket, key):
        found = self.objects.get((bucket, key))
        return ObjectInfo(len(found[0]), found[1]) if found else None

    def put_bytes(self, bucket, key, data, *, sha256, content_type=None):
        self.objects[(bucket, key)] = (data, sha256)

    def put_file(self, bucket, key, path, *, sha256, content_type=None):
        self.objects[(bucket, key)] = (Path(path).read_bytes(), sha256)


def test_nothing_is_stored_when_one_artifact_is_invalid():
    store = MemoryStore()
    with pytest.raises(InvalidArtifact, match="two artifacts target s3://b/a"):
        persist_artifacts(
            [overseer.Artifact("a", data=b"1"), overseer.Artifact("a", data=b"2")],
            store=store,
            default_bucket="b",
        )
    assert store.objects == {}


def test_identical_objects_are_skipped():
    store = MemoryStore()
    first = persist_artifacts([overseer.Artifact("a", data=b"1")], store=store, default_bucket="b")
    second = persist_artifacts([overseer.Artifact("a", data=b"1")], store=store, default_bucket="b")
    changed = persist_artifacts([overseer.Artifact("a", data=b"2")], store=store, default_bucket="b")
    assert (first.uploaded, second.uploaded, second.skipped, changed.uploaded) == (1, 0, 1, 1)


# The diagram in overseer/states.py (and DESIGN.md "Job states"), written out by hand: every
# (source, target) pair a job may take. Anything else (finished -> anything, failed -> ready,
# waiting -> running, ...) must be refused by every store.
W, R, RUN, FIN, FAIL, AB = (
    JobStatus.WAITING, JobStatus.READY, JobStatus.RUNNING,
    JobStatus.FINISHED, JobStatus.FAILED, JobStatus.ABORTED,
)  # fmt: skip
DRAWN_MOVES = {
    (W, R),  # all deps finished
    (R, RUN),  # a worker claims
    (RUN, FIN),  # returns
    (RUN, FAIL),  # exception after max attempts, lease expired too often, dead letter
    (RUN, R),  # fault, shutdown, lease expired
    (RUN, AB),  # abort, graph cancelled
    (W, AB),  # upstream failed or aborted, graph cancelled
    (R, AB),
    (R, R),  # the sweep re-sends a lost message, or its limit is full (it waits, still ready)
    (R, FAIL),  # its message was dead-lettered before any worker took it
    (FAIL, W),  # rerun (then released as any waiting job)
    (AB, W),
    (FIN, W),  # rerun of a job and its downstream: a finished job runs again
    (R, W),  # ... and a downstream job released already waits again for it
}
# Each named transition: the statuses it accepts, the one it writes, and whether it is fenced.
NAMED_TRANSITIONS = {
    "release": ({W}, R, False),
    "claim": ({R}, RUN, False),
    "finish": ({RUN}, FIN, True),
    "fail": ({RUN}, FAIL, True),
    "abort": ({RUN}, AB, True),
    "retry": ({RUN}, R, True),
    "shutdown_release": ({RUN}, R, True),
    "redispatch": ({R}, R, False),
    "dead_letter": ({R, RUN}, FAIL, False),
    "expire": ({RUN}, R, False),
    "expire_fail": ({RUN}, FAIL, False),
    "cascade_abort": ({W, R}, AB, False),
    "cancel_running": ({RUN}, AB, False),
    "rerun": ({FAIL, AB}, W, False),
    "rerun_job": ({FIN, FAIL, AB, R}, W, False),
    "limit_wait": ({R}, R, False),
    "limit_wake": ({R}, R, False),
}


def test_the_state_machine_allows_only_the_drawn_transitions():
    every_pair = [(source, target) for source in JobStatus for target in JobStatus]
    assert {pair for pair in every_pair if allowed(*pair)} == DRAWN_MOVES
    assert {
        name: (set(t.sources), t.target, t.fenced) for name, t in TRANSITIONS.items()
    } == NAMED_TRANSITIONS


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(a, 1.0, 5.0) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
