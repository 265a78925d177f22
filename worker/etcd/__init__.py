"""The etcd layer: one typed client over a transport, one error vocabulary, one retry object,
leases kept alive, watches kept alive. No protobuf type leaves this package."""

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
from worker.etcd.retry import Retry
from worker.etcd.txn import Cmp, Op, Txn
from worker.etcd.types import (
    KV,
    DeleteEvent,
    DeleteResponse,
    Event,
    Lease,
    LeaseTimeToLive,
    PutEvent,
    PutResponse,
    RangeResponse,
    TxnResponse,
    WatchResponse,
)
from worker.etcd.watch import Watch

__all__ = [
    "KV", "Cmp", "CompactedError", "DeleteEvent", "DeleteResponse", "EtcdAuthError", "EtcdClient", "EtcdClosedError",
    "EtcdError", "EtcdRequestError", "EtcdTLSError", "EtcdTimeoutError", "EtcdUnavailableError", "Event",
    "InvalidTokenError", "Lease", "LeaseKeeper", "LeaseNotFoundError", "LeaseTimeToLive", "Op",
    "PermissionDeniedError", "PutEvent", "PutResponse", "RangeResponse", "Retry", "Txn", "TxnResponse", "Watch",
    "WatchResponse", "connect",
]
