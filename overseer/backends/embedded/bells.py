"""Doorbells: wake-ups between the processes of one local stack, so that nothing on the
critical path sleeps.

SQLite tells no one about a commit. A process that waits for something to happen in the
stack (a worker for a message on its queue, the runner for new records of the change feed)
listens on a *bell* of that topic, and the process whose commit made it happen *rings*
it once the transaction is committed (``Database.write`` rings what the transaction asked
for). A bell is a Unix datagram socket in Linux's abstract namespace (nothing on disk to
clean up, no path-length limit), registered as an empty file under
``<state dir>/bells/<topic>/`` so that ringers find it; a ring is one datagram to each
registered bell, sent without blocking.

Bells only shorten waits: every waiter still looks at the store when its wait times out,
so a ring lost (a full socket buffer, a bell that is not registered yet, a platform
without abstract sockets) costs at most the fallback poll. A waiter registers before its
first look, so a commit after that look always finds its bell.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import sys
import uuid
from pathlib import Path

SUPPORTED = sys.platform.startswith("linux")
# Datagrams waiting in a bell are drained this many at a time at most (one is enough).
_DRAIN = 64


def _address(namespace: str, topic: str, name: str) -> str:
    return f"\0overseer/{namespace}/{topic}/{name}"


def namespace_of(state_dir: Path) -> str:
    """One stack's bells, told apart from every other stack's on the machine."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:20]


class Bell:
    """This process's bell of ``topic`` in the stack whose state directory is ``state_dir``."""

    def __init__(self, state_dir: Path, topic: str) -> None:
        self.namespace = namespace_of(state_dir)
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.address = _address(self.namespace, topic, self.name)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.address)
        self.socket.setblocking(False)
        self.registration = state_dir / "bells" / topic / self.name
        self.registration.parent.mkdir(parents=True, exist_ok=True)
        self.registration.touch()

    def wait(self, timeout: float) -> bool:
        """Wait until rung or ``timeout`` seconds passed; True when rung (every ring
        waiting is taken)."""
        ready, _, _ = select.select([self.socket], [], [], max(0.0, timeout))
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            for _ in range(_DRAIN):
                self.socket.recv(16)
        return True

    def ring_self(self) -> None:
        """Wake this very bell (from a signal handler: one non-blocking send)."""
        with contextlib.suppress(OSError):
            self.socket.sendto(b"!", self.address)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.registration.unlink()
        self.socket.close()


class Ringer:
    """Rings every registered bell of a topic of one stack."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.namespace = namespace_of(state_dir)
        self._socket: socket.socket | None = None
        self._pid = -1

    def _sender(self) -> socket.socket:
        if self._socket is None or self._pid != os.getpid():  # never share a socket across a fork
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
            self._pid = os.getpid()
        return self._socket

    def ring(self, topic: str) -> None:
        directory = self.state_dir / "bells" / topic
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        sender = self._sender()
        for name in names:
            try:
                sender.sendto(b".", _address(self.namespace, topic, name))
            except ConnectionRefusedError:
                # Its process is gone: forget the bell.
                with contextlib.suppress(OSError):
                    (directory / name).unlink()
            except OSError:
                pass  # a full bell is rung already
