"""Every wait stays alive (issue 16): the Mutex held by ``etcdctl lock`` past WatchdogSec, a resume
during a paused full pass, an audit whose watch stalls, a batch etcd refuses for its size.

In-process daemons against a real etcd; watchdog pings on a real unix datagram NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from tests.daemon.inprocess import config, converged, populate, protection_count, start, wait_for
from tests.daemon.test_liveness import WATCHDOG_SEC, Pings
from worker.control import set_paused
from worker.etcd import connect
from worker.ops.audit import AuditIncompleteError, audit
from worker.demo.embedded_etcd import find_binary
from tests.harness.faultproxy import FaultProxy
from worker.keys import Keys

GAP_GOAL = WATCHDOG_SEC / 2 + 1


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix + "/ns")


@pytest.fixture
def daemons(etcd_endpoints):
    made = []

    def make(namespace: str, **kw):
        notifier = kw.pop("notifier", None)
        running = start(config(etcd_endpoints, namespace, **kw), notifier=notifier)
        made.append(running)
        return running

    yield make
    for running in made:
        if running.thread.is_alive():
            running.stop()


def test_mutex_held_by_etcdctl_lock_longer_than_watchdogsec_keeps_the_loop_alive(client, keys, daemons,
                                                                                  etcd_endpoints):
    populate(client, keys, 50)
    ctl = subprocess.Popen([find_binary("etcdctl"), "--endpoints", ",".join(etcd_endpoints), "lock", keys.lock],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pings = Pings()
    try:
        assert ctl.stdout is not None
        held = ctl.stdout.readline()  # etcdctl prints its key once it holds the lock
        assert held.startswith(keys.lock + "/"), held
        started = time.monotonic()
        one = daemons(keys.namespace, notifier=pings.notifier())
        wait_for(lambda: one.daemon.state.role == "leader", what="elected")
        health, leader = set(), set()
        while time.monotonic() - started < WATCHDOG_SEC + 2:
            health.add(one.http("/healthz")[0])
            leader.add(one.http("/leader")[0])
            time.sleep(0.2)
        waited = time.monotonic()
        gaps = pings.gaps(started, waited)
        assert max(gaps) < GAP_GOAL, f"largest WATCHDOG gap {max(gaps):.2f} s while waiting for the Mutex"
        assert health == {200} and leader == {503}, (health, leader)
        status = [text for _, text in pings.messages if "waiting for the reconcile lock held by" in text]
        assert status and held.strip() in status[-1], status[-1:]
        code, body = one.http("/status")
        assert body["lock_wait"]["holder"] == held.strip()
        assert protection_count(client, keys) == 0
        ctl.send_signal(signal.SIGINT)  # etcdctl releases the lock (its session ends)
        wait_for(lambda: one.leads(), timeout=15, what="leads once the lock is let go")
        wait_for(lambda: converged(client, keys, 50), what="reconciled")
    finally:
        if ctl.poll() is None:
            ctl.kill()
        ctl.wait()
        pings.close()


def test_resume_during_a_paused_full_pass_catches_up_at_once(client, keys, daemons):
    ids = populate(client, keys, 3000)
    one = daemons(keys.namespace, interval=600.0)
    wait_for(lambda: converged(client, keys, 3000), timeout=60, what="first pass")
    set_paused(client, keys, True, by="test")
    wait_for(lambda: one.daemon.state.paused, what="paused")
    for cid in ids[:2000]:
        client.delete(keys.cluster(cid))     # changes while paused: 2,000 records to delete
    # a dry full pass runs now (asked through the daemon: a watch loss makes one), and the resume
    # lands while it runs
    in_full = threading.Event()
    term = one.daemon.term
    original = term._full

    def full(fence):
        if term.state.paused and not in_full.is_set():
            in_full.set()
            set_paused(client, keys, False, by="test")
            # the control watch's event is queued: the dry pass takes it between its pages
            wait_for(lambda: term.ctx.events.qsize() > 0, what="resume queued", every=0.005)
        return original(fence)

    term._full = full
    term._rewatch = True
    wait_for(in_full.is_set, what="a paused full pass")
    resumed = time.monotonic()
    wait_for(lambda: protection_count(client, keys) == 1000, timeout=10, what="catch-up after resume")
    assert time.monotonic() - resumed < 10


def test_an_audit_whose_watch_stalls_fails_instead_of_reporting_a_short_range(client, keys, etcd_endpoints):
    for i in range(20):
        client.put(keys.protection_key(f"c{i}"), "{}")
    to_revision = client.current_revision()
    with FaultProxy.to(etcd_endpoints[0]) as proxy:
        slow = connect([proxy.endpoint])
        try:
            from worker.ops import audit as audit_module
            original = audit_module._revisions

            def stalled(watch, from_revision, to_revision, wait):
                proxy.stall()  # the watch's stream goes silent: no events, no progress answer
                yield from original(watch, from_revision, to_revision, wait)

            audit_module._revisions = stalled
            try:
                with pytest.raises(AuditIncompleteError) as caught:
                    audit(slow, keys, to_revision - 19, to_revision, wait=1.0)
            finally:
                audit_module._revisions = original
        finally:
            proxy.heal()
            slow.close()
    assert "read only up to revision" in str(caught.value)


def test_an_audit_of_a_range_ending_in_other_keys_is_proven_by_progress(client, keys):
    client.put(keys.protection_key("a"), "{}")
    start_rev = client.current_revision()
    for i in range(5):
        client.put(f"{keys.namespace}-elsewhere/{i}", "x")  # revisions outside the namespace
    report = audit(client, keys, start_rev, client.current_revision(), wait=1.0)
    assert report.checked == 1


def test_long_non_ascii_dr_sites_are_written_in_batches_that_fit(client, keys, daemons):
    site = "\u6f22" * 2000           # valid (under 64 KiB as JSON): 12 KB as JSON, twice a record
    for i in range(300):
        client.put(keys.cluster(f"c{i:04d}"), json.dumps({"allocated": True, "dr_site": site}))
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 300), timeout=30, what="every record written")
    assert one.daemon.state.leading()
