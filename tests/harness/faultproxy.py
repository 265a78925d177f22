"""A loopback TCP forwarder that can cut a link: network partitions for the fault suite and drills.

``FaultProxy(target_port)`` listens on a free loopback port and forwards every connection to
``127.0.0.1:target_port`` (give a worker ``proxy.endpoint`` as its etcd endpoint). Three faults:

* ``stall()`` — a black hole: connections stay open, but no byte moves in either direction, and
  new connections are accepted but not forwarded. Like a partition where packets are dropped and
  TCP keeps retransmitting: nothing errors, requests just time out. Bytes sent meanwhile stay
  queued and are delivered on ``heal()``, like TCP's retransmissions after a partition ends (so a
  request a partitioned leader sent *during* the partition may reach etcd *after* it: exactly the
  late write fencing must refuse).
* ``drop()`` — every connection is reset (RST) and new ones are refused (the listening socket is
  closed): like a host that went away.
* ``heal()`` — forward again (re-listening on the same port after a ``drop``).

Threads: one acceptor, and one pump per connection pair (``select`` over both sockets). Nothing
here is specific to etcd or gRPC.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import Any

from worker.demo.embedded_etcd import free_port

_POLL = 0.05
_CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a vanished peer's kernel would answer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One client connection and its upstream connection (opened lazily: not while stalled)."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"faultproxy-link-{proxy.port}", daemon=True)

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:
                _reset(sock)
            else:
                try:
                    sock.close()
                except OSError:
                    pass

    def _run(self) -> None:
        proxy = self.proxy
        try:
            # a black hole accepts (the kernel does) but does not answer: connect upstream only
            # once traffic may flow
            while not self.closed.is_set() and not proxy._flowing.wait(_POLL):
                pass
            if self.closed.is_set():
                return
            try:
                self.upstream = socket.create_connection(proxy.target, timeout=2.0)
            except OSError:
                self.close(reset=True)
                return
            self.upstream.settimeout(None)
            peers = {self.client: self.upstream, self.upstream: self.client}
            while not self.closed.is_set():
                if not proxy._flowing.is_set():
                    proxy._flowing.wait(_POLL)  # stalled: read nothing, bytes queue up in the kernel
                    continue
                readable, _, _ = select.select(list(peers), [], [], _POLL)
                for sock in readable:
                    if not proxy._flowing.is_set():
                        break  # stalled meanwhile: this chunk waits too
                    try:
                        data = sock.recv(_CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        self.close()
                        return
                    try:
                        peers[sock].sendall(data)
                        proxy.bytes_forwarded += len(data)
                    except OSError:
                        self.close()
                        return
        except (OSError, ValueError):
            self.close()
        finally:
            proxy._forget(self)


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port`` until ``close()``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.bytes_forwarded = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._dropped = False
        self._closed = False
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._listen()

    @classmethod
    def to(cls, endpoint: str) -> FaultProxy:
        """A proxy in front of ``http://host:port``."""
        hostport = endpoint.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        return cls(int(port), host or "127.0.0.1")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> str:
        return "dropped" if self._dropped else ("stalled" if not self._flowing.is_set() else "flowing")

    def connections(self) -> int:
        with self._lock:
            return len(self._links)

    # -- faults -------------------------------------------------------------------------------
    def stall(self) -> None:
        """Black hole: keep every connection open, move no byte, forward no new connection."""
        self._flowing.clear()

    def drop(self) -> None:
        """Reset every connection and refuse new ones until ``heal()``."""
        self._flowing.clear()
        with self._lock:
            self._dropped = True
            listener, self._listener = self._listener, None
            links = list(self._links)
        if listener is not None:
            try:
                listener.close()
            except OSError:
                pass
        if self._acceptor is not None:
            self._acceptor.join(timeout=2.0)
        for link in links:
            link.close(reset=True)

    def heal(self) -> None:
        """Forward again (after ``drop()``, listen again on the same port)."""
        with self._lock:
            dropped, self._dropped = self._dropped, False
        if dropped:
            self._listen()
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.drop()
        self._flowing.set()  # let stalled pumps see their links closed and end

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL)
        with self._lock:
            self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,),
                                          name=f"faultproxy-accept-{self.port}", daemon=True)
        self._acceptor.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            link = _Link(self, client)
            with self._lock:
                if self._listener is not listener:
                    _reset(client)
                    return
                self._links.add(link)
            link.thread.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
