"""Liveness and pause figures of the daemon, in-process against an embedded etcd.

* the largest gap between WATCHDOG=1 pings (received on a real unix datagram NOTIFY_SOCKET) while
  the leader runs its first full pass over N clusters, next to the pass's own duration (the
  reference: without progress-fed pings the gap is the whole pass), against the unit's
  ``WatchdogSec=6s`` (goal: < WatchdogSec/2 + 1 s);
* protection writes at revisions at which the pause key existed, on etcd's history, after a
  5,000-change burst paused mid-pass and across a lease revoke with re-election (goal: 0).

    python bench/liveness.py --clusters 100000
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.inprocess import (burst, config, converged, on_first_write, populate, start,  # noqa: E402
                                    wait_for, writes_while_paused)
from tests.daemon.test_liveness import WATCHDOG_SEC, Pings  # noqa: E402
from worker.control import set_paused  # noqa: E402
from worker.daemon.events import Wedge  # noqa: E402
from worker.etcd import connect  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster  # noqa: E402
from worker.keys import Keys  # noqa: E402


def watchdog_gap(endpoints: list[str], n: int) -> None:
    client = connect(endpoints)
    keys = Keys(f"/bench/wd-{uuid.uuid4().hex[:6]}")
    t0 = time.monotonic()
    populate(client, keys, n)
    print(f"populated {n} clusters in {time.monotonic() - t0:.1f} s")
    pings = Pings()
    started = time.monotonic()
    one = start(config(endpoints, keys.namespace, ttl=10, request_timeout=3.0), notifier=pings.notifier())
    try:
        wait_for(lambda: converged(client, keys, n), timeout=300, every=0.2, what="first pass")
        done = time.monotonic()
        gaps = pings.gaps(started, done)
        print(f"watchdog: {n} clusters, first pass (start to converged) {done - started:.2f} s, "
              f"{len(pings.times)} pings, largest gap {max(gaps):.2f} s; goal < {WATCHDOG_SEC / 2 + 1:.1f} s "
              f"(WatchdogSec {WATCHDOG_SEC:g} s)")
    finally:
        one.stop()
        pings.close()
        client.close()


def paused_writes(endpoints: list[str]) -> None:
    client = connect(endpoints)
    keys = Keys(f"/bench/pause-{uuid.uuid4().hex[:6]}")
    ids = populate(client, keys, 5000)
    one = start(config(endpoints, keys.namespace, ttl=5, request_timeout=1.5))
    try:
        wait_for(lambda: converged(client, keys, 5000), timeout=60, what="first pass")
        # 1. a 5,000-change burst, the pause landing at the first write of the pass over it
        from_rev = client.current_revision() + 1
        release = threading.Event()
        one.daemon.post(Wedge(release))
        burst(client, keys, ids, salt=1)
        paused = on_first_write(client, keys, from_rev, lambda: set_paused(client, keys, True, by="bench"))
        release.set()
        paused.wait(60)
        wait_for(lambda: one.daemon.state.paused, what="paused")
        checked, bad = writes_while_paused(client, keys, from_rev)
        print(f"pause: burst of 5000 paused mid-pass: {checked} writes checked, {len(bad)} while paused")
        # 2. the lease revoked while paused: the same instance elected again, a burst meanwhile
        term = one.daemon.state.term
        client.lease_revoke(one.daemon.candidacy.session.lease)
        wait_for(lambda: one.leads() and one.daemon.state.term != term, timeout=20, what="re-elected")
        burst(client, keys, ids, salt=2)
        wait_for(lambda: (one.daemon.state.last_pass or {}).get("term") == one.daemon.state.term, what="a pass")
        checked, bad = writes_while_paused(client, keys, from_rev)
        print(f"pause: + lease revoke and re-election: {checked} writes checked, {len(bad)} while paused")
    finally:
        one.stop()
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100_000)
    args = parser.parse_args()
    with EtcdCluster(1) as cluster:
        watchdog_gap(cluster.endpoints, args.clusters)
        paused_writes(cluster.endpoints)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
