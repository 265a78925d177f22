"""Endpoint failover and finite timeouts, against real etcd processes killed, restarted and paused."""

from __future__ import annotations

import subprocess
import time

import pytest

from worker.etcd import EtcdTimeoutError, EtcdUnavailableError, connect
from worker.etcd.errors import EtcdError
from worker.demo.embedded_etcd import EtcdCluster, find_binary

from .conftest import wait_until

pytestmark = pytest.mark.faults


def _member_in_use(cluster, client):
    netloc = client.endpoint_in_use.netloc
    return next(m for m in cluster.members if m.endpoint.endswith(netloc))


def _place_leader(cluster, client, *, on, off=None) -> None:
    """Make ``on`` the raft leader (or, with ``off``, any member but ``off``): etcdctl move-leader,
    sent to the current leader, then wait (bounded) until the cluster reports the new leader."""
    members = {m.name: m for m in client.members}
    leader = client.status().leader.name
    if off is not None:
        if leader != off.name:
            return
        on = next(m for m in cluster.members if m.name != off.name)
    elif leader == on.name:
        return
    source = next(m for m in cluster.members if m.name == leader)
    subprocess.run([find_binary("etcdctl"), "--endpoints", source.endpoint, "move-leader",
                    f"{members[on.name].id:x}"], check=True, capture_output=True, timeout=10)
    assert wait_until(lambda: client.status().leader.name == on.name, timeout=5)


def test_killing_a_follower_in_use_fails_over_at_once(etcd3):
    client = connect(etcd3.endpoints, request_timeout=1.0)
    try:
        client.put("/f/before", "1")
        victim = _member_in_use(etcd3, client)
        _place_leader(etcd3, client, on=None, off=victim)
        victim.kill()
        killed_at = time.monotonic()

        # An idempotent read succeeds without the caller retrying.
        assert client.get("/f/before")[0] == b"1"
        # A write is sent once: it may fail with "unavailable" on the dead member; a retry works.
        for attempt in range(2):
            try:
                client.put("/f/after", "2")
                break
            except EtcdUnavailableError:
                assert attempt == 0, "a retried write failed again after the failover"
        assert client.get("/f/after")[0] == b"2"
        assert time.monotonic() - killed_at < 2 * client.request_timeout
        assert client.endpoint_in_use.netloc != victim.endpoint.split("//")[1]
    finally:
        client.close()


@pytest.fixture
def fast_etcd3():
    """3 members electing a new leader within ~0.5-1 s (etcd's defaults take 1-2 s)."""
    with EtcdCluster(3, extra_args=["--heartbeat-interval", "50", "--election-timeout", "500"]) as cluster:
        yield cluster


def test_killing_the_leader_in_use_recovers_after_the_election(fast_etcd3):
    """With the leader gone a write can also time out on a live member (its proposal died with
    the leader) until a new leader is elected: the caller retries, and it works within an
    election plus a couple of request timeouts. A read rides through the election without a
    retry from the caller, as long as the request timeout outlasts the election."""
    etcd3 = fast_etcd3
    client = connect(etcd3.endpoints, request_timeout=2.0)
    try:
        client.put("/f/before", "1")
        victim = _member_in_use(etcd3, client)
        _place_leader(etcd3, client, on=victim)
        victim.kill()
        killed_at = time.monotonic()

        assert client.get("/f/before")[0] == b"1"
        assert time.monotonic() - killed_at < 3 * client.request_timeout + 1.0

        failures: list[str] = []
        for _ in range(4):
            try:
                client.put("/f/after", "2")
                break
            except (EtcdUnavailableError, EtcdTimeoutError) as exc:
                failures.append(type(exc).__name__)
        else:
            pytest.fail(f"writes still failing after the election: {failures}")
        assert len(failures) <= 2, failures
        assert time.monotonic() - killed_at < 3 * client.request_timeout + 3.0
        assert client.get("/f/after")[0] == b"2"
    finally:
        client.close()


def test_single_endpoint_is_usable_again_soon_after_a_restart(private_etcd):
    member = private_etcd.members[0]
    client = connect(private_etcd.endpoints, request_timeout=1.0)
    try:
        client.put("/f/k", "v")
        member.kill()
        with pytest.raises(EtcdUnavailableError):
            client.get("/f/k")
        member.start()  # same data dir and ports
        back = time.monotonic()
        errors: list[str] = []

        def usable() -> bool:
            try:
                return client.get("/f/k")[0] == b"v"
            except EtcdError as exc:
                errors.append(type(exc).__name__)
                return False

        # pyetcd would shun the only endpoint for 300 s; ours retries after 1 s at most.
        assert wait_until(usable, timeout=2.0, interval=0.05), f"still failing: {errors[-3:]}"
        assert time.monotonic() - back < 2.0
    finally:
        client.close()


def test_get_on_a_paused_etcd_times_out(private_etcd):
    member = private_etcd.members[0]
    client = connect(private_etcd.endpoints, request_timeout=0.5)
    try:
        client.put("/f/k", "v")
        member.pause()
        assert member.running()
        started = time.monotonic()
        with pytest.raises(EtcdTimeoutError):
            client.get("/f/k")
        elapsed = time.monotonic() - started
        # a "never hangs" bound, not a performance claim
        assert elapsed < 3 * client.request_timeout + 1.0, elapsed
    finally:
        member.resume()
        client.close()


def test_connect_to_a_paused_etcd_fails_within_the_dial_timeout(private_etcd):
    member = private_etcd.members[0]
    member.pause()
    try:
        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError, match="cannot reach etcd"):
            connect(private_etcd.endpoints, dial_timeout=0.5)
        assert time.monotonic() - started < 0.5 + 1.0
    finally:
        member.resume()
