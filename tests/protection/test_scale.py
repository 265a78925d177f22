"""Large-fleet machinery against a real etcd: the term's memo, the per-key input guards, the
batch size at etcd's nested-transaction limit, and the page-size fallback for large values."""

from __future__ import annotations

import json
import threading

import pytest

from worker.etcd import Cmp, Op, endpoints
from worker.etcd.errors import MessageTooLargeError
from worker.keys import Keys
from worker.protection.memo import PassMemo
from worker.protection import reader
from worker.protection.reader import read_all, read_ids
from worker.protection.reconcile import PROGRESS_ROWS, InvalidLog, full_pass, incremental_pass
from worker.protection.records import FIELDS, STATES, Record, loads
from worker.protection.rules import KV, Decision, stored_record, stored_state
from worker.protection.status import read_status
from worker.protection.writer import BatchWriter, Fence, FenceLostError, batch_limit

from tests.protection.helpers import (DeadlineTooClose, cluster, count, delete, dr, get, make_fence, put, put_many,
                                     record, refusing_fence)


def daemon_like_fence(client, keys: Keys) -> Fence:
    """A fence shaped like ``leader_fence``'s: two leadership compares, the pause key, the stamp."""
    base = make_fence(client, keys)
    other = keys.lock + "/fence-test"
    rev = client.txn().then(Op.put(other, "")).commit().revision
    return Fence(base.term, base.compares + [Cmp.create(other, "=", rev)], pause_key=keys.paused,
                 stamp_key=keys.stamp, stamp_value=json.dumps({"term": base.term}))


# -- the memo ---------------------------------------------------------------------------------

def mixed_world(client, keys: Keys, n: int = 40) -> None:
    items = {}
    for i in range(n):
        cid = f"c{i:03}"
        kind = i % 8
        items[keys.cluster(cid)] = (cluster(True, None) if kind == 0 else cluster(False, "s") if kind == 1
                                    else "junk" if kind == 2 else cluster(True, "s"))
        if kind in (3, 4, 5):
            items[keys.dr_key(cid)] = dr(("in_sync", "syncing", "broken")[kind - 3])
        if kind == 6:
            items[keys.dr_key(cid)] = '{"replication": "sideways"}'
    put_many(client, items)


def planned_then_memo_pass(client, keys, fence, memo):
    """The memo pass must do exactly what a memo-less dry run at the same state plans."""
    plan = full_pass(client, keys, None, dry_run=True)
    done = full_pass(client, keys, fence, memo=memo, invalid_log=InvalidLog())
    assert sorted(done.changes) == sorted(plan.changes)
    assert done.invalid == plan.invalid and done.states == plan.states and done.unchanged == plan.unchanged
    assert done.seen == plan.seen
    return done


def test_memo_pass_writes_what_a_memo_less_pass_writes(client, keys, fence):
    mixed_world(client, keys)
    memo = PassMemo()
    first = planned_then_memo_pass(client, keys, fence, memo)
    assert first.memo_hits == 0 and first.created > 0                # a new memo starts cold
    again = planned_then_memo_pass(client, keys, fence, memo)        # memoizes the unchanged ones
    steady = planned_then_memo_pass(client, keys, fence, memo)
    assert steady.memo_hits == steady.seen == 40 and steady.writes == again.writes == 0
    # inputs change under the memo: each kind of change must be decided afresh
    put(client, keys.cluster("c000"), cluster(True, "s"))            # unprotected -> protecting
    put(client, keys.dr_key("c003"), dr("broken"))                   # protected -> degraded
    put(client, keys.cluster("c002"), cluster(True, None))           # invalid input fixed
    put(client, keys.cluster("c004"), "junk")                        # a good one turns invalid
    put(client, keys.dr_key("c006"), dr("in_sync"))                  # bad DR fixed
    put(client, keys.cluster("c011"), cluster(False, "s"))           # reclaimed
    delete(client, keys.cluster("c012"))                             # removed
    put(client, keys.protection_key("c013"), "{}")                   # an operator edits a record
    same = {**record(client, keys, "c015"), "term": 1, "updated_at": "2020-01-01T00:00:00Z"}
    put(client, keys.protection_key("c015"), json.dumps(same))       # same content, new mod revision
    changed = planned_then_memo_pass(client, keys, fence, memo)
    assert sorted(changed.changes) == sorted([
        "update c000 unprotected -> protecting", "update c003 protected -> degraded",
        "create c002 none -> unprotected", "create c006 none -> protected",
        "update c011 protected -> deleted", "delete c012 protecting -> none",
        "update c013 unknown -> degraded"])
    assert keys.cluster("c004") in [i.key for i in changed.invalid]
    assert changed.memo_hits == 40 - 9                                # the 9 touched ids were decided afresh
    after = planned_then_memo_pass(client, keys, fence, memo)
    assert after.writes == 0 and after.changes == []


def test_memo_still_reports_invalid_inputs(client, keys, fence):
    put(client, keys.cluster("bad"), "junk")
    rev = put(client, keys.cluster("baddr"), cluster(True, "s"))
    rev_d = put(client, keys.dr_key("baddr"), "[1]")
    memo = PassMemo()
    for _ in range(3):
        logged = InvalidLog()
        result = full_pass(client, keys, fence, memo=memo, invalid_log=logged)
        assert [(i.key, i.mod_revision) for i in result.invalid] == [(keys.cluster("bad"), rev - 1),
                                                                      (keys.dr_key("baddr"), rev_d)]
        assert len(logged._seen) == 2                                # reported to the log each pass
    assert result.memo_hits == 2
    assert [i["key"] for i in read_status(client, keys)["invalid"]] == [keys.cluster("bad"), keys.dr_key("baddr")]


def test_a_failed_pass_leaves_the_memo_cold_and_each_completed_pass_keeps_only_what_it_saw(client, keys, fence):
    put_many(client, {keys.cluster(f"c{i}"): cluster(True, None) for i in range(5)})
    memo = PassMemo()
    full_pass(client, keys, fence, memo=memo)
    assert len(memo) == 0                                            # creates are never memoized
    full_pass(client, keys, fence, memo=memo)
    assert len(memo) == 5
    delete(client, keys.cluster("c0"))
    full_pass(client, keys, fence, memo=memo)
    assert len(memo) == 4                                            # c0's record deleted: gone
    put(client, keys.cluster("r"), cluster(False, "s"))              # reclaimed, no record: "none"
    full_pass(client, keys, fence, memo=memo)
    assert len(memo) == 5
    delete(client, keys.cluster("r"))                                # gone without a write
    full_pass(client, keys, fence, memo=memo)
    assert len(memo) == 4                                            # dropped: not seen by the pass
    put(client, keys.cluster("c1"), cluster(True, "s"))
    lost = Fence(fence.term + 1000, [Cmp.create(keys.election + "/fence-test", "=", fence.term + 1000)])
    with pytest.raises(FenceLostError):
        full_pass(client, keys, lost, memo=memo)
    assert len(memo) == 0                                            # cold again
    assert full_pass(client, keys, fence, memo=memo).memo_hits == 0


# -- the input guards ---------------------------------------------------------------------------

class ChangesBeforeFirstWrite:
    """A real client that puts ``value`` at ``key`` just before its first write transaction (an
    input changes between the pass's read and its write)."""

    def __init__(self, client, key, value):
        self.client, self.key, self.value, self.done = client, key, value, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def commit(self, txn):
        if not self.done:
            self.done = True
            put(self.client, self.key, self.value)
        return self.client.commit(txn)


@pytest.mark.parametrize("change", ["cluster", "dr-created", "dr-changed", "cluster-deleted"])
def test_an_input_changed_after_the_read_is_a_conflict_and_nothing_is_overwritten(client, keys, fence, change):
    put(client, keys.cluster("a"), cluster(True, "s"))
    put(client, keys.cluster("b"), cluster(True, None))
    if change == "dr-changed":
        put(client, keys.dr_key("a"), dr("syncing"))
    full_pass(client, keys, fence)
    put(client, keys.cluster("a"), cluster(True, "t"))              # "a" needs an update ...
    put(client, keys.cluster("b"), cluster(True, "s"))              # ... and so does "b"
    before = get(client, keys.protection_key("a"))
    if change == "cluster":
        racer = ChangesBeforeFirstWrite(client, keys.cluster("a"), cluster(True, "u"))
    elif change == "cluster-deleted":
        racer = ChangesBeforeFirstWrite(client, keys.cluster("a"), cluster(True, "u"))
        racer.commit = lambda txn, c=client: (delete(c, keys.cluster("a")), c.commit(txn))[1]
    else:                                                            # ... but its DR input moves
        racer = ChangesBeforeFirstWrite(client, keys.dr_key("a"), dr("broken"))
    result = full_pass(racer, keys, fence)
    assert result.conflicted_ids == ["a"] and result.conflicts == 1 and result.updated == 1   # "b" written
    assert get(client, keys.protection_key("a")).mod_revision == before.mod_revision           # not overwritten
    assert record(client, keys, "b")["state"] == "protecting"
    again = incremental_pass(client, keys, fence, result.conflicted_ids)   # the newer input wins
    assert again.conflicts == 0 and again.changed == 1


def test_a_create_guards_its_inputs_too(client, keys, fence):
    put(client, keys.cluster("a"), cluster(True, "s"))
    racer = ChangesBeforeFirstWrite(client, keys.dr_key("a"), dr("in_sync"))   # DR appears after the read
    result = full_pass(racer, keys, fence)
    assert result.conflicted_ids == ["a"] and get(client, keys.protection_key("a")) is None
    assert full_pass(client, keys, fence).created == 1 and record(client, keys, "a")["state"] == "protected"


# -- the batch size -----------------------------------------------------------------------------

def test_batch_limit_follows_etcds_nested_transaction_rule():
    # outer: 3 fence compares, 1 failure op (nested, 2 compares), the stamp; nested changes: 3 compares
    assert batch_limit(128, outer_compares=3, failure_ops=1, extra_ops=1, nested_width=3) == 124
    assert batch_limit(128, outer_compares=1, failure_ops=0, extra_ops=0, nested_width=3) == 125
    assert batch_limit(4, outer_compares=3, failure_ops=1, extra_ops=1, nested_width=3) == 0


def creates(keys: Keys, n: int) -> list[tuple[Decision, str, tuple]]:
    out = []
    for i in range(n):
        cid = f"c{i:03}"
        new = Record("unprotected", "no DR site", None, 1, None, 1, "2026-01-01T00:00:00Z")
        out.append((Decision("create", cid, new=new), keys.protection_key(cid),
                    ((keys.cluster(cid).encode(), 0), (keys.dr_key(cid).encode(), 0))))
    return out


def test_a_full_batch_at_the_limit_is_accepted_by_etcd_and_one_more_is_refused(client, keys):
    fence = daemon_like_fence(client, keys)
    writer = BatchWriter(client, fence)
    assert writer.batch_size == 124
    for decision, key, inputs in creates(keys, 124):                # exactly the limit: one transaction
        writer.add(decision, key, 0, inputs)
    writer.flush()
    assert (writer.txns, writer.writes, writer.conflicts) == (1, 124, 0)
    assert count(client, keys.protection) == 124
    over = BatchWriter(client, fence)
    over.batch_size = 125                                           # one more than the rule allows
    for decision, key, inputs in creates(Keys(keys.namespace + "/over"), 125):
        over.add(decision, key, 0, inputs)                          # the 125th sends the batch
    over.flush()
    # etcd refused the 125 ("too many operations"): the writer split the batch and sent it in two
    assert (over.txns, over.writes, over.refused_changes) == (2, 125, 0)
    assert count(client, keys.namespace + "/over/") == 125


def test_a_pass_of_the_daemons_shape_fills_each_batch(client, keys):
    fence = daemon_like_fence(client, keys)
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(249)})
    result = full_pass(client, keys, fence)
    assert (result.created, result.txns) == (249, 3)                # 124 + 124 + 1


# -- the page-size fallback ---------------------------------------------------------------------

@pytest.fixture
def small_client(make_client, monkeypatch):
    """A client whose gRPC channel refuses answers over 1 MiB (etcd's own limit is 64 MiB here)."""
    options = [o for o in endpoints.CHANNEL_OPTIONS if o[0] != "grpc.max_receive_message_length"]
    monkeypatch.setattr(endpoints, "CHANNEL_OPTIONS", options + [("grpc.max_receive_message_length", 1 << 20)])
    return make_client()


def big_cluster(pad: int) -> str:
    return json.dumps({"allocated": True, "dr_site": None, "pad": "x" * pad})


def test_pages_shrink_when_an_answer_would_exceed_the_message_limit(client, small_client, keys, fence):
    for i in range(12):                                             # 12 x 300 KiB: 3.6 MB, over 1 MiB
        put(client, keys.cluster(f"c{i:02}"), big_cluster(300 * 1024))
    rows = list(read_all(small_client, keys, page_size=10).rows())
    assert [r[0] for r in rows] == [f"c{i:02}".encode() for i in range(12)]
    assert full_pass(small_client, keys, fence, page_size=10).created == 12
    assert read_status(small_client, keys)["states"] == {"unprotected": 12}


def test_one_key_over_the_limit_is_an_error_not_a_loop(client, small_client, keys):
    put(client, keys.cluster("huge"), big_cluster(1100 * 1024))
    with pytest.raises(MessageTooLargeError):
        list(read_all(small_client, keys, page_size=4).rows())


# -- status's shortcut --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    Record("protected", "r", None, 1, None, 1, "x").to_json().encode(), b"{}", b"junk", b' {"a": 1} ', b"[1]",
    b"\xff", Record("degraded", "r", "s", 1, 2, 1, "x").to_json().encode() + b" \n",
    Record("protected", "r", None, 1, None, 1, "x").to_json().encode() + b"xx", b"",
    Record("protected", "r", None, 1, None, 1, "x").to_json().replace('"protected"', '"bogus"').encode(),
    Record("protected", "r", None, 1, None, 1, "x").to_json().replace('"protected"', '["protected"]').encode()])
def test_stored_state_counts_like_the_full_record_parse(value):
    def reference(raw: bytes) -> str:   # the spec's reading, with json.loads itself
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            return "unknown"
        if not isinstance(data, dict) or set(data) != set(FIELDS) or data["state"] not in STATES:
            return "unknown"
        return data["state"]

    assert stored_state(value) == stored_record(KV(b"k", value, 1))[1] == reference(value)


@pytest.mark.parametrize("text", ['{"a": 1}', ' {"a": 1}', '{"a": 1} ', '{"a": 1}x', "[1, 2]", '"s"', "NaN",
                                  "", "{", '{"a": 1}{"b": 2}', "\ufeff{}", '{"a": "\u00e9"}', '{"a": 1, "a": 2}'])
def test_records_loads_is_json_loads_or_refuses(text):
    """The records' parser is json.loads where the value is strict JSON; what json.loads lets
    through but untrusted input refuses (NaN, a key twice) is a ValueError, never a value."""
    try:
        want: tuple = ("ok", json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicate))
    except ValueError:
        want = ("error",)
    try:
        got: tuple = ("ok", loads(text.encode()))
    except ValueError:
        got = ("error",)
    assert got == want


def _no_constant(name):
    raise ValueError(name)


def _no_duplicate(pairs):
    if len(dict(pairs)) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def test_a_pass_stopped_between_transactions_waits_for_those_in_flight(client, keys, fence):
    """Writes are pipelined (``WRITE_DEPTH`` in flight): when the pass stops (here the daemon's guard
    refuses the third transaction), the two already sent are answered and counted, and no writer
    thread outlives the pass."""
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(600)})
    with pytest.raises(DeadlineTooClose) as info:
        full_pass(client, keys, refusing_fence(fence, 2))
    batch = BatchWriter(client, fence).batch_size
    assert count(client, keys.protection) == 2 * batch
    partial = info.value.partial                          # what the daemon books: every landed write
    assert (partial.created, partial.writes, partial.txns) == (2 * batch, 2 * batch, 2)
    assert not [t for t in threading.enumerate() if t.name.startswith("writes")]


def test_a_batch_of_large_records_goes_out_before_etcds_request_limit(client, keys, fence):
    """``dr_site`` is user-written and each record carries it twice: 40 records of about 100 KB
    (4 MB) would make one request over etcd's 1.5 MiB limit; the writer sends them in several."""
    site = "s" * 50_000
    for i in range(40):
        put(client, keys.cluster(f"c{i:02}"), cluster(True, site))
    result = full_pass(client, keys, fence)
    assert result.created == 40 and result.txns >= 4
    assert record(client, keys, "c00")["dr_site"] == site


def test_progress_is_called_within_a_page_every_few_hundred_rows(client, keys):
    """The daemon reconciles changes in the progress callback: a 5,000-key page must not hold them."""
    put_many(client, {keys.cluster(f"c{i:04}"): cluster(True, None) for i in range(1200)})
    calls = []
    full_pass(client, keys, None, dry_run=True, progress=lambda: calls.append(1))
    assert len(calls) == 3 + 1200 // PROGRESS_ROWS      # one per prefix's page, and one per 500 rows


# -- read_ids: spans and the message-limit fallback -----------------------------------------------

def test_read_ids_halves_its_transactions_when_an_answer_would_exceed_the_message_limit(client, small_client,
                                                                                       keys):
    for i in range(10):                                             # 42 ids a txn x 300 KiB: over 1 MiB
        put(client, keys.cluster(f"c{i:02}"), big_cluster(300 * 1024))
    revision, observed = read_ids(small_client, keys, [f"c{i:02}" for i in range(10)])
    assert [o.id for o in observed] == [f"c{i:02}" for i in range(10)]
    assert all(o.cluster is not None and o.cluster.mod_revision <= revision for o in observed)


def test_read_ids_reads_dense_ids_in_spans_and_sparse_ones_by_id(client, keys, monkeypatch):
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, "s") for i in range(200)})
    put_many(client, {keys.dr_key(f"c{i:03}"): json.dumps({"replication": "in_sync"}) for i in range(0, 200, 2)})
    dense, sparse = [f"c{i:03}" for i in range(50, 150)], [f"c{i:03}" for i in range(0, 200, 10)]
    revision = client.current_revision()
    by_id = {name: read_ids(client, keys, ids, revision=revision)[1] for name, ids in
             (("dense", dense), ("sparse", sparse))}
    monkeypatch.setattr(reader, "SPAN_IDS", 20)
    for name, ids, txns in (("dense", dense, 5), ("sparse", sparse, 1 + 1)):   # 5 spans; 1 refused span + 1 by id
        before = client.stats["txn"]
        _, got = read_ids(client, keys, ids, revision=revision)
        assert client.stats["txn"] - before == txns, name
        assert [(o.id, o.cluster, o.dr, o.protection) for o in got] == \
            [(o.id, o.cluster, o.dr, o.protection) for o in by_id[name]], name


def test_read_ids_spans_fall_back_to_ids_when_an_answer_is_too_large(client, small_client, keys, monkeypatch):
    for i in range(6):
        put(client, keys.cluster(f"c{i:02}"), big_cluster(300 * 1024))
    monkeypatch.setattr(reader, "SPAN_IDS", 6)                      # one span of 1.8 MB: over 1 MiB
    _, observed = read_ids(small_client, keys, [f"c{i:02}" for i in range(6)])
    assert [o.id for o in observed] == [f"c{i:02}" for i in range(6)] and all(o.cluster for o in observed)


def test_a_term_ended_by_progress_after_a_batch_counts_what_that_batch_wrote(client, keys, fence):
    """Issue 16 item 6: ``progress`` runs after an answered batch; when it raises (the daemon's
    ``StepDown``), the writes of that batch are already in ``writes`` and in the partial result."""
    put_many(client, {keys.cluster(f"c{i:03}"): cluster(True, None) for i in range(300)})

    class Stop(Exception):
        pass

    def progress():
        if count(client, keys.protection):                  # something landed: the term ends now
            raise Stop

    with pytest.raises(Stop) as info:
        incremental_pass(client, keys, fence, [f"c{i:03}" for i in range(300)], progress=progress)
    landed = count(client, keys.protection)
    partial = info.value.partial
    assert landed > 0 and (partial.created, partial.writes, partial.txns) == (landed, landed, 1)


def test_read_ids_spans_of_non_ascii_ids_match_reads_by_id(client, keys, monkeypatch):
    ids = ["a", "a\u00e4", "\u00e4", "z", "\u65e5\u672c", "\U0001f600", "never"]
    put_many(client, {keys.cluster(i): cluster(True, "s") for i in ids[:-1]})
    put_many(client, {keys.dr_key(i): json.dumps({"replication": "broken"}) for i in ids[::2]})
    revision = client.current_revision()
    _, by_id = read_ids(client, keys, ids, revision=revision)
    monkeypatch.setattr(reader, "SPAN_IDS", 2)
    monkeypatch.setattr(reader, "SPAN_SLACK", 10)
    before = client.stats["txn"]
    _, spans = read_ids(client, keys, ids, revision=revision)
    assert client.stats["txn"] - before == 4                       # 4 spans of 2 ids, none by id
    assert sorted((o.id, o.cluster, o.dr, o.protection) for o in spans) == \
        sorted((o.id, o.cluster, o.dr, o.protection) for o in by_id)
