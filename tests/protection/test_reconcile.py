"""Full and incremental passes against a real etcd: the spec's acceptance cases, fencing,
no-op passes, paging, bad input, conflicts."""

from __future__ import annotations

import json
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import WorkerError
from worker.etcd import Cmp, Op
from worker.protection.inputs import MAX_DR_SITE_BYTES
from worker.keys import Keys
from worker.protection.reader import read_all, read_ids
from worker.protection.reconcile import WRITE_DEPTH, InvalidLog, full_pass, incremental_pass
from worker.protection.writer import BatchWriter, Fence, FenceLostError

from tests.protection.helpers import (DeadlineTooClose, cluster, count, delete, dr, get, make_fence, put, put_many,
                                     record, refusing_fence)


def test_state_table_and_record_format(client, keys, fence):
    put(client, keys.cluster("none"), cluster(True, None))
    put(client, keys.dr_key("none"), "garbage, never consulted")
    put(client, keys.cluster("nodr"), cluster(True, "b"))
    for rep in ("syncing", "in_sync", "broken"):
        put(client, keys.cluster(rep), cluster(True, "site-b"))
        put(client, keys.dr_key(rep), dr(rep))
    result = full_pass(client, keys, fence, now=1764067485.9)
    assert (result.seen, result.created, result.invalid) == (5, 5, [])
    assert result.states == {"degraded": 1, "protected": 1, "protecting": 2, "unprotected": 1}
    assert sorted(result.changes) == sorted(["create broken none -> degraded", "create in_sync none -> protected",
                                             "create nodr none -> protecting", "create none none -> unprotected",
                                             "create syncing none -> protecting"])
    rec = record(client, keys, "in_sync")
    assert list(rec) == ["state", "reason", "dr_site", "cluster_revision", "dr_revision", "term", "updated_at"]
    assert rec["state"] == "protected" and rec["dr_site"] == "site-b" and rec["term"] == fence.term
    assert rec["cluster_revision"] == get(client, keys.cluster("in_sync")).mod_revision
    assert rec["dr_revision"] == get(client, keys.dr_key("in_sync")).mod_revision
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["updated_at"])
    assert record(client, keys, "none")["dr_revision"] is None
    assert record(client, keys, "nodr") | {"term": 0, "updated_at": ""} == {
        "state": "protecting", "reason": "DR site b has no replication status yet", "dr_site": "b",
        "cluster_revision": get(client, keys.cluster("nodr")).mod_revision, "dr_revision": None,
        "term": 0, "updated_at": ""}


def test_unchanged_pass_writes_nothing_and_keeps_the_revision(client, keys, fence):
    put_many(client, {keys.cluster(f"c{i}"): cluster(True, "b") for i in range(50)})
    put_many(client, {keys.dr_key(f"c{i}"): dr("in_sync") for i in range(0, 50, 2)})
    put(client, keys.cluster("bad"), "{not json")
    assert full_pass(client, keys, fence).created == 50
    delete(client, keys.election + "/fence-test")         # that leader is gone: the next one has a new term
    other_term = make_fence(client, keys)
    assert other_term.term > fence.term
    before, txns = client.current_revision(), client.stats["txn"]
    result = full_pass(client, keys, other_term, now=0)   # records differ only in term and updated_at
    assert (result.writes, result.txns, result.unchanged, len(result.invalid)) == (0, 0, 50, 1)
    assert client.current_revision() == before and client.stats["txn"] == txns


def test_reclaim_rows(client, keys, fence):
    for cid, site in (("unprot", None), ("prot", "b"), ("never", "b")):
        put(client, keys.cluster(cid), cluster(True, site))
    put(client, keys.dr_key("prot"), dr("in_sync"))
    full_pass(client, keys, fence)
    delete(client, keys.protection_key("never"))
    unprot, prot = get(client, keys.protection_key("unprot")), get(client, keys.protection_key("prot"))
    for cid, site in (("unprot", None), ("prot", "b"), ("never", "b")):
        put(client, keys.cluster(cid), cluster(False, site))
    result = full_pass(client, keys, fence)
    assert result.changes == ["update prot protected -> deleted"]
    assert get(client, keys.protection_key("unprot")).mod_revision == unprot.mod_revision   # not rewritten
    got = get(client, keys.protection_key("prot"))
    assert got.create_revision == prot.create_revision                                   # in place
    assert json.loads(got.value)["state"] == "deleted" and json.loads(got.value)["dr_revision"] is None
    assert get(client, keys.protection_key("never")) is None                              # none stays none
    assert full_pass(client, keys, fence).writes == 0


def test_allocation_recreates_a_deleted_record_and_updates_others_in_place(client, keys, fence):
    put(client, keys.cluster("c"), cluster(True, "b"))
    put(client, keys.dr_key("c"), dr("in_sync"))
    put(client, keys.cluster("u"), cluster(True, None))
    full_pass(client, keys, fence)
    put(client, keys.cluster("c"), cluster(False, "b"))
    put(client, keys.cluster("u"), cluster(False, None))
    full_pass(client, keys, fence)
    old_c, old_u = get(client, keys.protection_key("c")), get(client, keys.protection_key("u"))
    assert json.loads(old_c.value)["state"] == "deleted"
    put(client, keys.cluster("c"), cluster(True, "b"))
    put(client, keys.cluster("u"), cluster(True, "b"))
    result = full_pass(client, keys, fence)
    assert (result.recreated, result.updated, result.writes) == (1, 1, 3)
    assert sorted(result.changes) == ["recreate c deleted -> protected", "update u unprotected -> protecting"]
    new_c, new_u = get(client, keys.protection_key("c")), get(client, keys.protection_key("u"))
    assert new_c.create_revision > old_c.create_revision and new_c.version == 1     # a new lifecycle
    assert json.loads(new_c.value)["state"] == "protected"
    assert new_u.create_revision == old_u.create_revision                           # recomputed in place


def test_removal_and_orphans_are_deleted_in_bulk(client, keys, fence):
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(300)})
    full_pass(client, keys, fence)
    put_many(client, {keys.protection_key(f"orphan{i:03}"): "{}" for i in range(20)})
    client.txn().then(Op.delete(keys.cluster("c"), prefix=True)).commit()
    txns = client.stats["txn"]
    result = full_pass(client, keys, fence)
    assert result.deleted == 320 and result.seen == 0 and result.states == {}
    assert result.txns == 3 and client.stats["txn"] - txns == 3               # 125 changes per transaction
    assert count(client, keys.protection) == 0


def test_incremental_pass(client, keys, fence):
    for cid in ("a", "b", "c"):
        put(client, keys.cluster(cid), cluster(True, "s"))
    full_pass(client, keys, fence)
    put(client, keys.dr_key("a"), dr("broken"))
    put(client, keys.dr_key("b"), dr("in_sync"))
    delete(client, keys.cluster("c"))
    put(client, keys.cluster("x/y"), cluster(True, None))
    result = incremental_pass(client, keys, fence, ["a", "c", "x/y", "a", "never"])
    assert sorted(result.changes) == ["delete c protecting -> none", "update a protecting -> degraded"]
    assert [i.key for i in result.invalid] == [keys.cluster("x/y")]
    assert record(client, keys, "b")["state"] == "protecting"           # not asked for: untouched
    assert incremental_pass(client, keys, fence, []).writes == 0


def test_read_ids_spans_transactions_at_one_revision(client, keys):
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(100)})
    revision, observed = read_ids(client, keys, [f"c{i:03}" for i in range(100)] + ["zz"])
    assert revision and len(observed) == 101 and sum(o.cluster is not None for o in observed) == 100
    put(client, keys.cluster("c000"), cluster(False, None))
    _, again = read_ids(client, keys, ["c000"], revision=revision)
    assert again[0].cluster.mod_revision == observed[0].cluster.mod_revision


@pytest.mark.parametrize("page_size", [1, 3, 7])
def test_paging_at_one_revision_matches_one_page(client, keys, fence, page_size):
    ids = [f"k{i:02}" for i in range(23)]
    put_many(client, {keys.cluster(i): cluster(True, "s") for i in ids[::2]})
    put_many(client, {keys.dr_key(i): dr("in_sync") for i in ids[::3]})
    put_many(client, {keys.protection_key(i): "{}" for i in ids[::5]})
    snapshot = read_all(client, keys, page_size=page_size)
    put(client, keys.cluster("k01"), cluster(True, None))             # after R: must not be seen
    seen = [(o.id, o.cluster is not None, o.dr is not None, o.protection is not None) for o in snapshot]
    expected = [(i, n % 2 == 0, n % 3 == 0, n % 5 == 0) for n, i in enumerate(ids) if n % 2 == 0 or n % 5 == 0]
    assert seen == expected
    ranges = client.stats["range"]
    result = full_pass(client, keys, fence, page_size=page_size, dry_run=True)
    # every prefix read in pages of page_size at the one revision: 13 clusters (12 + k01), 8 DR, 5 records
    assert client.stats["range"] - ranges == sum(-(-n // page_size) for n in (13, 8, 5))
    assert result.seen == 13
    assert result.changes == full_pass(client, keys, None, dry_run=True).changes     # one page of 1000
    assert full_pass(client, keys, fence, page_size=page_size).changes == result.changes
    assert full_pass(client, keys, fence, page_size=page_size).writes == 0


def test_bad_input_is_untouched_listed_and_logged_once(client, keys, fence):
    put(client, keys.cluster("good"), cluster(True, "s"))
    put(client, keys.cluster("bad"), cluster(True, "s"))
    put(client, keys.dr_key("bad"), dr("in_sync"))
    full_pass(client, keys, fence)
    before = get(client, keys.protection_key("bad"))
    rev_c = put(client, keys.cluster("bad"), json.dumps({"allocated": "yes"}))
    put(client, keys.dr_key("good"), dr("broken"))
    logged = InvalidLog()
    result = full_pass(client, keys, fence, invalid_log=logged)
    assert [tuple(i) for i in result.invalid] == [
        (keys.cluster("bad"), rev_c, "cluster 'allocated' must be true or false, got 'yes'")]
    assert get(client, keys.protection_key("bad")).mod_revision == before.mod_revision
    assert record(client, keys, "good")["state"] == "degraded"
    assert result.states == {"degraded": 1, "protected": 1}
    full_pass(client, keys, fence, invalid_log=logged)
    assert len(logged._seen) == 1                                    # one occurrence, logged once
    put(client, keys.cluster("bad"), cluster(True, "s"))
    rev_d = put(client, keys.dr_key("bad"), '{"replication": "sideways"}')
    result = full_pass(client, keys, fence)
    assert [(i.key, i.mod_revision) for i in result.invalid] == [(keys.dr_key("bad"), rev_d)]
    assert get(client, keys.protection_key("bad")).mod_revision == before.mod_revision


def test_a_dr_site_too_long_for_a_record_is_invalid_and_every_other_cluster_is_written(client, keys, fence):
    """etcd refuses a request over --max-request-bytes ("request is too large"): a record that could
    never be written is invalid input, reported and never sent, and the clusters after it in the pass
    are written as usual (not stopped behind it)."""
    for cid in ("a", "m", "z"):
        put(client, keys.cluster(cid), cluster(True, "s"))
    rev = put(client, keys.cluster("m"), json.dumps({"allocated": True, "dr_site": "x" * 800_000}))
    widest = "\U0001F600" * (MAX_DR_SITE_BYTES // 12)  # 12 bytes each as JSON: right at the bound
    put(client, keys.cluster("z"), json.dumps({"allocated": True, "dr_site": widest}))
    result = full_pass(client, keys, fence)
    assert [(i.key, i.mod_revision) for i in result.invalid] == [(keys.cluster("m"), rev)]
    assert result.invalid[0].error == ("cluster 'dr_site' is 800000 bytes as JSON, over the "
                                       f"{MAX_DR_SITE_BYTES} a protection record can carry")
    assert get(client, keys.protection_key("m")) is None
    assert record(client, keys, "a")["state"] == "protecting"
    assert record(client, keys, "z")["dr_site"] == widest


def test_dry_run_plans_and_writes_nothing(client, keys):
    put(client, keys.cluster("a"), cluster(True, None))
    put(client, keys.protection_key("gone"), "{}")
    before = client.current_revision()
    result = full_pass(client, keys, None, dry_run=True)
    assert sorted(result.changes) == ["create a none -> unprotected", "delete gone unknown -> none"]
    assert result.created == 1 and result.deleted == 1 and result.writes == 0
    assert client.current_revision() == before
    with pytest.raises(ValueError):
        full_pass(client, keys, None)


def test_fence_failure_writes_nothing_and_raises(client, keys):
    put_many(client, {keys.cluster(f"c{i}"): cluster(True, None) for i in range(10)})
    stale = Fence(12345, [Cmp.create(keys.election + "/gone", "=", 12345)])
    before = client.current_revision()
    with pytest.raises(FenceLostError) as info:
        full_pass(client, keys, stale)
    assert isinstance(info.value, WorkerError)
    assert client.current_revision() == before and count(client, keys.protection) == 0


def test_fence_guard_stops_writing_mid_pass_before_the_next_transaction(client, keys, fence):
    """The daemon's own-clock check (lease deadline too close) runs before every transaction."""
    put_many(client, {keys.cluster(f"c{i:03d}"): cluster(True, None) for i in range(300)})
    with pytest.raises(DeadlineTooClose):
        full_pass(client, keys, refusing_fence(fence, 1))
    assert count(client, keys.protection) == BatchWriter(client, fence).batch_size  # one full batch, then nothing


class LosesFenceAfter:
    """A real client whose fence key is deleted after ``n`` transactions (leadership lost mid-pass)."""

    def __init__(self, client, key, n):
        self.client, self.key, self.n = client, key, n
        self.lock = threading.Lock()    # writes are pipelined: transactions answer on several threads

    def __getattr__(self, name):
        return getattr(self.client, name)

    def commit(self, txn):
        response = self.client.commit(txn)
        with self.lock:
            self.n -= 1
            lose = self.n == 0
        if lose:
            delete(self.client, self.key)
        return response


def test_fence_lost_mid_pass_stops_at_once(client, keys):
    """The fence key goes right after the first transaction: the pass stops at the first failed
    one; at most the transactions already in flight (``WRITE_DEPTH``) landed, each still fenced."""
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(1000)})
    fence = make_fence(client, keys)
    lossy = LosesFenceAfter(client, keys.election + "/fence-test", 1)
    with pytest.raises(FenceLostError) as info:
        full_pass(lossy, keys, fence)
    batch = BatchWriter(client, fence).batch_size
    assert info.value.written in [batch * k for k in range(1, WRITE_DEPTH + 1)]
    assert count(client, keys.protection) == info.value.written    # what landed, no more


class ChangesKeyBeforeWrite(LosesFenceAfter):
    def commit(self, txn):
        if self.n:
            put(self.client, self.key, "operator was here")
            self.n = 0
        return self.client.commit(txn)


def test_a_concurrently_changed_record_is_not_written_over(client, keys, fence):
    put(client, keys.cluster("a"), cluster(True, None))
    put(client, keys.cluster("b"), cluster(True, None))
    put(client, keys.protection_key("a"), "{}")
    racer = ChangesKeyBeforeWrite(client, keys.protection_key("a"), 1)
    result = full_pass(racer, keys, fence)
    assert (result.conflicts, result.updated, result.created) == (1, 0, 1)
    assert get(client, keys.protection_key("a")).value == b"operator was here"
    assert full_pass(client, keys, fence).updated == 1              # the next pass converges


def test_recreates_in_bulk_change_every_create_revision(client, keys, fence):
    ids = [f"c{i:03}" for i in range(130)]
    put_many(client, {keys.cluster(i): cluster(True, None) for i in ids})
    full_pass(client, keys, fence)
    put_many(client, {keys.cluster(i): cluster(False, "s") for i in ids})
    put_many(client, {keys.cluster(i): cluster(True, "s") for i in ids})
    put_many(client, {keys.protection_key(i): json.dumps({
        "state": "deleted", "reason": "cluster reclaimed", "dr_site": "s", "cluster_revision": 1,
        "dr_revision": None, "term": 1, "updated_at": "2026-01-01T00:00:00Z"}) for i in ids})
    old = {i: get(client, keys.protection_key(i)).create_revision for i in ids}
    result = full_pass(client, keys, fence)
    assert result.recreated == 130 and result.writes == 260 and result.txns == 4
    assert all(get(client, keys.protection_key(i)).create_revision > old[i] for i in ids)


WORLD = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.tuples(st.sampled_from([None, cluster(True, None), cluster(True, "s"), cluster(False, "s"), "junk"]),
              st.sampled_from([None, dr("in_sync"), dr("broken"), "junk"]),
              st.sampled_from([None, "{}", "deleted"])),
    max_size=4)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(world=WORLD)
def test_property_second_pass_is_a_no_op_on_etcd(client, prefix, world):
    import uuid
    keys = Keys(f"{prefix}/{uuid.uuid4().hex[:6]}")
    fence = make_fence(client, keys)
    deleted = json.dumps({"state": "deleted", "reason": "cluster reclaimed", "dr_site": None, "cluster_revision": 1,
                          "dr_revision": None, "term": 1, "updated_at": "2026-01-01T00:00:00Z"})
    for cid, (c, d, p) in world.items():
        if c:
            put(client, keys.cluster(cid), c)
        if d:
            put(client, keys.dr_key(cid), d)
        if p:
            put(client, keys.protection_key(cid), deleted if p == "deleted" else p)
    full_pass(client, keys, fence, page_size=2)
    before = client.current_revision()
    again = full_pass(client, keys, fence, page_size=2)
    assert again.writes == 0 and again.changes == [] and client.current_revision() == before
