"""Transport is the wire under ``EtcdClient``, ``Watch`` and ``LeaseKeeper``: channels, endpoint
ranking, the auth token and the error funnel (etcd's ``client/v3`` keeps the same split).

* every failure leaves as one of ``worker.etcd.errors`` (never a raw ``grpc.RpcError``);
* a failed endpoint is skipped for a second, not five minutes, and when every endpoint failed
  recently one is tried anyway: a connected one before one that refuses connections (after a
  leader dies, a live member may time out once; going back to the killed member then would
  waste the retry), then the one that failed longest ago;
* auth tokens are renewed: a request that meets "invalid auth token" re-authenticates and is
  sent once more;
* idempotent requests are retried (one ``Retry``), bounded by attempts and the request timeout;
* every request is counted in ``stats`` (benchmarks report etcd requests issued).
"""

from __future__ import annotations

import collections
import functools
import threading
import weakref
from typing import Any, Callable, Protocol, TypeVar

import grpc
from pyetcd import Endpoint, etcdrpc

from worker.etcd.dial import dial as dial_endpoints
from worker.etcd.errors import (
    EtcdClosedError,
    EtcdError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    InvalidTokenError,
    PermissionDeniedError,
    denied_on,
    from_grpc,
)
from worker.etcd.retry import Retry

T = TypeVar("T")

RETRYABLE = (EtcdUnavailableError, EtcdTimeoutError)

_STATE_RANK = {grpc.ChannelConnectivity.READY: 0, grpc.ChannelConnectivity.IDLE: 1,
               grpc.ChannelConnectivity.CONNECTING: 1, grpc.ChannelConnectivity.TRANSIENT_FAILURE: 2,
               grpc.ChannelConnectivity.SHUTDOWN: 3}


class Stream(Protocol):
    def close(self) -> None: ...


class HasTransport(Protocol):
    """What carries a transport (an ``EtcdClient``): streams accept one for its transport."""

    @property
    def transport(self) -> Transport: ...


class Transport:
    """Channels to ``endpoints`` (pyetcd ``Endpoint``s, built by ``worker.etcd.endpoints``), one
    of them current; ``send`` runs one request through the error funnel."""

    def __init__(self, endpoints: list[Endpoint], *, request_timeout: float = 2.0, dial_timeout: float = 2.0,
                 username: str | None = None, password: str | None = None) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints: dict[str, Endpoint] = {ep.netloc: ep for ep in endpoints}
        self._current = next(iter(self.endpoints))
        self._username = username
        self._password = password
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self.dial_timeout = dial_timeout
        self.request_timeout = request_timeout
        self.stats: collections.Counter[str] = collections.Counter()
        #: called after every successful response (metrics: last etcd contact)
        self.on_contact: Callable[[], None] | None = None
        #: called with every error before it is raised (metrics: etcd errors by kind)
        self.on_error: Callable[[EtcdError], None] | None = None
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stubs: dict[tuple[str, type], Any] = {}
        self.closed = False
        # each channel's connectivity, so that failing over never picks a member that refuses
        # connections (a killed one) while a reachable one exists
        self._connectivity: dict[str, grpc.ChannelConnectivity] = {}
        self._subscriptions: list[tuple[grpc.Channel, Callable[[Any], None]]] = []
        for label, endpoint in self.endpoints.items():
            callback = functools.partial(self._connectivity.__setitem__, label)
            endpoint.channel.subscribe(callback, try_to_connect=False)
            self._subscriptions.append((endpoint.channel, callback))
        #: reads are retried this way: a few tries within the request timeout
        self.read_retry = Retry(0.05, 0.5, max_tries=len(self.endpoints) + 2, deadline=request_timeout,
                                retry_on=RETRYABLE, jitter=False)

    # -- auth ---------------------------------------------------------------------------------
    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Per-call metadata: the current auth token, read afresh by every request."""
        return (("token", self._token),) if self._token else None

    def stream_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for watch and keepalive streams: the token, and etcd's require-leader flag
        so that a member cut off from its cluster ends the stream instead of going silent."""
        return (self.metadata or ()) + (("hasleader", "true"),)

    @property
    def uses_auth(self) -> bool:
        """True when this transport logs in with a username (streams re-authenticate then)."""
        return bool(self._username)

    def authenticate(self) -> None:
        """Get a fresh token (also after the old one expired)."""
        if not self._username:
            return
        request = etcdrpc.AuthenticateRequest(name=self._username, password=self._password or "")
        with self._auth_lock:
            self._token = None
            response = self.send("authenticate", lambda: self.stub(etcdrpc.AuthStub).Authenticate(
                request, self.request_timeout), idempotent=True, reauth=False)
            self._token = response.token

    # -- endpoints ----------------------------------------------------------------------------
    @property
    def endpoint_in_use(self) -> Endpoint:
        return self.endpoints[self._current]

    @property
    def channel(self) -> grpc.Channel:
        """The channel of a healthy endpoint; when all failed lately, the best ranked one."""
        if self.closed:
            raise EtcdClosedError("etcd client is closed")
        current = self.endpoint_in_use
        if not current.is_failed():
            return current.use()
        label = min(self.endpoints, key=self._fallback_rank)
        self._current = label
        endpoint = self.endpoints[label]
        endpoint.last_failed = 0
        return endpoint.use()

    def _fallback_rank(self, label: str) -> tuple[bool, int, float]:
        """Not failed lately first; then connected before connecting before refusing; then the
        one that failed longest ago."""
        endpoint = self.endpoints[label]
        state = self._connectivity.get(label, grpc.ChannelConnectivity.IDLE)
        return endpoint.is_failed(), _STATE_RANK[state], endpoint.last_failed

    def stub(self, kind: type[T]) -> T:
        """A gRPC stub of ``kind`` (``etcdrpc.KVStub``…) on the current channel."""
        channel = self.channel
        key = (self._current, kind)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = kind(channel)  # type: ignore[call-arg]
        return stub

    def mark_failed(self) -> None:
        """Move on from the current endpoint (also used by streams that lost it)."""
        self.endpoint_in_use.fail()

    @property
    def endpoint_url(self) -> str:
        ep = self.endpoint_in_use
        return f"{ep.protocol}://{ep.netloc}"

    def dial(self) -> None:
        """Wait until one endpoint's channel is ready, at most ``dial_timeout`` seconds
        (a TLS mistake fails at once: see ``worker.etcd.dial``)."""
        try:
            self._current = dial_endpoints(self.endpoints, self.dial_timeout)
        except EtcdError as err:
            self.report(err)
            raise

    # -- error funnel -------------------------------------------------------------------------
    def error(self, exc: grpc.RpcError) -> EtcdError:
        """Translate one gRPC failure; an unreachable endpoint is marked failed."""
        err = from_grpc(exc, where=self.endpoint_url)
        if isinstance(err, RETRYABLE):
            self.mark_failed()
        return err

    def report(self, err: EtcdError) -> None:
        if self.on_error is not None:
            self.on_error(err)

    def contact(self) -> None:
        """Tell ``on_contact`` that etcd answered (streams call it on each message)."""
        if self.on_contact is not None:
            self.on_contact()

    def _once(self, name: str, call: Callable[[], T]) -> T:
        self.stats[name] += 1
        try:
            result = call()
        except grpc.RpcError as exc:
            raise self.error(exc) from exc
        self.contact()
        return result

    def send(self, name: str, call: Callable[[], T], *, idempotent: bool, reauth: bool = True,
             key: Any = None) -> T:
        """One request: re-authenticate once on an expired token; retry reads, bounded.

        etcd's "permission denied" does not say on what: ``key`` (the key the request touches,
        given by the caller, who knows it) is named in the error instead."""

        def attempt() -> T:
            try:
                return self._once(name, call)
            except InvalidTokenError:
                if not (reauth and self._username):
                    raise
                self.authenticate()
                return self._once(name, call)

        try:
            return self.read_retry(attempt) if idempotent else attempt()
        except PermissionDeniedError as err:
            named = denied_on(err, key)
            self.report(named)
            raise named from err
        except EtcdError as err:
            self.report(err)
            raise

    # -- streams and closing ------------------------------------------------------------------
    def register_stream(self, stream: Stream) -> None:
        """``stream`` (a Watch, a LeaseKeeper) is closed with the transport."""
        self._streams.add(stream)

    def close(self) -> None:
        if self.closed:
            return
        for stream in list(self._streams):
            stream.close()
        self.closed = True
        for channel, callback in self._subscriptions:
            channel.unsubscribe(callback)
        self._stubs.clear()
        for endpoint in self.endpoints.values():
            endpoint.close()
