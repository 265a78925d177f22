"""One term of leadership, a sub-state of the daemon: take the Mutex, reconcile everything, then
follow the inputs; ``run()`` returns why the term ended.

The term runs on the main thread and takes the daemon's events from the same queue until a reason
to step down: the lease is lost or no longer certainly alive by our clock (``LeaseDeadline``), our
election key is deleted, a fenced write fails, a switchover, or a stop. Every write is fenced
(election key create revision == term, Mutex ownership, the pause key absent), so even a leader
that wakes from SIGSTOP after its lease expired cannot write.

Pause: the controls are read afresh when the term starts (never a copy from an earlier term) and
after every failed etcd request; while paused, passes plan only. A write refused by the pause
alone (``PausedError``) does not end the term. On resume a full pass catches up.
While paused, the passes are dry runs (they plan, so ``/status`` and the gauges stay true).

Changes never wait behind a full pass: the pass's progress callback (after each page read and
each write transaction) drains the queue and reconciles the changed ids incrementally, with the
same fence, before the full pass goes on; the ids so handled are reconciled once more after it
(a full-pass write made from inputs read before the change is then corrected, or was skipped
as a conflict). An incremental pass never starts another from its own callback.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from worker.control import Controls, clear_switchover, read_controls
from worker.daemon.candidate import Candidacy
from worker.daemon.core import Core
from worker.daemon.events import (ControlsChanged, Elected, Event, InputsChanged, KeyDeleted, LeaderSeen,
                                  LeaseDeadline, LeaseLost, Queued, Reload, Stop, WatchFailed, Wedge)
from worker.daemon.pass_book import PassBook
from worker.daemon.term_lock import ReconcileLock
from worker.daemon.term_threads import DeadlineTimer, TermWatches
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError, PermissionDeniedError
from worker.keys import Keys
from worker.protection.memo import PassMemo
from worker.protection.reconcile import (Fence, FenceLostError, PassResult, PausedError, full_pass, incremental_pass,
                                        leader_fence)
from worker.etcd.retry import Retry
from worker.untrusted import quote

log = structlog.get_logger("worker.daemon")

#: how long changes are gathered after the first one before an incremental pass: short, since
#: bursts batch on their own (what arrives while a pass runs goes into the next one); 10 ms here
#: cost the median change 2 ms and the p99 4-10 ms in ``bench/change_latency.py``
DEBOUNCE = 0.002
#: the longest the idle loop waits for an event before it beats again
TICK = 0.5
#: a change set of at least this many ids, and at least 1/``MASS_CHANGE_RATIO`` of the ids the
#: last full pass saw, is reconciled by a full pass: a large change set is read in spans (about a
#: full pass's row an id, ``reader.read_ids``), so only past half of the ids does a full pass (whose
#: memo skips the unchanged rest) cost less; below that, incremental passes follow a mass change as
#: it is written, where a full pass begun mid-way must be followed by another
MASS_CHANGE_MIN = 2_000
MASS_CHANGE_RATIO = 2


@dataclass
class TermContext:
    """What a term needs from the daemon around it."""

    client: EtcdClient
    keys: Keys
    core: Core
    events: queue.Queue[Event]
    stop: threading.Event
    interval: Callable[[], float]
    #: leadership ends this long before the lease deadline (one request timeout)
    margin: float
    beat: Callable[[], None]
    on_leader: Callable[[Any], None]
    #: re-read the config file; True when the change needs a new connection (the term ends)
    reload: Callable[[], bool]
    retry: Retry
    #: told when etcd refused a permission (the daemon blocks after the term)
    denied: Callable[[PermissionDeniedError], None] = lambda _err: None


class StepDown(Exception):
    """Leadership ends; ``args[0]`` says why."""

    partial: PassResult | None = None
    #: ``reconcile_runs_total`` result of a pass this ends: ``stopped`` (on purpose) or ``fenced``
    result: str = "stopped"


class LeaderTerm:
    def __init__(self, ctx: TermContext, candidacy: Candidacy) -> None:
        self.ctx = ctx
        self.candidacy = candidacy
        self.term = candidacy.term
        self.state = ctx.core.state
        self.lock = ReconcileLock(candidacy.session, ctx.keys.lock, candidacy.key, self.term)
        self.book = PassBook(ctx.core.metrics, self.state, ctx.keys, self.term)
        self.watches = TermWatches(ctx.client, ctx.keys, candidacy.key, self.term, ctx.events, candidacy.generation)
        self.timer: DeadlineTimer | None = None
        self.fence: Fence | None = None
        #: outcomes of this term's full passes that wrote nothing, by the three mod revisions: a
        #: steady pass parses only what changed (a new term starts cold)
        self.memo = PassMemo()
        self.first_pass_done = threading.Event()
        self._rewatch = False
        #: a full pass is due now (a resume, a mass change): set also while a pass runs
        self._catch_up = False
        #: the revision of the last full pass that wrote (or would have): changes reported at or
        #: below it are already reconciled by that pass
        self._covered = 0
        #: the ids the last completed full pass saw (the memo keeps only those that wrote nothing)
        self._known = 0
        self._nested = False          # an incremental pass runs inside a full pass's callback
        self._in_full = False
        self._interleaved: set[str] = set()
        self._pending: set[str] = set()   # changes seen while paused, or mid-callback

    # -- the term -----------------------------------------------------------------------------
    def run(self) -> str:
        """Lead until a reason to stop; returns the reason. Never leaves the Mutex behind."""
        ctx, session = self.ctx, self.candidacy.session
        try:
            why = self.lock.take(cancel=ctx.stop, beat=ctx.beat,
                                 waiting=lambda wait: ctx.core.transition(lock_wait=wait))
            if why is not None:
                raise StepDown(why)
            fence = leader_fence(ctx.keys, term=self.term, election_key=self.candidacy.key,
                                 owner=self.lock.is_owner(), lease=session.lease,
                                 instance_id=self.state.instance_id, guard=self._guard)
            self.fence = fence
            self.state.margin = ctx.margin
            self.state.lease_deadline = lambda: 0.0 if session.done.is_set() else session.deadline
            self.timer = DeadlineTimer(session, ctx.margin, self._deadline_passed, self.candidacy.generation)
            ctx.core.transition(holds_lock=True)
            self._read_controls()  # afresh: never a copy from before this term
            result = self._pass(fence, None)
            self.first_pass_done.set()
            self.watches.start(result.revision + 1)
            last_full = time.monotonic()
            while True:
                ctx.beat()
                catch_up = self._rewatch or self._catch_up
                timeout = 0.0 if catch_up else max(0.0, min(last_full + ctx.interval() - time.monotonic(), TICK))
                changed = self._wait(timeout)
                if changed and self._mass(changed):
                    # a mass change (a DR link outage): one full pass costs less than reading
                    # every changed id on its own, and it sees every one of them
                    log.info("mass_change", changed=len(changed), known=self._known,
                             note="reconciled by a full pass")
                    self._catch_up = True
                elif changed:  # while paused: a dry run (plans, so /status stays true; writes nothing)
                    self._pass(fence, changed)
                if self._rewatch or self._catch_up or time.monotonic() >= last_full + ctx.interval():
                    # taken before the pass: a resume or a watch loss during it asks for another
                    rewatch, self._rewatch, self._catch_up = self._rewatch, False, False
                    result = self._full(fence)
                    last_full = time.monotonic()
                    if rewatch:
                        self.watches.stop()
                        self.watches.start(result.revision + 1)
        except StepDown as why:
            return str(why.args[0])
        except Exception as exc:  # noqa: BLE001 - a bug ends the term, never the process
            log.error("term_failed", error=f"{type(exc).__name__}: {quote(str(exc))}", exc_info=True,
                      note="a bug escaped the pass: the term ends and the instance campaigns again")
            return f"a bug ended the term: {type(exc).__name__}"
        finally:
            self.state.lease_deadline = None  # leading() is false from here; the daemon's transition follows
            if self.timer is not None:
                self.timer.close()
            # release first, tidy up after: the next leader waits on these keys, not on our threads
            self.lock.release(hand_over=ctx.stop.is_set())
            self.watches.stop()

    def _deadline_passed(self, event: Event) -> None:
        """The timer's thread: STATUS follows at once (/leader and is_leader compute it), the term
        ends when the loop takes the event."""
        self.ctx.events.put(event)
        self.ctx.core.refresh_status()

    def _guard(self) -> None:
        """Checked before every write: stop unless the lease is certainly alive for one more request."""
        if self.ctx.stop.is_set():
            raise StepDown("stopping")
        if not self.state.leading():
            remaining = self.candidacy.session.remaining()
            raise StepDown(f"lease deadline too close to write ({remaining:.2f} s left)")

    # -- passes -------------------------------------------------------------------------------
    def _full(self, fence: Fence) -> PassResult:
        """A full pass with changes interleaved; then the ids changed meanwhile, once more."""
        self._interleaved.clear()
        self._in_full = True
        try:
            result = self._pass(fence, None)
        finally:
            self._in_full = False
        # and the ids whose write was skipped because an input or the record moved since the read
        again = self._interleaved | self._pending | set(result.conflicted_ids)
        self._interleaved, self._pending = set(), set()
        if again and self._mass(again) and not result.dry_run:
            self._catch_up = True  # too many to read one by one: the next full pass, at once
        elif again:
            self._pass(fence, again, replaces=self._counted(result, again))
        return result

    def _counted(self, full: PassResult, ids: set[str]) -> collections.Counter[str] | None:
        """What the full pass counted in ``clusters{state}`` for ``ids``: the rules at its revision (a
        write skipped as a conflict counted the stored state). None when there is nothing to replace
        (a dry or unfinished pass) or that revision cannot be read: the gauges then only follow the
        changes of the pass after it, until the next full pass."""
        if full.dry_run or not self.book.counts_full_pass(full):
            return None
        try:
            then = incremental_pass(self.ctx.client, self.ctx.keys, None, ids, dry_run=True, revision=full.revision,
                                    progress=self.ctx.beat)
        except EtcdError as err:
            log.info("gauges_follow_changes", error=str(err), note="the full pass's revision is unreadable")
            return None
        counted = collections.Counter(then.states)
        conflicted = set(full.conflicted_ids)
        for line in then.changes:  # "action ID old -> new"
            _action, cid, old, _arrow, new = line.split(" ")
            if cid in conflicted:  # its write was skipped: the full pass counted the stored state
                if new != "none":
                    counted[new] -= 1
                if old != "none":
                    counted[old] += 1
        return counted

    def _pass(self, fence: Fence | None, ids: set[str] | None,
              replaces: collections.Counter[str] | None = None) -> PassResult:
        mode = "full" if ids is None else "incremental"
        ctx = self.ctx
        retry = ctx.retry.copy(sleep=self._sleep)
        while True:
            self._guard()
            started = time.monotonic()
            dry = self.state.paused  # maintenance: plan (so /status and the gauges stay true), write nothing
            try:
                result = (full_pass(ctx.client, ctx.keys, fence, dry_run=dry, progress=self._progress,
                                    memo=self.memo)
                          if ids is None else
                          incremental_pass(ctx.client, ctx.keys, fence, ids, dry_run=dry, progress=self._progress))
            except PausedError as err:
                # stopped by the pause key (on purpose): not a completed pass, not a fence failure
                self.book.ended_early(mode, "stopped", started, getattr(err, "partial", None),
                                      getattr(err, "refused", 0))
                ctx.core.transition(paused=True, why=f"pause key found at revision {err.revision}")
                if ids is not None:
                    self._pending |= ids
                return PassResult(mode=mode, dry_run=True, revision=err.revision, writes=err.written)
            except FenceLostError as err:
                self.book.ended_early(mode, "fenced", started, getattr(err, "partial", None),
                                      getattr(err, "refused", 0))
                log.warning("fenced_write", mode=mode, error=str(err), refused=getattr(err, "refused", 0))
                down = StepDown(f"fence lost: {err}")
                down.result = "fenced"  # a full pass around this (incremental) one ends fenced too
                raise down from err
            except StepDown as err:
                # the lease guard, the deadline, a stop, a switchover: stopped on purpose, not a fence
                # failure (unless a nested pass's fence failed); landed writes still count
                self.book.ended_early(mode, err.result, started, getattr(err, "partial", None))
                raise
            except PermissionDeniedError as err:
                # retrying cannot fix a role that lacks the permission: step down, said once
                self.book.ended_early(mode, "error", started, getattr(err, "partial", None))
                ctx.denied(err)
                raise StepDown("etcd refused a permission") from err
            except EtcdError as err:
                self.book.ended_early(mode, "error", started, getattr(err, "partial", None))
                log.warning("reconcile_failed", mode=mode, error=str(err), kind=err.kind, attempt=retry.attempts + 1)
                retry.pause(err)
                self._read_controls_quietly()  # after a failure (a reconnect, maybe): controls afresh
                continue
            except Exception as err:
                # a bug: what landed still counts; the term ends (``run``), the process goes on
                self.book.ended_early(mode, "error", started, getattr(err, "partial", None))
                raise
            self.book.finished(result, ids, replaces)
            if ids is None and not result.dry_run:
                self._covered = max(self._covered, result.revision)
            if ids is None:
                self._known = result.seen
            if ids is not None and result.conflicted_ids:
                self._pending |= set(result.conflicted_ids)  # moved under us: look again, level-triggered
            return result

    def _progress(self) -> None:
        """A page read or a transaction answered: beat, and reconcile changes that came meanwhile."""
        self.ctx.beat()
        if self._nested:
            return  # never an incremental pass from an incremental pass's callback
        changed = self._drain()
        if not (self._in_full and changed) or self._mass(changed | self._pending):
            self._pending |= changed
            return
        self._nested = True
        try:
            self._pass(self.fence, changed)
            self._interleaved |= changed
        finally:
            self._nested = False

    def _mass(self, changed: set[str]) -> bool:
        """Whether ``changed`` is a mass change: a full pass reconciles it for less than reading
        each id: see ``MASS_CHANGE_RATIO``."""
        return len(changed) >= MASS_CHANGE_MIN and len(changed) * MASS_CHANGE_RATIO >= self._known

    def _drain(self) -> set[str]:
        changed: set[str] = set()
        while True:
            try:
                event = self.ctx.events.get_nowait()
            except queue.Empty:
                return changed
            self._handle(event, changed)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ctx.beat()
            if self.ctx.stop.wait(min(TICK, max(0.0, end - time.monotonic()))):
                raise StepDown("stopping")
            self._guard()

    # -- events -------------------------------------------------------------------------------
    def _wait(self, timeout: float) -> set[str]:
        """Gather changed ids (debounced) or act on an event; returns the ids to reconcile."""
        changed, self._pending = self._pending, set()
        deadline = time.monotonic() + DEBOUNCE if changed else None
        while True:
            left = timeout if deadline is None else deadline - time.monotonic()
            try:
                event = self.ctx.events.get(timeout=max(0.0, left))
            except queue.Empty:
                return changed
            self._handle(event, changed)
            if changed and deadline is None:
                deadline = time.monotonic() + DEBOUNCE

    def _handle(self, event: Event, changed: set[str]) -> None:
        gen = self.candidacy.generation
        match event:
            case Stop():
                raise StepDown("stopping")
            case ControlsChanged(controls):
                self._apply_controls(controls)
            case Reload():
                if self.ctx.reload():
                    raise StepDown("config reload: reconnecting")
            case Wedge(release):
                release.wait()
            case InputsChanged(g, ids, revision) if g == gen:
                if not revision or revision > self._covered:
                    changed.update(ids)  # else: the last full pass read these changes already
            case LeaseLost(g, reason) if g == gen:
                raise StepDown(f"lease lost: {reason}")
            case LeaseDeadline(g) if g == gen:
                raise StepDown(f"lease no longer certainly alive ({self.candidacy.session.remaining():.2f} s "
                               f"left, margin {self.ctx.margin:.2f} s)")
            case KeyDeleted(g) if g == gen:
                raise StepDown("our election key was deleted")
            case WatchFailed(g, err) if g == gen:
                log.warning("input_watch_lost", error=str(err))
                self._rewatch = True  # the history has a hole: read everything again
            case LeaderSeen(g, leader) if g == gen:
                # bookkeeping only: the fence and the lease clock, not this, decide whether we lead
                self.ctx.on_leader(leader)
            case Queued() | Elected() | InputsChanged() | LeaseLost() | LeaseDeadline() | KeyDeleted() \
                    | WatchFailed() | LeaderSeen():
                pass  # of an earlier generation

    def _read_controls(self) -> None:
        retry = self.ctx.retry.copy(sleep=self._sleep)
        while True:
            self._guard()
            try:
                self._apply_controls(read_controls(self.ctx.client, self.ctx.keys))
                return
            except PermissionDeniedError as err:
                self.ctx.denied(err)
                raise StepDown("etcd refused a permission") from err
            except EtcdError as err:
                retry.pause(err)

    def _read_controls_quietly(self) -> None:
        try:
            self._apply_controls(read_controls(self.ctx.client, self.ctx.keys))
        except EtcdError:
            pass  # the next attempt of the pass will say what is wrong

    def _apply_controls(self, controls: Controls) -> None:
        """Pause (dry-run passes) and switchover (hand over to the next in line, or to ``to``)."""
        if controls.paused != self.state.paused:
            if not controls.paused:
                self._catch_up = True  # a full pass now, whatever runs (the paused passes wrote nothing)
            self.ctx.core.transition(paused=controls.paused)
        sw = controls.switchover
        if sw is None:
            return
        me = self.state.instance_id
        if sw.to == me or (sw.to is None and sw.from_term != self.term):
            clear_switchover(self.ctx.client, self.ctx.keys)  # done: we are what was asked for
            log.info("switchover_done", to=sw.to, from_term=sw.from_term)
        elif sw.to is not None or sw.from_term == self.term:
            raise StepDown(f"switchover requested (to {sw.to or 'the next in line'})")
