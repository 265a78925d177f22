"""A poll-based leader elector on one etcd key, the way client-go's ``leaderelection`` works.

Not part of the worker: the reference ``bench/failover.py`` compares the daemon against, because
it is what a Kubernetes user knows. It follows client-go (``tools/leaderelection``) closely:

* the lock is one record (client-go's ``LeaderElectionRecord``: ``holderIdentity``,
  ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``, ``leaderTransitions``) in one key,
  updated by compare-and-swap on the key's mod revision (a resource lock's ``resourceVersion``);
* ``tryAcquireOrRenew``: read the record; when it differs from the last one seen, note the local
  time (``observedTime``); a record held by someone else is respected until ``observedTime +
  leaseDuration`` (the follower's own clock, never the holder's ``renewTime``); otherwise write
  ourselves in with a CAS;
* candidates call it at once, then every ``RetryPeriod`` jittered by ``JitterFactor`` 1.2
  (``wait.JitterUntil``, sliding: the period starts after the attempt);
* the leader renews every ``RetryPeriod`` and steps down when no renew succeeded for
  ``RenewDeadline``;
* ``ReleaseOnCancel``: a leader that stops gracefully writes an empty holder with a lease of 1 s,
  so the next candidate takes over at its next poll instead of after ``LeaseDuration``.

Defaults are client-go's: LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError

JITTER_FACTOR = 1.2


@dataclass(frozen=True)
class Timings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def scaled(self, factor: float) -> Timings:
        return Timings(self.lease_duration * factor, self.renew_deadline * factor, self.retry_period * factor)

    def __str__(self) -> str:
        return (f"LeaseDuration {self.lease_duration:g} s, RenewDeadline {self.renew_deadline:g} s, "
                f"RetryPeriod {self.retry_period:g} s")


@dataclass
class Record:
    holderIdentity: str  # noqa: N815 - client-go's field names, as stored
    leaseDurationSeconds: float  # noqa: N815
    acquireTime: float  # noqa: N815
    renewTime: float  # noqa: N815
    leaderTransitions: int = 0  # noqa: N815

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


class PollElector:
    """One candidate. ``run_in_thread()`` starts it; ``elected`` is set (and ``elected_at`` noted)
    once it leads; ``stop(release=True)`` is a graceful exit, ``stop(release=False)`` a crash."""

    #: requests sent by every elector in this process (benchmarks cross-check etcd's own counts)
    all_requests = 0

    def __init__(self, client: EtcdClient, key: str, identity: str, timings: Timings = Timings(),
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.key = key
        self.identity = identity
        self.t = timings
        self.rng = rng or random.Random()
        self.elected = threading.Event()
        self.elected_at: float | None = None
        self.lost = threading.Event()
        self.requests = 0
        self._stop = threading.Event()
        self._release = False
        self._thread: threading.Thread | None = None
        self._observed_raw: bytes | None = None
        self._observed: Record | None = None
        self._observed_time = 0.0
        self._observed_mod = 0

    # -- client-go's tryAcquireOrRenew ----------------------------------------------------------
    def is_leader(self) -> bool:
        return self._observed is not None and self._observed.holderIdentity == self.identity

    def try_acquire_or_renew(self) -> bool:
        now_wall, now = time.time(), time.monotonic()
        new = Record(self.identity, self.t.lease_duration, now_wall, now_wall)
        self._count()
        resp = self.client.range(kv.range_request(self.key))
        if not resp.kvs:
            self._count()
            ok = self.client.txn(kv.txn_request([kv.cmp_create(self.key, "=", 0)],
                                                [kv.op_put(self.key, new.encode())])).succeeded
            if ok:
                self._observe(new.encode(), new, now, resp.header.revision + 1)
            return ok
        item = resp.kvs[0]
        if item.value != self._observed_raw:
            old = Record(**json.loads(item.value))
            self._observe(item.value, old, now, item.mod_revision)
        old = self._observed
        assert old is not None
        if (old.holderIdentity and self._observed_time + old.leaseDurationSeconds > now
                and not self.is_leader()):
            return False
        if self.is_leader():
            new.acquireTime, new.leaderTransitions = old.acquireTime, old.leaderTransitions
        else:
            new.leaderTransitions = old.leaderTransitions + 1
        self._count()
        txn = self.client.txn(kv.txn_request([kv.cmp_mod(self.key, "=", item.mod_revision)],
                                             [kv.op_put(self.key, new.encode())]))
        if txn.succeeded:
            self._observe(new.encode(), new, now, txn.header.revision)
        return bool(txn.succeeded)

    def _count(self) -> None:
        self.requests += 1
        PollElector.all_requests += 1

    def _observe(self, raw: bytes, record: Record, at: float, mod: int) -> None:
        self._observed_raw, self._observed, self._observed_time, self._observed_mod = raw, record, at, mod

    def release(self) -> bool:
        """client-go's ``release()`` (ReleaseOnCancel): empty holder, 1 s lease, CAS on our write."""
        if not self.is_leader():
            return True
        now = time.time()
        old = self._observed
        assert old is not None
        empty = Record("", 1, now, now, old.leaderTransitions)
        try:
            self._count()
            return bool(self.client.txn(kv.txn_request([kv.cmp_mod(self.key, "=", self._observed_mod)],
                                                       [kv.op_put(self.key, empty.encode())])).succeeded)
        except EtcdError:
            return False

    # -- the loops ------------------------------------------------------------------------------
    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except EtcdError:
            return False

    def _jittered(self) -> float:
        return self.t.retry_period * (1.0 + self.rng.random() * JITTER_FACTOR)

    def _run(self) -> None:
        # acquire: wait.JitterUntil(tryAcquireOrRenew, RetryPeriod, 1.2, sliding=true)
        while not self._stop.is_set():
            if self._attempt():
                self.elected_at = time.monotonic()
                self.elected.set()
                break
            if self._stop.wait(self._jittered()):
                return
        # renew: every RetryPeriod; give up after RenewDeadline without a successful renew
        last_ok = time.monotonic()
        while not self._stop.wait(self.t.retry_period):
            if self._attempt():
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= self.t.renew_deadline:
                self.lost.set()
                return
        if self._release:
            self.release()

    def run_in_thread(self) -> PollElector:
        self._thread = threading.Thread(target=self._run, name=f"poll-elector-{self.identity}", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Graceful (``release``: ReleaseOnCancel) or a crash (the record is left to expire)."""
        self._release = release
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity, "leader": self.is_leader(), "requests": self.requests}
