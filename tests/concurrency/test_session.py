"""Session: Go's session_test.go, plus the ways a lease ends (revoke, close, dead etcd)."""

import time

import pytest

from worker.concurrency import Mutex, Session
from worker.etcd import LeaseNotFoundError, connect

from .conftest import keys_under


def test_session_adopts_lease_and_orphan_sets_done(client):
    """Go: TestSessionOptions (WithLease, then Orphan closes Done)."""
    lease = client.lease_grant(100).ID
    s = Session(client, lease=lease)
    try:
        assert s.lease == lease
        assert s.ttl == 100
        assert 90 < s.remaining() <= 100
        s.orphan()
        assert s.done.wait(0.1)
        assert not s.lost  # orphaned, not lost
        assert client.lease_time_to_live(lease).TTL > 0  # orphan keeps the lease
    finally:
        client.lease_revoke(lease)


def test_session_ttl_option(client, sessions):
    """Go: TestSessionTTLOptions: the lease has the asked TTL, not the default 60."""
    s = sessions(ttl=90)
    ttl = client.lease_time_to_live(s.lease).TTL
    assert 70 <= ttl <= 90
    assert s.ttl == 90


def test_close_revokes_and_deletes_keys(client, prefix):
    s = Session(client, ttl=30)
    m = Mutex(s, prefix)
    m.lock()
    assert len(keys_under(client, prefix)) == 1
    assert s.close() is True
    assert s.done.is_set()
    assert keys_under(client, prefix) == []
    assert client.lease_time_to_live(s.lease).TTL == -1
    assert s.close() is False  # a second close is harmless


def test_done_when_lease_revoked_elsewhere(client, sessions):
    s = sessions(ttl=3)
    client.lease_revoke(s.lease)
    assert s.done.wait(3), "revoked lease not noticed (the next keepalive answers TTL 0)"
    assert s.lost and "revoked" in s.lost_reason
    assert s.remaining() == 0


def test_adopting_a_missing_lease_fails_at_once(client):
    lease = client.lease_grant(5).ID
    client.lease_revoke(lease)
    with pytest.raises(LeaseNotFoundError):
        Session(client, lease=lease)


def test_bad_ttl_keeps_default(client, sessions):
    assert sessions(ttl=0).ttl == 60


def test_close_does_not_hang_when_etcd_is_gone(private_etcd):
    c = connect(private_etcd.endpoints, request_timeout=1.0)
    try:
        s = Session(c, ttl=10)
        private_etcd.members[0].kill()
        start = time.monotonic()
        assert s.close(timeout=0.5) is False
        assert time.monotonic() - start < 4.0
        assert s.done.is_set()
    finally:
        c.close()


def test_lease_lost_when_etcd_stays_down_past_ttl(private_etcd):
    c = connect(private_etcd.endpoints, request_timeout=0.5)
    try:
        s = Session(c, ttl=2)
        private_etcd.members[0].kill()
        assert s.done.wait(4), "no keepalive answered for the TTL: the session must be done"
        assert s.lost and "TTL" in s.lost_reason
    finally:
        c.close()
