"""The daemon's core as a state machine, in-process against a real etcd: pause inside the fence
in every order of events, fence and lease loss, controls across a reconnect, exact metrics.

"0 protection writes while paused" is checked on etcd's history (``writes_while_paused``).
"""

from __future__ import annotations

import collections
import json
import threading

import pytest

from tests.daemon.inprocess import (burst, config, converged, on_first_write, populate, protection_count, start,
                                    wait_for, writes_while_paused)
from worker.concurrency import Mutex, Session
from worker.control import set_paused
from worker.daemon.events import InputsChanged, Wedge
from worker.etcd import kv
from tests.harness.faultproxy import FaultProxy
from worker.demo.inventory import put_batched
from worker.keys import Keys
from worker.protection.reconcile import MAX_CHANGE_LINES
from worker.protection.records import STATES


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix + "/ns")


@pytest.fixture
def daemons(etcd_endpoints):
    made = []

    def make(namespace: str, endpoints=None, **kw):
        running = start(config(endpoints or etcd_endpoints, namespace, **kw))
        made.append(running)
        return running

    yield make
    for running in made:
        if running.thread.is_alive():
            running.stop()


#: clusters of the fence-loss test: enough that the pass is still writing when the cut lands
N_FENCE = 10_000


def _leader(*running):
    return wait_for(lambda: next((r for r in running if r.leads()), None), timeout=15, what="a leader")


def _pause(client, keys) -> int:
    set_paused(client, keys, True, by="test")
    return client.current_revision()


def test_pause_holds_across_a_lease_revoke_and_the_same_instance_elected_again(client, keys, daemons):
    ids = populate(client, keys, 300)
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 300), what="first pass")
    term = one.daemon.state.term
    from_rev = _pause(client, keys)
    wait_for(lambda: one.daemon.state.paused, what="paused seen")
    # etcd revokes the leader's lease (as on an etcd leader change, etcd-io/etcd#15247)
    client.lease_revoke(one.daemon.candidacy.session.lease)
    wait_for(lambda: one.leads() and one.daemon.state.term != term, timeout=15, what="re-elected")
    burst(client, keys, ids, salt=1)  # changes the new term sees while paused
    burst_rev = client.current_revision()
    wait_for(lambda: (one.daemon.state.last_pass or {}).get("term") == one.daemon.state.term
             and one.daemon.state.last_pass["revision"] >= burst_rev, what="a pass over the burst")
    assert one.daemon.state.paused and one.metric("is_paused") == 1.0
    checked, bad = writes_while_paused(client, keys, from_rev)
    assert bad == [], f"{len(bad)} protection writes while paused"
    set_paused(client, keys, False, by="test")
    wait_for(lambda: not one.daemon.state.paused, what="resumed")
    resumed_at = client.current_revision()
    wait_for(lambda: writes_while_paused(client, keys, resumed_at)[0] > 0, what="catch-up writes")


def test_pause_holds_when_another_instance_takes_over(client, keys, daemons):
    ids = populate(client, keys, 200)
    a, b = daemons(keys.namespace), daemons(keys.namespace)
    first = _leader(a, b)
    other = b if first is a else a
    wait_for(lambda: converged(client, keys, 200), what="first pass")
    from_rev = _pause(client, keys)
    burst(client, keys, ids, salt=2)
    first.stop()
    wait_for(other.leads, timeout=15, what="takeover")
    burst(client, keys, ids, salt=3)
    burst_rev = client.current_revision()
    wait_for(lambda: (other.daemon.state.last_pass or {}).get("term") == other.daemon.state.term
             and other.daemon.state.last_pass["revision"] >= burst_rev, what="a pass over the burst")
    checked, bad = writes_while_paused(client, keys, from_rev)
    assert bad == [], bad[:5]
    assert other.daemon.state.paused


def test_a_burst_of_5000_changes_then_pause_writes_nothing_after_the_pause(client, keys, daemons):
    ids = populate(client, keys, 5000)
    one = daemons(keys.namespace, ttl=5, request_timeout=1.5)
    wait_for(lambda: converged(client, keys, 5000), timeout=30, what="first pass")
    from_rev = client.current_revision() + 1
    updates_before = one.metric("writes_total", op="update")
    # the whole burst reaches the leader at once (its loop held meanwhile), so the pause lands
    # while the pass over it is writing: the first write of that pass triggers the pause
    release = threading.Event()
    one.daemon.post(Wedge(release))
    burst(client, keys, ids, salt=1)
    paused = on_first_write(client, keys, from_rev, lambda: set_paused(client, keys, True, by="test"))
    release.set()
    assert paused.wait(30)
    wait_for(lambda: one.daemon.state.paused, what="paused seen")
    checked, bad = writes_while_paused(client, keys, from_rev)
    print(f"burst: {checked} protection writes before the pause, {len(bad)} after")
    assert bad == []
    assert one.leads(), "a pause must not end the term"
    # the writes of the pass the pause stopped count, exactly as etcd's history has them
    assert one.metric("writes_total", op="update") - updates_before == checked
    assert checked > 0
    if checked >= 5000:  # a loaded machine ran the pause after the whole pass
        pytest.skip("inconclusive: the pause landed after the pass over the burst")
    assert one.metric("fenced_writes_total") > 1  # the refused batch counted, per change


def test_fence_loss_mid_pass_counts_landed_and_refused_writes_exactly(client, keys, daemons):
    populate(client, keys, N_FENCE)
    from_rev = client.current_revision()
    # delete the Mutex key as soon as the first protection write lands: the pass is mid-way
    stop_watch = on_first_write(client, keys, from_rev, lambda: client.txn(
        kv.txn_request([], [kv.op_delete(keys.lock + "/", prefix=True)])))
    one = daemons(keys.namespace, ttl=5, request_timeout=1.5)
    assert stop_watch.wait(30)
    wait_for(lambda: one.metric("reconcile_runs_total", result="fenced") >= 1, what="a fenced pass")
    wait_for(lambda: converged(client, keys, N_FENCE), timeout=30, what="the next term converges")
    # landed writes of the fenced term counted by op, refused ones counted per change
    first_term_writes = protection_creates_by_first_term(client, keys, from_rev)
    assert 0 < first_term_writes < N_FENCE
    creates = one.metric("writes_total", op="create")
    assert creates == N_FENCE, creates  # every landed create, of both terms, counted once
    refused = one.metric("fenced_writes_total")
    assert refused > 1, "fenced_writes_total counts the changes of the refused transaction, not 1 per txn"
    assert refused <= 126


def protection_creates_by_first_term(client, keys, from_rev) -> int:
    """Records still carrying the first term (written before the fence was lost)."""
    resp = client.range(kv.range_request(keys.protection, prefix=True))
    terms = [json.loads(i.value)["term"] for i in resp.kvs]
    return terms.count(min(terms))


def test_lease_lost_while_waiting_for_the_mutex_ends_the_term_without_a_write(client, keys, daemons):
    populate(client, keys, 50)
    holder = Session(client, ttl=10)
    mutex = Mutex(holder, keys.lock)
    mutex.lock()
    try:
        one = daemons(keys.namespace)
        wait_for(lambda: one.daemon.state.role == "leader", what="elected, waiting for the Mutex")
        assert not one.leads() and one.http("/leader")[0] == 503
        term = one.daemon.state.term
        client.lease_revoke(one.daemon.candidacy.session.lease)
        wait_for(lambda: one.daemon.state.term not in (None, term) or one.daemon.state.role != "leader",
                 what="the term ended")
        assert protection_count(client, keys) == 0
    finally:
        mutex.unlock()
        holder.close()
    wait_for(lambda: converged(client, keys, 50), timeout=15, what="leads once the Mutex is free")


def test_controls_are_read_afresh_after_a_reconnect(client, keys, daemons, private_etcd):
    from worker.etcd import connect
    direct = connect(private_etcd.endpoints)
    try:
        ids = populate(direct, keys, 100)
        with FaultProxy.to(private_etcd.endpoints[0]) as proxy:
            one = daemons(keys.namespace, endpoints=[proxy.endpoint], ttl=6, request_timeout=1.0)
            wait_for(lambda: converged(direct, keys, 100), what="first pass")
            proxy.stall()
            from_rev = _pause(direct, keys)
            burst(direct, keys, ids, salt=1)
            proxy.heal()
            wait_for(lambda: one.daemon.state.paused, timeout=15, what="the pause seen after the reconnect")
            wait_for(lambda: one.leads() or one.daemon.state.role != "leader", what="settled")
            checked, bad = writes_while_paused(direct, keys, from_rev)
            assert bad == []
            assert one.metric("is_paused") == 1.0
    finally:
        direct.close()


def test_state_gauges_follow_incremental_passes(client, keys, daemons):
    ids = populate(client, keys, 30)
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 30), what="first pass")
    # the records land before the pass is booked (its gauges): wait for the booking, not the writes
    wait_for(lambda: gauged_states(one) == stored_states(client, keys), what="the first pass counted")
    before = {s: one.metric("clusters", state=s) for s in ("unprotected", "protecting", "protected", "degraded")}
    assert sum(before.values()) == 30
    # every cluster with a DR site: broken replication -> degraded
    sited = [cid for i, cid in enumerate(ids) if i % 3]
    put_batched(client, ((keys.dr_key(c), json.dumps({"replication": "broken"})) for c in sited))
    wait_for(lambda: one.metric("clusters", state="degraded") == len(sited), what="gauge follows")
    assert one.metric("clusters", state="unprotected") == before["unprotected"]
    client.put(keys.cluster(ids[1]), "not json")
    wait_for(lambda: one.metric("invalid_inputs") == 1, what="invalid gauge follows")
    assert one.metric("writes_total", op="update") >= len(sited)


def stored_states(client, keys) -> dict[str, int]:
    """Protection records by state, from the store: what ``clusters{state}`` must show when settled."""
    records = client.range(kv.range_request(keys.protection, prefix=True)).kvs
    counts = collections.Counter(json.loads(r.value)["state"] for r in records)
    return {s: counts.get(s, 0) for s in STATES}


def reconciled(client, keys, ids) -> bool:
    """Whether every id's record was computed from its DR key as stored now."""
    def by_id(prefix):
        return {r.key.decode().rsplit("/", 1)[1]: r for r in client.range(kv.range_request(prefix, prefix=True)).kvs}
    records, dr = by_id(keys.protection), by_id(keys.dr)
    return all(json.loads(records[c].value)["dr_revision"] == dr[c].mod_revision for c in ids)


def gauged_states(one) -> dict[str, int]:
    return {s: int(one.metric("clusters", state=s)) for s in STATES}


def test_state_gauges_follow_an_incremental_pass_of_more_changes_than_it_lists(client, keys, daemons):
    ids = populate(client, keys, 3000)
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 3000), what="first pass")
    wait_for(lambda: gauged_states(one) == stored_states(client, keys), what="the first pass counted")
    sited = [cid for i, cid in enumerate(ids) if i % 3]
    release = threading.Event()
    one.daemon.post(Wedge(release))  # the whole burst reaches the leader at once: one incremental pass
    burst(client, keys, sited, salt=1)
    wait_for(lambda: len(queued_ids(one)) == len(sited), what="the burst queued")
    release.set()
    wait_for(lambda: reconciled(client, keys, sited), what="the burst reconciled")
    assert one.daemon.state.last_pass["writes"] > MAX_CHANGE_LINES  # more than its change lines keep
    wait_for(lambda: gauged_states(one) == stored_states(client, keys), what="the gauges follow")


def queued_ids(one) -> set[str]:
    return {i for e in list(one.daemon.events.queue) if isinstance(e, InputsChanged) for i in e.ids}


@pytest.mark.slow
def test_state_gauges_stay_exact_when_inputs_change_during_a_full_pass(client, keys, daemons):
    ids = populate(client, keys, 20_000)
    one = daemons(keys.namespace, ttl=5, request_timeout=1.5)
    wait_for(lambda: converged(client, keys, 20_000), timeout=40, what="first pass")
    wait_for(lambda: gauged_states(one) == stored_states(client, keys), what="the first pass counted")
    set_paused(client, keys, True, by="test")
    wait_for(lambda: one.daemon.state.paused, what="paused")
    burst(client, keys, ids, salt=1)  # the catch-up pass writes a lot: the changes below land during it
    burst_rev = client.current_revision()
    wait_for(lambda: (one.daemon.state.last_pass or {}).get("revision", 0) >= burst_rev, timeout=30,
             what="the burst planned while paused")
    sited = [cid for i, cid in enumerate(ids) if i % 3][-600:]  # on a DR site: each change moves a state
    from_rev = client.current_revision() + 1
    changed = on_first_write(client, keys, from_rev, lambda: burst(client, keys, sited, salt=2))
    full_passes = one.metric("reconcile_duration_seconds_count", mode="full")
    set_paused(client, keys, False, by="test")
    assert changed.wait(30)
    wait_for(lambda: one.metric("reconcile_duration_seconds_count", mode="full") > full_passes,
             timeout=30, what="the catch-up full pass done")
    records = {r.key.decode().rsplit("/", 1)[1]: r.mod_revision
               for r in client.range(kv.range_request(keys.protection, prefix=True)).kvs}
    if min(records[c] for c in sited) > max(records[c] for c in ids[:len(ids) // 2]):
        pytest.skip("inconclusive: the changes landed after the full pass had written its first half")
    # the ids that changed mid-pass are looked at again right after the full pass: then settled,
    # with no full pass before the next interval (30 s)
    wait_for(lambda: reconciled(client, keys, sited), timeout=15, what="the changed ids reconciled")
    try:
        wait_for(lambda: gauged_states(one) == stored_states(client, keys), timeout=5,
                 what="clusters{state} equal to the store's records by state")
    except AssertionError:
        got, want = gauged_states(one), stored_states(client, keys)
        raise AssertionError(f"clusters{{state}} {got} != the store's {want}") from None
    assert one.metric("reconcile_duration_seconds_count", mode="full") == full_passes + 1


@pytest.mark.slow
def test_changes_are_reconciled_between_the_pages_of_a_full_pass(client, keys, daemons):
    ids = populate(client, keys, 20_000)
    one = daemons(keys.namespace, ttl=5, request_timeout=1.5)
    wait_for(lambda: converged(client, keys, 20_000), timeout=40, what="first pass")
    set_paused(client, keys, True, by="test")
    wait_for(lambda: one.daemon.state.paused, what="paused")
    burst(client, keys, ids, salt=1)  # every record to update: the catch-up pass writes a lot
    burst_rev = client.current_revision()
    wait_for(lambda: (one.daemon.state.last_pass or {}).get("revision", 0) >= burst_rev, timeout=30,
             what="the burst planned while paused")
    last = ids[-1]  # in the full pass's last page
    from_rev = client.current_revision() + 1
    changed = on_first_write(client, keys, from_rev, lambda: client.put(
        keys.dr_key(last), json.dumps({"replication": "in_sync"})))
    full_passes = one.metric("reconcile_duration_seconds_count", mode="full")
    set_paused(client, keys, False, by="test")  # resume: a full pass catches up
    assert changed.wait(30)
    wait_for(lambda: json.loads(client.get(keys.protection_key(last))[0])["state"] == "protected",
             timeout=30, what="the change reconciled")
    # the catch-up *full* pass to its end: an incremental pass (the change's own) also moves
    # last_pass, and reading the records before the full pass ends compares against half of it
    wait_for(lambda: one.metric("reconcile_duration_seconds_count", mode="full") > full_passes,
             timeout=30, what="the catch-up full pass done")
    records = client.range(kv.range_request(keys.protection, prefix=True)).kvs
    mine = next(r for r in records if r.key.decode().endswith("/" + last))
    latest_other = max(r.mod_revision for r in records if r is not mine)
    changed_at = client.range(kv.range_request(keys.dr_key(last))).kvs[0].mod_revision
    if changed_at > latest_other:  # a loaded machine ran the change after the whole pass
        pytest.skip("inconclusive: the change was made after the full pass had ended")
    assert mine.mod_revision < latest_other, "the change waited for the full pass to end"


def test_a_mass_change_is_reconciled_by_one_full_pass(client, keys, daemons):
    """Issue 16: a change set of >= MASS_CHANGE_MIN ids and >= 1/MASS_CHANGE_RATIO of the ids the last
    full pass saw goes to one full pass, not an incremental pass reading each id. Here the first pass
    created every record (its memo is empty: ``known`` must be the ids it saw, not the memo)."""
    ids = [cid for i, cid in enumerate(populate(client, keys, 4000)) if i % 3]   # 2,666 with a DR site
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 4000), what="first pass")
    wait_for(lambda: one.daemon.state.last_pass is not None, what="first pass booked")
    full = one.metric("reconcile_duration_seconds_count", mode="full")
    incremental = one.metric("reconcile_duration_seconds_count", mode="incremental")
    release = threading.Event()
    one.daemon.post(Wedge(release))  # the whole change reaches the leader at once
    burst(client, keys, ids, salt=1)
    wait_for(lambda: len(queued_ids(one)) == len(ids), what="the change queued")
    release.set()
    wait_for(lambda: reconciled(client, keys, ids), timeout=30, what="the change reconciled")
    wait_for(lambda: one.metric("reconcile_duration_seconds_count", mode="full") == full + 1, what="a full pass")
    assert one.metric("reconcile_duration_seconds_count", mode="incremental") == incremental


def test_a_bug_escaping_a_pass_ends_the_term_not_the_process(client, keys, daemons, monkeypatch):
    """Issue 16 item 2: an unexpected exception out of a pass is logged and ends the term; the
    instance campaigns again, leads a new term, and reconciles."""
    from worker.daemon import leader
    real = leader.incremental_pass
    failed = threading.Event()

    def buggy(*args, **kw):
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug in the pass")
        return real(*args, **kw)

    monkeypatch.setattr(leader, "incremental_pass", buggy)
    populate(client, keys, 10)
    one = daemons(keys.namespace)
    wait_for(lambda: converged(client, keys, 10) and one.leads(), what="first pass")
    term = one.daemon.state.term
    burst(client, keys, ["c-000001"], salt=1)
    assert failed.wait(10)
    wait_for(lambda: one.leads() and one.daemon.state.term not in (None, term), what="a new term")
    wait_for(lambda: reconciled(client, keys, ["c-000001"]), what="the change reconciled by the new term")
    assert one.thread.is_alive() and one.exit_code == []
