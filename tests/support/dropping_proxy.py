"""A loopback TCP proxy that loses answers: the request reaches the server, its answer
never reaches the client.

The first ``drop`` connections are forwarded towards the server as usual, but the
server's answer is read and kept (in :attr:`swallowed`) and the client's connection is
closed without a byte of it: what a client sees when a network drops an answer after the
server acted. Every later connection is forwarded both ways untouched.
"""

from __future__ import annotations

import socket
import threading


class DroppingProxy:
    def __init__(self, target_port: int, drop: int = 1) -> None:
        self.target_port = target_port
        self.drop = drop
        self.swallowed: list[bytes] = []  # the first bytes of each answer kept from the client
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            self.connections += 1
            dropping = len(self.swallowed) < self.drop
            if dropping:
                self.swallowed.append(b"")  # this connection's slot, filled below
                slot = len(self.swallowed) - 1
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        if not dropping:
            _pipe(upstream, client)
            return
        try:
            answer = upstream.recv(65536)  # the server has handled the request
        except OSError:
            answer = b""
        with self._lock:
            self.swallowed[slot] = answer
        _close(client, upstream)

    def close(self) -> None:
        self._listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
