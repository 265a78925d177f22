"""One term of leadership: take the Mutex, reconcile everything, then follow the inputs.

The term runs on the main thread until a reason to step down: the lease is lost, our election
key is deleted by someone else, a fenced write fails, the lease deadline comes too close to write
safely, or the process is asked to stop. Every write is fenced by the reconcile pass (election key
create revision == term, Mutex ownership), so even a leader that wakes from SIGSTOP after its lease
expired cannot write: its first transaction fails its compare and the term ends.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog
from pyetcd.events import DeleteEvent

from worker.concurrency import Mutex
from worker.control import Controls, clear_switchover
from worker.concurrency.errors import SessionExpiredError, WaitCancelledError
from worker.daemon import logs
from worker.daemon.candidate import Candidacy, Report
from worker.daemon.metrics import Metrics
from worker.daemon.state import LEADER, DaemonState
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.errors import CompactedError, EtcdClosedError, EtcdError, PermissionDeniedError
from worker.etcd.watch import Watch
from worker.protection.keys import Keys
from worker.protection.reconcile import (Fence, FenceLostError, PassResult, PausedError, full_pass, incremental_pass,
                                        leader_fence)

log = structlog.get_logger("worker.daemon")

#: how long changes are gathered after the first one before an incremental pass (batches bursts)
DEBOUNCE = 0.01


@dataclass
class LeadContext:
    """What a term needs from the daemon around it."""

    client: EtcdClient
    keys: Keys
    state: DaemonState
    metrics: Metrics
    reports: queue.Queue[Report]
    stop: threading.Event
    interval: Callable[[], float]
    request_timeout: float
    tick: Callable[[], None]
    on_leader: Callable[[Any], None]
    controls: Callable[[], Controls]
    #: re-read the config file; True when the change needs a new connection (the term ends)
    reload: Callable[[], bool]
    #: told when etcd refused a permission (the daemon blocks after the term)
    denied: Callable[[PermissionDeniedError], None] = lambda _err: None


class StepDown(Exception):
    """Leadership ends; ``args[0]`` says why (logged and counted by the caller)."""


class LeaderTerm:
    def __init__(self, ctx: LeadContext, candidacy: Candidacy) -> None:
        self.ctx = ctx
        self.candidacy = candidacy
        self.term = candidacy.term
        self.mutex = Mutex(candidacy.session, ctx.keys.lock)
        self._watches: list[Watch] = []
        self._threads: list[threading.Thread] = []
        self.first_pass_done = threading.Event()
        self._rewatch = False

    # -- the term -----------------------------------------------------------------------------
    def run(self) -> str:
        """Lead until a reason to stop; returns the reason. Never leaves the Mutex behind."""
        ctx = self.ctx
        try:
            self._lock()
            fence = leader_fence(ctx.keys, term=self.term, election_key=self.candidacy.key,
                                 owner=self.mutex.is_owner(), lease=self.candidacy.session.lease,
                                 instance_id=ctx.state.instance_id, guard=self._guard)
            ctx.state.holds_lock = True
            self._apply_controls(ctx.controls())
            result = self._pass(fence, None)
            self.first_pass_done.set()
            self._start_watches(result.revision + 1)
            last_full = time.monotonic()
            while True:
                ctx.tick()
                next_full = last_full + ctx.interval()  # read each time: SIGHUP may change it
                timeout = max(0.0, min(next_full - time.monotonic(), 0.5))
                changed = self._wait(timeout)
                if changed:
                    self._pass(fence, changed)
                if self._rewatch or time.monotonic() >= last_full + ctx.interval():
                    result = self._pass(fence, None)
                    last_full = time.monotonic()
                if self._rewatch:
                    self._rewatch = False
                    self._stop_watches()
                    self._start_watches(result.revision + 1)
        except StepDown as why:
            return str(why.args[0])
        finally:
            ctx.state.holds_lock = False
            # release first, tidy up after: the next leader waits on these keys, not on our threads
            if ctx.stop.is_set():
                self._hand_over()
            else:
                self._unlock()
            self._stop_watches()

    def _lock(self) -> None:
        try:
            self.mutex.lock(cancel=self.ctx.stop)
        except WaitCancelledError:
            raise StepDown("stopping") from None
        except SessionExpiredError:
            raise StepDown("lease lost while waiting for the reconcile lock") from None
        except EtcdError as err:
            raise StepDown(f"could not take the reconcile lock: {err}") from err

    def _hand_over(self) -> None:
        """Graceful exit: delete the Mutex key and our election key in ONE transaction, so the
        next candidate's wait ends after a single round trip (its Mutex is then free at once)."""
        if not self.mutex.key or self.mutex.key == "\x00":
            return
        try:
            self.ctx.client.txn(kv.txn_request(
                [kv.cmp_create(self.candidacy.key, "=", self.term)],
                [kv.op_delete(self.mutex.key), kv.op_delete(self.candidacy.key)],
                [kv.op_delete(self.mutex.key)]))
        except EtcdError:
            self._unlock()  # the lease revoke that follows removes the keys anyway

    def _unlock(self) -> None:
        try:
            self.mutex.unlock()
        except Exception:  # noqa: BLE001 - released already, or the lease removes the key
            pass

    def _guard(self) -> None:
        """Checked before every write: stop while the lease is certainly alive for one more request."""
        if self.ctx.stop.is_set():
            raise StepDown("stopping")
        remaining = self.candidacy.session.remaining()
        if remaining <= self.ctx.request_timeout:
            raise StepDown(f"lease deadline too close to write ({remaining:.2f} s left)")

    # -- passes -------------------------------------------------------------------------------
    def _pass(self, fence: Fence, ids: set[str] | None) -> PassResult:
        mode = "full" if ids is None else "incremental"
        ctx = self.ctx
        started = time.monotonic()
        while True:
            self._guard()
            try:
                # maintenance mode: plan (so /status and the gauges stay true) but write nothing
                dry = ctx.state.paused
                result = (full_pass(ctx.client, ctx.keys, fence, dry_run=dry) if ids is None
                          else incremental_pass(ctx.client, ctx.keys, fence, ids, dry_run=dry))
            except PausedError as err:
                # the pause key exists (the fence compares its absence): nothing more was written,
                # the term goes on, and passes plan only until ``resume``
                log.warning("paused", revision=err.revision, written_before=err.written)
                ctx.state.paused = True
                ctx.metrics.set_paused(True)
                return PassResult(mode=mode, dry_run=True, revision=err.revision, writes=err.written)
            except FenceLostError as err:
                ctx.metrics.observe_pass(mode, "fenced", time.monotonic() - started, {})
                ctx.metrics.fenced_write()
                log.warning("fenced_write", mode=mode, error=str(err))
                raise StepDown(f"fence lost: {err}") from err
            except PermissionDeniedError as err:
                # retrying cannot fix a role that lacks the permission: step down, said once
                ctx.metrics.observe_pass(mode, "error", time.monotonic() - started, {})
                ctx.denied(err)  # the daemon says it once, naming the key ("permission_denied")
                raise StepDown("etcd refused a permission") from err
            except EtcdError as err:
                ctx.metrics.observe_pass(mode, "error", time.monotonic() - started, {})
                log.warning("reconcile_failed", mode=mode, error=str(err), kind=err.kind)
                self._sleep(0.2)
                continue
            ctx.metrics.observe_pass(mode, "ok", result.duration, {} if result.dry_run else writes_by_op(result))
            ctx.state.last_pass = {"mode": mode, "term": self.term, "revision": result.revision,
                                   "finished_at": time.time(), "duration": round(result.duration, 6),
                                   "writes": result.writes}
            if ids is None:
                ctx.metrics.set_states(result.states)
                ctx.metrics.set_invalid(len(result.invalid))
            if result.writes or ids is None:
                log.info("reconcile_pass", mode=mode, revision=result.revision, seen=result.seen,
                         created=result.created, updated=result.updated, recreated=result.recreated,
                         deleted=result.deleted, unchanged=result.unchanged, invalid=len(result.invalid),
                         writes=result.writes, txns=result.txns, duration=round(result.duration, 4),
                         paused=result.dry_run)
            return result

    def _sleep(self, seconds: float) -> None:
        if self.ctx.stop.wait(seconds):
            raise StepDown("stopping")

    # -- reports from watches and the candidacy -----------------------------------------------
    def _wait(self, timeout: float) -> set[str]:
        """Gather changed ids (debounced) or act on a report; returns the ids to reconcile."""
        changed: set[str] = set()
        deadline = None
        while True:
            left = timeout if deadline is None else deadline - time.monotonic()
            try:
                report = self.ctx.reports.get(timeout=max(0.0, left))
            except queue.Empty:
                return changed
            self._handle(report, changed)
            if changed and deadline is None:
                deadline = time.monotonic() + DEBOUNCE

    def _handle(self, report: Report, changed: set[str]) -> None:
        if report.kind == "stop":
            raise StepDown("stopping")
        if report.kind == "control":
            self._apply_controls(report.data)
            return
        if report.kind == "reload":
            if self.ctx.reload():
                raise StepDown("config reload: reconnecting")
            return
        if report.generation != self.candidacy.generation:
            return  # from an earlier session
        if report.kind == "changed":
            changed.update(report.data)
        elif report.kind == "lease_lost":
            raise StepDown(f"lease lost: {report.data}")
        elif report.kind == "key_deleted":
            raise StepDown("our election key was deleted")
        elif report.kind == "watch_failed":
            # compacted past our position (or refused): the history has a hole, so re-read all
            log.warning("input_watch_lost", error=str(report.data))
            self._rewatch = True
        elif report.kind == "leader":
            # only bookkeeping: an observer's read can predate our own election, so the fence
            # and the watch on our key, not this report, decide whether we still lead
            self.ctx.on_leader(report.data)

    def _apply_controls(self, controls: Controls) -> None:
        """Pause (dry-run passes) and switchover (hand over to the next in line, or to ``to``)."""
        state = self.ctx.state
        if controls.paused != state.paused:
            log.warning("paused" if controls.paused else "resumed")
            if not controls.paused:
                self._rewatch = True  # catch up: a full pass now (the paused passes wrote nothing)
        state.paused = controls.paused
        self.ctx.metrics.set_paused(controls.paused)
        sw = controls.switchover
        if sw is None or not sw.active:
            return
        me = state.instance_id
        if sw.to == me or (sw.to is None and sw.from_term != self.term):
            clear_switchover(self.ctx.client, self.ctx.keys)  # done: we are what was asked for
            log.info("switchover_done", to=sw.to, from_term=sw.from_term)
        elif sw.to is not None or sw.from_term == self.term:
            raise StepDown(f"switchover requested (to {sw.to or 'the next in line'})")

    def _start_watches(self, revision: int) -> None:
        keys = self.ctx.keys
        for prefix in (keys.clusters, keys.dr):
            watch = Watch(self.ctx.client, prefix, range_end=kv.prefix_end(prefix), start_revision=revision)
            self._spawn(self._forward_changes, watch, prefix)
        own = Watch(self.ctx.client, self.candidacy.key, start_revision=self.term + 1)
        self._spawn(self._forward_key_delete, own)

    def _spawn(self, target: Callable[..., None], watch: Watch, *args: Any) -> None:
        self._watches.append(watch)
        thread = threading.Thread(target=target, args=(watch, *args), daemon=True,
                                  name=f"watch-{self.term}")
        self._threads.append(thread)
        thread.start()

    def _post(self, kind: str, data: Any = None) -> None:
        self.ctx.reports.put(Report(kind, self.candidacy.generation, data))

    def _forward_changes(self, watch: Watch, prefix: str) -> None:
        try:
            for response in watch:
                ids = {Keys.id_of(e.key, prefix) for e in response.events}
                if ids:
                    self._post("changed", ids)
        except CompactedError as err:
            self._post("watch_failed", err)
        except EtcdClosedError:
            pass
        except EtcdError as err:
            self._post("watch_failed", err)

    def _forward_key_delete(self, watch: Watch) -> None:
        try:
            for response in watch:
                if any(isinstance(e, DeleteEvent) for e in response.events):
                    self._post("key_deleted")
                    return
        except EtcdError:
            pass  # the lease keeper and the fence still guard the term

    def _stop_watches(self) -> None:
        for watch in self._watches:
            watch.close()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._watches.clear()
        self._threads.clear()


def writes_by_op(result: PassResult) -> dict[str, int]:
    """``writes_total`` labels: a recreate is one delete and one create."""
    return {"create": result.created + result.recreated, "update": result.updated,
            "delete": result.deleted + result.recreated}


def set_leading(state: DaemonState, metrics: Metrics, term: int | None) -> None:
    """Role bookkeeping shared by term start and end: state, metrics, and the log's ``term``."""
    state.term = term
    state.role = LEADER if term is not None else state.role
    metrics.set_leader(term is not None, term)
    if term is None:
        logs.clear_term()
    else:
        logs.set_term(term)
