"""Accounting of reconcile passes: the metrics and ``/status``'s ``last_pass``, exactly.

Every landed write is counted in ``writes_total`` by op, also when a pass ends early (fence
loss, the lease guard, a pause, a stop): the pass's partial result rides on the exception. Every
refused write (the changes of the refused transaction) is counted in ``fenced_writes_total``.
``clusters{state}`` is set by a full pass and moved by each incremental one (its old -> new state
changes, ``PassResult.moved``); ``invalid_inputs`` follows both. A full pass counts every cluster as of
its own revision, so the clusters that changed while it ran (reconciled between its pages) are counted stale: the
pass that looks at them again after it replaces what the full pass counted for them
(``LeaderTerm._counted``: the same rules at the full pass's revision) by what they are now.
"""

from __future__ import annotations

import collections
import time
from typing import Iterable

import structlog

from worker.daemon.metrics import Metrics
from worker.daemon.state import DaemonState
from worker.keys import Keys
from worker.protection.reconcile import PassResult

log = structlog.get_logger("worker.daemon")


def writes_by_op(result: PassResult) -> dict[str, int]:
    """``writes_total`` labels: a recreate is one delete and one create."""
    return {"create": result.created + result.recreated, "update": result.updated,
            "delete": result.deleted + result.recreated}


class PassBook:
    """PassBook keeps the books of one term's passes."""

    def __init__(self, metrics: Metrics, state: DaemonState, keys: Keys, term: int) -> None:
        self.metrics, self.state, self.keys, self.term = metrics, state, keys, term
        self.states: collections.Counter[str] | None = None  # unknown until the first full pass
        self.invalid: set[str] = set()
        #: the full pass whose counts ``states`` holds (None: none, or one that ended early since)
        self._counting: PassResult | None = None

    def finished(self, result: PassResult, ids: Iterable[str] | None,
                 replaces: collections.Counter[str] | None = None) -> None:
        """A pass that ran to its end. ``replaces``: this incremental pass looked again at clusters
        the last full pass counted as ``replaces`` (by state); its own counts of them take their place."""
        mode = "full" if ids is None else "incremental"
        self.metrics.observe_pass(mode, "ok", result.duration, {} if result.dry_run else writes_by_op(result))
        self.metrics.pass_completed(mode)
        # every completed pass, full or incremental, written or not (interfaces.md "Logs")
        log.info("reconcile_pass", mode=mode, revision=result.revision, seen=result.seen,
                 created=result.created, updated=result.updated, recreated=result.recreated,
                 deleted=result.deleted, unchanged=result.unchanged, invalid=len(result.invalid),
                 writes=result.writes, txns=result.txns, conflicts=result.conflicts,
                 duration=round(result.duration, 4), paused=result.dry_run)
        self.state.last_pass = {"mode": mode, "term": self.term, "revision": result.revision,
                                "finished_at": time.time(), "duration": round(result.duration, 6),
                                "writes": result.writes}
        if ids is None:
            self._counting = result
            self.states = collections.Counter(result.states)
            self.invalid = {item.key for item in result.invalid}
        else:
            ids = list(ids)
            self.invalid -= {k for i in ids for k in (self.keys.cluster(i), self.keys.dr_key(i))}
            self.invalid |= {item.key for item in result.invalid}
            if self.states is not None and not result.dry_run:
                if replaces is None:
                    self.states.update(result.moved)
                else:  # what the full pass counted for these ids, stale: their counts now instead
                    self.states.subtract(replaces)
                    self.states.update(result.states)
        if self.states is not None:
            self.metrics.set_states(self.states)
        self.metrics.set_invalid(len(self.invalid))

    def counts_full_pass(self, result: PassResult) -> bool:
        """Whether ``clusters{state}`` holds the counts of this full pass (it ran to its end)."""
        return self._counting is result

    def ended_early(self, mode: str, result: str, started: float, partial: PassResult | None,
                    refused: int = 0) -> None:
        """A pass stopped before its end: its landed writes and refused writes still count."""
        if mode == "full":
            self._counting = None
        self.metrics.observe_pass(mode, result, time.monotonic() - started,
                                  writes_by_op(partial) if partial is not None and not partial.dry_run else {})
        if refused:
            self.metrics.fenced_write(refused)
        if partial is not None and partial.changed and self.states is not None and not partial.dry_run:
            self.states.update(partial.moved)  # what landed moved the records, full pass or not
            self.metrics.set_states(self.states)
