"""The threads a term of leadership starts: the input watches, the watch on our own election key,
and the lease-deadline timer. They only post events; the term acts on them."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from worker.concurrency import Session
from worker.daemon.events import Event, InputsChanged, KeyDeleted, LeaseDeadline, WatchFailed
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdClosedError, EtcdError
from worker.etcd.watch import Watch
from worker.keys import Keys


class DeadlineTimer:
    """DeadlineTimer posts ``LeaseDeadline`` at ``session.deadline - margin`` (re-read as keepalives
    move it), so a term ends on the lease's clock even while the loop is idle or blocked."""

    def __init__(self, session: Session, margin: float, post: Callable[[Event], None], generation: int) -> None:
        self._session, self._margin, self._post, self._generation = session, margin, post, generation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-deadline-{generation}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            left = self._session.deadline - self._margin - time.monotonic()
            if left <= 0 or self._session.done.is_set():
                self._post(LeaseDeadline(self._generation))
                return
            self._stop.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class TermWatches:
    """TermWatches follows ``clusters/`` and ``dr/`` from a revision on (posting changed ids) and
    our election key (posting its deletion), for one term of ``generation``."""

    def __init__(self, client: EtcdClient, keys: Keys, election_key: str, term: int,
                 events: queue.Queue[Event], generation: int) -> None:
        self._client, self._keys, self._election_key, self._term = client, keys, election_key, term
        self._events, self._generation = events, generation
        self._watches: list[Watch] = []
        self._threads: list[threading.Thread] = []

    def start(self, revision: int) -> None:
        for prefix in (self._keys.clusters, self._keys.dr):
            watch = self._client.watch(prefix, prefix=True, start_revision=revision)
            self._spawn(self._forward_changes, watch, prefix)
        own = self._client.watch(self._election_key, start_revision=self._term + 1)
        self._spawn(self._forward_key_delete, own)

    def _spawn(self, target: Callable[..., None], watch: Watch, *args: Any) -> None:
        self._watches.append(watch)
        thread = threading.Thread(target=target, args=(watch, *args), daemon=True, name=f"watch-{self._term}")
        self._threads.append(thread)
        thread.start()

    def _forward_changes(self, watch: Watch, prefix: str) -> None:
        try:
            for response in watch:
                ids = frozenset(Keys.id_of(e.kv.key, prefix) for e in response.events)
                if ids:
                    revision = max(e.kv.mod_revision for e in response.events)
                    self._events.put(InputsChanged(self._generation, ids, revision))
        except EtcdClosedError:
            pass
        except EtcdError as err:  # compacted past our position, or refused: the history has a hole
            self._events.put(WatchFailed(self._generation, err))

    def _forward_key_delete(self, watch: Watch) -> None:
        try:
            for response in watch:
                if any(e.kind == "delete" for e in response.events):
                    self._events.put(KeyDeleted(self._generation))
                    return
        except EtcdError:
            pass  # the lease keeper and the fence still guard the term

    def stop(self) -> None:
        for watch in self._watches:
            watch.close()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._watches.clear()
        self._threads.clear()
