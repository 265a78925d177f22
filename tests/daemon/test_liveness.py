"""Liveness is progress: WATCHDOG=1 pings (received on a real unix datagram NOTIFY_SOCKET) and
/healthz follow the main thread's progress; they stop when the loop is wedged, and they go on
through a long full pass and through an etcd outage while leading."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.daemon.inprocess import config, converged, populate, start, wait_for
from worker.daemon.events import Wedge
from worker.daemon.notify import Notifier
from worker.keys import Keys

WATCHDOG_SEC = 6.0  # systemd/protection-worker.service


class Pings:
    """WATCHDOG=1 arrival times on a bound datagram socket."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="pw-wd-")
        self.path = str(Path(self.dir.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.times: list[float] = []
        #: every datagram: (arrival time, text)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.append((now, data.decode()))
            if b"WATCHDOG=1" in data:
                self.times.append(now)

    def notifier(self) -> Notifier:
        return Notifier(env={"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(WATCHDOG_SEC * 1e6))})

    def gaps(self, since: float, until: float) -> list[float]:
        ts = [since] + [t for t in self.times if since <= t <= until] + [until]
        return [b - a for a, b in zip(ts, ts[1:])]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()
        self.dir.cleanup()


@pytest.fixture
def pings():
    p = Pings()
    yield p
    p.close()


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix + "/ns")


def test_a_wedged_loop_stops_the_pings_and_healthz_turns_503(etcd_endpoints, client, keys, pings):
    populate(client, keys, 20)
    one = start(config(etcd_endpoints, keys.namespace, ttl=2, request_timeout=0.6), notifier=pings.notifier())
    release = threading.Event()
    try:
        wait_for(lambda: converged(client, keys, 20), what="first pass")
        assert one.http("/healthz")[0] == 200
        wait_for(lambda: len(pings.times) >= 2, what="pings")
        one.daemon.post(Wedge(release))
        wedged_at = time.monotonic()
        wait_for(lambda: one.http("/healthz")[0] == 503, timeout=5, what="/healthz 503 while wedged")
        time.sleep(1.0)  # observing the absence of pings over a window, not synchronising
        late = [t for t in pings.times if t > wedged_at + WATCHDOG_SEC / 4 + 0.2]
        assert late == [], "pings went on while the loop was wedged"
    finally:
        release.set()
    wait_for(lambda: one.http("/healthz")[0] == 200, timeout=10, what="healthy again")
    one.stop()


@pytest.mark.slow
def test_watchdog_pings_through_a_full_pass_over_100000_clusters(etcd_endpoints, client, keys, pings):
    populate(client, keys, 100_000)
    started = time.monotonic()
    one = start(config(etcd_endpoints, keys.namespace, ttl=10, request_timeout=3.0), notifier=pings.notifier())
    try:
        wait_for(lambda: converged(client, keys, 100_000), timeout=120, every=0.5, what="first pass")
        done = time.monotonic()
        gaps = pings.gaps(started, done)
        print(f"100,000 clusters: first pass {done - started:.1f} s, {len(pings.times)} pings, "
              f"largest gap {max(gaps):.2f} s (WatchdogSec {WATCHDOG_SEC:g} s)")
        assert max(gaps) < WATCHDOG_SEC / 2 + 1.0
    finally:
        one.stop()


@pytest.mark.slow
def test_watchdog_pings_through_an_etcd_outage_while_leading(private_etcd, keys, pings):
    from worker.etcd import connect
    direct = connect(private_etcd.endpoints)
    populate(direct, keys, 50)
    one = start(config(private_etcd.endpoints, keys.namespace, ttl=3, request_timeout=1.0), notifier=pings.notifier())
    try:
        wait_for(lambda: converged(direct, keys, 50), what="first pass")
        wait_for(one.leads, what="leading")
        direct.close()
        cut = time.monotonic()
        private_etcd.members[0].stop()
        wait_for(lambda: not one.leads(), timeout=5, what="stepped down")
        time.sleep(6.0)  # an outage of a given length, not synchronisation
        gaps = pings.gaps(cut, time.monotonic())
        print(f"etcd outage: largest gap {max(gaps):.2f} s")
        assert max(gaps) < WATCHDOG_SEC / 2 + 1.0
        assert one.thread.is_alive(), "the daemon exited because etcd was unreachable"
        private_etcd.members[0].start()
        wait_for(one.leads, timeout=20, what="leading again after the outage")
    finally:
        one.stop()
