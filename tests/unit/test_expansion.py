"""What a handler's ``Expand`` may be, and the clear errors when it may not: checked before
anything is stored, so a bad expansion fails its job and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import overseer
from overseer.backends.embedded.artifacts import DirectoryArtifactStore
from overseer.config import Settings
from overseer.errors import InvalidExpansion, InvalidGraph
from overseer.expansion import items_key, prepare, split_results
from overseer.graph import parse_graph
from overseer.states import JobStatus
from overseer.store import JobRecord

PARENT = JobRecord(graph_id="g", name="list", type="list", status=JobStatus.RUNNING, attempts=2)


def _prepare(tmp_path: Path, expand: overseer.Expand, **settings: Any) -> tuple[dict[str, Any], Any]:
    store = DirectoryArtifactStore(tmp_path)
    committed = prepare(
        expand, PARENT, handler_types={"child", "list"}, settings=Settings(**settings), artifacts=store
    )
    return committed, store


def test_the_items_are_stored_with_their_digest_and_committed_by_count(tmp_path: Path) -> None:
    committed, store = _prepare(tmp_path, overseer.Expand("child", [{"k": "a"}, {"k": "b"}], args={"x": 1}))
    data = store.get_bytes(committed["bucket"], committed["key"])
    assert committed == {
        "type": "child",
        "count": 2,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bucket": Settings().artifact_bucket,
        "key": items_key("g", "list", 2),
    }
    assert json.loads(data) == {"type": "child", "args": {"x": 1}, "items": [{"k": "a"}, {"k": "b"}]}


@pytest.mark.parametrize(
    ("expand", "settings", "message"),
    [
        (
            overseer.Expand("nope", [{}]),
            {},
            "expands into type 'nope', which has no handler; known types: child, list",
        ),
        (
            overseer.Expand("child", [{}] * 4),
            {"max_expand_items": 3},
            "expands into 4 items; the maximum is 3",
        ),
        (
            overseer.Expand("child", [{"k": "x" * 100}] * 3),
            {"max_expand_bytes": 200},
            "bytes of items (JSON); the maximum is 200 (OVERSEER_MAX_EXPAND_BYTES)",
        ),
        (overseer.Expand("child", [{"k": 1}, "two"]), {}, "item 1 of its Expand is a str, not a mapping"),
        (overseer.Expand("child", [{"k": {1, 2}}]), {}, "the items of its Expand are not JSON data"),
        (
            overseer.Expand("child", [{"k": "x" * 40_000}]),
            {},
            "item 0 of its Expand makes args of 40,009 bytes",
        ),
    ],
)
def test_a_bad_expansion_is_a_clear_error_and_stores_nothing(
    tmp_path: Path, expand: overseer.Expand, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidExpansion) as error:
        _prepare(tmp_path, expand, **settings)
    assert message in str(error.value)
    assert str(error.value).startswith("job 'list'")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_child_names_past_the_length_limit_are_refused(tmp_path: Path) -> None:
    long = JobRecord(graph_id="g", name="n" * 126, type="list", status=JobStatus.RUNNING, attempts=1)
    with pytest.raises(InvalidExpansion, match="pass the limit of 128 characters"):
        prepare(
            overseer.Expand("child", [{}] * 11),  # long.10 is 129 characters
            long,
            handler_types={"child"},
            settings=Settings(),
            artifacts=DirectoryArtifactStore(tmp_path),
        )


def test_a_handler_returns_at_most_one_expand() -> None:
    artifact = overseer.Artifact(key="k", data=b"")
    assert split_results([artifact, overseer.Expand("child", [])]) == (
        [artifact],
        overseer.Expand("child", []),
    )
    with pytest.raises(InvalidExpansion, match=r"returned 2 overseer\.Expand; return at most one"):
        split_results([overseer.Expand("child", []), overseer.Expand("child", [])])


def test_declared_names_an_expansion_would_make_are_refused_at_submission() -> None:
    with pytest.raises(InvalidGraph) as error:
        parse_graph({"jobs": {"fetch": [], "fetch.3": [], "fetch.3.1": [], "v1.2": []}})
    message = str(error.value)
    assert "job name 'fetch.3' is reserved for the children of job 'fetch'" in message
    assert "job name 'fetch.3.1' is reserved for the children of job 'fetch.3'" in message
    assert "v1.2" not in message  # no job 'v1'
