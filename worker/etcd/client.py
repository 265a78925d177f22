"""EtcdClient is our one typed etcd API, composed over a ``Transport`` (etcd's ``client/v3``).

``range``, ``put``, ``delete``, ``txn()``/``commit`` (``worker.etcd.txn``), leases, ``watch``,
``compact``, the auth admin calls the ``etcd-role`` command needs: each returns our own types
(``worker.etcd.types``), never a protobuf message. ``connect`` validates TLS and auth settings,
dials, logs in and reads the server's version.

COMPAT (issue 18): until the files listed in MIGRATION.md move to the typed API, three old
surfaces remain and are marked below: ``range``/``txn`` given a raw protobuf request return the
raw response; pyetcd's convenience methods (``get``, ``get_prefix``, ``transaction``…) are
forwarded to ``worker.etcd.compat``; a few pass-through attributes.
"""

from __future__ import annotations

from typing import Any, Callable

from pyetcd import etcdrpc

from worker.errors import ConfigError
import worker.etcd.kv as kv
from worker.etcd.endpoints import parse_etcd_settings
from worker.etcd.errors import EtcdError
from worker.etcd.keepalive import LeaseKeeper
from worker.etcd.transport import Transport
from worker.etcd.txn import Txn
from worker.etcd.version import known_bad, read_server_version
from worker.etcd.watch import Watch
from worker.etcd.types import (
    DeleteResponse,
    KV,
    Lease,
    LeaseTimeToLive,
    PutResponse,
    RangeResponse,
    TxnResponse,
)


#: COMPAT (issue 18): pyetcd methods still reachable on the client (see MIGRATION.md)
LEGACY_METHODS = frozenset({
    "get", "get_prefix", "get_response", "get_prefix_response", "get_range_response", "get_all_response",
    "get_lease_info", "status", "delete_prefix", "transaction", "lease", "revoke_lease", "refresh_lease",
    "members", "hash", "transactions", "authstub", "metadata",
})


class EtcdClient:
    """A multi-endpoint etcd v3 client; build it with :func:`connect`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        #: the server version read at connect (``worker.etcd.version``); None: not read or not told
        self.server_version: str | None = None
        self._on_server_version: Callable[[str, bool], None] | None = None
        self._legacy: Any = None

    # -- what the daemon wires up -------------------------------------------------------------
    @property
    def stats(self) -> Any:
        """Requests issued, by name (a ``collections.Counter``)."""
        return self.transport.stats

    @property
    def on_contact(self) -> Callable[[], None] | None:
        return self.transport.on_contact

    @on_contact.setter
    def on_contact(self, callback: Callable[[], None] | None) -> None:
        self.transport.on_contact = callback

    @property
    def on_error(self) -> Callable[[EtcdError], None] | None:
        return self.transport.on_error

    @on_error.setter
    def on_error(self, callback: Callable[[EtcdError], None] | None) -> None:
        self.transport.on_error = callback

    @property
    def on_server_version(self) -> Callable[[str, bool], None] | None:
        """Called with ``(version, known_bad)`` once the server version is known: at once when
        set after connect (metrics: ``client.on_server_version = metrics.set_etcd_version``)."""
        return self._on_server_version

    @on_server_version.setter
    def on_server_version(self, callback: Callable[[str, bool], None] | None) -> None:
        self._on_server_version = callback
        if callback is not None and self.server_version is not None:
            callback(self.server_version, known_bad(self.server_version) is not None)

    @property
    def endpoint_url(self) -> str:
        return self.transport.endpoint_url

    @property
    def endpoint_in_use(self) -> Any:  # COMPAT (issue 18): tests read endpoint_in_use.netloc
        return self.transport.endpoint_in_use

    @property
    def request_timeout(self) -> float:
        return self.transport.request_timeout

    def _send(self, name: str, call: Callable[[], Any], *, idempotent: bool, key: Any = None) -> Any:
        return self.transport.send(name, call, idempotent=idempotent, key=key)

    def _kv(self) -> Any:
        return self.transport.stub(etcdrpc.KVStub)

    # -- KV -----------------------------------------------------------------------------------
    def range(self, key: str | bytes, **options: Any) -> RangeResponse:
        """Read ``key`` (``prefix=True``: every key under it; ``range_end``, ``limit``,
        ``revision``, ``sort_target``/``sort_order``, ``keys_only``, ``count_only``,
        ``serializable``, ``min_``/``max_create_revision``, ``min_``/``max_mod_revision``)."""
        if not isinstance(key, (str, bytes)):  # COMPAT (issue 18): a raw RangeRequest, raw answer
            return self._raw_range(key)
        return RangeResponse.from_pb(self._raw_range(kv.range_request(key, **options)))

    def _raw_range(self, request: Any) -> Any:
        t = self.transport
        return self._send("range", lambda: self._kv().Range(request, t.request_timeout, metadata=t.metadata),
                          idempotent=True, key=request.key)

    def current_revision(self, key: str | bytes = b"\0") -> int:
        """The store's revision now: a count-only read of ``key`` (pass a key under your own
        prefix when a least-privilege role may read nothing else)."""
        return self.range(key, count_only=True).revision

    def put(self, key: str | bytes, value: str | bytes, lease: int = 0, prev_kv: bool = False) -> PutResponse:
        t = self.transport
        lease = getattr(lease, "id", lease)  # COMPAT (issue 18): pyetcd's Lease objects
        request = etcdrpc.PutRequest(key=kv.to_bytes(key), value=kv.to_bytes(value), lease=lease or 0,
                                     prev_kv=prev_kv)
        resp = self._send("put", lambda: self._kv().Put(request, t.request_timeout, metadata=t.metadata),
                          idempotent=False, key=request.key)
        return PutResponse(resp.header.revision, KV.from_pb(resp.prev_kv) if resp.prev_kv.key else None)

    def delete(self, key: str | bytes, *, prefix: bool = False, range_end: bytes | None = None,
               prev_kv: bool = False) -> DeleteResponse:
        """Delete ``key`` (or every key under it); the answer is truthy when something was deleted."""
        t = self.transport
        request = kv.op_delete(key, prefix=prefix, range_end=range_end, prev_kv=prev_kv).request_delete_range
        resp = self._send("delete", lambda: self._kv().DeleteRange(request, t.request_timeout,
                                                                   metadata=t.metadata),
                          idempotent=False, key=request.key)
        return DeleteResponse(resp.header.revision, int(resp.deleted), [KV.from_pb(k) for k in resp.prev_kvs])

    def txn(self, request: Any = None) -> Any:
        """A transaction builder bound to this client: ``client.txn().if_(...).then(...).commit()``.

        COMPAT (issue 18): given a raw ``TxnRequest`` (``worker.etcd.kv.txn_request``), sends it
        and returns the raw ``TxnResponse``."""
        if request is None:
            return Txn(self)
        return self._raw_txn(request)

    def commit(self, txn: Txn) -> TxnResponse:
        """Send ``txn``; its ``TxnResponse``."""
        return TxnResponse.from_pb(self._raw_txn(txn._pb))

    def _raw_txn(self, request: Any) -> Any:
        t = self.transport
        return self._send("txn", lambda: self._kv().Txn(request, t.request_timeout, metadata=t.metadata),
                          idempotent=False, key=txn_key(request))

    def compact(self, revision: int, physical: bool = False) -> None:
        t = self.transport
        request = etcdrpc.CompactionRequest(revision=revision, physical=physical)
        self._send("compact", lambda: self._kv().Compact(request, t.request_timeout, metadata=t.metadata),
                   idempotent=False)

    # -- leases -------------------------------------------------------------------------------
    def _lease(self) -> Any:
        return self.transport.stub(etcdrpc.LeaseStub)

    def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        t = self.transport
        request = etcdrpc.LeaseGrantRequest(TTL=ttl, ID=lease_id)
        resp = self._send("lease_grant", lambda: self._lease().LeaseGrant(request, t.request_timeout,
                                                                          metadata=t.metadata),
                          idempotent=False)
        return Lease(int(resp.ID), int(resp.TTL))

    def lease_revoke(self, lease_id: int, timeout: float | None = None) -> None:
        t = self.transport
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        self._send("lease_revoke", lambda: self._lease().LeaseRevoke(request, timeout or t.request_timeout,
                                                                     metadata=t.metadata),
                   idempotent=True)

    def lease_time_to_live(self, lease_id: int, keys: bool = False) -> LeaseTimeToLive:
        t = self.transport
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        resp = self._send("lease_ttl", lambda: self._lease().LeaseTimeToLive(request, t.request_timeout,
                                                                             metadata=t.metadata),
                          idempotent=True)
        return LeaseTimeToLive(int(resp.ID), int(resp.TTL), int(resp.grantedTTL), list(resp.keys))

    def keep_alive(self, lease_id: int, ttl: int, **options: Any) -> LeaseKeeper:
        """Keep ``lease_id`` alive on a stream (``worker.etcd.keepalive.LeaseKeeper``)."""
        return LeaseKeeper(self.transport, lease_id, ttl, **options)

    # -- watch --------------------------------------------------------------------------------
    def watch(self, key: str | bytes, **options: Any) -> Watch:
        """A resilient ``Watch`` of ``key`` (``prefix=True``, ``range_end``, ``start_revision``…)."""
        return Watch(self.transport, key, **options)

    # -- auth admin (the etcd-role command) ---------------------------------------------------
    def _auth(self, name: str, method: str, request: Any) -> Any:
        t = self.transport
        return self._send(name, lambda: getattr(t.stub(etcdrpc.AuthStub), method)(
            request, t.request_timeout, metadata=t.metadata), idempotent=False)

    def user_list(self) -> list[str]:
        return list(self._auth("auth_user_list", "UserList", etcdrpc.AuthUserListRequest()).users)

    def user_add(self, name: str, password: str) -> None:
        self._auth("auth_user_add", "UserAdd", etcdrpc.AuthUserAddRequest(name=name, password=password))

    def role_add(self, name: str) -> None:
        self._auth("auth_role_add", "RoleAdd", etcdrpc.AuthRoleAddRequest(name=name))

    def role_grant_prefix(self, role: str, prefix: str) -> None:
        """Grant ``role`` readwrite on every key under ``prefix``."""
        from pyetcd.etcdrpc import auth_pb2
        perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=kv.to_bytes(prefix),
                                   range_end=kv.prefix_end(prefix))
        self._auth("auth_role_grant", "RoleGrantPermission",
                   etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=perm))

    def user_grant_role(self, user: str, role: str) -> None:
        self._auth("auth_user_grant", "UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))

    def server_status(self) -> str:
        """The version the answering member reports (Maintenance Status)."""
        t = self.transport
        resp = self._send("status", lambda: t.stub(etcdrpc.MaintenanceStub).Status(
            etcdrpc.StatusRequest(), t.request_timeout, metadata=t.metadata), idempotent=True)
        return str(resp.version)

    # -- lifecycle ----------------------------------------------------------------------------
    def authenticate(self) -> None:
        self.transport.authenticate()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EtcdClient {', '.join(self.transport.endpoints)}>"

    # -- COMPAT (issue 18) --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in LEGACY_METHODS:
            if self.__dict__.get("_legacy") is None:
                from worker.etcd.compat import LegacyClient
                self.__dict__["_legacy"] = LegacyClient(self.transport)
            return getattr(self.__dict__["_legacy"], name)
        raise AttributeError(name)


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
    settings = parse_etcd_settings(endpoints, ca_cert=ca_cert, cert=cert, key=key, username=username,
                                   password=password, dial_timeout=dial_timeout,
                                   request_timeout=request_timeout)
    transport = Transport(settings.build(), request_timeout=request_timeout, dial_timeout=dial_timeout,
                          username=username, password=password)
    client = EtcdClient(transport)
    try:
        if dial:
            transport.dial()
        transport.authenticate()
        client.server_version = read_server_version(client)
    except BaseException:
        client.close()
        raise
    return client


__all__ = ["ConfigError", "EtcdClient", "connect", "txn_key"]
