"""DynamoDB JSON (the typed attribute values of DynamoDB's API and its stream records), both
ways, for the values the engine's items hold.

The same as ``boto3.dynamodb.types``' ``TypeSerializer`` / ``TypeDeserializer`` (numbers as
``Decimal`` in DynamoDB's 38-digit context; tests/unit/test_dynamodb_json.py holds them to
boto3's on every kind of value), without importing boto3: the embedded backend writes and
reads its change feed in this format, and importing boto3 costs every local process about
100 ms of start-up (``overseer run``'s whole command is timed against Luigi's,
bench/run_vs_luigi.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

# DynamoDB's numbers: 38 significant digits, exponents from -130 to 125; anything it would
# round or clamp is refused (as boto3 does).
DYNAMODB_CONTEXT = Context(
    Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow]
)


def _number(value: int | Decimal) -> str:
    text = str(DYNAMODB_CONTEXT.create_decimal(value))
    if text in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN are not supported by DynamoDB")
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def serialize(value: Any) -> dict[str, Any]:
    """``value`` as a DynamoDB attribute value (floats are refused: use ``Decimal``)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Set):
        if all(_is_number(v) for v in value):  # an empty set too, as boto3 (DynamoDB refuses it)
            return {"NS": [_number(v) for v in value]}
        if all(isinstance(v, str) for v in value):
            return {"SS": list(value)}
        if all(isinstance(v, bytes | bytearray) for v in value):
            return {"BS": [bytes(v) for v in value]}
        raise TypeError(f"a set must hold numbers, strings or bytes only: {value!r:.80}")
    if isinstance(value, Mapping):
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f"unsupported type {type(value).__name__} for DynamoDB: {value!r:.80}")


def deserialize(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as Python (numbers as ``Decimal``, sets as ``set``)."""
    ((kind, value),) = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        return DYNAMODB_CONTEXT.create_decimal(value)
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: deserialize(v) for k, v in value.items()}
    if kind == "L":
        return [deserialize(v) for v in value]
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {DYNAMODB_CONTEXT.create_decimal(v) for v in value}
    if kind == "B":
        return bytes(value)
    if kind == "BS":
        return {bytes(v) for v in value}
    raise TypeError(f"unknown DynamoDB type {kind!r}")
