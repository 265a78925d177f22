"""Keeping a lease alive over a LeaseKeepAlive stream, and knowing for sure when it is lost.

pyetcd's ``refresh()`` is one request, not a stream, and nothing in it notices a lease dying.
``LeaseKeeper`` sends a keepalive every ``interval`` (TTL/3, like Go's client) on one long-lived
stream, re-opens the stream on any error, and tracks ``deadline``: the latest moment the server
can still consider the lease alive, computed as *send time* of the last answered request plus the
TTL the server granted then. That bound is conservative (the server renewed after we sent), so a
holder that stops acting before ``deadline`` never acts on an expired lease. The lease is lost,
and ``lost`` set exactly once, when the server answers TTL 0 (expired or revoked) or when
``deadline`` passes without an answer, whatever the stream is doing (a stopped etcd never answers).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Iterator

import grpc
from pyetcd import etcdrpc

from worker.etcd.errors import EtcdError, InvalidTokenError, LeaseNotFoundError, from_grpc
from worker.etcd.retry import Retry
from worker.etcd.transport import HasTransport, Transport

#: a broken keepalive stream is opened again soon: the lease's TTL is the budget
RETRY = Retry(initial=0.05, maximum=0.5)


class LeaseKeeper:
    """Keep ``lease_id`` alive until ``stop()``; ``lost`` is set when the lease is gone."""

    def __init__(self, transport: Transport | HasTransport, lease_id: int, ttl: int, *,
                 on_lost: Callable[[str], None] | None = None, interval: float | None = None,
                 granted_at: float | None = None) -> None:
        # COMPAT (issue 18): an EtcdClient is accepted for its transport (new code: client.keep_alive(...))
        self._transport: Transport = transport if isinstance(transport, Transport) else transport.transport
        self.lease_id = lease_id
        self.ttl = ttl
        self.interval = interval if interval is not None else max(ttl / 3.0, 0.05)
        #: monotonic time after which the server may have expired the lease
        self.deadline = (granted_at if granted_at is not None else time.monotonic()) + ttl
        #: monotonic time of the last keepalive the server answered
        self.last_confirmed = granted_at if granted_at is not None else time.monotonic()
        self.lost = threading.Event()
        self.lost_reason: str | None = None
        self.keepalives = 0
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._thread = threading.Thread(target=self._run, name=f"keepalive {lease_id:x}", daemon=True)
        self._thread.start()

    def remaining(self) -> float:
        """Seconds the lease is certainly still alive on the server (0 once lost)."""
        if self.lost.is_set():
            return 0.0
        return max(0.0, self.deadline - time.monotonic())

    def stop(self, join: bool = True) -> None:
        """Stop sending keepalives (the lease itself is left alone)."""
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        if join and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self.lost.is_set():
                return
            self.lost_reason = reason
            self.lost.set()
            if self._call is not None:
                self._call.cancel()
        if self._on_lost is not None:
            self._on_lost(reason)

    def _run(self) -> None:
        retry = RETRY.copy(stop=self._stop)
        while not self._stop.is_set() and not self.lost.is_set():
            try:
                self._stream_once()
                retry.reset()
            except grpc.RpcError as exc:
                if self._stop.is_set() or self.lost.is_set():
                    break
                err = from_grpc(exc, where=self._transport.endpoint_url)
                if isinstance(err, LeaseNotFoundError):
                    self._lose("lease not found (expired or revoked)")
                    break
                if isinstance(err, InvalidTokenError):
                    try:
                        self._transport.authenticate()
                    except EtcdError:
                        pass
                else:
                    self._transport.mark_failed()
            except EtcdError:
                pass  # no channel (client closed, all endpoints down): try again until the deadline
            if time.monotonic() >= self.deadline:
                self._lose(f"no keepalive answered for {self.ttl} s (lease TTL)")
                break
            if not retry.pause(limit=max(0.0, self.deadline - time.monotonic())):
                break

    def _stream_once(self) -> None:
        done = threading.Event()
        sent: collections.deque[float] = collections.deque()
        stub = self._transport.stub(etcdrpc.LeaseStub)
        call = stub.LeaseKeepAlive(self._requests(done, sent), metadata=self._transport.stream_metadata())
        with self._lock:
            if self._stop.is_set() or self.lost.is_set():
                call.cancel()
                return
            self._call = call
        try:
            for response in call:
                sent_at = sent.popleft() if sent else time.monotonic()
                if response.TTL <= 0:
                    self._lose("lease expired or revoked (server answered TTL 0)")
                    return
                self.keepalives += 1
                self.deadline = max(self.deadline, sent_at + response.TTL)
                self.last_confirmed = time.monotonic()
                self._transport.contact()
        finally:
            done.set()

    def _requests(self, done: threading.Event, sent: collections.deque[float]) -> Iterator[Any]:
        """Yield a keepalive now and every ``interval``; meanwhile watch the deadline."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=self.lease_id)
        while True:
            sent.append(time.monotonic())
            self._transport.stats["lease_keepalive"] += 1
            yield request
            next_send = time.monotonic() + self.interval
            while True:
                if done.is_set() or self._stop.is_set() or self.lost.is_set():
                    return
                now = time.monotonic()
                if now >= self.deadline:
                    self._lose(f"no keepalive answered for {self.ttl} s (lease TTL)")
                    return
                if now >= next_send:
                    break
                done.wait(min(next_send, self.deadline) - now)
