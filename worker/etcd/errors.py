"""Every failure of the etcd client, funnelled into a few types of our own.

gRPC status codes and pyetcd's exception zoo never leave ``worker.etcd``: callers decide on
*kinds* (retry later, re-authenticate, re-list after compaction, give up) and the kind is the type.
The ``kind`` attribute is the one vocabulary of error kinds: the label of the ``etcd_errors_total``
metric and the ``kind`` of log lines (``ETCD_ERROR_KINDS`` lists them). Refusals of every sort
(credentials, an expired token, a permission) are one kind, ``auth``: what an operator acts on.
"""

from __future__ import annotations

import grpc

from worker.errors import WorkerError

#: every ``EtcdError.kind``, in the order the metric declares them
ETCD_ERROR_KINDS = ("unavailable", "timeout", "tls", "auth", "compacted", "lease_not_found", "request", "other")


class EtcdError(WorkerError):
    """Any failure talking to etcd."""

    kind = "other"


class EtcdUnavailableError(EtcdError):
    """No endpoint answered (refused, reset, no leader, nothing reachable)."""

    kind = "unavailable"


class EtcdTimeoutError(EtcdError, TimeoutError):
    """A request did not complete within its deadline."""

    kind = "timeout"


class EtcdTLSError(EtcdError):
    """The TLS handshake failed (wrong CA, a client certificate etcd refuses): waiting cannot fix it."""

    kind = "tls"


class EtcdAuthError(EtcdError):
    """Authentication failed (bad user or password) or was refused."""

    kind = "auth"


class InvalidTokenError(EtcdAuthError):
    """The auth token expired or was invalidated; the client re-authenticates and retries once."""


class PermissionDeniedError(EtcdAuthError):
    """The user's role does not allow this request on this key (``key``: the key the caller
    touched, when known; etcd's own message does not name it)."""

    key: str | None = None


class CompactedError(EtcdError):
    """The revision asked for was compacted away; the caller must re-read the current state."""

    kind = "compacted"

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFoundError(EtcdError):
    """The lease expired or was revoked."""

    kind = "lease_not_found"


class EtcdRequestError(EtcdError):
    """etcd refused the request itself (too many operations, bad argument, …)."""

    kind = "request"


class MessageTooLargeError(EtcdRequestError):
    """A message exceeded a size limit (gRPC's receive limit for an answer, or etcd's
    ``--max-request-bytes`` for a request): ask for less (a smaller page) and retry."""


class EtcdClosedError(EtcdError):
    """The client (or the stream) was closed by us."""


def denied_on(err: PermissionDeniedError, key: object) -> PermissionDeniedError:
    """``err`` re-worded to name ``key``: "permission denied on /ns/election/…: (<etcd's words>)"."""
    if key is None or err.key is not None:
        return err
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    named = PermissionDeniedError(f"permission denied on {text} ({err})")
    named.key = text
    return named


def from_grpc(exc: grpc.RpcError, where: str = "") -> EtcdError:
    """Map one gRPC failure to our error type, keeping etcd's message for the operator."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    message = f"{details} ({where})" if where else details
    if code == grpc.StatusCode.UNAVAILABLE:
        return EtcdUnavailableError(message)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline exceeded" in details:
        # etcd may answer with its own expired context first: code UNKNOWN, "context deadline exceeded"
        return EtcdTimeoutError(message)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if "invalid auth token" in details or "token" in details:
            return InvalidTokenError(message)
        return EtcdAuthError(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details:
        return EtcdAuthError(message)
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return CompactedError(message)
    if code == grpc.StatusCode.NOT_FOUND and "lease" in details:
        return LeaseNotFoundError(message)
    if code == grpc.StatusCode.CANCELLED:
        return EtcdClosedError(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and ("larger than max" in details or "too large" in details):
        return MessageTooLargeError(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.RESOURCE_EXHAUSTED):
        return EtcdRequestError(message)
    return EtcdError(message)
