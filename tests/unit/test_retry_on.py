"""``retry_on``: which raised exceptions retry a job, matched on the class hierarchy in the
process that raised them; how handler specs and graph documents declare it."""

from __future__ import annotations

import json
import sys
import types

import pytest

from overseer.errors import HandlersModuleError, InvalidGraph
from overseer.graph import parse_graph
from overseer.handlers import resolve_exception, retry_matches, to_spec
from overseer.items import MAX_ERRORS_KEPT, error_history
from overseer.worker import backoff_seconds, retry_delay


class ServiceDown(Exception):
    """A third-party-like error class defined in a handlers module."""


class Gateway502(ServiceDown):
    pass


@pytest.fixture
def handlers_module():
    """A module standing in for the user's handlers module, holding ServiceDown."""
    module = types.ModuleType("fake_user_handlers")
    module.ServiceDown = ServiceDown  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_a_builtin_name_matches_its_subclasses_and_nothing_else():
    assert retry_matches(ConnectionError("refused"), ["ConnectionError"])
    assert retry_matches(ConnectionRefusedError("refused"), ["ConnectionError"])  # a subclass
    assert retry_matches(ConnectionResetError("reset"), ["OSError"])
    assert not retry_matches(ValueError("bad row"), ["ConnectionError"])
    assert not retry_matches(OSError("disk"), ["ConnectionError"])  # a base class does not match
    assert not retry_matches(ConnectionError("refused"), [])


def test_a_dotted_name_is_imported_and_matched_by_class_not_by_its_short_name():
    import json.decoder

    error = json.JSONDecodeError("bad", "doc", 0)
    assert retry_matches(error, ["json.JSONDecodeError"])  # re-exported: json.decoder defines it
    assert retry_matches(error, ["json.decoder.JSONDecodeError"])
    assert retry_matches(error, ["ValueError"])  # its base class
    assert resolve_exception("json.JSONDecodeError") is json.decoder.JSONDecodeError
    # A module's ConnectionError of its own is not the builtin one.
    fake = types.ModuleType("fakehttp")

    class HttpConnectionError(Exception):
        pass

    fake.ConnectionError = HttpConnectionError  # type: ignore[attr-defined]
    sys.modules["fakehttp"] = fake
    try:
        assert retry_matches(HttpConnectionError("pool"), ["fakehttp.ConnectionError"])
        assert not retry_matches(HttpConnectionError("pool"), ["ConnectionError"])
        assert not retry_matches(ConnectionError("refused"), ["fakehttp.ConnectionError"])
    finally:
        del sys.modules["fakehttp"]


def test_a_plain_name_is_looked_up_in_the_handlers_module(handlers_module):
    assert retry_matches(Gateway502("502"), ["ServiceDown"], home=handlers_module)
    assert retry_matches(ServiceDown("down"), [ServiceDown])  # a class given as such
    assert retry_matches(Gateway502("502"), [ServiceDown])
    assert not retry_matches(ServiceDown("down"), [Gateway502])
    assert not retry_matches(ValueError("x"), ["ServiceDown"], home=handlers_module)


def test_a_name_that_resolves_nowhere_matches_by_qualified_or_plain_name():
    # e.g. the module is importable only as the handlers module's private name
    assert resolve_exception("not_installed_anywhere.Gateway502") is None
    assert retry_matches(Gateway502("502"), ["not_installed_anywhere.Gateway502"]) is False
    assert retry_matches(Gateway502("502"), [f"{__name__}.ServiceDown"])  # by module.qualname
    assert retry_matches(Gateway502("502"), ["Gateway502"])  # by plain name in its hierarchy
    assert retry_matches(Gateway502("502"), ["ServiceDown"])


def test_the_job_s_names_replace_the_handler_s(handlers_module):
    spec = to_spec("fetch", {"process": lambda job: None, "retry_on": [ConnectionError, "TimeoutError"]})
    assert spec.retries(ConnectionRefusedError())
    assert spec.retries(TimeoutError())
    assert not spec.retries(KeyError())
    assert spec.retries(KeyError(), ["LookupError"])
    assert not spec.retries(ConnectionError(), ["LookupError"])


@pytest.mark.parametrize(
    ("retry_on", "message"),
    [
        (["no_such_module_here.Error"], "which is no exception class"),
        (["NoSuchErrorAnywhere"], "which is no exception class"),
        (["json.dumps"], "which is no exception class"),  # resolves, but to a function
        ([42], "must hold exception classes or dotted names"),
        (["requests ConnectionError"], "must hold exception classes or dotted names"),
        ([int], "must hold exception classes or dotted names"),
    ],
)
def test_a_handler_s_retry_on_is_checked_when_the_handlers_load(retry_on, message):
    with pytest.raises(HandlersModuleError, match=message):
        to_spec("fetch", {"process": lambda job: None, "retry_on": retry_on})


def test_a_handler_s_backoff_must_be_seconds():
    spec = to_spec("f", {"process": print, "backoff_seconds": 0.5, "backoff_max_seconds": 10})
    assert (spec.backoff_seconds, spec.backoff_max_seconds) == (0.5, 10.0)
    with pytest.raises(HandlersModuleError, match="backoff_seconds must be seconds"):
        to_spec("f", {"process": print, "backoff_seconds": -1})


def test_a_graph_job_takes_retry_on_names_and_max_attempts():
    spec = parse_graph(
        {
            "jobs": {
                "fetch": {"retry_on": ["ConnectionError", "requests.exceptions.Timeout"], "max_attempts": 3},
                "one": {"retry_on": "TimeoutError"},
                "plain": [],
            }
        }
    )
    assert spec.jobs["fetch"].retry_on == ("ConnectionError", "requests.exceptions.Timeout")
    assert spec.jobs["fetch"].max_attempts == 3
    assert spec.jobs["one"].retry_on == ("TimeoutError",)
    assert spec.jobs["plain"].retry_on == ()


@pytest.mark.parametrize(
    ("retry_on", "message"),
    [
        ([], "must be a list of exception names"),
        ({"ConnectionError": 1}, "must be a list of exception names"),
        (["Connection Error"], "'Connection Error', which is not an exception name"),
        (["requests..Timeout"], "which is not an exception name"),
        ([3], "3, which is not an exception name"),
        ([f"E{i}" for i in range(21)], "lists 21 exceptions; the limit is 20"),
    ],
)
def test_a_graph_job_s_bad_retry_on_is_refused_with_what_to_write(retry_on, message):
    with pytest.raises(InvalidGraph, match=message) as raised:
        parse_graph(json.dumps({"jobs": {"fetch": {"retry_on": retry_on}}}))
    assert "job 'fetch' retry_on" in str(raised.value)


def test_full_jitter_draws_up_to_the_capped_exponential_backoff():
    import random

    rng = random.Random(7)
    for attempt in (1, 2, 3, 8):
        ceiling = backoff_seconds(attempt, 0.5, 3.0)
        draws = [retry_delay(attempt, 0.5, 3.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2 and min(draws) < ceiling / 2  # spread, not fixed
    assert retry_delay(3, 0.0, 10.0) == 0.0


def test_every_attempt_s_error_is_kept_bounded():
    history: list = []
    for attempt in range(1, 15):
        history = error_history(history, attempt, {"type": "ConnectionError", "message": "x" * 5000})
    assert len(history) == MAX_ERRORS_KEPT
    assert [e["attempt"] for e in history] == list(range(15 - MAX_ERRORS_KEPT, 15))
    assert all(len(e["message"]) == 500 and e["type"] == "ConnectionError" for e in history)
    assert len(json.dumps(history)) < 8 * 1024
    # The same attempt recorded twice (a retried write) is kept once.
    again = error_history(history, 14, {"type": "ValueError", "message": "y"})
    assert [e["attempt"] for e in again] == [e["attempt"] for e in history]
    assert again[-1]["type"] == "ValueError"
