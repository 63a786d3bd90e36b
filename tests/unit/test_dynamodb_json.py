"""overseer.dynamodb_json writes and reads DynamoDB JSON exactly as boto3's TypeSerializer
and TypeDeserializer do, for every kind of value the engine's items hold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from overseer.dynamodb_json import deserialize, serialize

VALUES = [
    None,
    True,
    False,
    0,
    -7,
    12345678901234567890,
    Decimal("3.14"),
    Decimal("1.0"),
    Decimal("-0.001"),
    "",
    "ready",
    "naïve ☃",
    b"\x00\xff",
    {"S1", "S2"},
    {Decimal(1), Decimal(20), 3},
    {b"a", b"b"},
    set(),
    [],
    [1, "a", None, [True], {"k": Decimal("2.5")}],
    {},
    {"status": "running", "attempts": 2, "finished_deps": {1, 2}, "args": '{"n": 1}', "nested": {"x": [1]}},
]


# Ids by position: a set's repr changes with the hash seed (xdist workers must agree).
IDS = [f"{type(value).__name__}-{index}" for index, value in enumerate(VALUES)]


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_serializes_as_boto3(value):
    ours, theirs = serialize(value), TypeSerializer().serialize(value)
    if "NS" in theirs or "SS" in theirs or "BS" in theirs:
        ((kind, items),) = theirs.items()
        assert set(ours) == {kind} and sorted(ours[kind]) == sorted(items)
    else:
        assert ours == theirs


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_reads_back_as_boto3(value):
    attribute = TypeSerializer().serialize(value)
    theirs = TypeDeserializer().deserialize(attribute)
    if isinstance(theirs, Binary):
        theirs = theirs.value
    elif isinstance(theirs, set) and theirs and isinstance(next(iter(theirs)), Binary):
        theirs = {b.value for b in theirs}
    assert deserialize(attribute) == theirs


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), Decimal("Infinity"), {1, "a"}, object()],
    ids=["float", "nan", "infinity", "mixed-set", "object"],
)
def test_refuses_what_boto3_refuses(value):
    with pytest.raises(TypeError):
        TypeSerializer().serialize(value)
    with pytest.raises(TypeError):
        serialize(value)
