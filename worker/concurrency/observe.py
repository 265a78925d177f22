"""Go's ``Election.Observe`` as an iterator: the leader now, then every change (election.go).

The logic is Go's: read the first-created key under the prefix; if there is none, watch the
prefix from that read's revision for the first PUT; hand out the leader; then watch the leader's
key from the next revision, handing out each PUT (a proclaim) until its DELETE, and start over.

Go's goroutine gives up on the first watch error, so a compaction or a lost connection closes the
channel ("elect: observer lost" in etcdctl). Here the watches resume after disconnects, and a
compaction (or a failed read) only sends the observer back to "read the first-created key": the
current leader is re-read and observation goes on. A leader handed out twice is possible then
(the same ``KeyValue`` again); a change is never skipped silently.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator


from worker.etcd import kv
from worker.etcd.errors import CompactedError, EtcdClosedError, EtcdTimeoutError, EtcdUnavailableError
from worker.etcd.watch import DeleteEvent, PutEvent, Watch
from worker.retry import RetryPolicy

if TYPE_CHECKING:
    from worker.etcd.client import EtcdClient

#: between reads while etcd is unreachable
RETRY = RetryPolicy(initial=0.05, maximum=1.0)


class Observer:
    """Iterate for leader ``KeyValue``s, or ``get(timeout)``; ``close()`` ends it from any thread."""

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
        self._pending: collections.deque[tuple[Any, Any]] = collections.deque()
        self._failures = 0
        #: the header that came with the last ``KeyValue`` handed out
        self.header: Any = None

    # -- consumer side ------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Any:
        """The next leader ``KeyValue``, or None after ``timeout`` seconds; ``EtcdClosedError`` once closed."""
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

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
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
        range_end = kv.prefix_end(key) if prefix else None
        with self._lock:
            if self._closed.is_set():
                return
            self._watch = Watch(self._client, key, range_end=range_end, start_revision=start_revision)

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
                resp = self._client.range(kv.first_create(self._prefix))
            except (EtcdUnavailableError, EtcdTimeoutError) as err:
                self._failures += 1
                backoff = RETRY.wait(self._failures, err)
                self._closed.wait(min(backoff, left if left is not None else backoff))
                return
            self._failures = 0
            if resp.kvs:
                leader = resp.kvs[0]
                self._pending.append((resp.header, leader))
                self._open(leader.key, resp.header.revision + 1)
                self._phase = "leader"
            else:
                # wait for the first key put on the prefix; nothing was there at the read's
                # revision, so start after it (Go: at it), which etcd serves as a synced watch
                self._open(self._prefix, resp.header.revision + 1, prefix=True)
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
                if isinstance(event, PutEvent):  # only puts: a delete would make us spin
                    leader = event._event.kv
                    header = type(wr.header)()
                    header.CopyFrom(wr.header)
                    header.revision = leader.mod_revision  # a batch may hold several puts
                    self._pending.append((header, leader))
                    self._open(leader.key, leader.mod_revision + 1)
                    self._phase = "leader"
                    return
            return
        for event in wr.events:  # phase "leader"
            if isinstance(event, DeleteEvent):
                self._close_watch()
                self._phase = "read"
                self._settle_until = time.monotonic() + self._settle
                return
            self._pending.append((wr.header, event._event.kv))
