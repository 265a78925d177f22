"""The fault proxy itself, against a loopback echo server: forwards, stalls (a black hole that
delivers late on heal), drops (resets and refuses) and heals."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.harness.faultproxy import FaultProxy

pytestmark = pytest.mark.faults


@pytest.fixture
def echo():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def _roundtrip(sock: socket.socket, payload: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(payload)
    return sock.recv(4096)


def test_forwards_stalls_drops_and_heals(echo):
    with FaultProxy(echo) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert _roundtrip(sock, b"one", 2) == b"one"
        proxy.stall()
        assert proxy.state == "stalled"
        with pytest.raises(socket.timeout):
            _roundtrip(sock, b"two", 0.3)  # a black hole: no error, no answer
        late = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)  # accepted, not answered
        with pytest.raises(socket.timeout):
            _roundtrip(late, b"three", 0.3)
        proxy.heal()
        sock.settimeout(2)
        assert sock.recv(4096) == b"two"  # what was sent into the black hole arrives late
        late.settimeout(2)
        assert late.recv(4096) == b"three"
        proxy.drop()
        assert proxy.state == "dropped"
        with pytest.raises(OSError):  # reset (or, at best, closed): never an answer
            if not _roundtrip(sock, b"four", 2):
                raise ConnectionResetError("closed")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        proxy.heal()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert _roundtrip(again, b"five", 2) == b"five"
        for s in (sock, late, again):
            s.close()
