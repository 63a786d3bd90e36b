"""``overseer ui``: the web page over a local stack or a deployed stack (``overseer.ui``)."""

from __future__ import annotations

import click

from .targets import Target, target_options


@click.command("ui")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8600,
    show_default=True,
    help="The port on 127.0.0.1 (0: a free one, printed).",
)
@click.option(
    "--host-check/--no-host-check",
    default=True,
    show_default=True,
    help="Refuse requests whose Host header is not 127.0.0.1:PORT or localhost:PORT (DNS rebinding).",
)
@target_options
def ui(port: int, host_check: bool, target: Target) -> None:
    """Watch and operate graphs in a browser: serves a page on 127.0.0.1 and prints its
    address, with a per-process token (the server holds the target's access)."""
    from ..ui.server import serve

    serve(target.client(), port=port, host_check=host_check)
