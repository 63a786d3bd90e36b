"""Graph templates: named graph documents that the API and EventBridge triggers start.

A template is a graph file (``<name>.yaml``, ``.yml`` or ``.json``) in
``Settings.templates_dir`` whose ``id`` may name arguments in ``str.format`` style::

    # templates/daily-report.yaml
    id: "daily-report-{date}-company-{company_id}"
    args: {format: pdf}
    jobs:
      fetch: []
      report: [fetch]

Rendering it with ``{"date": "2026-11-26", "company_id": 42}`` gives the graph document
``id: daily-report-2026-11-26-company-42`` whose args are the template's args with the
given ones merged over them. The same arguments always give the same graph id, so
starting a template twice (a redelivered event, a retried request) creates one graph.

Example
-------
>>> document = render_template("templates", "daily-report", {"date": "2026-11-26", "company_id": 42})
>>> document["id"]
'daily-report-2026-11-26-company-42'
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidGraph, TemplateError, UnknownTemplate
from .graph import load_document

TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json")
TEMPLATE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# One graph per value: ``{"company_ids": [1, 2]}`` starts the template once with
# ``company_id: 1`` and once with ``company_id: 2``.
FAN_OUT_ARGS = {"company_ids": "company_id"}
MAX_FAN_OUT = 1000


def template_files(directory: str | Path) -> dict[str, Path]:
    """Template name -> file, for every template in ``directory`` (empty if it does not exist)."""
    root = Path(directory)
    if not str(directory) or not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in TEMPLATE_SUFFIXES and TEMPLATE_NAME_PATTERN.match(path.stem):
            found.setdefault(path.stem, path)
    return found


def load_template(directory: str | Path, name: str) -> dict[str, Any]:
    """The template's graph document, unrendered. Raises ``UnknownTemplate`` listing the known names."""
    if not str(directory):
        raise UnknownTemplate(
            f"no template {name!r}: no templates directory is configured (set OVERSEER_TEMPLATES_DIR)"
        )
    known = template_files(directory)
    if not isinstance(name, str) or name not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise UnknownTemplate(f"no template {name!r} in {str(directory)!r}; known templates: {listed}")
    try:
        return load_document(known[name])
    except InvalidGraph as exc:
        raise TemplateError(f"template {name!r} is not a valid graph document: {exc}") from exc


def _id_fields(pattern: str) -> set[str]:
    fields = set()
    for _, field_name, _, _ in string.Formatter().parse(pattern):
        if field_name is not None:
            fields.add(re.split(r"[.\[]", field_name, maxsplit=1)[0])
    return fields


def render_template(
    directory: str | Path,
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The graph document of template ``name`` started with ``args``.

    Graph args are ``defaults``, then the template's args, then ``args`` (later wins).
    The graph id is the template's ``id`` formatted with those args; a template without
    an ``id`` gets a generated one (not idempotent). The document is not validated here:
    ``parse_graph`` does that when it is submitted.
    """
    document = load_template(directory, name)
    template_args = document.get("args") or {}
    if not isinstance(template_args, dict):
        raise TemplateError(
            f"template {name!r}: 'args' must be a mapping, got {type(template_args).__name__}"
        )
    if args is not None and not isinstance(args, Mapping):
        raise TemplateError(f"args of template {name!r} must be a mapping, got {type(args).__name__}")
    merged = {**(defaults or {}), **template_args, **(args or {})}
    document["args"] = merged
    pattern = document.get("id")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise TemplateError(f"template {name!r}: 'id' must be a string, got {pattern!r}")
        missing = sorted(_id_fields(pattern) - set(merged))
        if missing:
            raise TemplateError(
                f"template {name!r} needs args {missing} to name its graph (id {pattern!r}); "
                "pass them in 'args'"
            )
        try:
            document["id"] = pattern.format_map(merged)
        except (ValueError, IndexError, KeyError, AttributeError) as exc:
            raise TemplateError(f"template {name!r}: cannot format id {pattern!r}: {exc}") from exc
    return document


def fan_out(args: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One argument set per graph to start: ``company_ids: [..]`` gives one per company.

    ``{"company_ids": [1, 2], "date": "d"}`` -> ``[{"company_id": 1, "date": "d"},
    {"company_id": 2, "date": "d"}]``; arguments without a fan-out key give one set.
    """
    base = dict(args or {})
    present = [key for key in FAN_OUT_ARGS if key in base]
    if not present:
        return [base]
    if len(present) > 1:
        raise TemplateError(f"args may fan out on one key only, got {present}")
    key = present[0]
    values = base.pop(key)
    if not isinstance(values, list) or not values:
        raise TemplateError(f"'{key}' must be a non-empty list, got {values!r:.80}")
    if len(values) > MAX_FAN_OUT:
        raise TemplateError(f"'{key}' has {len(values)} values; the limit is {MAX_FAN_OUT} per event")
    if len(set(map(str, values))) != len(values):
        raise TemplateError(f"'{key}' lists a value more than once")
    return [{**base, FAN_OUT_ARGS[key]: value} for value in values]
