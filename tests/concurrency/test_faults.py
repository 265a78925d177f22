"""Faults with real processes: etcd SIGKILLed and restarted under held sessions, and a holder
process frozen (SIGSTOP) past its TTL while a waiter in this process takes over."""

import signal
import threading
import time

from worker.concurrency import Election, Mutex, Session
from worker.etcd import connect, kv

from .conftest import join, keys_under, wait_until


def test_etcd_restart_under_held_lock_and_waiter(private_etcd):
    c1 = connect(private_etcd.endpoints, request_timeout=1.0)
    c2 = connect(private_etcd.endpoints, request_timeout=1.0)
    try:
        with Session(c1, ttl=5) as s1, Session(c2, ttl=5) as s2:
            holder, waiter = Mutex(s1, "/lock"), Mutex(s2, "/lock")
            holder.lock()
            locked = threading.Event()
            t = threading.Thread(target=lambda: (waiter.lock(timeout=20), locked.set()))
            t.start()
            wait_until(c1, "/lock/", lambda kvs: len(kvs) == 2)
            private_etcd.members[0].restart()  # SIGKILL, then start on the same data dir
            assert c1.lease_time_to_live(s1.lease).TTL > 0, "the holder's lease must survive the restart"
            assert c1.txn(kv.txn_request([holder.is_owner()], [])).succeeded, "holder must still own the lock"
            assert not locked.is_set() and not s1.done.is_set() and not s2.done.is_set()
            holder.unlock()
            assert locked.wait(8), "the waiter's watch must resume after the restart"
            join(t)
            assert not s1.done.is_set() and not s2.done.is_set()
    finally:
        c1.close()
        c2.close()


def test_etcd_restart_under_election_and_observer(private_etcd):
    c1 = connect(private_etcd.endpoints, request_timeout=1.0)
    c2 = connect(private_etcd.endpoints, request_timeout=1.0)
    try:
        with Session(c1, ttl=5) as s1, Session(c2, ttl=5) as s2:
            e1, e2 = Election(s1, "el"), Election(s2, "el")
            e1.campaign("one")
            elected = threading.Event()
            t = threading.Thread(target=lambda: (e2.campaign("two", timeout=20), elected.set()))
            t.start()
            with Election(s2, "el").observe() as obs:
                assert obs.get(5).value == b"one"
                wait_until(c1, "el/", lambda kvs: len(kvs) == 2)
                private_etcd.members[0].restart()
                assert c1.lease_time_to_live(s1.lease).TTL > 0  # (a retried read: the channel is back)
                e1.proclaim("uno")  # a leader is still the leader after the restart
                assert obs.get(8).value == b"uno", "the observer's watch must resume"
                e1.resign()
                assert elected.wait(8)
                assert obs.get(8).value == b"two"
            join(t)
    finally:
        c1.close()
        c2.close()


def test_frozen_lock_holder_loses_after_ttl(client, sessions, holder, etcd_endpoints, prefix):
    name = prefix + "/lk"
    proc = holder(etcd_endpoints, "lock", name, ttl=2)
    assert proc.line(15).startswith("HOLDING " + name + "/")
    m = Mutex(sessions(), name)
    locked = threading.Event()
    t = threading.Thread(target=lambda: (m.lock(timeout=15), locked.set()))
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    assert not locked.wait(0.3), "the waiter must not win while the holder keeps its lease alive"
    proc.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    assert locked.wait(10), "the waiter must win once the frozen holder's lease expires"
    waited = time.monotonic() - stopped
    assert 0.5 < waited < 6, waited
    join(t)
    assert [k.key.decode() for k in keys_under(client, name + "/")] == [m.key]
    proc.signal(signal.SIGKILL)


def test_frozen_leader_loses_after_ttl(client, sessions, holder, etcd_endpoints, prefix):
    name = prefix + "/el"
    proc = holder(etcd_endpoints, "elect", name, ttl=2, value="frozen")
    assert proc.line(15).startswith("HOLDING " + name + "/")
    e = Election(sessions(), name)
    elected = threading.Event()
    t = threading.Thread(target=lambda: (e.campaign("next", timeout=15), elected.set()))
    t.start()
    with Election(sessions(), name).observe() as obs:
        assert obs.get(5).value == b"frozen"
        wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
        assert not elected.wait(0.3)
        proc.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        assert elected.wait(10)
        assert 0.5 < time.monotonic() - stopped < 6
        assert obs.get(5).value == b"next"
    join(t)
    proc.signal(signal.SIGKILL)
