"""Go's ``Election.Observe`` as an iterator: the leader now, then every change (election.go).

The logic is Go's: read the first-created key under the prefix; if there is none, watch the
prefix from that read's revision for the first PUT; hand out the leader; then watch the leader's
key from the next revision, handing out each PUT (a proclaim) until its DELETE, and start over.

Go's goroutine gives up on the first watch error, so a compaction or a lost connection closes the
channel ("elect: observer lost" in etcdctl). Here the watches resume after disconnects, and a
compaction (or a failed read) only sends the observer back to "read the first-created key": the
current leader is re-read and observation goes on. A leader handed out twice is possible then
(the same ``KV`` again); a change is never skipped silently.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Iterator

from worker.etcd.client import EtcdClient
from worker.etcd.errors import CompactedError, EtcdClosedError, EtcdTimeoutError, EtcdUnavailableError
from worker.etcd.retry import Retry
from worker.etcd.txn import FIRST_CREATE
from worker.etcd.types import KV, Header
from worker.etcd.watch import Watch

#: between reads while etcd is unreachable
RETRY = Retry(initial=0.05, maximum=1.0)


class Observer:
    """Iterate for leader ``KV``s, or ``get(timeout)``; ``close()`` ends it from any thread."""

    def __init__(self, client: EtcdClient, key_prefix: str, settle: float = 0.0) -> None:
        self._client = client
        #: seconds to wait after the leader's key is deleted before reading the next leader (not
        #: in Go): lets a candidate next in line, often in the same process, win first
        self._settle = settle
        self._settle_until = 0.0
        self._prefix = key_prefix
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._watch: Watch | None = None
        self._phase = "read"  # read -> first_put | leader -> read ...
        self._pending: collections.deque[tuple[Header, KV]] = collections.deque()
        self._retry = RETRY.copy(stop=self._closed)
        #: the header that came with the last ``KV`` handed out
        self.header: Header | None = None

    # -- consumer side ------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> KV | None:
        """The next leader ``KV``, or None after ``timeout`` seconds; ``EtcdClosedError`` once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed.is_set():
                raise EtcdClosedError("observe closed")
            if self._pending:
                self.header, item = self._pending.popleft()
                return item
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._step(left)

    def __iter__(self) -> Iterator[KV | None]:
        return self

    def __next__(self) -> KV | None:
        try:
            return self.get()
        except EtcdClosedError:
            raise StopIteration from None

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._watch is not None:
                self._watch.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the state machine --------------------------------------------------------------------
    def _open(self, key: bytes | str, start_revision: int, prefix: bool = False) -> None:
        self._close_watch()
        with self._lock:
            if self._closed.is_set():
                return
            self._watch = self._client.watch(key, prefix=prefix, start_revision=start_revision)

    def _close_watch(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def _step(self, left: float | None) -> None:
        """Advance once: one read, or one wait of at most ``left`` seconds on the current watch."""
        if self._phase == "read":
            wait = self._settle_until - time.monotonic()
            if wait > 0:
                self._closed.wait(wait if left is None else min(wait, left))
                return
            try:
                resp = self._client.range(self._prefix, **FIRST_CREATE)
            except (EtcdUnavailableError, EtcdTimeoutError) as err:
                self._retry.pause(err, limit=left)
                return
            self._retry.reset()
            if resp.kvs:
                leader = resp.kvs[0]
                self._pending.append((Header(resp.revision), leader))
                self._open(leader.key, resp.revision + 1)
                self._phase = "leader"
            else:
                # wait for the first key put on the prefix; nothing was there at the read's
                # revision, so start after it (Go: at it), which etcd serves as a synced watch
                self._open(self._prefix, resp.revision + 1, prefix=True)
                self._phase = "first_put"
            return
        watch = self._watch
        if watch is None:  # closed meanwhile
            return
        try:
            wr = watch.get(timeout=left)
        except CompactedError:
            self._close_watch()
            self._phase = "read"
            return
        except EtcdClosedError:
            if not self._closed.is_set():
                self._phase = "read"
            return
        if wr is None:
            return
        if self._phase == "first_put":
            for event in wr.events:
                if event.kind == "put":  # only puts: a delete would make us spin
                    leader = event.kv
                    # a batch may hold several puts: the header is this put's revision
                    self._pending.append((Header(leader.mod_revision), leader))
                    self._open(leader.key, leader.mod_revision + 1)
                    self._phase = "leader"
                    return
            return
        for event in wr.events:  # phase "leader"
            if event.kind == "delete":
                self._close_watch()
                self._phase = "read"
                self._settle_until = time.monotonic() + self._settle
                return
            self._pending.append((Header(wr.revision), event.kv))
