"""Mutex: Go's v3_lock_test.go (recipes) ported, plus expiry, timeouts and misuse."""

import queue
import threading
import time

import pytest

from worker.concurrency import (LockedError, LockReleasedError, Mutex, Session,
                                SessionExpiredError, WaitCancelledError)
from worker.etcd import Watch, kv

from .conftest import join, keys_under, wait_until


def test_keys_and_header_are_gos(client, sessions, prefix):
    s = sessions()
    m = Mutex(s, prefix + "/m")
    assert m.key == ""
    m.lock()
    assert m.key == f"{prefix}/m/{s.lease:x}"
    [held] = keys_under(client, prefix + "/m/")
    assert held.value == b"" and held.lease == s.lease
    assert m.header.revision == held.create_revision  # ETCD_LOCK_REV of etcdctl lock
    m.unlock()
    assert m.key == "\x00" and keys_under(client, prefix) == []


def test_mutex_lock_five_waiters(make_client, prefix):
    """Go: testMutexLock(5): waiters take turns; a follower never holds while another does."""
    waiters = 5
    locked: queue.Queue = queue.Queue()
    errors: queue.Queue = queue.Queue()
    sessions = [Session(make_client(), ttl=10) for _ in range(waiters)]

    def wait_lock(i: int) -> None:
        try:
            m = Mutex(sessions[i], prefix + "/test-mutex")
            m.lock(timeout=20)
            locked.put(m)
        except Exception as err:  # noqa: BLE001
            errors.put(err)

    threads = [threading.Thread(target=wait_lock, args=(i,)) for i in range(waiters)]
    try:
        for t in threads:
            t.start()
        for i in range(waiters):
            m = locked.get(timeout=waiters)
            assert errors.empty(), errors.get()
            time.sleep(0.05)  # give a wrongly woken follower a chance to show up
            assert locked.empty(), f"lock {i}: followers did not wait"
            m.unlock()
        for t in threads:
            join(t)
    finally:
        for s in sessions:
            s.close()


def test_mutex_try_lock_five(make_client, prefix):
    """Go: testMutexTryLock(5): exactly one of concurrent try_locks wins; losers leave no key."""
    sessions = [Session(make_client(), ttl=10) for _ in range(5)]
    barrier = threading.Barrier(5)
    results: queue.Queue = queue.Queue()

    def attempt(i: int) -> None:
        m = Mutex(sessions[i], prefix + "/test-mutex-try-lock")
        barrier.wait(5)
        try:
            m.try_lock()
            results.put("locked")
        except LockedError as err:
            results.put(str(err))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(5)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            join(t)
        got = sorted(results.get_nowait() for _ in range(5))
        assert got == ["locked"] + ["mutex: Locked by another session"] * 4
        assert len(keys_under(sessions[0].client, prefix)) == 1
    finally:
        for s in sessions:
            s.close()


def test_mutex_session_relock(sessions, prefix):
    """Go: TestMutexSessionRelock: a second mutex on the same session re-uses the key."""
    s = sessions()
    m = Mutex(s, prefix + "/test-mutex")
    m.lock(timeout=5)
    m2 = Mutex(s, prefix + "/test-mutex")
    m2.lock(timeout=5)
    assert m2.key == m.key


def test_mutex_waits_on_current_holder(client, sessions, prefix):
    """Go: TestMutexWaitsOnCurrentHolder: the waiter behind a vanished waiter still waits for
    the holder, and the vanished waiter's lock() returns."""
    name = prefix + "/test-mutex"
    first = Mutex(sessions(), name)
    first.lock()
    with Watch(client, name, range_end=kv.prefix_end(name), start_revision=first.header.revision) as wch:
        victim_session = Session(client)
        victim_done = threading.Event()

        def victim() -> None:
            try:
                Mutex(victim_session, name).lock(timeout=10)
            except Exception:  # noqa: BLE001 - its session is closed under it
                pass
            victim_done.set()

        threading.Thread(target=victim, daemon=True).start()
        puts = 0
        while puts < 2:
            wr = wch.get(timeout=2)
            assert wr is not None, "failed to receive watch response"
            puts += len(wr.events)
        assert puts == 2
        new_owner_done = threading.Event()
        new_owner = Mutex(sessions(), name)
        threading.Thread(target=lambda: (new_owner.lock(timeout=10), new_owner_done.set()),
                         daemon=True).start()
        wr = wch.get(timeout=2)
        assert wr is not None and [type(e).__name__ for e in wr.events] == ["PutEvent"]
        victim_session.close()  # lose the client next in line
        wr = wch.get(timeout=2)
        assert wr is not None and [type(e).__name__ for e in wr.events] == ["DeleteEvent"]
        assert not new_owner_done.wait(0.2), "new owner obtained lock before first owner unlocked"
        first.unlock()
        assert new_owner_done.wait(2), "new owner failed to obtain lock"
        assert victim_done.wait(2), "victim mutex failed to exit after first owner releases lock"


def test_lock_after_session_expiry_raises(client, sessions, prefix):
    s = sessions(ttl=5)
    client.lease_revoke(s.lease)
    with pytest.raises(SessionExpiredError, match="^mutex: session is expired$"):
        Mutex(s, prefix + "/m").lock(timeout=5)
    assert keys_under(client, prefix) == []


def test_waiter_whose_session_expires_raises(client, sessions, prefix):
    name = prefix + "/m"
    Mutex(sessions(), name).lock()
    s2 = sessions(ttl=3)
    result: queue.Queue = queue.Queue()
    t = threading.Thread(target=lambda: result.put(_capture(Mutex(s2, name).lock)))
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    client.lease_revoke(s2.lease)
    assert isinstance(result.get(timeout=5), SessionExpiredError)
    join(t)


def test_waiter_whose_key_vanished_does_not_claim_ownership(client, sessions, prefix):
    """Go's post-wait check: after the older keys went, our own key must still be there."""
    name = prefix + "/m"
    holder = Mutex(sessions(), name)
    holder.lock()
    waiter = Mutex(sessions(), name)
    result: queue.Queue = queue.Queue()
    t = threading.Thread(target=lambda: result.put(_capture(waiter.lock, timeout=10)))
    t.start()
    kvs = wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    client.delete(kvs[1].key)  # the waiter's key goes, as if its lease had expired
    holder.unlock()
    assert isinstance(result.get(timeout=5), SessionExpiredError)
    join(t)
    with pytest.raises(LockReleasedError):
        waiter.unlock()


def test_unlock_twice_raises(sessions, prefix):
    m = Mutex(sessions(), prefix + "/m")
    with pytest.raises(LockReleasedError, match="^mutex: lock has already been released$"):
        m.unlock()
    m.lock()
    m.unlock()
    with pytest.raises(LockReleasedError):
        m.unlock()


def test_try_lock_of_held_lock_deletes_own_key(client, sessions, prefix):
    name = prefix + "/m"
    Mutex(sessions(), name).lock()
    m2 = Mutex(sessions(), name)
    with pytest.raises(LockedError):
        m2.try_lock()
    assert len(keys_under(client, name + "/")) == 1
    assert m2.key == "\x00"


def test_is_owner_guards_a_transaction(client, sessions, prefix):
    m = Mutex(sessions(), prefix + "/m")
    m.lock()
    put = kv.txn_request([m.is_owner()], [kv.op_put(prefix + "/data", "x")])
    assert client.txn(put).succeeded
    cmp = m.is_owner()
    m.unlock()
    assert not client.txn(kv.txn_request([cmp], [kv.op_put(prefix + "/data", "y")])).succeeded


def test_lock_timeout_withdraws_key(client, sessions, prefix):
    name = prefix + "/m"
    Mutex(sessions(), name).lock()
    m2 = Mutex(sessions(), name)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        m2.lock(timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    assert len(keys_under(client, name + "/")) == 1


def test_lock_cancel_withdraws_key(client, sessions, prefix):
    name = prefix + "/m"
    Mutex(sessions(), name).lock()
    cancel = threading.Event()
    result: queue.Queue = queue.Queue()
    t = threading.Thread(target=lambda: result.put(_capture(Mutex(sessions(), name).lock, cancel=cancel)))
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    cancel.set()
    assert isinstance(result.get(timeout=5), WaitCancelledError)
    join(t)
    assert len(keys_under(client, name + "/")) == 1


def test_context_manager(client, sessions, prefix):
    with Mutex(sessions(), prefix + "/m") as m:
        assert len(keys_under(client, prefix)) == 1
        assert m.key
    assert keys_under(client, prefix) == []


def _capture(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
        return "locked"
    except Exception as err:  # noqa: BLE001
        return err
