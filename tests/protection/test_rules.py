"""The pure rules: every row of the spec's tables, validation, and properties (hypothesis)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.protection.inputs import InputError, parse_cluster, parse_dr
from worker.protection.reader import merge_join
from worker.protection.records import FIELDS, Record, format_time
from worker.protection.rules import KV, Observed, decide

NS = "/ns"


def ckv(cid: str, value: object, rev: int = 10) -> KV:
    raw = value if isinstance(value, (bytes, str)) else json.dumps(value)
    return KV(f"{NS}/clusters/{cid}".encode(), raw.encode() if isinstance(raw, str) else raw, rev, rev)


def dkv(cid: str, value: object, rev: int = 20) -> KV:
    raw = value if isinstance(value, str) else json.dumps(value)
    return KV(f"{NS}/dr/{cid}".encode(), raw.encode(), rev, rev)


def pkv(cid: str, state: str, *, rev: int = 30, cluster_revision: int = 10, dr_site: str | None = "b",
        dr_revision: int | None = None, reason: str | None = None) -> KV:
    rec = Record(state, reason or "x", dr_site, cluster_revision, dr_revision, 5, "2026-01-01T00:00:00Z")
    return KV(f"{NS}/protection/{cid}".encode(), rec.to_json().encode(), rev, rev)


def obs(cluster=None, dr=None, protection=None, cid="c1") -> Observed:
    return Observed(cid, cluster, dr, protection)


# -- allocated: the state table -----------------------------------------------------------------
@pytest.mark.parametrize("value", [{"allocated": True, "dr_site": None}, {"allocated": True}])
@pytest.mark.parametrize("dr_value", [None, {"replication": "in_sync"}, {"replication": "garbage"}, "not json"])
def test_no_dr_site_is_unprotected_whatever_the_dr_key(value, dr_value):
    d = decide(obs(ckv("c1", value), dkv("c1", dr_value) if dr_value is not None else None), term=7,
               updated_at="T")
    assert d.action == "create" and d.new.state == "unprotected"
    assert d.new.dr_revision is None and d.new.dr_site is None and d.new.cluster_revision == 10
    assert d.new.term == 7 and d.new.updated_at == "T"


def test_dr_site_without_dr_key_is_protecting():
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"})))
    assert (d.action, d.new.state, d.new.dr_revision, d.new.dr_site) == ("create", "protecting", None, "b")


@pytest.mark.parametrize("replication,state", [("syncing", "protecting"), ("in_sync", "protected"),
                                               ("broken", "degraded")])
def test_dr_status_table(replication, state):
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "site-b"}), dkv("c1", {"replication": replication})))
    assert d.action == "create" and d.new.state == state and d.new.dr_revision == 20
    assert d.new.reason == f"DR site site-b replication {replication}"


# -- reclaimed ----------------------------------------------------------------------------------
def test_reclaim_without_record_writes_nothing():
    assert decide(obs(ckv("c1", {"allocated": False, "dr_site": "b"}))).action == "none"


def test_reclaim_unprotected_is_not_rewritten():
    d = decide(obs(ckv("c1", {"allocated": False, "dr_site": None}, rev=99), None,
                   pkv("c1", "unprotected", cluster_revision=10, dr_site=None)))
    assert d.action == "unchanged" and d.new_state == "unprotected"


@pytest.mark.parametrize("state", ["protecting", "protected", "degraded"])
def test_reclaim_other_states_become_deleted_in_place(state):
    d = decide(obs(ckv("c1", {"allocated": False, "dr_site": "b"}), dkv("c1", "garbage"), pkv("c1", state)))
    assert d.action == "update" and d.new.state == "deleted" and d.new.dr_revision is None
    assert d.line() == f"update c1 {state} -> deleted"


def test_reclaim_ignores_the_dr_key():
    d = decide(obs(ckv("c1", {"allocated": False, "dr_site": "b"}), dkv("c1", [1, 2]), pkv("c1", "protected")))
    assert d.action == "update" and d.invalid is None


def test_reclaim_deleted_stays_unchanged():
    first = decide(obs(ckv("c1", {"allocated": False, "dr_site": "b"}), None, pkv("c1", "protected")))
    stored = KV(b"/ns/protection/c1", first.new.to_json().encode(), 40, 30)
    again = decide(obs(ckv("c1", {"allocated": False, "dr_site": "b"}), None, stored), term=99, updated_at="later")
    assert again.action == "unchanged"


# -- allocation and removal ---------------------------------------------------------------------
def test_allocating_a_deleted_record_recreates_it():
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"}), dkv("c1", {"replication": "in_sync"}),
                   pkv("c1", "deleted")))
    assert d.action == "recreate" and d.new.state == "protected" and d.line() == "recreate c1 deleted -> protected"


def test_allocating_over_unprotected_recomputes_in_place():
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"}), None, pkv("c1", "unprotected", dr_site=None)))
    assert d.action == "update" and d.new.state == "protecting"


def test_removed_cluster_deletes_the_record():
    d = decide(obs(None, dkv("c1", {"replication": "in_sync"}), pkv("c1", "protected")))
    assert d.action == "delete" and d.line() == "delete c1 protected -> none"


def test_nothing_at_all_is_none():
    assert decide(obs(None, dkv("c1", {"replication": "in_sync"}), None)).action == "none"


def test_comparison_ignores_term_and_updated_at():
    new = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"}), dkv("c1", {"replication": "in_sync"})),
                 term=1, updated_at="a").new
    stored = KV(b"/ns/protection/c1", new.to_json().encode(), 50, 50)
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"}), dkv("c1", {"replication": "in_sync"}), stored),
               term=2, updated_at="b")
    assert d.action == "unchanged"


def test_unparseable_stored_record_is_recomputed():
    bad = KV(b"/ns/protection/c1", b"junk", 50, 50)
    d = decide(obs(ckv("c1", {"allocated": True}), None, bad))
    assert d.action == "update" and d.old_state == "unknown" and d.new.state == "unprotected"


# -- invalid input ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    "not json", b"\xff\xfe", "[1, 2]", "\"allocated\"", "null", "{}", {"allocated": 1}, {"allocated": "true"},
    {"allocated": None}, {"allocated": True, "dr_site": ""}, {"allocated": True, "dr_site": 3},
    {"allocated": False, "dr_site": []},
])
def test_invalid_cluster_values_leave_the_record_untouched(value):
    d = decide(obs(ckv("c1", value, rev=12), None, pkv("c1", "protected")))
    assert d.action == "invalid" and not d.writes and d.new_state == "protected"
    assert d.invalid.key == "/ns/clusters/c1" and d.invalid.mod_revision == 12 and d.invalid.error


@pytest.mark.parametrize("value", ["nope", "[]", {"replication": "lost"}, {}, {"replication": None}])
def test_invalid_dr_values_when_consulted(value):
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "b"}), dkv("c1", value, rev=21), pkv("c1", "protected")))
    assert d.action == "invalid" and d.invalid.key == "/ns/dr/c1" and d.invalid.mod_revision == 21


@pytest.mark.parametrize("cid", ["", "a" * 129, "a b", "a/b", "ü", "x:y"])
def test_invalid_ids(cid):
    d = decide(obs(ckv(cid, {"allocated": True}), None, pkv(cid, "protected"), cid=cid))
    assert d.action == "invalid" and "id" in d.invalid.error


def test_valid_id_edges_and_extra_fields():
    cid = "A-z.0_9" + "x" * 121
    assert len(cid) == 128
    d = decide(obs(ckv(cid, {"allocated": True, "dr_site": None, "extra": {"x": 1}}), cid=cid))
    assert d.action == "create"
    assert parse_dr('{"replication": "broken", "extra": 1}') == "broken"
    with pytest.raises(InputError):
        parse_cluster('{"dr_site": "b"}')


# -- the record ---------------------------------------------------------------------------------
def test_record_json_has_exactly_the_fields_in_order():
    d = decide(obs(ckv("c1", {"allocated": True, "dr_site": "site-b"}), dkv("c1", {"replication": "in_sync"})),
               term=398, updated_at=format_time(datetime(2026, 11, 24, 10, 44, 45, 123456, tzinfo=timezone.utc)))
    data = json.loads(d.new.to_json())
    assert list(data) == list(FIELDS)
    assert data == {"state": "protected", "reason": "DR site site-b replication in_sync", "dr_site": "site-b",
                    "cluster_revision": 10, "dr_revision": 20, "term": 398, "updated_at": "2026-11-24T10:44:45Z"}
    assert Record.from_json(d.new.to_json()) == d.new
    assert format_time(0) == "1970-01-01T00:00:00Z"


# -- properties ---------------------------------------------------------------------------------
IDS = st.sampled_from(["a", "b", "c", "d", "e", "bad/id"])
CLUSTER_VALUES = st.one_of(
    st.none(),
    st.builds(lambda a, s: {"allocated": a, "dr_site": s}, st.booleans(), st.sampled_from([None, "s1", "s2"])),
    st.sampled_from(["junk", {"allocated": 1}, {"allocated": True, "dr_site": ""}]),
)
DR_VALUES = st.one_of(st.none(), st.sampled_from([{"replication": r} for r in ("in_sync", "syncing", "broken")]),
                      st.sampled_from(["junk", {"replication": "x"}]))
STORED = st.one_of(st.none(), st.sampled_from(["unprotected", "protecting", "protected", "degraded", "deleted",
                                               "junk"]))
WORLD = st.dictionaries(IDS, st.tuples(CLUSTER_VALUES, DR_VALUES, STORED), max_size=6)


class Store:
    """A tiny in-memory etcd (keys, mod/create revisions) to apply plans to."""

    def __init__(self) -> None:
        self.rev = 1
        self.data: dict[bytes, KV] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.rev += 1
        old = self.data.get(key)
        self.data[key] = KV(key, value, self.rev, old.create_revision if old else self.rev)

    def delete(self, key: bytes) -> None:
        self.rev += 1
        self.data.pop(key, None)

    def observe(self, ids) -> list[Observed]:
        return [Observed(i, *(self.data.get(f"{NS}/{p}/{i}".encode()) for p in ("clusters", "dr", "protection")))
                for i in ids]


def build(world) -> Store:
    s = Store()
    for cid, (c, d, p) in world.items():  # insertion order: the order inputs were written
        if c is not None:
            s.put(f"{NS}/clusters/{cid}".encode(), (c if isinstance(c, str) else json.dumps(c)).encode())
        if d is not None:
            s.put(f"{NS}/dr/{cid}".encode(), (d if isinstance(d, str) else json.dumps(d)).encode())
        if p is not None:
            value = b"junk" if p == "junk" else pkv(cid, p).value
            s.put(f"{NS}/protection/{cid}".encode(), value)
    return s


def apply(store: Store, decisions) -> None:
    for d in decisions:
        key = f"{NS}/protection/{d.id}".encode()
        if d.action in ("delete", "recreate"):
            store.delete(key)
        if d.action in ("create", "update", "recreate"):
            store.put(key, d.new.to_json().encode())


@settings(max_examples=300, deadline=None)
@given(WORLD, st.integers(1, 1000), st.integers(1, 1000))
def test_a_pass_is_idempotent(world, term1, term2):
    store = build(world)
    ids = sorted(world)
    first = [decide(o, term=term1, updated_at="t1") for o in store.observe(ids)]
    apply(store, first)
    before = dict(store.data)
    again = [decide(o, term=term2, updated_at="t2") for o in store.observe(ids)]
    assert [d for d in again if d.writes] == []
    assert store.data == before
    # invalid inputs never changed their stored record
    for d in first:
        if d.action == "invalid":
            assert not d.writes


@settings(max_examples=200, deadline=None)
@given(WORLD, st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_input_order(world, rnd):
    store = build(world)
    ids = sorted(world)

    def plan(observed) -> dict:
        return {d.id: (d.action, d.new.content() if d.new else None) for d in
                (decide(o, term=3, updated_at="t") for o in observed)}

    # what a pass sees: three key-sorted prefix streams joined by id (reader.merge_join), whatever
    # order the keys were written in, plans exactly what each id's own keys call for
    def stream(part: str):
        prefix = f"{NS}/{part}/".encode()
        return ((key[len(prefix):], item) for key, item in sorted(store.data.items()) if key.startswith(prefix))

    joined = list(merge_join(stream("clusters"), stream("dr"), stream("protection")))
    assert [o.id for o in joined] == sorted(o.id for o in joined)
    by_id = {o.id: o for o in store.observe(ids) if o.cluster is not None or o.protection is not None}
    assert plan(joined) == plan(by_id.values())
    # and building the store in another order gives the same states
    items = list(world.items())
    rnd.shuffle(items)
    other = build(dict(items))
    states = {d.id: d.new_state for d in (decide(o) for o in store.observe(ids))}
    states2 = {d.id: d.new_state for d in (decide(o) for o in other.observe(ids))}
    assert states == states2


@settings(max_examples=300, deadline=None)
@given(state=st.sampled_from(("unprotected", "protecting", "protected", "degraded", "deleted")),
       text=st.text(), dr_site=st.none() | st.text(min_size=1),
       revisions=st.tuples(st.integers(0, 2**63 - 1), st.none() | st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)))
def test_record_json_is_exactly_json_dumps(state, text, dr_site, revisions):
    """``Record.to_json`` builds its text directly (it runs once per write): byte for byte what
    ``json.dumps`` of the fields makes, for any text (quotes, control characters, astral planes)."""
    cluster_revision, dr_revision, term = revisions
    record = Record(state, text, dr_site, cluster_revision, dr_revision, term, text)
    assert record.to_json() == json.dumps(dict(zip(FIELDS, (state, text, dr_site, cluster_revision, dr_revision,
                                                            term, text))))
    assert Record.from_json(record.to_json()) == record
