"""The stdio server's input, relayed so that a stop can end it while the client still holds it open.

The SDK reads stdin in a worker thread that a cancellation cannot interrupt: a server told to stop (SIGINT,
SIGTERM) would finish its teardown and then wait until its client closed the pipe. So before the SDK takes
fd 0, one end of a socket pair is put there, and a daemon thread copies the real input into the other end;
``end`` shuts that end, which the SDK reads as the end of its input, and the server stops as if the client
had closed it. The thread may stay blocked on the real input; being a daemon, it does not hold the exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Generator

__all__ = ["StdinRelay", "relayed_stdin"]

_CHUNK = 65536


class StdinRelay:
    """Copies the real stdin into the socket the SDK reads, until the input ends or `end` is called."""

    def __init__(self, source: int, sink: socket.socket) -> None:
        self._source = source
        self._sink = sink

    def copy(self) -> None:
        try:
            while chunk := os.read(self._source, _CHUNK):
                self._sink.sendall(chunk)
        except OSError:
            pass  # the real input failed, or the relay was ended: either way the server's input ends
        self.end()

    def end(self) -> None:
        # shutdown, not close: the copying thread may be using the socket, and its number must not be reused.
        with contextlib.suppress(OSError):
            self._sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relayed_stdin() -> Generator[StdinRelay | None]:
    """Put a relay of the real stdin on fd 0 for the duration; None when there is no stdin to relay."""
    try:
        source = os.dup(0)
    except OSError:
        yield None  # started with fd 0 closed: the SDK reads nothing, and there is nothing to interrupt
        return
    reader, sink = socket.socketpair()
    os.dup2(reader.fileno(), 0)
    reader.close()
    relay = StdinRelay(source, sink)
    threading.Thread(target=relay.copy, name="expeditor stdin relay", daemon=True).start()
    try:
        yield relay
    finally:
        relay.end()
        os.dup2(source, 0)
