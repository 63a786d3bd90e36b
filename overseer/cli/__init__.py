"""The ``overseer`` command: thin commands over the engine, registered here one by one.

* ``run | validate | worker`` (``run``): a graph run to the end on this machine, a graph
  checked, the worker loop of a deployed stack;
* ``submit | status | jobs | logs | cancel | rerun | graph | graphs`` (``graphs``): on a local stack,
  a deployed stack's API or the deployed stack itself (``targets``, ``api_client``), shown
  by ``views`` and ``render``; ``ui``: the same in a browser (``overseer.ui``);
* ``local up | down`` (``local_stack``), ``gc`` (``gc``): a long-running local stack, and
  its ended graphs deleted.
"""

from __future__ import annotations

import logging

import click

from .gc import gc_command
from .graphs import cancel, graph_command, graphs_command, jobs, logs, rerun, status, submit
from .local_stack import local
from .run import run, validate, worker
from .ui import ui


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
def main(verbose: bool) -> None:
    """Overseer: job graphs on plain AWS services."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


for command in (
    run, validate, worker, submit, status, jobs, logs, cancel, rerun, graph_command, graphs_command, local,
    gc_command, ui,
):  # fmt: skip
    main.add_command(command)
