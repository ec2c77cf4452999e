"""A TCP relay on 127.0.0.1 in front of a real database: a source that is down, then back.

Until `start()` nothing listens on its port, so a worker pointed at it gets "connection refused"
(SourceConnectionError: transient). After `start()` every connection is relayed to the database.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from devstack.emulators import free_port

BUFFER_BYTES = 65536


class Relay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="relay-accept").start()

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [*sockets, *([self._server] if self._server else [])]:
            with contextlib.suppress(OSError):
                sock.close()
        self._server = None

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by stop()
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True, name="relay-pump").start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(BUFFER_BYTES):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture(name="relay")
def pg_relay() -> Iterator[Relay]:
    """A relay to the local PostgreSQL, stopped after the test (a test that "breaks" the database
    stops the relay and starts a new one on the same port)."""
    relay = Relay(target_port=5432)
    try:
        yield relay
    finally:
        relay.stop()
