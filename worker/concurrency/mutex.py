"""Go's ``concurrency.Mutex`` (mutex.go): a fair, lease-backed lock with Go's keys and transactions.

Waiters queue by create revision under ``prefix + "/"``, each with key ``"%x" % lease``; the
oldest key holds the lock. ``etcdctl lock NAME`` uses the same keys, so Python and etcdctl
lockers exclude each other. Differences from Go, each closing a pitfall:

* ``lock`` takes ``timeout``/``cancel`` instead of a context; when either ends the wait the key
  is deleted (Go's ``Unlock`` on error) and a ``TimeoutError`` subclass is raised.
* if the session is done while waiting, ``lock`` deletes its key (best effort) and raises
  ``SessionExpiredError`` right away. After the wait, like Go, it re-reads its own key: a key
  that vanished meanwhile (lease expired) means ``SessionExpiredError``, never ownership: the
  prefix being empty must not be mistaken for "the lock is mine".
* the wait survives reconnects and compaction (``key.py``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from worker.concurrency.errors import LockedError, LockReleasedError, SessionExpiredError
from worker.concurrency.wait import WaitBound, wait_deletes
from worker.etcd.errors import EtcdError, LeaseNotFoundError
from worker.etcd.txn import FIRST_CREATE, Cmp, Op
from worker.etcd.types import Header, TxnResponse

if TYPE_CHECKING:
    from worker.concurrency.session import Session

_RELEASED = "\x00"  # Go marks a released mutex's key with "\x00"


class Mutex:
    """A distributed mutex on ``prefix`` for one session; also a context manager (lock/unlock)."""

    def __init__(self, session: Session, prefix: str) -> None:
        self.session = session
        self.prefix = prefix + "/"
        self._my_key = ""
        self._my_rev = -1
        self._header: Header | None = None

    @property
    def key(self) -> str:
        """Our key under the prefix ("" before locking, "\\x00" once released, like Go)."""
        return self._my_key

    @property
    def held(self) -> bool:
        """Whether this mutex holds (or queues for) the lock as far as it knows: it has a key that
        is not Go's released sentinel. Callers ask this instead of testing ``key`` for "\\x00"."""
        return bool(self._my_key) and self._my_key != _RELEASED

    @property
    def header(self) -> Header | None:
        """The header of the response that made us the owner (its revision: ``ETCD_LOCK_REV``)."""
        return self._header

    def _try_acquire(self) -> TxnResponse:
        """Go's ``tryAcquire``: queue our key (or find it) and read the owner, in one transaction."""
        session = self.session
        self._my_key = f"{self.prefix}{session.lease:x}"
        get_owner = Op.get(self.prefix, **FIRST_CREATE)
        try:
            resp = session.client.txn().if_(Cmp.absent(self._my_key)).then(
                Op.put(self._my_key, "", lease=session.lease), get_owner).else_(
                Op.get(self._my_key), get_owner).commit()
        except LeaseNotFoundError as err:  # Go returns the raw gRPC error; this is what it means
            raise SessionExpiredError() from err
        self._my_rev = resp.revision
        if not resp.succeeded:
            self._my_rev = resp.range(0).kvs[0].create_revision
        return resp

    def _owns(self, resp: TxnResponse) -> bool:
        owner = resp.range(1).kvs
        return not owner or owner[0].create_revision == self._my_rev

    def try_lock(self) -> None:
        """Take the lock if free, else delete our key again and raise ``LockedError``."""
        resp = self._try_acquire()
        if self._owns(resp):
            self._header = Header(resp.revision)
            return
        self.session.client.delete(self._my_key)
        self._my_key, self._my_rev = _RELEASED, -1
        raise LockedError()

    def lock(self, timeout: float | None = None, cancel: threading.Event | None = None) -> None:
        """Wait for the lock, at most ``timeout`` seconds, until ``cancel`` is set or the session ends."""
        resp = self._try_acquire()
        if self._owns(resp):
            self._header = Header(resp.revision)
            return
        client = self.session.client
        try:
            wait_deletes(client, self.prefix, self._my_rev - 1, WaitBound(timeout, cancel, self.session))
            got = client.range(self._my_key)
        except BaseException:
            self._unlock_quietly()  # release our place in the queue
            raise
        if not got.kvs:  # our key is gone: the lease expired while we waited
            self._my_key, self._my_rev = _RELEASED, -1
            raise SessionExpiredError()
        self._header = Header(got.revision)

    def unlock(self) -> None:
        """Delete our key (``LockReleasedError`` when not locked, or already unlocked)."""
        if not self.held or self._my_rev <= 0:
            raise LockReleasedError()
        if not self._my_key.startswith(self.prefix):
            raise ValueError(f"invalid key {self._my_key!r}, it should have prefix {self.prefix!r}")
        self.session.client.delete(self._my_key)
        self._my_key, self._my_rev = _RELEASED, -1

    def _unlock_quietly(self) -> None:
        try:
            self.unlock()
        except (EtcdError, LockReleasedError):
            pass  # the lease removes the key anyway; the caller's error is the one to report

    def is_owner(self) -> Cmp:
        """A compare, true while we hold the lock: put it in a transaction to write only as owner."""
        return Cmp.create(self._my_key, "=", self._my_rev)

    def __enter__(self) -> Mutex:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    def __repr__(self) -> str:
        return f"<Mutex {self.prefix!r} key={self._my_key!r} rev={self._my_rev}>"
