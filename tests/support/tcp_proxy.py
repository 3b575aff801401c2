"""A TCP proxy a test can silence: it stops forwarding without closing anything, as a network that drops packets.

``TcpProxy(upstream_host, upstream_port)`` listens on 127.0.0.1 at a free port and pipes every connection to
the upstream. ``pause()`` holds every byte where it is: open connections stay open and new ones are accepted,
but nothing reaches either side (no RST, no FIN: the client sees a hung server, never a refused one).
``resume()`` lets everything through again, held bytes included.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Generator

__all__ = ["TcpProxy", "tcp_proxy"]

_TICK = 0.02


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True).start()

    def pause(self) -> None:
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            sockets, self._sockets = [self._listener, *self._sockets], []
        self._forwarding.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _keep(self, sock: socket.socket) -> bool:
        """Track ``sock`` so ``close()`` closes it; closes it now (False) when the proxy is closed already."""
        with self._lock:
            if not self._closed.is_set():
                self._sockets.append(sock)
                return True
        sock.close()
        return False

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._keep(client):
                threading.Thread(target=self._connect, args=(client,), name="tcp-proxy-connect", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._wait_forwarding()  # paused: the client's connect succeeded, its startup packet goes nowhere
        try:
            upstream = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            return  # the client is closed with the proxy
        upstream.settimeout(None)
        if not self._keep(upstream):
            return
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, target), name="tcp-proxy-pipe", daemon=True).start()

    def _wait_forwarding(self) -> None:
        while not self._forwarding.wait(_TICK):
            if self._closed.is_set():
                return

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                self._wait_forwarding()
                readable, _, _ = select.select([source], [], [], _TICK)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                self._wait_forwarding()  # read while forwarding, then paused: hold it until resumed
                target.sendall(data)
        except (OSError, ValueError):  # ValueError: select on a socket closed meanwhile
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)  # the other side sees this side's end, as without a proxy


@contextlib.contextmanager
def tcp_proxy(host: str, port: int) -> Generator[TcpProxy]:
    proxy = TcpProxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
