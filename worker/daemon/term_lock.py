"""The reconcile lock of a term: a Mutex under the session, taken before the first write and
released when the term ends (on a graceful exit together with our election key)."""

from __future__ import annotations

import threading
from typing import Any

from worker.concurrency import Mutex, Session
from worker.concurrency.errors import SessionExpiredError, WaitCancelledError
from worker.etcd import kv
from worker.etcd.errors import EtcdError


class ReconcileLock:
    """ReconcileLock is the Mutex on ``prefix`` of a term ``term`` led with ``election_key``."""

    def __init__(self, session: Session, prefix: str, election_key: str, term: int) -> None:
        self.mutex = Mutex(session, prefix)
        self.client = session.client
        self.election_key = election_key
        self.term = term

    def take(self, cancel: threading.Event) -> str | None:
        """take waits for the lock; returns None once held, else why the term must end."""
        try:
            self.mutex.lock(cancel=cancel)
        except WaitCancelledError:
            return "stopping"
        except SessionExpiredError:
            return "lease lost while waiting for the reconcile lock"
        except EtcdError as err:
            return f"could not take the reconcile lock: {err}"
        return None

    def is_owner(self) -> Any:
        """The compare that holds while the lock is ours (part of the fence)."""
        return self.mutex.is_owner()

    def release(self, hand_over: bool) -> None:
        """release deletes our Mutex key. ``hand_over`` (a graceful exit) deletes our election key
        in the same transaction, so the next candidate's wait ends after a single round trip."""
        key = self.mutex.key
        if hand_over and key and key != "\x00":
            try:
                self.client.txn(kv.txn_request([kv.cmp_create(self.election_key, "=", self.term)],
                                               [kv.op_delete(key), kv.op_delete(self.election_key)],
                                               [kv.op_delete(key)]))
                return
            except EtcdError:
                pass  # unlock below; the lease revoke that follows removes the keys anyway
        try:
            self.mutex.unlock()
        except Exception:  # noqa: BLE001 - released already, or the lease removes the key
            pass
