"""Go's software transactional memory (stm.go): run ``apply`` until its reads are still current.

``apply(stm)`` reads with ``stm.get`` and buffers writes with ``stm.put``/``stm.delete``; the
commit is one transaction guarded by compares on the *mod revision* of what was read, and when
another writer got there first it fails and ``apply`` runs again on fresh data. The four Go
isolation levels differ in how reads are done and what the commit compares, exactly as in Go:

=====================  ===========================================  ==========================
level                  reads                                        commit compares
=====================  ===========================================  ==========================
SERIALIZABLE_SNAPSHOT  pinned to the revision of the first read     read set current, and no
                       (serializable), prefetched after a conflict  written key modified since
                                                                    the first read
SERIALIZABLE           as above                                     read set current
REPEATABLE_READS       serializable reads, each key read once       read set current
READ_COMMITTED         serializable reads, each key read once       none
=====================  ===========================================  ==========================

Differences: the abort is a ``threading.Event`` (Go: a context) looked at before every request,
and ``apply`` signals failure by raising (Go: returning an error), which ends the loop untouched.
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Callable, Iterable

from worker.concurrency.errors import STMAbortedError
from worker.etcd.client import EtcdClient
from worker.etcd.txn import Cmp, Op
from worker.etcd.types import RangeResponse, TxnResponse

_MAX_INT64 = (1 << 63) - 1


class Isolation(enum.IntEnum):
    """Go's ``concurrency.Isolation`` values, in Go's order."""

    SERIALIZABLE_SNAPSHOT = 0
    SERIALIZABLE = 1
    REPEATABLE_READS = 2
    READ_COMMITTED = 3


def _value(resp: RangeResponse | None) -> str:
    """Go's ``respToValue``: a missing key reads as ""."""
    if resp is None or not resp.kvs:
        return ""
    return resp.kvs[0].value.decode("utf-8")


def _is_key_current(key: str, resp: RangeResponse) -> Cmp:
    """Go's ``isKeyCurrent``: unchanged since read (a key read as missing must still be missing)."""
    return Cmp.mod(key, "=", resp.kvs[0].mod_revision if resp.kvs else 0)


class STM:
    """The transaction handed to ``apply`` (Go's ``stm``: repeatable reads / read committed)."""

    def __init__(self, client: EtcdClient, isolation: Isolation, abort: threading.Event | None) -> None:
        self.client = client
        self.isolation = isolation
        self._abort = abort
        self._get_opts: dict[str, Any] = {}
        if isolation in (Isolation.REPEATABLE_READS, Isolation.READ_COMMITTED):
            self._get_opts = {"serializable": True}
        self.rset: dict[str, RangeResponse] = {}  # key -> the read (with its revision)
        self.wset: dict[str, tuple[str, Op]] = {}  # key -> (value, the write)

    # -- what apply uses ----------------------------------------------------------------------
    def get(self, *keys: str) -> str:
        """The value of the first of ``keys`` (written ones first), "" when missing; all are read."""
        written = self._written(keys)
        if written is not None:
            return written
        return _value(self._fetch(keys))

    def put(self, key: str, value: str, lease: int | None = None) -> None:
        self.wset[key] = (value, Op.put(key, value, lease=lease or 0))

    def delete(self, key: str) -> None:
        self.wset[key] = ("", Op.delete(key))

    def rev(self, key: str) -> int:
        """The mod revision of ``key`` as read (0 when missing)."""
        resp = self._fetch((key,))
        return int(resp.kvs[0].mod_revision) if resp is not None and resp.kvs else 0

    # -- machinery ----------------------------------------------------------------------------
    def _check_abort(self) -> None:
        if self._abort is not None and self._abort.is_set():
            raise STMAbortedError()

    def _written(self, keys: Iterable[str]) -> str | None:
        for key in keys:
            if key in self.wset:
                return self.wset[key][0]
        return None

    def _fetch(self, keys: tuple[str, ...] | list[str]) -> RangeResponse | None:
        """Go's ``stm.fetch``: a key already read answers from the read set; else read all in one txn."""
        if not keys:
            return None
        ops = []
        for key in keys:
            if key in self.rset:
                return self.rset[key]
            ops.append(Op.get(key, **self._get_opts))
        self._check_abort()
        resp = self.client.txn().then(*ops).commit()
        self._add_reads(list(keys), resp)
        return resp.range(0)

    def _add_reads(self, keys: list[str], txn_resp: TxnResponse) -> None:
        for i, key in enumerate(keys[:len(txn_resp.responses)]):
            self.rset[key] = txn_resp.range(i)

    def _first(self) -> int:
        """Go's ``readSet.first``: the lowest revision any read was served at."""
        return min((r.revision for r in self.rset.values()), default=_MAX_INT64 - 1)

    def _conflicts(self) -> list[Cmp]:
        if self.isolation == Isolation.READ_COMMITTED:
            return []
        cmps = [_is_key_current(k, r) for k, r in self.rset.items()]
        if self.isolation == Isolation.SERIALIZABLE_SNAPSHOT:
            first = self._first() + 1
            cmps += [Cmp.mod(k, "<", first) for k in self.wset]
        return cmps

    def _commit(self) -> TxnResponse | None:
        self._check_abort()
        resp = self.client.txn().if_(*self._conflicts()).then(*(op for _, op in self.wset.values())).commit()
        return resp if resp.succeeded else None

    def _reset(self) -> None:
        self.rset = {}
        self.wset = {}


class SerializableSTM(STM):
    """Go's ``stmSerializable``: every read at the revision of the first read of the attempt."""

    def __init__(self, client: EtcdClient, isolation: Isolation, abort: threading.Event | None) -> None:
        super().__init__(client, isolation, abort)
        self._prefetch: dict[str, RangeResponse] = {}

    def get(self, *keys: str) -> str:
        if not keys:
            return ""
        written = self._written(keys)
        if written is not None:
            return written
        first_read = not self.rset
        for key in keys:
            if key in self._prefetch:
                self.rset[key] = self._prefetch.pop(key)
        resp = self._fetch(keys)
        if first_read:
            # the attempt's base revision is defined by its first read
            self._get_opts = {"revision": resp.revision if resp is not None else 0, "serializable": True}
        return _value(resp)

    def rev(self, key: str) -> int:
        self.get(key)
        return super().rev(key)

    def _commit(self) -> TxnResponse | None:
        self._check_abort()
        keys = list(self.rset)
        # the Else prefetches the read set: saves a round trip
        resp = self.client.txn().if_(*self._conflicts()).then(*(op for _, op in self.wset.values())).else_(
            *(Op.get(k) for k in keys)).commit()
        if resp.succeeded:
            return resp
        self._add_reads(keys, resp)
        self._prefetch = self.rset
        self._get_opts = {}
        return None


def new_stm(client: EtcdClient, apply: Callable[[STM], Any], isolation: Isolation = Isolation.SERIALIZABLE_SNAPSHOT,
            prefetch: Iterable[str] = (), abort: threading.Event | None = None) -> TxnResponse:
    """Go's ``NewSTM``: run ``apply`` and commit, again and again until the commit succeeds.

    Returns the committing ``TxnResponse``. An exception from ``apply`` ends it (nothing written);
    ``abort`` set ends it with ``STMAbortedError``; etcd errors propagate.
    """
    isolation = Isolation(isolation)
    stm: STM
    if isolation in (Isolation.SERIALIZABLE_SNAPSHOT, Isolation.SERIALIZABLE):
        stm = SerializableSTM(client, isolation, abort)
    else:
        stm = STM(client, isolation, abort)
    keys = list(prefetch)
    while True:
        stm._check_abort()
        stm._reset()
        if keys:
            stm.get(*keys)
        apply(stm)
        resp = stm._commit()
        if resp is not None:
            return resp


def new_stm_repeatable(client: EtcdClient, apply: Callable[[STM], Any],
                 abort: threading.Event | None = None) -> TxnResponse:
    """new_stm_repeatable is Go's ``NewSTMRepeatable``: ``new_stm`` with repeatable reads."""
    return new_stm(client, apply, isolation=Isolation.REPEATABLE_READS, abort=abort)


def new_stm_serializable(client: EtcdClient, apply: Callable[[STM], Any],
                 abort: threading.Event | None = None) -> TxnResponse:
    """new_stm_serializable is Go's ``NewSTMSerializable``: ``new_stm`` with serializable reads."""
    return new_stm(client, apply, isolation=Isolation.SERIALIZABLE, abort=abort)


def new_stm_read_committed(client: EtcdClient, apply: Callable[[STM], Any],
                 abort: threading.Event | None = None) -> TxnResponse:
    """new_stm_read_committed is Go's ``NewSTMReadCommitted``: ``new_stm`` with read committed."""
    return new_stm(client, apply, isolation=Isolation.READ_COMMITTED, abort=abort)
