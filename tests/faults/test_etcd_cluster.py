"""etcd's own faults under three daemons: a 3-member cluster loses the member the leader talks to,
its raft leader, its quorum, and has every member restarted in turn.

Every scenario ends the same way: the records converge to what the rules say for every input
change made during and after the fault (none lost), a dry-run pass plans nothing, exactly one
instance leads (and is the one etcd names), and the auditor finds no protection write that was not
made by the leader of its revision (never two writers).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.faults.helpers import (
    TTL,
    Inputs,
    assert_clean,
    await_new_term,
    await_http,
    await_log,
    leader_of,
    member_serving_writes,
    move_raft_leader,
    one_leader,
    plans_nothing,
    raft_leader,
)
from worker.etcd.client import EtcdClient
from worker.demo.embedded_etcd import EtcdCluster
from worker.demo.instances import WorkerProcess
from worker.keys import Keys

pytestmark = pytest.mark.faults


@dataclass
class HA:
    etcd: EtcdCluster
    client: EtcdClient
    keys: Keys
    inputs: Inputs
    workers: list[WorkerProcess]
    from_revision: int

    def by_id(self, instance_id: str) -> WorkerProcess:
        return next(w for w in self.workers if w.instance_id == instance_id)

    def finish(self, changes_after: int = 3) -> None:
        """An input change after recovery is reconciled too; then the common checks."""
        self.inputs.churn(changes_after)
        self.inputs.await_converged(timeout=20)
        assert plans_nothing(self.client, self.keys) == []
        one_leader(self.workers, self.client, self.keys, timeout=TTL + 10)
        assert_clean(self.client, self.keys, self.from_revision)


@pytest.fixture
def ha(etcd3, cluster_client, fkeys, workers) -> HA:
    inputs = Inputs(cluster_client, fkeys)
    inputs.populate(8)
    eps = etcd3.endpoints
    # each daemon lists the members in its own order (as three hosts configured apart would)
    group = workers([eps[i:] + eps[:i] for i in range(3)], fkeys.namespace)
    inputs.await_converged()
    one_leader(group, cluster_client, fkeys)
    return HA(etcd3, cluster_client, fkeys, inputs, group, cluster_client.current_revision(fkeys.root) + 1)


def test_kill_the_member_the_leader_uses(ha):
    leader_id, term = leader_of(ha.client, ha.keys)
    member = member_serving_writes(ha.etcd.members, ha.inputs)
    # the raft leader's death is the next test: here the member dies as a follower, so what is
    # tested is the lost connection alone
    move_raft_leader(ha.etcd.members, away_from=member)
    member.kill()
    # inputs keep changing on the two members left: the leader fails over to one and follows them
    ha.inputs.churn(6)
    ha.inputs.await_converged(timeout=TTL + 10)
    # the leader lost a connection, not its lease: one member's death costs no leadership
    assert leader_of(ha.client, ha.keys) == (leader_id, term), "a member's death changed the leader"
    other = member_serving_writes([m for m in ha.etcd.members if m is not member], ha.inputs)
    assert other is not member
    member.restart()
    ha.finish()


def test_kill_the_raft_leader(ha):
    member = raft_leader(ha.etcd.members)
    member.kill()
    ha.inputs.churn(6)  # retried while the two left elect a new raft leader
    ha.inputs.await_converged(timeout=TTL + 10)
    survivor = raft_leader([m for m in ha.etcd.members if m is not member])
    assert survivor is not member
    member.restart()
    ha.finish()


def test_quorum_loss_stops_writes_and_recovers(ha):
    leader_id, old_term = leader_of(ha.client, ha.keys)
    leader = ha.by_id(leader_id)
    raft = raft_leader(ha.etcd.members)
    doomed = [raft, next(m for m in ha.etcd.members if m is not raft)]  # the raft leader and one follower
    start_wall = time.time()
    for member in doomed:
        member.kill()
    # no quorum: no lease can be renewed, so every session dies at its deadline and /healthz says so
    took = await_http(ha.workers, "/healthz", 503, timeout=TTL + 5)
    assert took <= TTL + 2.5, f"/healthz turned 503 everywhere only after {took:.2f} s"
    print(f"quorum lost: /healthz 503 on every instance after {took:.2f} s")
    assert all(w.get("/leader")[0] == 503 for w in ha.workers), "someone claims to lead without quorum"
    stepped = await_log(leader, "stepped_down", where=lambda e: e.get("term") == old_term)
    assert "lease" in stepped["reason"], stepped
    # on its own clock, by its lease's deadline: not whenever etcd happens to answer again
    stepped_after = datetime.fromisoformat(stepped["timestamp"]).timestamp() - start_wall
    assert stepped_after <= TTL + 1.0, f"the leader ended its term {stepped_after:.2f} s after quorum was lost"
    assert all(w.running() for w in ha.workers), "losing etcd must not end a process"
    # its lost lease could not be revoked (no quorum): etcd's next raft leader will renew it
    await_log(leader, "revoke failed", contains=True)
    doomed[0].restart()  # two of three: quorum is back once it is healthy
    back = time.monotonic()
    # a leader of a new term. etcd's new raft leader renews every lease, so the old leader's key
    # would outlive the outage by a TTL; the old leader revokes its lost lease as soon as etcd
    # answers again (its revoke during the outage failed), so the line moves at once
    new_id, new_term = await_new_term(ha.client, ha.keys, old_term, timeout=TTL + 8)
    regained = time.monotonic() - back
    print(f"quorum back: {new_id} leads a new term {regained:.2f} s after quorum returned")
    assert regained <= TTL, f"no new leader for {regained:.2f} s after quorum returned"
    # ... so the old leader revokes it as soon as etcd answers again, instead of leaving its key
    # to hold the line for another TTL
    await_log(leader, "stale_lease_revoked")
    doomed[1].restart()
    ha.finish(changes_after=5)


def test_restart_members_one_by_one(ha):
    leader_id, term = leader_of(ha.client, ha.keys)
    for member in ha.etcd.members:
        member.restart()  # SIGKILL, same data dir and ports, back to healthy
        ha.inputs.churn(3)
        ha.inputs.await_converged(timeout=TTL + 10)
    ha.finish()


def test_sigstop_a_member_under_the_leader(ha):
    """A frozen member (SIGSTOP) is worse than a dead one: connections stay open, nothing answers.
    The leader must move to another member before its lease deadline or step down cleanly."""
    member = member_serving_writes(ha.etcd.members, ha.inputs)
    member.signal(signal.SIGSTOP)
    try:
        ha.inputs.churn(4)
        ha.inputs.await_converged(timeout=2 * TTL + 10)
    finally:
        member.signal(signal.SIGCONT)
    member.wait_healthy(10)
    ha.finish()
