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
from typing import Any, Iterable

import structlog

from worker.protection.keys import Keys
from worker.protection.reader import DEFAULT_PAGE_SIZE, Progress, read_all, read_ids
from worker.protection.records import format_time
from worker.protection.rules import Decision, InvalidInput, Observed, decide
from worker.protection.writer import MAX_TXN_OPS, BatchWriter, Fence, FenceLostError, PausedError, leader_fence

__all__ = ["Fence", "FenceLostError", "PausedError", "leader_fence", "InvalidInput", "InvalidLog", "PassResult", "full_pass", "incremental_pass"]

log = structlog.get_logger(__name__)

#: change lines kept in ``PassResult.changes`` by a real (not dry-run) pass; the rest are counted
MAX_CHANGE_LINES = 1000


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
    #: records by state after the pass
    states: dict[str, int] = field(default_factory=dict)
    #: changes skipped because the protection key moved since it was read (see ``writer``)
    conflicts: int = 0

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
    def __init__(self, client: Any, keys: Keys, fence: Fence | None, *, mode: str, dry_run: bool,
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
        self.writer = None if dry_run else BatchWriter(client, fence, on_outcome=self._outcome, max_ops=max_ops,
                                                     progress=progress)
        self.max_lines = None if dry_run else MAX_CHANGE_LINES
        self.start = time.monotonic()

    def feed(self, observed: Iterable[Observed]) -> None:
        r = self.result
        for obs in observed:
            if obs.cluster is not None:
                r.seen += 1
            d = decide(obs, term=self.term, updated_at=self.updated_at)
            if d.action == "none":
                continue
            if d.action == "unchanged":
                r.unchanged += 1
                self.states[d.old_state] += 1
            elif d.action == "invalid":
                r.invalid.append(d.invalid)
                self.invalid_log.report(d.invalid)
                if obs.protection is not None:
                    self.states[d.old_state] += 1
            elif self.writer is None:
                self._outcome(d, True)
            else:
                self.writer.add(d, self.keys.protection_key(d.id),
                                obs.protection.mod_revision if obs.protection is not None else 0)

    def _outcome(self, d: Decision, done: bool) -> None:
        r = self.result
        if not done:
            r.conflicts += 1
            log.info("write_conflict", id=d.id, action=d.action,
                     note="protection key changed since it was read; the next pass looks again")
            if d.old_state != "none":
                self.states[d.old_state] += 1
            return
        setattr(r, _COUNTER[d.action], getattr(r, _COUNTER[d.action]) + 1)
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

    def _collect(self) -> None:
        if self.writer is not None:
            self.result.writes = self.writer.writes
            self.result.txns = self.writer.txns


def _run(p: _Pass, observed: Iterable[Observed]) -> PassResult:
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


def full_pass(client: Any, keys: Keys, fence: Fence | None, *, dry_run: bool = False,
              now: datetime | float | None = None, page_size: int = DEFAULT_PAGE_SIZE,
              invalid_log: InvalidLog | None = None, max_ops: int = MAX_TXN_OPS,
              progress: Progress | None = None) -> PassResult:
    """Every cluster, at one revision; orphaned records (cluster key gone) are deleted in batches."""
    p = _Pass(client, keys, fence, mode="full", dry_run=dry_run, now=now, invalid_log=invalid_log,
              max_ops=max_ops, progress=progress)
    snapshot = read_all(client, keys, page_size=page_size, progress=progress)
    p.result.revision = snapshot.revision
    return _run(p, snapshot)


def incremental_pass(client: Any, keys: Keys, fence: Fence | None, ids: Iterable[str], *,
                     dry_run: bool = False, now: datetime | float | None = None,
                     invalid_log: InvalidLog | None = None, max_ops: int = MAX_TXN_OPS,
                     progress: Progress | None = None) -> PassResult:
    """Only ``ids`` (e.g. those a watch reported), read at one revision; a gone cluster's record is deleted."""
    p = _Pass(client, keys, fence, mode="incremental", dry_run=dry_run, now=now, invalid_log=invalid_log,
              max_ops=max_ops, progress=progress)
    revision, observed = read_ids(client, keys, ids)
    p.result.revision = revision
    return _run(p, observed)
