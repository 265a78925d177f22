"""Interop with ``etcdctl lock`` and ``etcdctl elect`` (Go's concurrency package): same keys, same
queue, both ways. Go: tests/e2e/ctl_v3_lock_test.go and ctl_v3_elect_test.go, with one side Python."""

import signal
import threading

import pytest

from worker.concurrency import Election, LockedError, Mutex

from .conftest import join, keys_under, wait_until


def test_python_holds_etcdctl_lock_waits(client, sessions, etcdctl, prefix):
    name = prefix + "/lk"
    s = sessions()
    m = Mutex(s, name)
    m.lock()
    ctl = etcdctl("lock", name)
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)  # etcdctl queued behind us
    assert ctl.no_line(0.2), "etcdctl lock must block while Python holds the lock"
    m.unlock()
    key = ctl.line(5)
    assert key.startswith(name + "/") and key != f"{name}/{s.lease:x}"
    assert ctl.line(5) == ""  # the value of a lock key is empty
    m2 = Mutex(sessions(), name)
    with pytest.raises(LockedError):
        m2.try_lock()
    ctl.signal(signal.SIGINT)  # etcdctl unlocks on SIGINT
    assert ctl.wait(5) == 0
    m2.lock(timeout=5)


def test_etcdctl_holds_python_lock_waits(client, sessions, etcdctl, prefix):
    name = prefix + "/lk"
    ctl = etcdctl("lock", name)
    ctl_key = ctl.line(10)
    m = Mutex(sessions(), name)
    locked = threading.Event()
    t = threading.Thread(target=lambda: (m.lock(timeout=10), locked.set()))
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    assert not locked.wait(0.2), "Python must wait while etcdctl holds the lock"
    ctl.signal(signal.SIGINT)
    assert locked.wait(5)
    join(t)
    assert [k.key.decode() for k in keys_under(client, name + "/")] == [m.key] != [ctl_key]


def test_etcdctl_leads_python_campaigns_and_observes(client, sessions, etcdctl, prefix):
    name = prefix + "/el"
    ctl = etcdctl("elect", name, "p1")
    ctl_key = ctl.line(10)
    assert ctl_key.startswith(name + "/") and ctl.line(5) == "p1"
    e = Election(sessions(), name)
    assert e.leader().value == b"p1"
    elected = threading.Event()
    t = threading.Thread(target=lambda: (e.campaign("py", timeout=10), elected.set()))
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    assert not elected.wait(0.2), "Python must not lead while etcdctl does"
    ctl.signal(signal.SIGINT)  # etcdctl resigns on SIGINT
    assert elected.wait(5)
    join(t)
    assert e.leader().key.decode() == e.key != ctl_key
    # etcdctl elect -l observes the Python leader, and its proclaims
    obs = etcdctl("elect", "-l", name)
    assert (obs.line(10), obs.line(5)) == (e.key, "py")
    e.proclaim("py2")
    assert (obs.line(5), obs.line(5)) == (e.key, "py2")
    obs.signal(signal.SIGINT)


def test_python_leads_etcdctl_campaigns_python_observes(client, sessions, etcdctl, prefix):
    name = prefix + "/el"
    e = Election(sessions(), name)
    e.campaign("py")
    ctl = etcdctl("elect", name, "p2")
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    assert ctl.no_line(0.2), "etcdctl must not lead while Python does"
    with Election(sessions(), name).observe() as obs:
        assert obs.get(5).value == b"py"
        e.resign()
        ctl_key = ctl.line(5)
        assert ctl.line(5) == "p2"
        leader = obs.get(5)
        assert leader.key.decode() == ctl_key and leader.value == b"p2"
    ctl.signal(signal.SIGINT)
    assert ctl.wait(5) == 0
    wait_until(client, name + "/", lambda kvs: kvs == [])
