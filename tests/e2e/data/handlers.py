"""Handlers for the end-to-end tests."""

import overseer


def write(job):
    return [overseer.Artifact(key=f"{job.graph_id}/{job.name}.txt", data=job.name.encode())]


def join(job):
    parts = sorted(a.read().decode() for arts in job.inputs.values() for a in arts)
    return [overseer.Artifact(key=f"{job.graph_id}/join.txt", data="+".join(parts).encode())]


def broken(job):
    raise RuntimeError("disk full")


HANDLERS = {"write": write, "join": join, "broken": broken}
