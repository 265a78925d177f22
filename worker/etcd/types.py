"""Our own types for what etcd answers: no protobuf message leaves ``worker.etcd``.

Named after etcd's ``mvccpb``/``etcdserverpb`` fields (Go's ``clientv3`` response types), as
frozen, slotted dataclasses: ``KV``, ``RangeResponse``, ``PutResponse``, ``DeleteResponse``,
``TxnResponse`` (its ``responses`` typed per op), ``Event`` and ``WatchResponse``, leases.
``from_pb`` converters are for ``worker.etcd``'s own modules only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pyetcd.etcdrpc import kv_pb2


_FIELDS = ("key", "value", "create_revision", "mod_revision", "version", "lease")


class KV:
    """A stored key: ``key`` and ``value`` as bytes, its revisions, version and lease (read-only).

    A view of the message etcd answered (``from_pb`` wraps it without copying): a page of a
    100,000-cluster pass reads only the fields it needs (``key`` and ``mod_revision`` for the
    memo), so the typed answer costs what the raw one did."""

    __slots__ = ("_pb",)
    _pb: Any

    def __init__(self, key: bytes, value: bytes = b"", create_revision: int = 0, mod_revision: int = 0,
                 version: int = 0, lease: int = 0) -> None:
        object.__setattr__(self, "_pb", kv_pb2.KeyValue(key=key, value=value, create_revision=create_revision,
                                                        mod_revision=mod_revision, version=version, lease=lease))

    @property
    def key(self) -> bytes:
        return self._pb.key

    @property
    def value(self) -> bytes:
        return self._pb.value

    @property
    def create_revision(self) -> int:
        return self._pb.create_revision

    @property
    def mod_revision(self) -> int:
        return self._pb.mod_revision

    @property
    def version(self) -> int:
        return self._pb.version

    @property
    def lease(self) -> int:
        return self._pb.lease

    def _astuple(self) -> tuple[bytes, bytes, int, int, int, int]:
        pb = self._pb
        return (pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"KV is read-only: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KV) and self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        return "KV(" + ", ".join(f"{n}={v!r}" for n, v in zip(_FIELDS, self._astuple())) + ")"

    @staticmethod
    def from_pb(kv: Any) -> KV:
        view = _new(KV)
        _set_pb(view, kv)
        return view


_new = object.__new__
_set_pb = KV.__dict__["_pb"].__set__


@dataclass(frozen=True, slots=True)
class Header:
    """COMPAT (issue 18): ``response.header.revision`` for callers not yet reading ``.revision``."""

    revision: int


@dataclass(frozen=True, slots=True)
class RangeResponse:
    """A read: the store's ``revision`` when served, the ``kvs`` found, ``more`` beyond a limit,
    ``count`` of all keys in the range."""

    revision: int
    kvs: list[KV] = field(default_factory=list)
    more: bool = False
    count: int = 0

    @property
    def header(self) -> Header:  # COMPAT (issue 18)
        return Header(self.revision)

    @staticmethod
    def from_pb(resp: Any, revision: int | None = None) -> RangeResponse:
        return RangeResponse(resp.header.revision if revision is None else revision,
                             [KV.from_pb(k) for k in resp.kvs], bool(resp.more), int(resp.count))


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KV | None = None

    @property
    def header(self) -> Header:  # COMPAT (issue 18)
        return Header(self.revision)


@dataclass(frozen=True, slots=True)
class DeleteResponse:
    revision: int
    deleted: int = 0
    prev_kvs: list[KV] = field(default_factory=list)

    @property
    def header(self) -> Header:  # COMPAT (issue 18)
        return Header(self.revision)


OpResponse = Union[RangeResponse, PutResponse, DeleteResponse, "TxnResponse"]


class TxnResponse:
    """A transaction: ``succeeded`` (the compares held), the store's ``revision``, and one
    response per op of the branch taken (a nested transaction's is a ``TxnResponse``).

    ``responses`` are converted from the answered message when first asked for; ``nested(i)``
    and ``range(i)`` convert only the one asked for (a batch of 124 writes is checked at the
    cost of the raw answer)."""

    __slots__ = ("revision", "succeeded", "_responses", "_pb")

    def __init__(self, revision: int, succeeded: bool, responses: list[OpResponse] | None = None,
                 pb: Any = None) -> None:
        self.revision = revision
        self.succeeded = succeeded
        self._responses = responses if responses is not None or pb is not None else []
        self._pb = pb

    @property
    def responses(self) -> list[OpResponse]:
        if self._responses is None:
            self._responses = [_op_from_pb(r, self.revision) for r in self._pb.responses]
        return self._responses

    @property
    def header(self) -> Header:  # COMPAT (issue 18)
        return Header(self.revision)

    def _raw(self, index: int, which: str) -> Any:
        op = self._pb.responses[index]
        assert op.WhichOneof("response") == which, op
        return getattr(op, which)

    def range(self, index: int) -> RangeResponse:
        """The ``index``-th response, which must be a read's."""
        if self._responses is None:
            got = self._raw(index, "response_range")
            return RangeResponse.from_pb(got, got.header.revision or self.revision)
        found = self._responses[index]
        assert isinstance(found, RangeResponse), found
        return found

    def nested(self, index: int) -> TxnResponse:
        """The ``index``-th response, which must be a nested transaction's."""
        if self._responses is None:
            return TxnResponse.from_pb(self._raw(index, "response_txn"), self.revision)
        found = self._responses[index]
        assert isinstance(found, TxnResponse), found
        return found

    def nested_succeeded(self, count: int) -> list[bool]:
        """Whether each of the first ``count`` responses (nested transactions) succeeded: the
        writer's per-change check of a batch, read straight from the answer."""
        if self._responses is None:
            return [r.response_txn.succeeded for r in self._pb.responses[:count]]
        return [self.nested(i).succeeded for i in range(count)]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TxnResponse) and (self.revision, self.succeeded, self.responses)
                == (other.revision, other.succeeded, other.responses))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TxnResponse(revision={self.revision}, succeeded={self.succeeded}, responses={self.responses!r})"

    @staticmethod
    def from_pb(resp: Any, revision: int | None = None) -> TxnResponse:
        rev = resp.header.revision if revision is None else revision
        return TxnResponse(rev, bool(resp.succeeded), pb=resp)


def _op_from_pb(op: Any, revision: int) -> OpResponse:
    which = op.WhichOneof("response")
    if which == "response_range":
        return RangeResponse.from_pb(op.response_range, op.response_range.header.revision or revision)
    if which == "response_put":
        prev = op.response_put.prev_kv
        return PutResponse(revision, KV.from_pb(prev) if prev.key else None)
    if which == "response_delete_range":
        d = op.response_delete_range
        return DeleteResponse(revision, int(d.deleted), [KV.from_pb(k) for k in d.prev_kvs])
    return TxnResponse.from_pb(op.response_txn, revision)


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch: ``kind`` "put" or "delete", the ``kv`` after it (for a delete:
    the key and the delete's revision as ``mod_revision``), ``prev_kv`` when asked for."""

    kind: Literal["put", "delete"]
    kv: KV
    prev_kv: KV | None = None

    # COMPAT (issue 18): pyetcd's events forwarded these to the raw kv; new code reads event.kv
    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    @property
    def mod_revision(self) -> int:
        return self.kv.mod_revision

    @property
    def create_revision(self) -> int:
        return self.kv.create_revision

    @property
    def lease(self) -> int:
        return self.kv.lease

    @staticmethod
    def from_pb(event: Any) -> Event:
        prev = KV.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
        if event.type == 1:  # mvccpb.Event.DELETE
            return DeleteEvent("delete", KV.from_pb(event.kv), prev)
        return PutEvent("put", KV.from_pb(event.kv), prev)


class PutEvent(Event):
    """COMPAT (issue 18): ``isinstance(e, PutEvent)``; new code tests ``e.kind == "put"``."""

    __slots__ = ()


class DeleteEvent(Event):
    """COMPAT (issue 18): ``isinstance(e, DeleteEvent)``; new code tests ``e.kind == "delete"``."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """What one watch message carried: the store's ``revision`` and the ``events`` (none: a
    progress notification)."""

    revision: int
    events: list[Event] = field(default_factory=list)

    @property
    def header(self) -> Header:  # COMPAT (issue 18)
        return Header(self.revision)


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: its ``id`` and the ``ttl`` etcd granted."""

    id: int
    ttl: int

    @property
    def ID(self) -> int:  # COMPAT (issue 18): the protobuf field name
        return self.id

    @property
    def TTL(self) -> int:  # COMPAT (issue 18)
        return self.ttl


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """A lease's remaining ``ttl`` (-1: expired or unknown), ``granted_ttl`` and attached ``keys``."""

    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes] = field(default_factory=list)

    @property
    def TTL(self) -> int:  # COMPAT (issue 18)
        return self.ttl

    @property
    def grantedTTL(self) -> int:  # COMPAT (issue 18)
        return self.granted_ttl
