"""The etcd client: pyetcd's API, with its traps closed.

``EtcdClient`` *is* a ``pyetcd.MultiEndpointEtcd3Client`` (callers keep ``put``/``get``/
``get_prefix``/``delete``/``transaction``/``lease``/``watch``…), changed where the fork is unsafe:

* every failure leaves as one of ``worker.etcd.errors`` (never a raw ``grpc.RpcError``);
* a failed endpoint is skipped for a second, not five minutes, and when every endpoint failed
  recently one is tried anyway instead of refusing to try at all: a connected one before one
  that refuses connections (after a leader dies, a live member may time out once; going back to
  the killed member then would waste the retry), then the one that failed longest ago;
* ``connect`` fails at once, naming the cause, on a TLS mistake (``worker.etcd.dial``);
* auth tokens are renewed: a request that meets "invalid auth token" re-authenticates and is
  sent once more;
* idempotent reads are retried (tenacity), bounded by attempts and by the request timeout;
* ``watch*`` return resilient watches (``worker.etcd.watch``) that resume after disconnects;
* ``range``/``txn`` send raw protobuf requests (for what pyetcd cannot express) and return the
  full response, header included;
* every request is counted in ``stats`` (benchmarks report etcd requests issued).
"""

from __future__ import annotations

import collections
import functools
import threading
import weakref
from typing import Any, Callable, Iterator, TypeVar

import grpc
import tenacity
from pyetcd import MultiEndpointEtcd3Client, etcdrpc
from pyetcd import exceptions as pyetcd_exceptions

from worker.errors import ConfigError
from worker.etcd.dial import dial as dial_endpoints
from worker.etcd.endpoints import build_endpoints
from worker.etcd.errors import (
    EtcdError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    InvalidTokenError,
    PermissionDeniedError,
    denied_on,
    from_grpc,
)

T = TypeVar("T")

_RETRYABLE = (EtcdUnavailableError, EtcdTimeoutError)


class EtcdClient(MultiEndpointEtcd3Client):
    """A multi-endpoint etcd v3 client; build it with :func:`connect`."""

    def __init__(self, endpoints: list[Any], *, request_timeout: float = 2.0, dial_timeout: float = 2.0,
                 username: str | None = None, password: str | None = None) -> None:
        self._token: str | None = None
        self._username = username
        self._password = password
        self._auth_lock = threading.Lock()
        self.dial_timeout = dial_timeout
        self.request_timeout = request_timeout
        self.stats: collections.Counter[str] = collections.Counter()
        #: called after every successful response (metrics: last etcd contact)
        self.on_contact: Callable[[], None] | None = None
        #: called with every error before it is raised (metrics: etcd errors by kind)
        self.on_error: Callable[[EtcdError], None] | None = None
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed = False
        #: the server version read at connect (``worker.etcd.version``); None: not read or not told
        self.server_version: str | None = None
        self._on_server_version: Callable[[str, bool], None] | None = None
        super().__init__(endpoints=endpoints, timeout=request_timeout, failover=True)
        # each channel's connectivity, so that failing over never picks a member that refuses
        # connections (a killed one) while a reachable one exists
        self._connectivity: dict[str, grpc.ChannelConnectivity] = {}
        self._subscriptions: list[tuple[grpc.Channel, Callable[[Any], None]]] = []
        for label, endpoint in self.endpoints.items():
            callback = functools.partial(self._connectivity.__setitem__, label)
            endpoint.channel.subscribe(callback, try_to_connect=False)
            self._subscriptions.append((endpoint.channel, callback))

    @property
    def on_server_version(self) -> Callable[[str, bool], None] | None:
        """Called with ``(version, known_bad)`` once the server version is known: at once when
        set after connect (metrics: ``client.on_server_version = metrics.set_etcd_version``)."""
        return self._on_server_version

    @on_server_version.setter
    def on_server_version(self, callback: Callable[[str, bool], None] | None) -> None:
        self._on_server_version = callback
        if callback is not None and self.server_version is not None:
            from worker.etcd.version import known_bad
            callback(self.server_version, known_bad(self.server_version) is not None)

    # -- auth ---------------------------------------------------------------------------------
    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Per-call metadata: the current auth token, read afresh by every request."""
        return (("token", self._token),) if self._token else None

    @metadata.setter
    def metadata(self, _value: Any) -> None:  # pyetcd's __init__ assigns it; the token is ours
        pass

    def stream_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for watch and keepalive streams: the token, and etcd's require-leader flag
        so that a member cut off from its cluster ends the stream instead of going silent."""
        return (self.metadata or ()) + (("hasleader", "true"),)

    @property
    def uses_auth(self) -> bool:
        """True when this client logs in with a username (streams re-authenticate then)."""
        return bool(self._username)

    def authenticate(self) -> None:
        """Get a fresh token (also after the old one expired: pyetcd never renews it)."""
        if not self._username:
            return
        request = etcdrpc.AuthenticateRequest(name=self._username, password=self._password or "")
        with self._auth_lock:
            self._token = None
            response = self._send("authenticate", lambda: self.authstub.Authenticate(request, self.timeout),
                                  idempotent=True, reauth=False)
            self._token = response.token

    # -- endpoints ----------------------------------------------------------------------------
    @property
    def channel(self) -> grpc.Channel:
        """The channel of a healthy endpoint; when all failed lately, the least recently failed."""
        if self._closed:
            from worker.etcd.errors import EtcdClosedError
            raise EtcdClosedError("etcd client is closed")
        current = self.endpoint_in_use
        if not current.is_failed():
            return current.use()
        label = min(self.endpoints, key=self._fallback_rank)
        self._current_endpoint_label = label
        endpoint = self.endpoints[label]
        endpoint.last_failed = 0
        return endpoint.use()

    _STATE_RANK = {grpc.ChannelConnectivity.READY: 0, grpc.ChannelConnectivity.IDLE: 1,
                   grpc.ChannelConnectivity.CONNECTING: 1, grpc.ChannelConnectivity.TRANSIENT_FAILURE: 2,
                   grpc.ChannelConnectivity.SHUTDOWN: 3}

    def _fallback_rank(self, label: str) -> tuple[bool, int, float]:
        """Not failed lately first; then connected before connecting before refusing (after a
        leader's death a live member may time out once: going back to the dead member then would
        waste the retry); then the one that failed longest ago."""
        endpoint = self.endpoints[label]
        state = self._connectivity.get(label, grpc.ChannelConnectivity.IDLE)
        return endpoint.is_failed(), self._STATE_RANK[state], endpoint.last_failed

    def mark_failed(self) -> None:
        """Move on from the current endpoint (also used by streams that lost it)."""
        self.endpoint_in_use.fail()
        self._clear_old_stubs()

    @property
    def endpoint_url(self) -> str:
        ep = self.endpoint_in_use
        return f"{ep.protocol}://{ep.netloc}"

    def dial(self) -> None:
        """Wait until one endpoint's channel is ready, at most ``dial_timeout`` seconds
        (a TLS mistake fails at once: see ``worker.etcd.dial``)."""
        try:
            self._current_endpoint_label = dial_endpoints(self.endpoints, self.dial_timeout)
        except EtcdError as err:
            self._report(err)
            raise

    # -- error funnel -------------------------------------------------------------------------
    def _manage_grpc_errors(self, exc: grpc.RpcError) -> None:
        """Called by pyetcd's own handlers: translate, mark the endpoint, raise ours."""
        err = from_grpc(exc, where=self.endpoint_url)
        if isinstance(err, _RETRYABLE):
            self.mark_failed()
        raise err from exc

    def _report(self, err: EtcdError) -> None:
        if self.on_error is not None:
            self.on_error(err)

    def _contact(self) -> None:
        if self.on_contact is not None:
            self.on_contact()

    def _once(self, name: str, call: Callable[[], T]) -> T:
        self.stats[name] += 1
        try:
            result = call()
        except grpc.RpcError as exc:
            self._manage_grpc_errors(exc)
            raise  # unreachable: _manage_grpc_errors always raises
        except pyetcd_exceptions.Etcd3Exception as exc:
            raise EtcdUnavailableError(f"{type(exc).__name__}: {exc} ({self.endpoint_url})") from exc
        self._contact()
        return result

    def _send(self, name: str, call: Callable[[], T], *, idempotent: bool, reauth: bool = True,
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
            if not idempotent:
                return attempt()
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(len(self.endpoints) + 2)
                | tenacity.stop_after_delay(self.request_timeout),
                wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
                retry=tenacity.retry_if_exception_type(_RETRYABLE),
                reraise=True,
            )
            return retrying(attempt)
        except PermissionDeniedError as err:
            named = denied_on(err, key)
            self._report(named)
            raise named from err
        except EtcdError as err:
            self._report(err)
            raise

    # -- raw requests -------------------------------------------------------------------------
    def range(self, request: Any) -> Any:
        """Send a ``RangeRequest`` built with ``worker.etcd.kv``; returns the ``RangeResponse``."""
        return self._send("range", lambda: self.kvstub.Range(request, self.timeout, metadata=self.metadata),
                          idempotent=True, key=request.key)

    def txn(self, request: Any) -> Any:
        """Send a ``TxnRequest``; returns the ``TxnResponse`` (with header and raw responses)."""
        return self._send("txn", lambda: self.kvstub.Txn(request, self.timeout, metadata=self.metadata),
                          idempotent=False, key=txn_key(request))

    def lease_grant(self, ttl: int, lease_id: int = 0) -> Any:
        request = etcdrpc.LeaseGrantRequest(TTL=ttl, ID=lease_id)
        return self._send("lease_grant",
                          lambda: self.leasestub.LeaseGrant(request, self.timeout, metadata=self.metadata),
                          idempotent=False)

    def lease_revoke(self, lease_id: int, timeout: float | None = None) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        self._send("lease_revoke",
                   lambda: self.leasestub.LeaseRevoke(request, timeout or self.timeout, metadata=self.metadata),
                   idempotent=True)

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> Any:
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return self._send("lease_ttl",
                          lambda: self.leasestub.LeaseTimeToLive(request, self.timeout, metadata=self.metadata),
                          idempotent=True)

    def current_revision(self, key: str | bytes = b"\0") -> int:
        """The store's revision now: a count-only read of ``key`` (pass a key under your own
        prefix when a least-privilege role may read nothing else)."""
        from worker.etcd.kv import range_request
        return self.range(range_request(key, count_only=True)).header.revision

    # -- pyetcd API overrides -----------------------------------------------------------------
    @property
    def members(self) -> Iterator[Any]:  # pyetcd leaves this one undecorated
        return iter(self._send("members", lambda: list(MultiEndpointEtcd3Client.members.fget(self)),
                               idempotent=True))

    def hash(self) -> int:
        return self._send("hash", lambda: self.maintenancestub.Hash(
            etcdrpc.HashRequest(), self.timeout, metadata=self.metadata).hash, idempotent=True)

    def refresh_lease(self, lease_id: int) -> Iterator[Any]:
        """One keepalive round trip (pyetcd's is a lazy generator that sends nothing until read).
        A daemon keeps its lease alive with ``worker.etcd.keepalive.LeaseKeeper`` instead."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
        responses = self._send("lease_keepalive", lambda: list(self.leasestub.LeaseKeepAlive(
            iter([request]), self.timeout, metadata=self.metadata)), idempotent=True)
        return iter(responses)

    def watch_response(self, key: str | bytes, **kwargs: Any) -> tuple[Iterator[Any], Callable[[], None]]:
        """pyetcd's ``(responses, cancel)``, backed by a resilient watch that resumes after disconnects."""
        from worker.etcd.watch import Watch
        watch = Watch(self, key, **kwargs)
        return iter(watch), watch.close

    def watch_once_response(self, key: str | bytes, timeout: float | None = None, **kwargs: Any) -> Any:
        from worker.etcd.watch import Watch
        with Watch(self, key, **kwargs) as watch:
            response = watch.get(timeout=timeout)
        if response is None:
            raise EtcdTimeoutError(f"no watch event on {key!r} within {timeout} s")
        return response

    def register_stream(self, stream: Any) -> None:
        self._streams.add(stream)

    def close(self) -> None:
        if self._closed:
            return
        for stream in list(self._streams):
            stream.close()
        self._closed = True
        for channel, callback in self._subscriptions:
            channel.unsubscribe(callback)
        super().close()

    def __repr__(self) -> str:
        return f"<EtcdClient {', '.join(self.endpoints)}>"


def _wrap(name: str, idempotent: bool) -> Callable[..., Any]:
    base = getattr(MultiEndpointEtcd3Client, name)

    @functools.wraps(base)
    def method(self: EtcdClient, *args: Any, **kwargs: Any) -> Any:
        key = args[0] if args and isinstance(args[0], (str, bytes)) else kwargs.get("key")
        return self._send(name, lambda: base(self, *args, **kwargs), idempotent=idempotent, key=key)

    return method


def txn_key(request: Any) -> bytes | None:
    """The key a denied transaction most likely failed on: its first write (a read-only role
    passes the compares and reads), else its first read, else its first compare."""
    reads: list[bytes] = []
    for op in [*request.success, *request.failure]:
        which = op.WhichOneof("request")
        if which == "request_put":
            return op.request_put.key
        if which == "request_delete_range":
            return op.request_delete_range.key
        if which == "request_range":
            reads.append(op.request_range.key)
        if which == "request_txn":
            inner = txn_key(op.request_txn)
            if inner is not None:
                return inner
    if reads:
        return reads[0]
    return request.compare[0].key if request.compare else None


# pyetcd methods that issue exactly one request (the composite ones call these, so each request
# is counted and funnelled once). Reads may be retried; writes are sent once.
for _name in ("get_response", "get_prefix_response", "get_range_response", "get_all_response",
              "get_lease_info", "status"):
    setattr(EtcdClient, _name, _wrap(_name, True))
for _name in ("put", "delete", "delete_prefix", "transaction", "lease", "revoke_lease", "compact"):
    setattr(EtcdClient, _name, _wrap(_name, False))


def connect(endpoints: list[str] | str, *, ca_cert: str | None = None, cert: str | None = None,
            key: str | None = None, username: str | None = None, password: str | None = None,
            dial_timeout: float = 2.0, request_timeout: float = 2.0, dial: bool = True) -> EtcdClient:
    """Connect to etcd: validate TLS and auth settings, dial (bounded by ``dial_timeout``), log in,
    read the server's version (logged once; a warning for a known-bad release).

    ``dial=False`` skips waiting for a ready channel (grpc's connectivity poller notices it up to
    200 ms late): the first request connects instead, bounded by ``request_timeout`` — for a
    one-request command that must be quick, such as ``protection-worker release``.

    Raises ``ConfigError`` for settings that cannot work (before any network traffic),
    ``EtcdUnavailableError`` naming the endpoints when none answers in time, and
    ``EtcdAuthError`` when the credentials are refused.
    """
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    if password is not None and not username:
        raise ConfigError("etcd.username: a password was given without a username")
    if username and password is None:
        raise ConfigError("etcd.username: a username was given without a password")
    for name, value in (("dial_timeout", dial_timeout), ("request_timeout", request_timeout)):
        if not value or value <= 0:
            raise ConfigError(f"etcd.{name}: must be a positive number of seconds, got {value!r}")
    built = build_endpoints(list(endpoints), ca_cert=ca_cert, cert=cert, key=key,
                            has_password=password is not None)
    client = EtcdClient(built, request_timeout=request_timeout, dial_timeout=dial_timeout,
                        username=username, password=password)
    try:
        if dial:
            client.dial()
        client.authenticate()
        from worker.etcd.version import read_server_version
        client.server_version = read_server_version(client)
    except BaseException:
        client.close()
        raise
    return client
