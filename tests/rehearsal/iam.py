"""A small IAM evaluator for identity policies, independent of the project and of moto.

AWS rules: an explicit Deny wins, else any Allow, else the request is implicitly denied.
Anything this module does not understand raises `UnsupportedPolicy`, so nothing is allowed
by accident.

Example
-------
>>> doc = {"Statement": [{"Effect": "Allow", "Action": "sqs:Receive*", "Resource": "*"}]}
>>> evaluate([doc], "SQS:ReceiveMessage", "arn:aws:sqs:us-east-1:1:q").allowed
True
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Context = Mapping[str, "str | list[str]"]


class UnsupportedPolicy(Exception):
    """A policy uses a construct this evaluator does not model."""


@dataclass(frozen=True)
class StatementRef:
    document_index: int
    statement_index: int

    def __str__(self) -> str:
        return f"document {self.document_index} statement {self.statement_index}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    statements: tuple[StatementRef, ...]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements_of(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return _as_list(document.get("Statement", []))


def statements(documents: Sequence[Mapping[str, Any]]) -> list[StatementRef]:
    """Every statement of every document, in order."""
    return [StatementRef(d, s) for d, doc in enumerate(documents) for s in range(len(_statements_of(doc)))]


def without_statement(documents: Sequence[Mapping[str, Any]], ref: StatementRef) -> list[dict[str, Any]]:
    """Deep copies of `documents` with the one statement `ref` removed."""
    copies = [copy.deepcopy(dict(doc)) for doc in documents]
    target = copies[ref.document_index]
    kept = _statements_of(target)
    target["Statement"] = kept[: ref.statement_index] + kept[ref.statement_index + 1 :]
    return copies


@functools.lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # `*` and `?` only; both may span `:` and `/`, as they do for resources in AWS.
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


def _arn_like(pattern: str, value: str) -> bool:
    # ArnLike compares the six colon-separated parts one by one.
    parts, values = pattern.split(":", 5), value.split(":", 5)
    return len(parts) == len(values) == 6 and all(map(_like, parts, values))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UnsupportedPolicy(f"not a number in a Numeric condition: {text!r}") from None


# Positive operators, (policy value, request value) -> match; negations are listed apart.
_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda p, v: p == v,
    "StringEqualsIgnoreCase": lambda p, v: p.casefold() == v.casefold(),
    "StringLike": _like,
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
    "Bool": lambda p, v: p.lower() == v.lower(),
    "NumericEquals": lambda p, v: _number(v) == _number(p),
    "NumericLessThan": lambda p, v: _number(v) < _number(p),
    "NumericLessThanEquals": lambda p, v: _number(v) <= _number(p),
    "NumericGreaterThan": lambda p, v: _number(v) > _number(p),
    "NumericGreaterThanEquals": lambda p, v: _number(v) >= _number(p),
}
_NEGATIONS = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "NumericNotEquals": "NumericEquals",
}


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _condition_holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    set_op, _, name = operator.rpartition(":")
    if set_op not in ("", "ForAnyValue", "ForAllValues"):
        raise UnsupportedPolicy(f"unknown set operator {set_op!r} in {operator!r}")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    negated = name in _NEGATIONS
    match = _OPERATORS.get(_NEGATIONS.get(name, name))
    if match is None:
        raise UnsupportedPolicy(f"unknown condition operator {operator!r}")
    # Condition keys are case-insensitive in AWS.
    found = next((v for k, v in context.items() if k.lower() == key.lower()), None)
    if found is None:
        # AWS: a missing key fails a condition, except IfExists, ForAllValues and the negated operators.
        return if_exists or set_op == "ForAllValues" or (negated and not set_op)
    policy_values = [_text(p) for p in _as_list(expected)]

    def matches(value: str) -> bool:
        return any(match(p, value) for p in policy_values)

    values = _as_list(found)
    if set_op == "ForAllValues":
        return all(matches(v) != negated for v in values)
    if set_op == "ForAnyValue":
        return any(matches(v) != negated for v in values)
    return any(matches(v) for v in values) != negated


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Context) -> bool:
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, entries in conditions.items()
        for key, expected in entries.items()
    )


def _field(statement: Mapping[str, Any], name: str) -> tuple[list[str], bool]:
    """The patterns of `name` or `Not<name>`, and whether it is the negated form."""
    if (name in statement) == (f"Not{name}" in statement):
        raise UnsupportedPolicy(f"a statement needs exactly one of {name} and Not{name}: {statement}")
    negated = name not in statement
    patterns = _as_list(statement[f"Not{name}" if negated else name])
    if not all(isinstance(p, str) for p in patterns):
        raise UnsupportedPolicy(f"unresolved {name} in {statement} (resolve intrinsic functions first)")
    return patterns, negated


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    if "Principal" in statement or "NotPrincipal" in statement:
        raise UnsupportedPolicy(f"resource policy statements are not modelled: {statement}")
    actions, not_action = _field(statement, "Action")
    resources, not_resource = _field(statement, "Resource")
    return (
        any(_like(p, action, ignore_case=True) for p in actions) != not_action
        and any(_like(p, resource) for p in resources) != not_resource
        and _conditions_hold(statement.get("Condition", {}), context)
    )


def evaluate(
    documents: Sequence[Mapping[str, Any]], action: str, resource: str, context: Context | None = None
) -> Decision:
    """Whether identity policies `documents` allow `action` on `resource` in `context`."""
    allows: list[StatementRef] = []
    denies: list[StatementRef] = []
    for ref in statements(documents):
        statement = _statements_of(documents[ref.document_index])[ref.statement_index]
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise UnsupportedPolicy(f"unknown Effect {effect!r} in {statement}")
        if _applies(statement, action, resource, context or {}):
            (allows if effect == "Allow" else denies).append(ref)
    if denies:
        return Decision(False, f"{action} on {resource} explicitly denied by {denies[0]}", tuple(denies))
    if allows:
        return Decision(True, f"{action} on {resource} allowed by {allows[0]}", tuple(allows))
    return Decision(False, f"no statement allows {action} on {resource}", ())
