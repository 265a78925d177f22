"""COMPAT (issue 18): pyetcd's convenience API (``get``, ``get_prefix``, ``transaction``…) on our
``Transport``, for the callers MIGRATION.md lists (and tests); delete with them.

Every request still goes through ``Transport.send`` (counted, errors funnelled, reads retried).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import grpc
from pyetcd import MultiEndpointEtcd3Client
from pyetcd import exceptions as pyetcd_exceptions
from pyetcd.client import Transactions
from pyetcd import etcdrpc

from worker.etcd.errors import EtcdUnavailableError
from worker.etcd.transport import Transport


class LegacyClient(MultiEndpointEtcd3Client):
    """pyetcd's client methods, sending over ``transport`` (its own channel handling unused)."""

    def __init__(self, transport: Transport) -> None:  # pyetcd's __init__ dials and logs in: not called
        self._transport = transport
        self.failover = True
        self._stubs: dict[str, Any] = {}
        self.endpoints = transport.endpoints
        self.timeout = transport.request_timeout
        self.call_credentials = None
        self.transactions = Transactions()

    @property
    def metadata(self) -> Any:
        return self._transport.metadata

    @metadata.setter
    def metadata(self, _value: Any) -> None:
        pass

    @property
    def channel(self) -> grpc.Channel:
        return self._transport.channel

    authstub = property(lambda self: self._transport.stub(etcdrpc.AuthStub))
    kvstub = property(lambda self: self._transport.stub(etcdrpc.KVStub))
    clusterstub = property(lambda self: self._transport.stub(etcdrpc.ClusterStub))
    leasestub = property(lambda self: self._transport.stub(etcdrpc.LeaseStub))
    maintenancestub = property(lambda self: self._transport.stub(etcdrpc.MaintenanceStub))

    def _manage_grpc_errors(self, exc: grpc.RpcError) -> None:
        raise self._transport.error(exc) from exc

    @property
    def members(self) -> Any:  # pyetcd leaves this one undecorated
        return iter(self._transport.send("members", lambda: list(MultiEndpointEtcd3Client.members.fget(self)),
                                         idempotent=True))

    def hash(self) -> int:
        return self._transport.send("hash", lambda: self.maintenancestub.Hash(
            etcdrpc.HashRequest(), self.timeout, metadata=self.metadata).hash, idempotent=True)

    def refresh_lease(self, lease_id: int) -> Any:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
        return iter(self._transport.send("lease_keepalive", lambda: list(self.leasestub.LeaseKeepAlive(
            iter([request]), self.timeout, metadata=self.metadata)), idempotent=True))


def _wrap(name: str, idempotent: bool) -> Callable[..., Any]:
    base = getattr(MultiEndpointEtcd3Client, name)

    @functools.wraps(base)
    def method(self: LegacyClient, *args: Any, **kwargs: Any) -> Any:
        key = args[0] if args and isinstance(args[0], (str, bytes)) else kwargs.get("key")

        def call() -> Any:
            try:
                return base(self, *args, **kwargs)
            except pyetcd_exceptions.Etcd3Exception as exc:
                raise EtcdUnavailableError(f"{type(exc).__name__}: {exc} ({self._transport.endpoint_url})") from exc

        return self._transport.send(name, call, idempotent=idempotent, key=key)

    return method


for _name in ("get_response", "get_prefix_response", "get_range_response", "get_all_response",
              "get_lease_info", "status"):
    setattr(LegacyClient, _name, _wrap(_name, True))
for _name in ("put", "delete", "delete_prefix", "transaction", "lease", "revoke_lease", "compact"):
    setattr(LegacyClient, _name, _wrap(_name, False))
