"""Builders for raw etcd requests, compares and transaction ops.

pyetcd's helpers cannot express what the concurrency port needs (a Range with sort, limit and
create-revision bounds inside a Txn; its ``max_create_revision`` even sets the wrong field), and
its compare objects overload ``==`` to build messages, which reads like a boolean and is not one.
These functions build the protobuf messages directly, named after Go's clientv3 options.
"""

from __future__ import annotations

from typing import Any

# ``etcdrpc`` and ``auth_pb2`` (the generated messages) are re-exported for the few callers that
# build a message no builder here covers: nothing outside ``worker.etcd`` imports pyetcd
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2, kv_pb2  # noqa: F401 - auth_pb2 re-exported

KeyValue = kv_pb2.KeyValue
"""A stored key: ``key``, ``value`` (bytes), ``create_revision``, ``mod_revision``, ``version``, ``lease``."""

_CMP_RESULT = {
    "=": etcdrpc.Compare.EQUAL,
    "!=": etcdrpc.Compare.NOT_EQUAL,
    "<": etcdrpc.Compare.LESS,
    ">": etcdrpc.Compare.GREATER,
}
_SORT_ORDER = {None: etcdrpc.RangeRequest.NONE, "ascend": etcdrpc.RangeRequest.ASCEND,
               "descend": etcdrpc.RangeRequest.DESCEND}
_SORT_TARGET = {"key": etcdrpc.RangeRequest.KEY, "version": etcdrpc.RangeRequest.VERSION,
                "create": etcdrpc.RangeRequest.CREATE, "mod": etcdrpc.RangeRequest.MOD,
                "value": etcdrpc.RangeRequest.VALUE}


def to_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that covers every key starting with ``prefix`` (Go's ``GetPrefixRangeEnd``)."""
    raw = bytearray(to_bytes(prefix))
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"  # every byte is 0xff: the range runs to the end of the keyspace


def range_request(key: str | bytes, *, range_end: bytes | None = None, prefix: bool = False,
                  limit: int = 0, revision: int = 0, sort_target: str = "key",
                  sort_order: str | None = None, keys_only: bool = False, count_only: bool = False,
                  serializable: bool = False, min_create_revision: int = 0,
                  max_create_revision: int = 0, min_mod_revision: int = 0,
                  max_mod_revision: int = 0) -> Any:
    """A RangeRequest with every field of Go's ``OpGet`` options, set correctly."""
    key_b = to_bytes(key)
    if prefix:
        range_end = prefix_end(key_b)
    return etcdrpc.RangeRequest(
        key=key_b, range_end=range_end or b"", limit=limit, revision=revision,
        sort_order=_SORT_ORDER[sort_order], sort_target=_SORT_TARGET[sort_target],
        keys_only=keys_only, count_only=count_only, serializable=serializable,
        min_create_revision=min_create_revision, max_create_revision=max_create_revision,
        min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
    )


def first_create(prefix: str | bytes, **kw: Any) -> Any:
    """Go's ``WithFirstCreate``: the key under the prefix with the lowest create revision."""
    return range_request(prefix, prefix=True, limit=1, sort_target="create", sort_order="ascend", **kw)


def last_create(prefix: str | bytes, **kw: Any) -> Any:
    """Go's ``WithLastCreate``: the key under the prefix with the highest create revision."""
    return range_request(prefix, prefix=True, limit=1, sort_target="create", sort_order="descend", **kw)


def op_get(key: str | bytes, **kw: Any) -> Any:
    """A Range as a transaction op (accepts every ``range_request`` option)."""
    return etcdrpc.RequestOp(request_range=range_request(key, **kw))


def op_range(request: Any) -> Any:
    return etcdrpc.RequestOp(request_range=request)


def op_put(key: str | bytes, value: str | bytes, lease: int = 0, prev_kv: bool = False) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
        key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv))


def op_delete(key: str | bytes, *, range_end: bytes | None = None, prefix: bool = False,
              prev_kv: bool = False) -> Any:
    key_b = to_bytes(key)
    if prefix:
        range_end = prefix_end(key_b)
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(
        key=key_b, range_end=range_end or b"", prev_kv=prev_kv))


def _compare(key: str | bytes, op: str, **target: Any) -> Any:
    return etcdrpc.Compare(key=to_bytes(key), result=_CMP_RESULT[op], **target)


def cmp_create(key: str | bytes, op: str, revision: int) -> Any:
    """Go's ``Compare(CreateRevision(key), op, revision)``; a missing key has create revision 0."""
    return _compare(key, op, target=etcdrpc.Compare.CREATE, create_revision=revision)


def cmp_mod(key: str | bytes, op: str, revision: int) -> Any:
    return _compare(key, op, target=etcdrpc.Compare.MOD, mod_revision=revision)


def to_compare(cmp: Any) -> Any:
    """Accept a raw ``etcdrpc.Compare`` or a pyetcd compare object (``client.transactions.create(k) == 3``)."""
    if isinstance(cmp, etcdrpc.Compare):
        return cmp
    pb = getattr(cmp, "_pb", None)  # a worker.etcd.txn.Cmp
    if isinstance(pb, etcdrpc.Compare):
        return pb
    if hasattr(cmp, "build_message"):
        return cmp.build_message()
    raise TypeError(f"not a compare: {cmp!r}")


def txn_request(compare: list[Any], success: list[Any] = (), failure: list[Any] = ()) -> Any:  # type: ignore[assignment]
    return etcdrpc.TxnRequest(compare=[to_compare(c) for c in compare],
                              success=list(success), failure=list(failure))


def response_kvs(txn_response: Any, index: int) -> list[Any]:
    """The KVs of the ``index``-th op of a transaction, which must have been a Range."""
    return list(txn_response.responses[index].response_range.kvs)
