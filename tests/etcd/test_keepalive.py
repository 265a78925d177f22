"""LeaseKeeper against a real etcd: kept alive, revoked, frozen server, restarted server."""

from __future__ import annotations

import threading
import time

import pytest

from worker.etcd import LeaseKeeper, connect
from worker.demo.embedded_etcd import EtcdCluster

from .conftest import wait_until


def test_keeper_keeps_a_lease_alive_past_three_ttls():
    # etcd's least lease TTL is 1.5 election timeouts (2 s by default): a faster election timeout
    # lets a 1 s lease exist, so three TTLs take 3 s of the suite, not 6.
    cluster = EtcdCluster(1, extra_args=["--heartbeat-interval", "50", "--election-timeout", "500"]).start()
    client = connect(cluster.endpoints)
    lease = client.lease_grant(1)
    assert lease.TTL == 1
    client.put("/ka/k", "v", lease=lease.ID)
    keeper = LeaseKeeper(client, lease.ID, lease.TTL)
    try:
        # No event marks "three TTLs passed" on the server; the keeper's own keepalive count is
        # the event: 9 answered keepalives at TTL/3 span 3 TTLs.
        assert wait_until(lambda: keeper.keepalives >= 9, timeout=3 * lease.TTL + 2)
        assert not keeper.lost.is_set(), keeper.lost_reason
        # etcd reports whole seconds left (a 1 s lease shows 0 between keepalives) and -1 once
        # expired; the key attached to the lease is the sharper witness that it never lapsed.
        assert client.lease_time_to_live(lease.ID).TTL >= 0
        assert client.get("/ka/k")[0] == b"v"
        assert keeper.remaining() > 0
    finally:
        keeper.stop()
        client.close()
        cluster.close()


def test_revoke_from_another_client_sets_lost(client, make_client):
    lease = client.lease_grant(30)
    reasons: list[str] = []
    keeper = LeaseKeeper(client, lease.ID, lease.TTL, on_lost=reasons.append, interval=0.2)
    try:
        assert wait_until(lambda: keeper.keepalives >= 1, timeout=2)
        make_client().lease_revoke(lease.ID)
        revoked = time.monotonic()
        assert keeper.lost.wait(1.5), "revocation not noticed"
        assert time.monotonic() - revoked < 1.5
        assert keeper.lost_reason and "revoked" in keeper.lost_reason
        assert reasons == [keeper.lost_reason]  # on_lost called exactly once
    finally:
        keeper.stop()


@pytest.mark.faults
def test_frozen_etcd_sets_lost_by_the_ttl(private_etcd):
    member = private_etcd.members[0]
    client = connect(private_etcd.endpoints, request_timeout=1.0)
    lease = client.lease_grant(2)
    keeper = LeaseKeeper(client, lease.ID, lease.TTL)
    try:
        assert wait_until(lambda: keeper.keepalives >= 1, timeout=2)
        member.pause()
        paused = time.monotonic()
        last_confirmed = keeper.last_confirmed
        assert keeper.lost.wait(lease.TTL + 1.5), "lease never declared lost under a frozen etcd"
        # never later than TTL (plus scheduling slack) after the last answered keepalive
        assert time.monotonic() - last_confirmed <= lease.TTL + 0.5
        assert time.monotonic() - paused <= lease.TTL + 0.5
        assert "TTL" in (keeper.lost_reason or "")
        assert keeper.remaining() == 0.0
    finally:
        member.resume()
        keeper.stop()
        client.close()


@pytest.mark.faults
def test_keeper_survives_a_restart_shorter_than_the_ttl(private_etcd):
    member = private_etcd.members[0]
    client = connect(private_etcd.endpoints, request_timeout=1.0)
    lease = client.lease_grant(5)
    keeper = LeaseKeeper(client, lease.ID, lease.TTL, interval=0.3)
    try:
        assert wait_until(lambda: keeper.keepalives >= 1, timeout=2)
        member.restart()
        restarted = keeper.keepalives
        assert wait_until(lambda: keeper.keepalives > restarted, timeout=3), "no keepalive after the restart"
        assert not keeper.lost.is_set(), keeper.lost_reason
        assert client.lease_time_to_live(lease.ID).TTL > 0
    finally:
        keeper.stop()
        client.close()


def test_stop_from_another_thread_ends_the_keeper_promptly(client):
    lease = client.lease_grant(30)
    keeper = LeaseKeeper(client, lease.ID, lease.TTL)
    assert wait_until(lambda: keeper.keepalives >= 1, timeout=2)
    stopper = threading.Thread(target=keeper.stop)
    started = time.monotonic()
    stopper.start()
    stopper.join(3)
    assert not stopper.is_alive() and time.monotonic() - started < 1.0
    assert not keeper._thread.is_alive()
    assert not keeper.lost.is_set()
    client.lease_revoke(lease.ID)
