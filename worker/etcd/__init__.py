"""The etcd layer: connecting, one error vocabulary, leases kept alive, watches kept alive."""

from worker.etcd.client import EtcdClient, connect
from worker.etcd.errors import (
    CompactedError,
    EtcdAuthError,
    EtcdClosedError,
    EtcdError,
    EtcdRequestError,
    EtcdTLSError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    InvalidTokenError,
    LeaseNotFoundError,
    PermissionDeniedError,
)
from worker.etcd.keepalive import LeaseKeeper
from worker.etcd.kv import auth_pb2, etcdrpc
from worker.etcd.watch import DeleteEvent, PutEvent, Watch, WatchResponse

__all__ = [
    "CompactedError", "DeleteEvent", "EtcdAuthError", "EtcdClient", "EtcdClosedError", "EtcdError", "EtcdRequestError",
    "EtcdTLSError", "EtcdTimeoutError", "EtcdUnavailableError", "InvalidTokenError", "LeaseKeeper",
    "LeaseNotFoundError", "PermissionDeniedError", "PutEvent", "Watch", "WatchResponse", "auth_pb2", "connect",
    "etcdrpc",
]
