"""The auditor against real etcd history: every protection put and delete is attributed to the
leader of its revision, and each way of writing around the fence is reported with key and revision."""

from __future__ import annotations

import json

import pytest

from tests.protection.helpers import cluster, dr, put
from tests.system.helpers import run_cli
from worker.control import set_paused
from worker.etcd import kv
from worker.ops.audit import audit
from worker.protection.reconcile import full_pass


def _inventory(client, keys, count: int = 4) -> None:
    for i in range(count):
        put(client, keys.cluster(f"c-{i}"), cluster(True, "site-b"))
        put(client, keys.dr_key(f"c-{i}"), dr("in_sync"))


def _forge(client, keys, ops, stamp: str | None) -> int:
    """A transaction that did not go through a fence (an operator, a stale process)."""
    extra = [kv.op_put(keys.stamp, stamp)] if stamp is not None else []
    return client.txn(kv.txn_request([], ops + extra)).header.revision


def _audit_cli(capsys, endpoints, keys, since: int, to: int) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, "audit", "--since-rev", str(since), "--to-rev", str(to), "--json",
                          "--endpoints", ",".join(endpoints), "--namespace", keys.namespace)
    assert err.count("\n") <= 2, err   # no traceback
    return code, json.loads(out)


def test_clean_stretch_of_puts_and_deletes_is_attributed_and_exits_0(client, keys, lead, capsys, etcd_endpoints):
    since = client.current_revision() + 1
    _inventory(client, keys)
    leader = lead()
    assert full_pass(client, keys, leader.fence).created == 4
    put(client, keys.dr_key("c-1"), dr("broken"))
    client.delete(keys.cluster("c-2"))
    result = full_pass(client, keys, leader.fence)
    assert (result.updated, result.deleted) == (1, 1)
    to = client.current_revision()
    report = audit(client, keys, since, to)
    assert report.violations == [] and report.checked == 4 + 1 + 1   # creates, the update and the delete
    code, payload = _audit_cli(capsys, etcd_endpoints, keys, since, to)
    assert code == 0 and payload["violations"] == [] and payload["checked"] == 6
    assert set(payload) >= {"from_revision", "to_revision", "checked", "violations"}


def test_planted_stale_delete_is_reported_with_key_and_revision(client, keys, lead, capsys, etcd_endpoints):
    _inventory(client, keys, 2)
    leader = lead()
    full_pass(client, keys, leader.fence)
    since = client.current_revision() + 1
    # what an operator's `etcdctl del` does: a delete under protection/ without the leader's stamp
    revision = _forge(client, keys, [kv.op_delete(keys.protection_key("c-0"))], stamp=None)
    report = audit(client, keys, since, revision)
    assert report.checked == 1
    [v] = report.violations
    assert (v.key, v.revision, v.op, v.kind, v.term, v.leader_term) == (
        keys.protection_key("c-0"), revision, "delete", "unattributed", None, leader.term)
    code, payload = _audit_cli(capsys, etcd_endpoints, keys, since, revision)
    assert code == 1 and [(p["key"], p["revision"], p["kind"]) for p in payload["violations"]] == [
        (keys.protection_key("c-0"), revision, "unattributed")]


def test_a_write_made_while_paused_is_reported(client, keys, lead, capsys):
    _inventory(client, keys, 2)
    leader = lead()
    full_pass(client, keys, leader.fence)
    since = client.current_revision() + 1
    set_paused(client, keys, True, "test")
    record = json.loads(client.get(keys.protection_key("c-1"))[0])
    record["reason"] = "written while paused"
    # the leader's own term and lease in the stamp: only the pause key gives it away
    revision = _forge(client, keys, [kv.op_put(keys.protection_key("c-1"), json.dumps(record))], leader.stamp())
    set_paused(client, keys, False, "test")
    report = audit(client, keys, since, client.current_revision())
    [v] = report.violations
    assert (v.key, v.revision, v.kinds, v.term) == (keys.protection_key("c-1"), revision, ["paused"], leader.term)
    # the fenced writer itself never writes while paused: its transaction compares the key's absence
    set_paused(client, keys, True, "test")
    put(client, keys.dr_key("c-1"), dr("broken"))
    from worker.protection.writer import PausedError
    with pytest.raises(PausedError):
        full_pass(client, keys, leader.fence)
    set_paused(client, keys, False, "test")
    assert len(audit(client, keys, since, client.current_revision()).violations) == 1


def test_a_term_that_goes_backwards_is_reported(client, keys, lead):
    _inventory(client, keys, 2)
    first = lead("first")
    full_pass(client, keys, first.fence)
    since = client.current_revision() + 1
    first.election.resign()
    first.mutex.unlock()
    second = lead("second")
    put(client, keys.dr_key("c-0"), dr("broken"))
    assert full_pass(client, keys, second.fence).updated == 1
    assert second.term > first.term
    # the first leader's evidence, replayed after the second leader wrote
    record = json.loads(client.get(keys.protection_key("c-1"))[0])
    record |= {"term": first.term, "reason": "stale"}
    revision = _forge(client, keys, [kv.op_put(keys.protection_key("c-1"), json.dumps(record))],
                      first.stamp())
    report = audit(client, keys, since, revision)
    assert report.checked == 2
    [v] = report.violations
    assert (v.key, v.revision, v.term, v.leader_term) == (keys.protection_key("c-1"), revision, first.term,
                                                          second.term)
    assert "term_backwards" in v.kinds and v.kind == "stale_term"


def test_a_write_by_the_leader_without_the_mutex_is_reported(client, keys, lead, sessions_for_mutex):
    _inventory(client, keys, 2)
    leader = lead()
    full_pass(client, keys, leader.fence)
    since = client.current_revision() + 1
    leader.mutex.unlock()
    other = sessions_for_mutex()   # another lease holds the reconcile Mutex now
    record = json.loads(client.get(keys.protection_key("c-0"))[0])
    record["reason"] = "no Mutex"
    revision = _forge(client, keys, [kv.op_put(keys.protection_key("c-0"), json.dumps(record))], leader.stamp())
    [v] = audit(client, keys, since, revision).violations
    assert (v.key, v.revision, v.kinds, v.lock_lease) == (keys.protection_key("c-0"), revision, ["mutex"],
                                                          f"{other:x}")


@pytest.fixture
def sessions_for_mutex(client, keys):
    from worker.concurrency import Mutex, Session
    made = []

    def take() -> int:
        session = Session(client, ttl=30)
        made.append(session)
        Mutex(session, keys.lock).lock(timeout=10)
        return session.lease

    yield take
    for session in made:
        session.close(timeout=0.5)
