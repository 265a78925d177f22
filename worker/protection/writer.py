"""Fenced, batched writes of protection records.

Every transaction is ``If(fence compares...) Then(one nested txn per change)``:

* The fence is the daemon's proof of leadership: the election key's create revision equals
  ``term`` and the reconcile Mutex is still ours. If it fails, the outer transaction applies
  nothing, and the writer raises ``FenceLostError`` at once: the pass stops there.
* Each change is a nested transaction guarded by the protection key as it was read: an update or
  a delete compares the key's mod revision, a create compares create revision 0 (the key is still
  absent). A change whose guard fails (the key moved under us, e.g. an operator edited it) is
  skipped alone and counted as a conflict; the level-triggered next pass looks again. This is the
  "compare the protection key's mod revision as read" option, chosen so that a concurrent change
  is never written over and never blocks the other changes of its batch.
* Each change also compares the two inputs it was computed from, as read: ``clusters/ID`` and
  ``dr/ID`` (mod revision as read, or create revision 0 when absent). A change whose inputs moved
  since its read revision is skipped as a conflict too (``conflicted`` lists its id): the watch that
  reported the newer input reconciles it, so a slow full pass never writes a stale decision over a
  newer one, even when the daemon reconciles changes between the pages of that pass.
* A batch also goes out early when its changes reach ``MAX_REQUEST_BYTES`` (1 MiB: etcd refuses
  requests over ``--max-request-bytes``, 1.5 MiB by default, and records copy the user-written
  ``dr_site``).
* The batch size follows from etcd's ``--max-txn-ops`` (128 by default) and how etcd checks nested
  transactions (``checkTxnRequest`` in etcd's ``v3rpc/key.go``): the outer transaction may have at
  most 128 compares, 128 success ops and 128 failure ops, and every nested transaction at most
  ``128 - max(len(compare), len(success), len(failure))`` of the outer one. A change's nested
  transaction has 3 compares (protection, cluster, DR) and 1 op; the failure branch's nested
  transaction has the leadership compares (2). So the outer success may hold 128 - 3 = 125 ops:
  the audit stamp and 124 changes (``batch_limit``; a test sends exactly that many to a real etcd,
  and one more is refused).

Recreate (allocating a ``deleted`` record) — a deviation from the letter of the spec, forced by
etcd: etcd refuses a delete and a put of the same key in one transaction, nested or not ("duplicate
key given in txn request", checked by ``checkIntervals`` in the v3 RPC layer). So a recreate is
two fenced transactions sent back to back by the same flush: first the delete (guarded by the
mod revision read), then the create (guarded by create revision 0). The key's create revision
changes and nothing of the old record carries over, as the spec wants; between the two a reader
can see the key absent for one round trip. If the leader dies in between, the next pass finds an
allocated cluster without a record and creates it: the outcome is the same.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import structlog

from worker.errors import WorkerError
from worker.etcd import Cmp, EtcdClient, Op, Txn, TxnResponse
from worker.etcd.errors import EtcdRequestError, MessageTooLargeError
from worker.keys import Keys
from worker.protection.rules import Decision
from worker.protection.stamp import WriteStamp

log = structlog.get_logger(__name__)

#: etcd's default --max-txn-ops
MAX_TXN_OPS = 128


class WritesStoppedError(WorkerError):
    """WritesStoppedError: a fenced transaction was refused; nothing of its batch was written and
    the pass stopped. ``written``: writes of earlier batches of the same pass that did land;
    ``refused``: the changes in the refused transaction; ``partial``: the pass's result up to the
    refusal (``reconcile`` sets it: landed writes by op)."""

    def __init__(self, message: str, *, revision: int = 0, written: int = 0, refused: int = 0) -> None:
        super().__init__(message)
        self.revision = revision
        self.written = written
        self.refused = refused
        self.partial: Any = None


class PausedError(WritesStoppedError):
    """The fence held but the pause key exists (``protection-worker pause``): nothing of the batch
    was written and the pass stopped. The term goes on; the leader writes nothing until ``resume``."""


class FenceLostError(WritesStoppedError):
    """The fence compare failed: this instance no longer leads (or lost the Mutex); nothing of
    the batch was written and the pass stopped. The daemon steps down."""


@dataclass(frozen=True)
class Fence:
    """What every write transaction compares: ``term`` (create revision of our election key) and
    the compares proving leadership (``Cmp.create(election_key, "=", term)``, ``mutex.is_owner()``)."""

    term: int
    compares: list[Cmp] = field(default_factory=list)
    #: called before every transaction; raises to stop writing. The daemon checks there that its
    #: lease is certainly alive for one more request, so even a long pass stops writing in time
    #: (the compares remain the guarantee: this only stops sooner, on our own clock)
    guard: Callable[[], None] | None = None
    #: the maintenance pause key: every transaction also compares that it is absent, so no write
    #: lands at a revision at which it exists, whoever leads (a failure caused by it alone raises
    #: ``PausedError``, which does not end the term)
    pause_key: str | bytes | None = None
    #: audit evidence: every transaction also puts ``stamp_value`` at ``stamp_key``, so each
    #: protection put or delete has, in its own revision, the term and lease that made it
    stamp_key: str | bytes | None = None
    stamp_value: str = ""


def stamp(term: int, lease: int, instance_id: str | None = None) -> str:
    """The value a fenced transaction puts at ``Keys.stamp``: who wrote, in the same revision."""
    return WriteStamp(term, lease, instance_id).dump()


def leader_fence(keys: Keys, *, term: int, election_key: str, owner: Cmp, lease: int,
                 instance_id: str | None = None, guard: Callable[[], None] | None = None) -> Fence:
    """The fence of a leader of ``term``: its election key (create revision == term), the Mutex
    ownership compare ``owner``, the pause key's absence, and the audit stamp."""
    return Fence(term=term, compares=[Cmp.create(election_key, "=", term), owner], guard=guard,
                 pause_key=keys.paused, stamp_key=keys.stamp,
                 stamp_value=stamp(term, lease, instance_id))


#: compares in a change's nested transaction: the protection key and the two inputs (cluster, DR)
CHANGE_COMPARES = 3
#: the size a batch's changes may reach before it is sent: etcd's default --max-request-bytes is
#: 1.5 MiB, and a record copies ``dr_site`` (written by users) twice
MAX_REQUEST_BYTES = 1024 * 1024
#: per change, what ``_size`` does not count: field tags, revisions, the record's fixed text
_CHANGE_OVERHEAD = 256


def batch_limit(max_ops: int, *, outer_compares: int, failure_ops: int, extra_ops: int,
                nested_width: int) -> int:
    """How many changes fit in one transaction: etcd (``checkTxnRequest``) allows ``max_ops`` compares,
    success ops and failure ops in the outer transaction, and a nested one at most ``max_ops`` minus the
    widest of those three; ``nested_width`` is the widest nested transaction (compares or ops)."""
    outer = max_ops - nested_width           # the widest the outer transaction may be
    if outer < max(outer_compares, failure_ops):
        return 0
    return outer - extra_ops


@dataclass
class _Pending:
    decision: Decision
    key: bytes
    mod_revision: int
    #: the inputs' guards: (key, mod revision as read or 0 when absent)
    inputs: tuple[tuple[bytes, int], ...] = ()
    #: the record's stored bytes (puts; empty for a delete): encoded once, sized by what is sent
    value: bytes = b""


def _size(item: _Pending) -> int:
    """What one change adds to a request, in encoded bytes: its keys (the protection key twice,
    compare and op, and each input key), the record's bytes as sent, and the fixed overhead."""
    return (2 * len(item.key) + sum(len(key) for key, _ in item.inputs) + len(item.value)
            + _CHANGE_OVERHEAD)


def refused(err: BaseException) -> bool:
    """Whether etcd (or gRPC) refused a request for its size or its number of operations: the
    batch is then split and sent again, never retried unchanged."""
    if isinstance(err, MessageTooLargeError):
        return True
    text = str(err)
    return isinstance(err, EtcdRequestError) and ("too many operations" in text or "too large" in text
                                                  or "larger than max" in text)


def _append(txn: Txn, item: _Pending, op: str, *, absent: bool = False) -> None:
    """Add one change to ``txn``'s success ops as a nested transaction: ``op`` ("put" or
    "delete") if the protection key (as read, or absent for a create) and its inputs are unchanged.
    Built in place (``Txn.then_guarded``, no message copies): this runs once per change."""
    guards = ((item.key, 0 if absent else item.mod_revision),) + item.inputs
    if op == "put":
        txn.then_guarded(guards, put=(item.key, item.value))
    else:
        txn.then_guarded(guards, delete=item.key)


#: called once per change after its transaction: (decision, written?)
Outcome = Callable[[Decision, bool], None]


@dataclass(frozen=True)
class _Refused:
    """A transaction etcd refused for its size or operation count (the batch is split)."""

    err: BaseException


#: a sent transaction's answer, or the refusal that makes its batch split
_Answer = Union[TxnResponse, _Refused]


def _answer(client: EtcdClient, txn: Txn) -> _Answer:
    """``client.commit(txn)``, or ``_Refused`` when etcd refuses it for its size or op count."""
    try:
        return client.commit(txn)
    except EtcdRequestError as err:
        if refused(err):
            return _Refused(err)
        raise


class BatchWriter:
    """Collects changes and sends them in fenced transactions of at most ``batch_size`` changes.

    ``depth``: transactions in flight at once (1: each waits for the previous answer). With more,
    the next batch is sent while etcd applies the previous one and the caller keeps reading and
    deciding; answers are still handled in order on the caller's thread (outcomes, ``progress``).
    Every transaction carries the whole fence, so one in flight when the fence fails fails too;
    whenever the writer raises, it has first waited for every transaction it sent."""

    def __init__(self, client: EtcdClient, fence: Fence, *, on_outcome: Outcome | None = None,
                 max_ops: int = MAX_TXN_OPS, progress: Callable[[], None] | None = None,
                 depth: int = 1, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        if not fence.compares:
            raise ValueError("a Fence needs at least one compare: unfenced writes are refused")
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.client = client
        self.fence = fence
        self.lead_compares: list[Cmp] = list(fence.compares)
        self.fence_compares = list(self.lead_compares)
        #: ops every transaction carries besides the changes (the stamp)
        self.extra_ops: list[Op] = []
        #: on failure: does the leadership part of the fence still hold? (then the pause failed it)
        self.failure_ops: list[Op] = []
        if fence.pause_key is not None:
            self.fence_compares.append(Cmp.absent(fence.pause_key))
            self.failure_ops = [Op.txn(self.lead_compares)]
        if fence.stamp_key is not None:
            self.extra_ops.append(Op.put(fence.stamp_key, fence.stamp_value))
        self.batch_size = batch_limit(max_ops, outer_compares=len(self.fence_compares),
                                      failure_ops=len(self.failure_ops), extra_ops=len(self.extra_ops),
                                      nested_width=max(CHANGE_COMPARES, len(self.lead_compares)))
        if self.batch_size < 1:
            raise ValueError(f"max_ops {max_ops} leaves no room for changes")
        self.on_outcome = on_outcome
        #: called after each transaction answered (proof of progress, see ``reader.Progress``)
        self.progress = progress
        self.depth = depth
        #: request size budget (etcd refuses requests over --max-request-bytes, 1.5 MiB by default)
        self.max_bytes = max_bytes
        self._pending_bytes = 0
        self.pending: list[_Pending] = []
        self.txns = 0
        self.writes = 0
        self.conflicts = 0
        #: changes etcd refused even alone (see ``_split``)
        self.refused_changes = 0
        #: ids of the changes skipped because their protection key or an input moved since read
        self.conflicted: list[str] = []
        self.revision = 0
        #: sent, not yet handled: (answer or its Future, the batch, indexes of its recreates)
        self._inflight: collections.deque[tuple[_Answer | Future[_Answer], list[_Pending], list[int]]] = (
            collections.deque())
        self._pool: ThreadPoolExecutor | None = None

    def add(self, decision: Decision, key: str | bytes, mod_revision: int,
            inputs: tuple[tuple[bytes, int], ...] = ()) -> None:
        """Queue one change (``mod_revision``: of the protection key as read, 0 if absent; ``inputs``:
        the ``(key, mod revision as read or 0)`` of ``clusters/ID`` and ``dr/ID``, compared too)."""
        assert decision.writes, decision
        assert len(inputs) <= CHANGE_COMPARES - 1, inputs
        value = decision.new.to_json().encode() if decision.new is not None and decision.action != "delete" else b""
        item = _Pending(decision, key if isinstance(key, bytes) else key.encode(), mod_revision, inputs, value)
        size = _size(item)
        if self.pending and self._pending_bytes + size > self.max_bytes:
            self._send_batch()      # values are user-written: a batch of large ones goes out early
        self.pending.append(item)
        self._pending_bytes += size
        if len(self.pending) >= self.batch_size:
            self._send_batch()

    def _new_request(self) -> Txn:
        """A transaction with the fence compares and failure branch; changes go in its success ops."""
        return Txn().if_(*self.fence_compares).else_(*self.failure_ops)

    def _request(self, txn: Txn) -> Txn:
        """``txn`` ready to send: the extra ops (the stamp) after the changes; the guard checked."""
        if self.fence.guard is not None:
            self.fence.guard()
        return txn.then(*self.extra_ops)

    def _check(self, response: TxnResponse, ops: list[Any]) -> TxnResponse:
        """Count one answered transaction; raise if the fence (or the pause key) failed it.
        ``ops``: the changes it carried (named so for the errors' count of refused changes)."""
        self.txns += 1
        self.revision = max(self.revision, response.revision)
        if not response.succeeded and self.failure_ops and response.nested(0).succeeded:
            raise PausedError(f"paused at revision {response.revision}: maintenance mode, "
                              "nothing of the batch was written", revision=response.revision,
                              written=self.writes, refused=len(ops))
        if not response.succeeded:
            raise FenceLostError(f"fence failed at revision {response.revision}: no longer leader "
                                 f"(term {self.fence.term}) or Mutex lost; nothing of the batch was written",
                                 revision=response.revision, written=self.writes, refused=len(ops))
        return response

    def _send(self, txn: Txn, ops: list[Any]) -> TxnResponse:
        """One transaction carrying the changes ``ops``, waiting for its answer."""
        return self._check(self.client.commit(self._request(txn)), ops)

    def _build(self, batch: list[_Pending]) -> tuple[Txn, list[int]]:
        """The transaction of ``batch`` and the indexes of its recreates (their creates follow)."""
        first = self._new_request()
        second: list[int] = []       # indexes into batch: the creates of recreates
        for i, item in enumerate(batch):
            action = item.decision.action
            if action == "create":
                _append(first, item, "put", absent=True)
            elif action == "update":
                _append(first, item, "put")
            else:  # delete, and the first half of a recreate
                _append(first, item, "delete")
                if action == "recreate":
                    second.append(i)
        return first, second

    def _send_batch(self) -> None:
        batch, self.pending = self.pending, []
        self._pending_bytes = 0
        if not batch:
            return
        first, second = self._build(batch)
        while len(self._inflight) >= self.depth:
            self._handle_oldest()
        try:
            request = self._request(first)
            if self.depth == 1:
                answer: _Answer | Future[_Answer] = _answer(self.client, request)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix="writes")
                answer = self._pool.submit(_answer, self.client, request)
        except BaseException:
            self._drain()
            raise
        self._inflight.append((answer, batch, second))

    def _split(self, batch: list[_Pending], err: BaseException) -> None:
        """etcd refused ``batch`` for its size or its number of operations: send it again in two
        halves (each split again if refused too). A single change refused alone is skipped and
        counted in ``refused_changes`` (the rules bound what a record carries, so this is a bound
        of etcd's set lower than its default)."""
        if len(batch) == 1:
            self.refused_changes += 1
            log.error("write_refused", id=batch[0].decision.id, action=batch[0].decision.action,
                      bytes=_size(batch[0]), error=str(err)[:200],
                      note="etcd refuses this one change alone: its --max-request-bytes is below what the record needs")
            return
        log.info("batch_split", changes=len(batch), error=str(err)[:200])
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            request, second = self._build(part)
            self._handle(_answer(self.client, self._request(request)), part, second)

    def _handle_oldest(self) -> None:
        try:
            self._handle(*self._inflight.popleft())
        except BaseException as exc:
            self._drain()
            if isinstance(exc, (FenceLostError, PausedError)):
                exc.written = self.writes
            raise

    def _drain(self) -> None:
        """After a failure: wait for every transaction still in flight and report what landed."""
        while self._inflight:
            answer, batch, _ = self._inflight.popleft()
            try:
                response = answer.result() if isinstance(answer, Future) else answer
            except Exception:  # noqa: BLE001 - the first failure is the one raised
                continue
            if not isinstance(response, _Refused) and response.succeeded:
                self.txns += 1
                ok = response.nested_succeeded(len(batch))
                self.writes += sum(ok)
                for item, done in zip(batch, ok):
                    if not (done and item.decision.action == "recreate"):
                        self._outcome(item.decision, done)

    def _handle(self, answer: _Answer | Future[_Answer], batch: list[_Pending], second: list[int]) -> None:
        response = answer.result() if isinstance(answer, Future) else answer
        if isinstance(response, _Refused):
            self._split(batch, response.err)
            return
        response = self._check(response, batch)
        ok = response.nested_succeeded(len(batch))
        self.writes += sum(ok)
        recreated = [i for i in second if ok[i]]
        if recreated:
            creates = self._new_request()
            for i in recreated:
                _append(creates, batch[i], "put", absent=True)
            try:
                response2 = self._send(creates, recreated)
            except (FenceLostError, PausedError):
                for i, item in enumerate(batch):   # report what the first transaction did
                    if not (item.decision.action == "recreate" and ok[i]):
                        self._outcome(item.decision, ok[i])
                raise
            for i, done in zip(recreated, response2.nested_succeeded(len(recreated))):
                self.writes += done
                ok[i] = done
        for item, done in zip(batch, ok):
            self._outcome(item.decision, done)
        if self.progress is not None:
            self.progress()   # after what landed is counted: a stop raised here loses no count

    def flush(self) -> None:
        """Send what is queued and wait for every answer."""
        try:
            self._send_batch()
            while self._inflight:
                self._handle_oldest()
        finally:
            if self._pool is not None and not self._inflight:
                self._pool.shutdown(wait=False)
                self._pool = None

    def close(self) -> None:
        """Give up what is queued, wait for what is in flight (reporting what landed), stop the thread."""
        self.pending = []
        self._drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)   # idle by now: nothing is in flight
            self._pool = None

    def _outcome(self, decision: Decision, done: bool) -> None:
        if not done:
            self.conflicts += 1
            self.conflicted.append(decision.id)
        if self.on_outcome is not None:
            self.on_outcome(decision, done)
