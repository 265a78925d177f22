"""Cmp, Op and Txn: etcd transactions built with our own types (Go's ``clientv3.Cmp``/``Op``/``Txn``).

``Txn(client).if_(...).then(...).else_(...).commit()`` sends one transaction and returns a
``TxnResponse``. ``then_guarded`` adds a nested transaction in place ("put or delete this key if
these keys are still at these revisions"): the writer's fast path, one per change, no message
copies. The protobuf messages stay inside: callers only hold ``Cmp`` and ``Op`` values.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from pyetcd import etcdrpc

import worker.etcd.kv as kv
from worker.etcd.types import TxnResponse


class Committer(Protocol):
    """What sends a ``Txn`` (an ``EtcdClient``)."""

    def commit(self, txn: Txn) -> TxnResponse: ...

#: Go's ``WithFirstCreate``/``WithLastCreate``: the oldest/newest key under a prefix (range options)
FIRST_CREATE: dict[str, Any] = {"prefix": True, "limit": 1, "sort_target": "create", "sort_order": "ascend"}
LAST_CREATE: dict[str, Any] = {"prefix": True, "limit": 1, "sort_target": "create", "sort_order": "descend"}

_EQUAL = etcdrpc.Compare.EQUAL
_MOD = etcdrpc.Compare.MOD
_CREATE = etcdrpc.Compare.CREATE


class Cmp:
    """One compare of a transaction."""

    __slots__ = ("_pb",)

    def __init__(self, pb: Any) -> None:
        self._pb = pb

    @staticmethod
    def create(key: str | bytes, op: str, revision: int) -> Cmp:
        """Go's ``Compare(CreateRevision(key), op, revision)``; a missing key has create revision 0."""
        return Cmp(kv.cmp_create(key, op, revision))

    @staticmethod
    def mod(key: str | bytes, op: str, revision: int) -> Cmp:
        """Go's ``Compare(ModRevision(key), op, revision)``; a missing key has mod revision 0."""
        return Cmp(kv.cmp_mod(key, op, revision))

    @staticmethod
    def absent(key: str | bytes) -> Cmp:
        """The key does not exist (create revision 0)."""
        return Cmp.create(key, "=", 0)

    def __repr__(self) -> str:
        return f"Cmp({self._pb.key!r} {self._pb.result} {self._pb.target})"


class Op:
    """One operation of a transaction: a read, a put, a delete or a nested transaction."""

    __slots__ = ("_pb",)

    def __init__(self, pb: Any) -> None:
        self._pb = pb

    @staticmethod
    def get(key: str | bytes, **options: Any) -> Op:
        """A read; ``options`` as for ``EtcdClient.range`` (``prefix``, ``limit``, ``revision``…)."""
        return Op(kv.op_get(key, **options))

    @staticmethod
    def put(key: str | bytes, value: str | bytes, lease: int = 0, prev_kv: bool = False) -> Op:
        return Op(kv.op_put(key, value, lease=lease, prev_kv=prev_kv))

    @staticmethod
    def delete(key: str | bytes, *, prefix: bool = False, prev_kv: bool = False) -> Op:
        return Op(kv.op_delete(key, prefix=prefix, prev_kv=prev_kv))

    @staticmethod
    def txn(compares: Iterable[Cmp], success: Iterable[Op] = (), failure: Iterable[Op] = ()) -> Op:
        """A nested transaction."""
        return Op(etcdrpc.RequestOp(request_txn=_request(compares, success, failure)))

    def __repr__(self) -> str:
        return f"Op({self._pb.WhichOneof('request')})"


def _request(compares: Iterable[Cmp], success: Iterable[Op], failure: Iterable[Op]) -> Any:
    return etcdrpc.TxnRequest(compare=[c._pb for c in compares], success=[o._pb for o in success],
                              failure=[o._pb for o in failure])


class Txn:
    """A transaction being built: ``if_`` compares, ``then`` ops, ``else_`` ops; ``commit()``
    sends it. ``len(txn)`` counts its ops (etcd's ``--max-txn-ops`` bounds them)."""

    def __init__(self, client: Committer | None = None) -> None:
        self._client = client
        self._pb = etcdrpc.TxnRequest()

    def if_(self, *compares: Cmp) -> Txn:
        self._pb.compare.extend(c._pb for c in compares)
        return self

    def then(self, *ops: Op) -> Txn:
        self._pb.success.extend(o._pb for o in ops)
        return self

    def else_(self, *ops: Op) -> Txn:
        self._pb.failure.extend(o._pb for o in ops)
        return self

    def then_guarded(self, guards: Iterable[tuple[bytes, int]], *, put: tuple[bytes, bytes] | None = None,
                     delete: bytes | None = None) -> Txn:
        """Add a nested transaction to the success ops: ``put`` ``(key, value)`` or ``delete`` key
        if every guard ``(key, mod revision)`` holds (mod revision 0: the key is absent). Built in
        place: this is the per-change fast path of a batch of writes."""
        txn = self._pb.success.add().request_txn
        for key, revision in guards:
            c = txn.compare.add()
            c.key = key
            c.result = _EQUAL
            if revision:
                c.target = _MOD
                c.mod_revision = revision
            else:
                c.target = _CREATE
                c.create_revision = 0
        if put is not None:
            op = txn.success.add().request_put
            op.key, op.value = put
        if delete is not None:
            txn.success.add().request_delete_range.key = delete
        return self

    def __len__(self) -> int:
        return len(self._pb.success) + len(self._pb.failure)

    def commit(self, client: Committer | None = None) -> TxnResponse:
        """Send the transaction (through ``client``, or the one given at construction)."""
        target = client or self._client
        if target is None:
            raise ValueError("Txn.commit: no client")
        return target.commit(self)
