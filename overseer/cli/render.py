"""A graph as a picture: Mermaid and Graphviz DOT text coloured by job status, and PNG.

The input is a plain view of a graph (``GraphView``): a graph file gives one with every
job waiting; a stored graph gives its jobs' current statuses. Mermaid renders in GitHub
Markdown as is; DOT becomes a PNG with Graphviz's ``dot`` when it is installed.

Example
-------
>>> view = view_from_spec(parse_graph({"id": "g", "jobs": {"a": [], "b": ["a"]}}))
>>> print(to_mermaid(view))  # doctest: +ELLIPSIS
flowchart LR
...
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GraphvizMissing
from ..graph import GraphSpec

# Fill colours (and border colours) per job status, the same in both formats.
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "waiting": ("#f3f4f6", "#9ca3af"),
    "ready": ("#dbeafe", "#3b82f6"),
    "running": ("#cffafe", "#0891b2"),
    "finished": ("#dcfce7", "#16a34a"),
    "failed": ("#fee2e2", "#dc2626"),
    "aborted": ("#fef9c3", "#ca8a04"),
}
FORMATS = ("mermaid", "dot", "png")


@dataclass
class JobView:
    name: str
    type: str
    status: str
    deps: list[str] = field(default_factory=list)


@dataclass
class GraphView:
    graph_id: str
    jobs: dict[str, JobView]
    status: str | None = None


def view_from_spec(spec: GraphSpec) -> GraphView:
    """A graph file's jobs, all waiting (nothing has run)."""
    jobs = {
        name: JobView(name, spec.jobs[name].type, "waiting", list(spec.jobs[name].deps))
        for name in spec.order
    }
    return GraphView(spec.id, jobs)


def view_from_jobs(
    graph_id: str, jobs: Mapping[str, Mapping[str, Any]], status: str | None = None
) -> GraphView:
    """A stored graph: ``jobs`` as the API / ``overseer jobs --json`` give them (name ->
    ``{"type", "status", "deps"?...}``); without ``deps`` the jobs are drawn unconnected."""
    views = {
        name: JobView(
            name, str(job.get("type", name)), str(job.get("status", "waiting")), list(job.get("deps") or [])
        )
        for name, job in jobs.items()
    }
    return GraphView(graph_id, views, status)


def _label(job: JobView) -> str:
    if job.type != job.name:
        return f"{job.name} ({job.type})"
    return job.name


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(view: GraphView) -> str:
    """A Mermaid flowchart, left to right, one class (colour) per status."""
    ids = {name: f"j{n}" for n, name in enumerate(view.jobs)}
    title = f"{view.graph_id}" + (f" ({view.status})" if view.status else "")
    lines = ["flowchart LR", f"  %% graph {_mermaid_text(title)}"]
    for name, job in view.jobs.items():
        lines.append(f'  {ids[name]}["{_mermaid_text(_label(job))}<br/><i>{job.status}</i>"]:::{job.status}')
    for name, job in view.jobs.items():
        for dep in job.deps:
            if dep in ids:
                lines.append(f"  {ids[dep]} --> {ids[name]}")
    for status, (fill, stroke) in STATUS_COLOURS.items():
        lines.append(f"  classDef {status} fill:{fill},stroke:{stroke},color:#111827")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(view: GraphView) -> str:
    """Graphviz DOT, left to right, nodes filled by status, with a legend of the statuses used."""
    title = view.graph_id + (f" — {view.status}" if view.status else "")
    lines = [
        f"digraph {_dot_string(view.graph_id)} {{",
        "  rankdir=LR;",
        f"  label={_dot_string(title)}; labelloc=t; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=11];',
        '  edge [color="#6b7280"];',
    ]
    for name, job in view.jobs.items():
        fill, stroke = STATUS_COLOURS.get(job.status, ("#ffffff", "#000000"))
        label = _dot_string(f"{_label(job)}\n{job.status}").replace("\n", "\\n")
        lines.append(f'  {_dot_string(name)} [label={label}, fillcolor="{fill}", color="{stroke}"];')
    for name, job in view.jobs.items():
        for dep in job.deps:
            if dep in view.jobs:
                lines.append(f"  {_dot_string(dep)} -> {_dot_string(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_png(view: GraphView, path: Path) -> Path:
    """Render with Graphviz's ``dot`` into ``path``. Raises ``GraphvizMissing``."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing("Graphviz is not installed (no 'dot' on PATH): use --format mermaid or dot")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([dot, "-Tpng", "-Gdpi=110", "-o", str(path)], input=to_dot(view).encode(), check=True)
    return path
