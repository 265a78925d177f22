"""A network partition between the leader and etcd, made with a real TCP proxy on loopback.

The leader daemon reaches etcd only through ``tests.harness.faultproxy.FaultProxy``; the followers
connect directly. Cutting the proxy partitions the leader alone: it must stop leading before its
lease can have expired on the server (so before anyone else can lead), a follower takes over after
the TTL, and when the link heals the old leader rejoins as a follower. Bytes it sent into the black
hole are delivered on heal, late, exactly like TCP retransmissions: the fence must refuse them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from tests.faults.helpers import TTL, Inputs, assert_clean, await_log, leader_of, log_events, one_leader, plans_nothing
from tests.system.helpers import await_leader
from tests.harness.faultproxy import FaultProxy

pytestmark = pytest.mark.faults


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


@pytest.fixture
def proxy(private_etcd):
    with FaultProxy.to(private_etcd.endpoints[0]) as p:
        yield p


@pytest.mark.parametrize("fault", ["stall", "drop"])
def test_partitioned_leader_steps_down_before_its_lease_expires_and_rejoins(fault, private_etcd, proxy, direct,
                                                                            fkeys, workers):
    inputs = Inputs(direct, fkeys)
    inputs.populate(8)
    (old,) = workers([[proxy.endpoint]], fkeys.namespace)
    assert old.wait_http("/leader", 200, timeout=10), old.log_path.read_text()[-2000:]
    followers = workers([private_etcd.endpoints, private_etcd.endpoints], fkeys.namespace)
    everyone = [old, *followers]
    inputs.await_converged()
    old_id, old_term = leader_of(direct, fkeys)
    assert old_id == old.instance_id
    from_revision = direct.current_revision(fkeys.root) + 1
    assert proxy.bytes_forwarded > 0 and proxy.connections() > 0, "the leader does not go through the proxy"

    cut_wall, cut = time.time(), time.monotonic()
    getattr(proxy, fault)()
    inputs.churn(5)  # the old leader cannot see these; the next one must reconcile them
    new_id, new_term, seen = await_leader(direct, fkeys, other_than=old_id, timeout=TTL + 8)
    # the old leader had stopped leading before etcd expired its lease (which is what let the new
    # one in): its /leader is already 503 the moment the new leader is seen
    assert old.get("/leader")[0] == 503, "two instances lead at once"
    takeover = seen - cut
    assert takeover <= TTL + 2.0, f"takeover took {takeover:.2f} s"
    assert new_term > old_term
    inputs.await_converged(timeout=10)

    stepped = await_log(old, "stepped_down", where=lambda e: e.get("term") == old_term)
    assert "lease" in stepped["reason"], stepped
    print(f"{fault}: takeover {takeover:.2f} s, stepped down {_ts(stepped) - cut_wall:.2f} s after the cut: "
          f"{stepped['reason']}")
    # it gave up within its lease: the latest the server can expire it is the cut plus the TTL
    # (no keepalive got through after the cut); it logs after releasing what it could, hence the margin
    assert _ts(stepped) <= cut_wall + TTL + 1.5, (stepped, cut_wall)
    old_writes = [e for e in log_events(old, "reconcile_pass") if e.get("term") == old_term and e.get("writes")]
    late = [e for e in old_writes if _ts(e) > cut_wall + TTL]
    assert late == [], f"the partitioned leader wrote after its lease deadline: {late}"
    assert old.running(), "a partitioned instance must keep running"

    proxy.heal()
    # back in line as a follower, never leading again by itself
    assert old.wait_http("/readyz", 200, timeout=15), old.log_path.read_text()[-3000:]
    assert old.wait_http("/healthz", 200, timeout=10)
    assert old.get("/leader")[0] == 503
    assert leader_of(direct, fkeys) == (new_id, new_term)
    inputs.churn(3)
    inputs.await_converged(timeout=10)
    assert plans_nothing(direct, fkeys) == []
    one_leader(everyone, direct, fkeys)
    # every write since the cut, including whatever the black hole delivered late, was the leader's
    assert_clean(direct, fkeys, from_revision)
