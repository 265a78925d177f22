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
* Up to 127 changes per transaction: etcd's default ``--max-txn-ops`` is 128 and a nested
  transaction is checked against what the outer one leaves (128 - 127 = 1 compare / 1 op each).

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

import json
from dataclasses import dataclass, field
from typing import Any, Callable


from worker.errors import WorkerError
from worker.etcd import kv
from worker.etcd.kv import etcdrpc
from worker.protection.rules import Decision

#: etcd's default --max-txn-ops
MAX_TXN_OPS = 128


class PausedError(WorkerError):
    """The fence held but the pause key exists (``protection-worker pause``): nothing of the batch
    was written and the pass stopped. The term goes on; the leader writes nothing until ``resume``."""

    def __init__(self, message: str, *, revision: int = 0, written: int = 0, refused: int = 0) -> None:
        super().__init__(message)
        self.revision = revision
        #: writes of earlier batches of the same pass that did land (before the pause key existed)
        self.written = written
        #: changes in the refused transaction
        self.refused = refused
        #: the pass's result up to the refusal (``reconcile`` sets it: landed writes by op)
        self.partial: Any = None


class FenceLostError(WorkerError):
    """The fence compare failed: this instance no longer leads (or lost the Mutex); nothing of
    the batch was written and the pass stopped. The daemon steps down."""

    def __init__(self, message: str, *, revision: int = 0, written: int = 0, refused: int = 0) -> None:
        super().__init__(message)
        self.revision = revision
        #: writes of earlier batches of the same pass that did land (made while the fence held)
        self.written = written
        #: changes in the refused transaction
        self.refused = refused
        #: the pass's result up to the refusal (``reconcile`` sets it: landed writes by op)
        self.partial: Any = None


@dataclass(frozen=True)
class Fence:
    """What every write transaction compares: ``term`` (create revision of our election key) and
    the compares proving leadership (``kv.cmp_create(election_key, "=", term)``, ``mutex.is_owner()``)."""

    term: int
    compares: list[Any] = field(default_factory=list)
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
    return json.dumps({"term": term, "lease": f"{lease:x}", "instance_id": instance_id},
                      separators=(",", ":"))


def leader_fence(keys: Any, *, term: int, election_key: str, owner: Any, lease: int,
                 instance_id: str | None = None, guard: Callable[[], None] | None = None) -> Fence:
    """The fence of a leader of ``term``: its election key (create revision == term), the Mutex
    ownership compare ``owner``, the pause key's absence, and the audit stamp."""
    return Fence(term=term, compares=[kv.cmp_create(election_key, "=", term), owner], guard=guard,
                 pause_key=keys.paused, stamp_key=keys.stamp,
                 stamp_value=stamp(term, lease, instance_id))


@dataclass
class _Pending:
    decision: Decision
    key: bytes
    mod_revision: int


def _nested(compare: Any, op: Any) -> Any:
    return etcdrpc.RequestOp(request_txn=kv.txn_request([compare], [op]))


#: called once per change after its transaction: (decision, written?)
Outcome = Callable[[Decision, bool], None]


class BatchWriter:
    """Collects changes and sends them in fenced transactions of at most ``max_ops``-1 changes."""

    def __init__(self, client: Any, fence: Fence, *, on_outcome: Outcome | None = None,
                 max_ops: int = MAX_TXN_OPS, progress: Callable[[], None] | None = None) -> None:
        if not fence.compares:
            raise ValueError("a Fence needs at least one compare: unfenced writes are refused")
        self.client = client
        self.fence = fence
        self.lead_compares = [kv.to_compare(c) for c in fence.compares]
        self.fence_compares = list(self.lead_compares)
        #: ops every transaction carries besides the changes (the stamp)
        self.extra_ops: list[Any] = []
        #: on failure: does the leadership part of the fence still hold? (then the pause failed it)
        self.failure_ops: list[Any] = []
        if fence.pause_key is not None:
            self.fence_compares.append(kv.cmp_create(fence.pause_key, "=", 0))
            self.failure_ops = [etcdrpc.RequestOp(request_txn=kv.txn_request(self.lead_compares))]
        if fence.stamp_key is not None:
            self.extra_ops.append(kv.op_put(fence.stamp_key, fence.stamp_value))
        # etcd checks a nested txn against what the outer one leaves (max_ops minus the outer's
        # largest list): each change's txn needs 1, the failure branch's txn its leadership compares
        reserve = max(1, len(self.lead_compares)) if self.failure_ops else 1
        self.batch_size = max_ops - reserve - len(self.extra_ops)
        if self.batch_size < 1 or len(self.fence_compares) > self.batch_size:
            raise ValueError(f"max_ops {max_ops} leaves no room for changes")
        self.on_outcome = on_outcome
        #: called after each transaction answered (proof of progress, see ``reader.Progress``)
        self.progress = progress
        self.pending: list[_Pending] = []
        self.txns = 0
        self.writes = 0
        self.conflicts = 0
        self.revision = 0

    def add(self, decision: Decision, key: str | bytes, mod_revision: int) -> None:
        """Queue one change (``mod_revision``: of the protection key as read, 0 if absent)."""
        assert decision.writes, decision
        self.pending.append(_Pending(decision, kv.to_bytes(key), mod_revision))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def _send(self, ops: list[Any]) -> Any:
        if self.fence.guard is not None:
            self.fence.guard()
        response = self.client.txn(kv.txn_request(self.fence_compares, ops + self.extra_ops, self.failure_ops))
        self.txns += 1
        self.revision = max(self.revision, response.header.revision)
        if self.progress is not None:
            self.progress()
        if not response.succeeded and self.failure_ops and response.responses[0].response_txn.succeeded:
            raise PausedError(f"paused at revision {response.header.revision}: maintenance mode, "
                              "nothing of the batch was written", revision=response.header.revision,
                              written=self.writes, refused=len(ops))
        if not response.succeeded:
            raise FenceLostError(f"fence failed at revision {response.header.revision}: no longer leader "
                                 f"(term {self.fence.term}) or Mutex lost; nothing of the batch was written",
                                 revision=response.header.revision, written=self.writes, refused=len(ops))
        return response

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        first: list[Any] = []
        second: list[int] = []       # indexes into batch: the creates of recreates
        for i, item in enumerate(batch):
            d = item.decision
            if d.action == "create":
                first.append(_nested(kv.cmp_create(item.key, "=", 0), kv.op_put(item.key, d.new.to_json())))
            elif d.action == "update":
                first.append(_nested(kv.cmp_mod(item.key, "=", item.mod_revision),
                                     kv.op_put(item.key, d.new.to_json())))
            else:  # delete, and the first half of a recreate
                first.append(_nested(kv.cmp_mod(item.key, "=", item.mod_revision), kv.op_delete(item.key)))
                if d.action == "recreate":
                    second.append(i)
        response = self._send(first)
        ok = [r.response_txn.succeeded for r in response.responses[:len(first)]]
        self.writes += sum(ok)
        recreated = [i for i in second if ok[i]]
        if recreated:
            ops = [_nested(kv.cmp_create(batch[i].key, "=", 0), kv.op_put(batch[i].key, batch[i].decision.new.to_json()))
                   for i in recreated]
            try:
                response2 = self._send(ops)
            except (FenceLostError, PausedError):
                for i, item in enumerate(batch):   # report what the first transaction did
                    if not (item.decision.action == "recreate" and ok[i]):
                        self._outcome(item.decision, ok[i])
                raise
            for i, r in zip(recreated, response2.responses):
                self.writes += r.response_txn.succeeded
                ok[i] = r.response_txn.succeeded
        for item, done in zip(batch, ok):
            self._outcome(item.decision, done)

    def _outcome(self, decision: Decision, done: bool) -> None:
        if not done:
            self.conflicts += 1
        if self.on_outcome is not None:
            self.on_outcome(decision, done)
