"""The test harness itself: a member must never mistake another etcd on its port for itself
(when another process takes a port between ``free_port()`` and etcd's bind, a health check could
reach the intruder, and faults would then hit the wrong process)."""

from __future__ import annotations

from worker.etcd import connect
from worker.demo.embedded_etcd import EtcdCluster


def test_member_whose_client_port_was_taken_moves_to_a_free_one(private_etcd):
    intruder = private_etcd.members[0]
    cluster = EtcdCluster(1)
    member = cluster.members[0]
    member.client_port = intruder.client_port  # as if another test's etcd took it meanwhile
    with cluster:
        assert member.client_port != intruder.client_port
        assert member.running() and intruder.running()
        mine, theirs = connect(cluster.endpoints), connect(private_etcd.endpoints)
        try:
            mine.put("/embedded/k", "mine")
            assert theirs.get("/embedded/k") == (None, None)  # the write did not land in the intruder
        finally:
            mine.close()
            theirs.close()
