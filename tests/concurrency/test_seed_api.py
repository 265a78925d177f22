"""The rest of the seed's API: ``NewLocker``, the three ``NewSTM…`` shorthands and ``WithContext``."""

from __future__ import annotations

import threading
import time

import pytest

from worker.concurrency import (Isolation, LockReleasedError, Session, new_locker, new_stm_read_committed,
                                new_stm_repeatable, new_stm_serializable)
from worker.concurrency.errors import WaitCancelledError
from worker.concurrency.stm import STM


def test_locker_excludes_another_locker_and_works_as_a_context_manager(sessions, make_client, prefix):
    a = new_locker(sessions(), prefix)
    b = new_locker(sessions(on=make_client()), prefix)
    assert a.acquire()
    assert a.locked()
    assert b.acquire(blocking=False) is False
    assert b.acquire(timeout=0.2) is False
    got = threading.Event()

    def take() -> None:
        with b:
            got.set()

    t = threading.Thread(target=take)
    t.start()
    assert not got.wait(0.3), "b took a lock a holds"
    a.release()
    assert got.wait(5), "b never took the released lock"
    t.join(5)
    assert not b.locked()  # the with block released it
    with pytest.raises(LockReleasedError):
        a.release()


def test_locker_acquire_cancelled_raises_rather_than_returning_false(sessions, make_client, prefix):
    holder = new_locker(sessions(), prefix)
    assert holder.acquire()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(WaitCancelledError):
        new_locker(sessions(on=make_client()), prefix).acquire(cancel=cancel)


@pytest.mark.parametrize("shorthand,isolation", [(new_stm_repeatable, Isolation.REPEATABLE_READS),
                                                 (new_stm_serializable, Isolation.SERIALIZABLE),
                                                 (new_stm_read_committed, Isolation.READ_COMMITTED)])
def test_stm_shorthands_commit_at_their_isolation(client, prefix, shorthand, isolation):
    key = f"{prefix}/counter"
    client.put(key, "1")
    seen: list[Isolation] = []

    def apply(stm: STM) -> None:
        seen.append(stm.isolation)
        stm.put(key, str(int(stm.get(key)) + 1))

    resp = shorthand(client, apply)
    assert resp.succeeded
    assert seen == [isolation]
    assert client.get(key)[0] == b"2"


def test_session_cancel_orphans_it_and_the_lease_expires_by_its_ttl(client):
    cancel = threading.Event()
    session = Session(client, ttl=2, cancel=cancel)
    try:
        assert not session.done.is_set()
        cancel.set()
        assert session.done.wait(2), "cancel did not end the session"
        assert not session.lost  # orphaned, not lost
        # orphaned, not revoked: the lease still exists until its TTL runs out
        assert client.lease_time_to_live(session.lease).TTL > 0
        deadline = time.monotonic() + 5
        while client.lease_time_to_live(session.lease).TTL > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.lease_time_to_live(session.lease).TTL <= 0, "the keepalive went on after cancel"
    finally:
        session.close(timeout=0.5)
