"""Go's ``concurrency.Election`` (election.go), key for key and transaction for transaction.

A candidate's key is ``prefix + "/" + "%x" % lease``, put under its session's lease; the leader
is the key with the lowest create revision. ``etcdctl elect NAME`` uses the same keys, so a Python
candidate and an etcdctl candidate take turns in one election. Where we differ from Go:

* ``campaign`` takes a ``timeout`` and a ``cancel`` event instead of a context; when either ends
  the wait the candidate *resigns* (Go only does so on a cancelled context) so no key is left
  queued to win later unattended; it also ends with ``SessionExpiredError`` once the session is
  done, where Go would wait on for a key that no longer exists.
* waiting and observing survive lost connections and compaction (see ``key.py``/``Observer``):
  Go's observe channel just closes and ``etcdctl elect -l`` exits with "observer lost".
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from worker.concurrency.errors import (
    NoLeaderError,
    NotLeaderError,
    SessionExpiredError,
    WaitTimeoutError,
)
from worker.concurrency.wait import WaitBound, wait_deletes
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError, LeaseNotFoundError
from worker.etcd.txn import FIRST_CREATE, Cmp, Op
from worker.etcd.types import KV, Header

if TYPE_CHECKING:
    from worker.concurrency.observe import Observer
    from worker.concurrency.session import Session


class Election:
    """One candidate's view of the election named ``prefix``."""

    def __init__(self, session: Session, prefix: str) -> None:
        self.session = session
        self.key_prefix = prefix + "/"
        self._leader_key = ""
        self._leader_rev = 0
        self._leader_session: Session | None = None
        self._header: Header | None = None

    @classmethod
    def resume(cls, session: Session, prefix: str, key: str | bytes, rev: int) -> Election:
        """Go's ``ResumeElection``: take up leadership known by its key and create revision.

        Go parity, on purpose: the prefix is used *as given* (Go does not append "/" here), so
        pass the same string Go's ``Key()`` began with, e.g. ``"name/"``.
        """
        election = cls(session, prefix)
        election.key_prefix = prefix
        election._leader_key = key.decode() if isinstance(key, bytes) else key
        election._leader_rev = rev
        election._leader_session = session
        return election

    @property
    def key(self) -> str:
        """The leader key this candidate holds or waits with ("" when not campaigning)."""
        return self._leader_key

    @property
    def rev(self) -> int:
        """The create revision of that key."""
        return self._leader_rev

    @property
    def header(self) -> Header | None:
        """The response header of the last election call that succeeded."""
        return self._header

    def _client(self) -> EtcdClient:
        return self.session.client

    def campaign(self, value: str | bytes, timeout: float | None = None,
                 cancel: threading.Event | None = None, on_queued: Callable[[], None] | None = None) -> None:
        """Put our key (or find it, re-campaigning on the same lease) and wait to lead.

        ``on_queued`` (not in Go) is called once our key is in etcd, before waiting: the caller
        learns that it may write there (a daemon blocked by a permission error recovers then).
        Raises ``WaitTimeoutError``/``WaitCancelledError`` (``TimeoutError``s) after resigning,
        ``SessionExpiredError`` when the session ends while waiting.
        """
        value_b = kv.to_bytes(value)
        session = self.session
        key = f"{self.key_prefix}{session.lease:x}"
        try:
            resp = self._client().txn().if_(Cmp.absent(key)).then(
                Op.put(key, value_b, lease=session.lease)).else_(Op.get(key)).commit()
        except LeaseNotFoundError as err:  # Go returns the raw gRPC error; this is what it means
            raise SessionExpiredError("election: session is expired") from err
        self._leader_key, self._leader_rev, self._leader_session = key, resp.revision, session
        if not resp.succeeded:
            existing = resp.range(0).kvs[0]
            self._leader_rev = existing.create_revision
            if existing.value != value_b:
                try:
                    self.proclaim(value_b)
                except BaseException:
                    self._resign_quietly()
                    raise
        if on_queued is not None:
            on_queued()
        stop = WaitBound(timeout, cancel, session, expired_message="election: session is expired")
        try:
            wait_deletes(self._client(), self.key_prefix, self._leader_rev - 1, stop)
        except (WaitTimeoutError, SessionExpiredError):
            # do not leave a key queued to win unattended (after a keepalive failure the lease
            # may outlive our deadline by a little: a key that would still win must go)
            self._resign_quietly()
            raise
        except BaseException:
            self._leader_session = None  # Go: keep the key (the session still holds it)
            raise
        self._header = Header(resp.revision)

    def proclaim(self, value: str | bytes) -> None:
        """Change the leader's value without a new election (``NotLeaderError`` if not leader)."""
        if self._leader_session is None:
            raise NotLeaderError()
        resp = self._client().txn().if_(Cmp.create(self._leader_key, "=", self._leader_rev)).then(
            Op.put(self._leader_key, value, lease=self._leader_session.lease)).commit()
        if not resp.succeeded:
            self._leader_key = ""
            raise NotLeaderError()
        self._header = Header(resp.revision)

    def resign(self) -> None:
        """Give up leadership (or a queued candidacy); a no-op when not campaigning."""
        if self._leader_session is None:
            return
        try:
            resp = self._client().txn().if_(Cmp.create(self._leader_key, "=", self._leader_rev)).then(
                Op.delete(self._leader_key)).commit()
            self._header = Header(resp.revision)
        finally:
            self._leader_key = ""
            self._leader_session = None

    def _resign_quietly(self) -> None:
        try:
            self.resign()
        except EtcdError:
            pass  # the lease will remove the key; the caller's error is the one to report

    def leader(self) -> KV:
        """The current leader's ``KV`` (``NoLeaderError`` when nobody campaigns)."""
        resp = self._client().range(self.key_prefix, **FIRST_CREATE)
        if not resp.kvs:
            raise NoLeaderError()
        return resp.kvs[0]

    def observe(self, settle: float = 0.0) -> Observer:
        """An iterator of leader ``KeyValue``s: the current one, then each change (Go's ``Observe``).
        ``settle``: see ``Observer``."""
        from worker.concurrency.observe import Observer
        return Observer(self._client(), self.key_prefix, settle=settle)

    def __repr__(self) -> str:
        return f"<Election {self.key_prefix!r} key={self._leader_key!r} rev={self._leader_rev}>"
