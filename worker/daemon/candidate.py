"""A candidacy: one session, its campaign and its view of the leader — and nothing else.

As in client-go's ``leaderelection``, the elector knows nothing of what leading means: it posts
events to the main loop's queue (``Queued`` once our key is in line, ``Elected``, ``LeaderSeen``,
``LeaseLost``, ``CampaignFailed``), and the main loop decides. Each candidacy carries a
generation number so a late event from an abandoned session is recognised and ignored.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import structlog

from worker.concurrency import Candidate, Election, Session, candidates
from worker.concurrency.errors import SessionExpiredError, WaitCancelledError
from worker.daemon.events import CampaignFailed, Elected, Event, LeaderSeen, LeaseLost, Queued
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdClosedError, EtcdError
from worker.errors import WorkerError

log = structlog.get_logger("worker.daemon")


class Candidacy:
    """Campaign with ``value`` on ``prefix`` under a fresh session of ``ttl`` seconds."""

    def __init__(self, client: EtcdClient, prefix: str, ttl: int, value: str, events: queue.Queue[Event],
                 generation: int) -> None:
        self.generation = generation
        self.session = Session(client, ttl=ttl)
        self.election = Election(self.session, prefix)
        self.value = value
        self._events = events
        self._cancel = threading.Event()
        self._observer: Any = None
        self._threads = [threading.Thread(target=self._campaign, name=f"campaign-{generation}", daemon=True),
                         threading.Thread(target=self._observe, name=f"observe-{generation}", daemon=True),
                         threading.Thread(target=self._watch_lease, name=f"lease-{generation}", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _post(self, make: Callable[..., Event], *args: Any) -> None:
        self._events.put(make(self.generation, *args))

    def _campaign(self) -> None:
        try:
            self.election.campaign(self.value, cancel=self._cancel, on_queued=lambda: self._post(Queued))
        except (WaitCancelledError, SessionExpiredError, EtcdClosedError):
            return  # cancelled by us, or the lease report says the rest
        except WorkerError as err:
            if not self._cancel.is_set():
                self._post(CampaignFailed, err)
            return
        self._post(Elected)

    def _observe(self) -> None:
        # the observer is bookkeeping (/status, metrics); at a handover it steps aside for 50 ms so
        # the campaign next in line, which needs the same CPU and etcd at that moment, wins first
        observer = self._observer = self.election.observe(settle=0.05)
        while not self._cancel.is_set():
            try:
                leader = observer.get(timeout=0.5)
            except EtcdError:
                return
            if leader is not None:
                self._post(LeaderSeen, leader)

    def _watch_lease(self) -> None:
        self.session.done.wait()
        if self.session.lost and not self._cancel.is_set():
            self._post(LeaseLost, self.session.lost_reason or "lease lost")

    @property
    def key(self) -> str:
        return self.election.key

    @property
    def term(self) -> int:
        return self.election.rev

    def close(self, resign: bool = True) -> None:
        """Stop campaigning and revoke the lease (best effort, bounded); with ``resign`` delete our
        key first, so a graceful exit hands over at once."""
        self._cancel.set()
        if self._observer is not None:
            self._observer.close()
        if resign and not self.session.lost:
            try:
                self.election.resign()
            except EtcdError:
                pass  # the revoke below (or the TTL) removes the key as well
        # revoke even a lease we count as lost: after a quorum loss etcd renews every lease on
        # its new leader, and a key of ours left alive would keep the whole line waiting a TTL
        self.session.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=1.0)


def find_candidate(client: EtcdClient, keys: Any, instance_id: str) -> Candidate | None:
    """The candidate in line that proclaims ``instance_id`` (None if not in line)."""
    _, line = candidates(client, keys.election)
    return next((c for c in line if c.instance_id == instance_id), None)
