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
from worker.etcd.watch import Watch, WatchResponse

__all__ = [
    "CompactedError", "EtcdAuthError", "EtcdClient", "EtcdClosedError", "EtcdError", "EtcdRequestError",
    "EtcdTLSError", "EtcdTimeoutError", "EtcdUnavailableError", "InvalidTokenError", "LeaseKeeper",
    "LeaseNotFoundError", "PermissionDeniedError", "Watch", "WatchResponse", "connect",
]
