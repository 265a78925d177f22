"""The reconcile lock of a term: a Mutex under the session, taken before the first write and
released when the term ends (on a graceful exit together with our election key)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from worker.concurrency import Mutex, Session
from worker.concurrency.errors import SessionExpiredError, WaitCancelledError
from worker.concurrency.line import candidates
from worker.etcd import Cmp, Op
from worker.etcd.errors import EtcdError


log = structlog.get_logger("worker.daemon")

#: while waiting for the reconcile lock, who holds it is re-read (and logged) this often
LOCK_WAIT_REPORT = 10.0


@dataclass(frozen=True)
class LockWait:
    """LockWait: this term waits for the reconcile lock, held by ``holder`` (a key), since ``since``."""

    holder: str | None
    since: float


class ReconcileLock:
    """ReconcileLock is the Mutex on ``prefix`` of a term ``term`` led with ``election_key``."""

    def __init__(self, session: Session, prefix: str, election_key: str, term: int) -> None:
        self.mutex = Mutex(session, prefix)
        self.prefix = prefix
        self.client = session.client
        self.election_key = election_key
        self.term = term

    def take(self, cancel: threading.Event, *, beat: Callable[[], None] | None = None,
             waiting: Callable[[LockWait | None], None] | None = None, tick: float = 0.5) -> str | None:
        """take waits for the lock; returns None once held, else why the term must end.

        The Mutex's own wait (Go-faithful: one place in line, kept until the lock is ours or the
        wait is cancelled) runs on a helper thread; the caller's thread beats every ``tick`` while
        it waits (so the watchdog and ``/healthz`` see a live loop), and ``waiting`` is told who
        holds the lock (re-read every ``LOCK_WAIT_REPORT`` seconds, logged then too), and None
        once the wait ends. ``cancel`` ends the wait (the Mutex deletes our key)."""
        outcome: list[BaseException | None] = []
        stop = threading.Event()   # set when the term must end: the Mutex's cancel

        def run() -> None:
            try:
                self.mutex.lock(cancel=stop)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append(exc)

        thread = threading.Thread(target=run, name=f"mutex-wait-{self.term}", daemon=True)
        started = time.monotonic()
        thread.start()
        reported = -LOCK_WAIT_REPORT
        try:
            while thread.is_alive():
                if beat is not None:
                    beat()
                if cancel.is_set():
                    stop.set()
                waited = time.monotonic() - started
                if waiting is not None and waited >= reported + LOCK_WAIT_REPORT and waited >= tick:
                    reported = waited
                    wait = LockWait(self.holder(), started)
                    if waited >= LOCK_WAIT_REPORT:
                        log.warning("reconcile_lock_wait", holder=wait.holder, waited=round(waited, 1),
                                    note="another holder has the reconcile lock: "
                                         "this term writes nothing until it is released")
                    waiting(wait)
                thread.join(tick)
        finally:
            stop.set()
            thread.join()
            if waiting is not None:
                waiting(None)
        err = outcome[0] if outcome else None
        if err is None:
            return None
        if isinstance(err, WaitCancelledError):
            return "stopping"
        if isinstance(err, SessionExpiredError):
            return "lease lost while waiting for the reconcile lock"
        if isinstance(err, EtcdError):
            return f"could not take the reconcile lock: {err}"
        raise err

    def holder(self) -> str | None:
        """The key holding the lock now (the lowest under the prefix), or None (unknown, or free)."""
        try:
            _, line = candidates(self.client, self.prefix)
        except EtcdError:
            return None
        return line[0].key if line else None

    def is_owner(self) -> Cmp:
        """The compare that holds while the lock is ours (part of the fence)."""
        return self.mutex.is_owner()

    def release(self, hand_over: bool) -> None:
        """release deletes our Mutex key. ``hand_over`` (a graceful exit) deletes our election key
        in the same transaction, so the next candidate's wait ends after a single round trip."""
        key = self.mutex.key
        if hand_over and self.mutex.held:
            try:
                (self.client.txn().if_(Cmp.create(self.election_key, "=", self.term))
                 .then(Op.delete(key), Op.delete(self.election_key)).else_(Op.delete(key)).commit())
                return
            except EtcdError:
                pass  # unlock below; the lease revoke that follows removes the keys anyway
        try:
            self.mutex.unlock()
        except Exception:  # noqa: BLE001 - released already, or the lease removes the key
            pass
