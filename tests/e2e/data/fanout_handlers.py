"""Handlers of the end-to-end fan-out tests: ``listing`` expands into ``n`` ``item`` jobs
(``n`` from the graph's args), ``gather`` is the join and writes what it was given. Each
item writes its name and its args ``a`` and ``b``: the graph sets both, the Expand's args
both, each item only ``a``, so the item shows which wins.

``FANOUT_FAIL_ITEM=i`` in the environment of ``overseer run`` makes item ``i`` fail."""

import json
import os

import overseer


def listing(job):
    return [
        overseer.Artifact(key=f"{job.graph_id}/listing.txt", data=b"listed"),
        overseer.Expand(
            type="item",
            items=[{"i": i, "a": "item"} for i in range(job.args["n"])],
            args={"a": "expand", "b": "expand"},
        ),
    ]


def item(job):
    (listed,) = job.inputs[job.name.rsplit(".", 1)[0]]  # the parent's artifacts
    if listed.read() != b"listed":
        raise ValueError("the parent's listing is not in job.inputs")
    if job.args["i"] == int(os.environ.get("FANOUT_FAIL_ITEM", "-1")):
        raise ValueError(f"item {job.args['i']} is bad")
    written = f"{job.name} a={job.args['a']} b={job.args['b']} n={job.args['n']}"
    return [overseer.Artifact(key=f"{job.graph_id}/items/{job.args['i']}.txt", data=written.encode())]


def gather(job):
    """The names of its inputs in the order given, and what each left."""
    given = [[name, [a.read().decode() for a in artifacts]] for name, artifacts in job.inputs.items()]
    return [overseer.Artifact(key=f"{job.graph_id}/gathered.json", data=json.dumps(given).encode())]


HANDLERS = {"listing": listing, "item": item, "gather": gather}
