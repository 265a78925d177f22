"""One reconcile pass: read at one revision, apply the rules, write what differs, fenced.

The daemon calls ``full_pass`` on an interval and ``incremental_pass`` with the ids a watch
reported. Both are level-triggered (the result follows from the store alone), write nothing when
nothing differs (so the store revision does not move), and stop with ``FenceLostError`` the moment
the fence fails. Bad input is counted, listed in ``PassResult.invalid``, logged once per
occurrence (same key and mod revision: once per process, not once per pass), and skipped.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import structlog

from worker.etcd import EtcdClient
from worker.keys import Keys
from worker.protection.memo import Outcome, PassMemo, revisions_key
from worker.protection.reader import DEFAULT_PAGE_SIZE, SPAN_IDS, Progress, Row, observe, read_all, read_ids
from worker.protection.records import format_time
from worker.protection.rules import Decision, InvalidInput, decide_isolated
from worker.protection.writer import MAX_TXN_OPS, BatchWriter, Fence, FenceLostError, PausedError, leader_fence

__all__ = ["Fence", "FenceLostError", "PausedError", "leader_fence", "InvalidInput", "InvalidLog", "PassMemo",
           "PassResult", "full_pass", "incremental_pass"]

log = structlog.get_logger(__name__)

#: change lines kept in ``PassResult.changes`` by a real (not dry-run) pass; the rest are counted
MAX_CHANGE_LINES = 1000
#: rows decided between two ``progress`` calls within a page: the daemon reconciles input changes
#: in that callback, so a change waits for at most this many rows (milliseconds), not a whole page
PROGRESS_ROWS = 500
#: write transactions in flight at once in a full pass: etcd applies one batch while the next is
#: built and sent (and the pass keeps reading); see ``writer.BatchWriter``. An incremental pass
#: (a few ids, one batch) sends its batch and waits: no thread; one of ``reader.SPAN_IDS`` ids or
#: more (a mass change, read in spans) keeps this many in flight too
WRITE_DEPTH = 3


@dataclass
class PassResult:
    mode: str = "full"
    dry_run: bool = False
    revision: int = 0
    seen: int = 0
    created: int = 0
    updated: int = 0
    recreated: int = 0
    deleted: int = 0
    unchanged: int = 0
    invalid: list[InvalidInput] = field(default_factory=list)
    #: write ops applied (puts and deletes; a recreate is 2)
    writes: int = 0
    txns: int = 0
    duration: float = 0.0
    #: ``create|update|recreate|delete ID old -> new`` (all of them on a dry run)
    changes: list[str] = field(default_factory=list)
    changes_dropped: int = 0
    #: records by state after the pass (the ids it saw)
    states: dict[str, int] = field(default_factory=dict)
    #: what its landed writes changed in the records by state (old state -1, new state +1; all of
    #: them, where ``changes`` keeps the first ``MAX_CHANGE_LINES``)
    moved: dict[str, int] = field(default_factory=dict)
    #: changes skipped because the protection key or an input moved since it was read (see ``writer``)
    conflicts: int = 0
    #: their ids: a newer input (or record) is there; the daemon reconciles these again
    conflicted_ids: list[str] = field(default_factory=list)
    #: ids whose outcome the term's memo answered without parsing (full passes given a ``memo``)
    memo_hits: int = 0

    @property
    def changed(self) -> int:
        return self.created + self.updated + self.recreated + self.deleted

    def summary(self) -> str:
        verb = "planned" if self.dry_run else "done"
        return (f"{self.mode} pass at revision {self.revision} ({verb}): {self.seen} clusters seen, "
                f"{self.created} created, {self.updated} updated, {self.recreated} recreated, "
                f"{self.deleted} deleted, {self.unchanged} unchanged, {len(self.invalid)} invalid"
                + (f", {self.conflicts} conflicts" if self.conflicts else "")
                + f"; {self.writes} writes in {self.txns} txns, {self.duration:.3f} s")


class InvalidLog:
    """Logs each bad input once per occurrence (key + mod revision), bounded memory."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()

    def report(self, item: InvalidInput) -> None:
        mark = (item.key, item.mod_revision)
        if mark in self._seen:
            self._seen.move_to_end(mark)
            return
        self._seen[mark] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        log.warning("invalid_input", key=item.key, mod_revision=item.mod_revision, error=item.error)


DEFAULT_INVALID_LOG = InvalidLog()

_COUNTER = {"create": "created", "update": "updated", "recreate": "recreated", "delete": "deleted"}


class _Pass:
    def __init__(self, client: EtcdClient, keys: Keys, fence: Fence | None, *, mode: str, dry_run: bool,
                 now: datetime | float | None, invalid_log: InvalidLog | None, max_ops: int,
                 progress: Progress | None = None) -> None:
        if fence is None and not dry_run:
            raise ValueError("a real pass needs a Fence (dry_run=True needs none)")
        self.keys = keys
        self.result = PassResult(mode=mode, dry_run=dry_run)
        self.term = fence.term if fence is not None else 0
        self.updated_at = format_time(now)
        self.invalid_log = invalid_log or DEFAULT_INVALID_LOG
        self.states: collections.Counter[str] = collections.Counter()
        self.writer = None if dry_run else BatchWriter(client, fence or Fence(0), on_outcome=self._outcome,
                                                     max_ops=max_ops, progress=progress,
                                                     depth=WRITE_DEPTH if mode == "full" else 1)
        self.max_lines = None if dry_run else MAX_CHANGE_LINES
        self.cluster_prefix = keys.clusters.encode()
        self.dr_prefix = keys.dr.encode()
        #: the term's ``PassMemo`` (full passes only; None: every row decided)
        self.memo: PassMemo | None = None
        self.progress = progress
        self.start = time.monotonic()

    def feed(self, rows: Iterable[Row]) -> None:
        """Decide every joined row (``reader.Row``) and queue its write; with a ``memo``, a row whose
        three mod revisions are those of the last pass replays that pass's outcome (nothing to write)."""
        r = self.result
        memo = self.memo
        progress = self.progress
        for n, row in enumerate(rows, 1):
            if progress is not None and n % PROGRESS_ROWS == 0:
                progress()
            cid, cluster, dr, protection = row
            if cluster is not None:
                r.seen += 1
            if memo is not None:
                revisions = revisions_key(cluster, dr, protection)
                hit, outcome = memo.lookup(cid, revisions)
                if hit:
                    self._replay(outcome)
                    continue
            d = decide_isolated(observe(row), term=self.term, updated_at=self.updated_at)
            action = d.action
            if action == "none":
                outcome = None
            elif action == "unchanged":
                outcome = d.old_state
            elif action == "invalid":
                assert d.invalid is not None
                outcome = (d.invalid, d.old_state if protection is not None else None)
            else:
                self._write(d, row)
                continue
            self._replay(outcome)
            if memo is not None:
                memo.store(cid, revisions, outcome)
        if memo is not None:
            r.memo_hits = memo.hits

    def _replay(self, outcome: Outcome) -> None:
        """Count an outcome that writes nothing (unchanged, none, invalid)."""
        if outcome is None:
            return
        if isinstance(outcome, str):
            self.result.unchanged += 1
            self.states[outcome] += 1
            return
        invalid, state = outcome
        self.result.invalid.append(invalid)
        self.invalid_log.report(invalid)
        if state is not None:
            self.states[state] += 1

    def _write(self, d: Decision, row: Row) -> None:
        if self.writer is None:
            self._outcome(d, True)
            return
        cid, cluster, dr, protection = row
        inputs = ((cluster.key, cluster.mod_revision) if cluster is not None else (self.cluster_prefix + cid, 0),
                  (dr.key, dr.mod_revision) if dr is not None else (self.dr_prefix + cid, 0))
        self.writer.add(d, self.keys.protection_key(d.id),
                        protection.mod_revision if protection is not None else 0, inputs)

    def _outcome(self, d: Decision, done: bool) -> None:
        r = self.result
        if not done:
            r.conflicts += 1
            r.conflicted_ids.append(d.id)
            log.info("write_conflict", id=d.id, action=d.action,
                     note="the protection key or an input changed since it was read; reconciled again")
            if d.old_state != "none":
                self.states[d.old_state] += 1
            return
        setattr(r, _COUNTER[d.action], getattr(r, _COUNTER[d.action]) + 1)
        moved = r.moved
        if d.old_state != "none":
            moved[d.old_state] = moved.get(d.old_state, 0) - 1
        if d.new_state != "none":
            moved[d.new_state] = moved.get(d.new_state, 0) + 1
        if self.max_lines is None or len(r.changes) < self.max_lines:
            r.changes.append(d.line())
        else:
            r.changes_dropped += 1
        if d.new_state != "none":
            self.states[d.new_state] += 1

    def finish(self) -> PassResult:
        r = self.result
        if self.writer is not None:
            try:
                self.writer.flush()
            finally:
                self._collect()
        r.states = dict(sorted(self.states.items()))
        r.duration = time.monotonic() - self.start
        return r

    def abandon(self) -> None:
        """The pass failed: wait for the writes still in flight (no thread outlives the pass); what
        landed is counted in ``result`` (the ``partial`` the daemon books)."""
        if self.writer is not None:
            self.writer.close()
            self._collect()

    def _collect(self) -> None:
        if self.writer is not None:
            self.result.writes = self.writer.writes
            self.result.txns = self.writer.txns


def _run(p: _Pass, observed: Iterable[Row]) -> PassResult:
    try:
        p.feed(observed)
        return p.finish()
    except PausedError as exc:
        p._collect()
        exc.partial = p.result  # what landed before, counted by op
        log.info("write_paused", mode=p.result.mode, term=p.term, revision=exc.revision,
                 written_before=exc.written)
        raise
    except FenceLostError as exc:
        p._collect()
        exc.partial = p.result
        log.warning("fence_lost", mode=p.result.mode, term=p.term, revision=exc.revision,
                    written_before=exc.written, error=str(exc))
        raise
    except Exception as exc:  # the caller's guard or progress hook stopped it, an etcd error
        p._collect()
        exc.partial = p.result  # type: ignore[attr-defined]
        raise


def full_pass(client: EtcdClient, keys: Keys, fence: Fence | None, *, dry_run: bool = False,
              now: datetime | float | None = None, page_size: int = DEFAULT_PAGE_SIZE,
              invalid_log: InvalidLog | None = None, max_ops: int = MAX_TXN_OPS,
              progress: Progress | None = None, memo: PassMemo | None = None) -> PassResult:
    """Every cluster, at one revision; orphaned records (cluster key gone) are deleted in batches.

    ``memo``: the term's ``PassMemo`` (one per term, created by the caller; None: every cluster is
    parsed and decided). A pass that fails midway leaves it cold."""
    p = _Pass(client, keys, fence, mode="full", dry_run=dry_run, now=now, invalid_log=invalid_log,
              max_ops=max_ops, progress=progress)
    if memo is not None:
        memo.begin()
    snapshot = None
    try:
        snapshot = read_all(client, keys, page_size=page_size, progress=progress)
        p.result.revision = snapshot.revision
        p.memo = memo
        result = _run(p, snapshot.rows())
    except BaseException:
        if memo is not None:
            memo.reset()
        p.abandon()
        raise
    finally:
        if snapshot is not None:
            snapshot.close()
    if memo is not None:
        memo.commit()
    return result


def incremental_pass(client: EtcdClient, keys: Keys, fence: Fence | None, ids: Iterable[str], *,
                     dry_run: bool = False, now: datetime | float | None = None,
                     invalid_log: InvalidLog | None = None, max_ops: int = MAX_TXN_OPS,
                     progress: Progress | None = None, revision: int = 0) -> PassResult:
    """Only ``ids`` (e.g. those a watch reported), read at one revision; a gone cluster's record is deleted.

    ``revision``: read at that past revision instead of now (dry runs only: what a pass at that
    revision decided)."""
    if revision and not dry_run:
        raise ValueError("a pass that writes reads the present: revision= is for dry runs")
    p = _Pass(client, keys, fence, mode="incremental", dry_run=dry_run, now=now, invalid_log=invalid_log,
              max_ops=max_ops, progress=progress)
    try:
        revision, observed = read_ids(client, keys, ids, revision=revision, progress=progress)
        p.result.revision = revision
        if p.writer is not None and len(observed) >= SPAN_IDS:
            p.writer.depth = WRITE_DEPTH  # a mass change: its batches in flight like a full pass's
        return _run(p, ((obs.id.encode(), obs.cluster, obs.dr, obs.protection) for obs in observed))
    except BaseException:
        p.abandon()
        raise
