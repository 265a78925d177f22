"""Waiting for the keys ahead of ours to go: Go's ``waitDelete``/``waitDeletes`` (key.go).

Both the election and the mutex queue candidates by create revision under one prefix; a candidate
owns the prefix once every key created before its own is deleted. Like Go, we watch only the
*newest* older key (``last_create`` with ``max_create_revision = my_rev - 1``) for its DELETE,
then look again: no thundering herd, each waiter wakes once per key ahead of it.

Where Go's version fails, this one keeps going:

* Go's watch channel closes on a lost connection and the caller gets "lost watcher waiting for
  delete"; our ``Watch`` resumes from the next revision, so a blip costs nothing.
* If the watched revision was compacted, Go returns the compaction error; here the wait simply
  re-reads (``waitDeletes`` looks again), which is exactly what the missing history would say.
* The watch starts one revision after the read that found the key (Go: at it), which is the
  same history but spares a handoff etcd's up-to-100 ms delay for "unsynced" watchers.
* A failed read while waiting (etcd restarting) is retried until the stop condition fires: the
  session's lease, not one RPC, decides whether the waiter is still in the queue.

Every wait is bounded by a ``WaitBound``: a deadline, a cancel event and the session's ``done``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from worker.concurrency.errors import SessionExpiredError, WaitCancelledError, WaitTimeoutError
from worker.etcd.client import EtcdClient
from worker.etcd.errors import CompactedError, EtcdTimeoutError, EtcdUnavailableError
from worker.etcd.retry import Retry
from worker.etcd.txn import LAST_CREATE
from worker.etcd.types import Header, RangeResponse

if TYPE_CHECKING:
    from worker.concurrency.session import Session

#: how often a blocked wait looks at its cancel event and the session (events wake it at once)
POLL = 0.05
#: between reads while etcd is unreachable
RETRY = Retry(initial=POLL, maximum=1.0, retry_on=(EtcdUnavailableError, EtcdTimeoutError))


class WaitBound:
    """Why a wait must end early: ``timeout`` seconds passed, ``cancel`` set, or the session done."""

    def __init__(self, timeout: float | None = None, cancel: threading.Event | None = None,
                 session: Session | None = None, expired_message: str = "mutex: session is expired") -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cancel = cancel
        self.session = session
        self.expired_message = expired_message

    def check(self) -> None:
        """Raise the reason to stop, if any (cancel first: it is the caller's explicit wish)."""
        if self.cancel is not None and self.cancel.is_set():
            raise WaitCancelledError("wait cancelled")
        if self.session is not None and self.session.done.is_set():
            raise SessionExpiredError(self.expired_message)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise WaitTimeoutError("wait timed out")

    def slice(self) -> float:
        """How long one blocking call may block before the conditions are looked at again."""
        if self.deadline is None:
            return POLL
        return max(0.0, min(POLL, self.deadline - time.monotonic()))

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (a retry backoff), cut short by the deadline or ``cancel``."""
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - time.monotonic()))
        if self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            time.sleep(seconds)

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def wait_delete(client: EtcdClient, key: bytes, rev: int, stop: WaitBound) -> None:
    """Return once ``key`` is deleted at or after revision ``rev`` (or its history was compacted away:
    the caller then re-reads, which tells the same thing without the history)."""
    with client.watch(key, start_revision=rev) as watch:
        while True:
            stop.check()
            try:
                response = watch.get(timeout=stop.slice())
            except CompactedError:
                return
            if response is not None and any(e.kind == "delete" for e in response.events):
                return


def wait_deletes(client: EtcdClient, prefix: str, max_create_rev: int, stop: WaitBound) -> Header:
    """Go's ``waitDeletes``: wait until no key under ``prefix`` has create revision <= ``max_create_rev``.

    Returns the header of the last read (which found no such key).
    """
    def read() -> RangeResponse:
        stop.check()  # its errors (timeout, cancel, session expired) end the wait: not retried
        return client.range(prefix, max_create_revision=max_create_rev, **LAST_CREATE)

    # etcd restarting or unreachable: the read is retried until the bound says stop (the
    # session's lease decides, not one read)
    retry = RETRY.copy(sleep=stop.sleep)
    while True:
        resp = retry(read)
        if not resp.kvs:
            return Header(resp.revision)
        # Go watches from the read's revision; the key existed at that revision, so its DELETE
        # is after it and rev + 1 misses nothing. It matters: etcd treats a watch starting at or
        # below its current revision as "unsynced" and delivers its events only on the next pass
        # of a 100 ms sync loop, one starting above it as synced (events at once).
        wait_delete(client, resp.kvs[0].key, resp.revision + 1, stop)
