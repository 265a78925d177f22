"""STM: Go's v3_stm_test.go ported, and for each isolation level the anomaly it must prevent."""

import random
import threading

import pytest

from worker.concurrency import Isolation, STMAbortedError, new_stm
from worker.etcd import kv


def _get(client, key):
    value, _ = client.get(key)
    return value


def test_stm_conflict(make_client, client, prefix):
    """Go: TestSTMConflict: 5 concurrent transfers (repeatable reads) keep the sum."""
    keys = [f"{prefix}/foo-{i}" for i in range(5)]
    for k in keys:
        client.put(k, "100")
    errors = []

    def transfer(src_key: str, c) -> None:
        def apply(stm):
            src = int(stm.get(src_key) or 0)
            dst_key = src_key
            while dst_key == src_key:
                dst_key = random.choice(keys)
            dst = int(stm.get(dst_key) or 0)
            if src == 0:
                return
            xfer = random.randrange(src) // 2
            stm.put(src_key, str(src - xfer))
            stm.put(dst_key, str(dst + xfer))
        try:
            new_stm(c, apply, isolation=Isolation.REPEATABLE_READS)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=transfer, args=(k, make_client())) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert sum(int(_get(client, k)) for k in keys) == 500


def test_stm_put_new_key(client, prefix):
    """Go: TestSTMPutNewKey."""
    new_stm(client, lambda stm: stm.put(prefix + "/foo", "bar"), isolation=Isolation.REPEATABLE_READS)
    assert _get(client, prefix + "/foo") == b"bar"


def test_stm_abort(client, prefix):
    """Go: TestSTMAbort: abort during apply: error, nothing written."""
    abort = threading.Event()

    def apply(stm):
        stm.put(prefix + "/foo", "baz")
        abort.set()
        stm.put(prefix + "/foo", "bap")

    with pytest.raises(STMAbortedError):
        new_stm(client, apply, isolation=Isolation.REPEATABLE_READS, abort=abort)
    assert _get(client, prefix + "/foo") is None


def test_stm_serialize(make_client, client, prefix):
    """Go: TestSTMSerialize: serializable reads see one batch, never a mix of two."""
    keys = [f"{prefix}/foo-{i}" for i in range(5)]
    errors: list = []
    done = threading.Event()

    def writer() -> None:
        for i in range(30):
            client.txn(kv.txn_request([], [kv.op_put(k, str(i)) for k in keys]))
        done.set()

    def reader(c) -> None:
        def apply(stm):
            vs = [stm.get(k) for k in keys]
            if len(set(vs)) != 1:
                raise AssertionError(f"mixed snapshot: {vs}")
        try:
            while not done.is_set():
                new_stm(c, apply, isolation=Isolation.SERIALIZABLE)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    client.txn(kv.txn_request([], [kv.op_put(k, "start") for k in keys]))
    readers = [threading.Thread(target=reader, args=(make_client(),)) for _ in range(3)]
    for t in readers:
        t.start()
    writer()
    for t in readers:
        t.join(20)
    assert not errors, errors[0]


def test_stm_apply_on_concurrent_deletion(client, prefix):
    """Go: TestSTMApplyOnConcurrentDeletion: a read key deleted before commit reruns apply."""
    client.put(prefix + "/foo", "bar")
    tries = []

    def apply(stm):
        tries.append(1)
        stm.get(prefix + "/foo")
        if len(tries) == 1:
            client.delete(prefix + "/foo")  # makes the read's mod revision outdated
        stm.put(prefix + "/foo2", "bar2")

    new_stm(client, apply, isolation=Isolation.REPEATABLE_READS)
    assert len(tries) == 2
    assert _get(client, prefix + "/foo2") == b"bar2"


def test_stm_serializable_snapshot_put(client, prefix):
    """Go: TestSTMSerializableSnapshotPut: a blind put of a key newer than the read is no conflict."""
    client.put(prefix + "/a", "0")
    tries = []

    def apply(stm):
        assert len(tries) <= 2, "too many retries"
        tries.append(1)
        stm.get(prefix + "/a")
        stm.put(prefix + "/b", "1")

    new_stm(client, apply, isolation=Isolation.SERIALIZABLE_SNAPSHOT)
    new_stm(client, apply, isolation=Isolation.SERIALIZABLE_SNAPSHOT)
    assert len(tries) == 2
    _, meta = client.get(prefix + "/b")
    assert meta.version == 2


@pytest.mark.parametrize("isolation,attempts", [
    (Isolation.SERIALIZABLE_SNAPSHOT, 2), (Isolation.SERIALIZABLE, 2),
    (Isolation.REPEATABLE_READS, 2), (Isolation.READ_COMMITTED, 1)])
def test_lost_update(client, prefix, isolation, attempts):
    """A read key changed before commit reruns apply (no lost update), except under READ_COMMITTED."""
    key = prefix + "/counter"
    client.put(key, "0")
    tries = []

    def apply(stm):
        tries.append(1)
        n = int(stm.get(key))
        if len(tries) == 1:
            client.put(key, "10")  # a concurrent writer
        stm.put(key, str(n + 1))

    new_stm(client, apply, isolation=isolation)
    assert len(tries) == attempts
    assert _get(client, key) == (b"11" if attempts == 2 else b"1")


@pytest.mark.parametrize("isolation,seen", [
    (Isolation.SERIALIZABLE, [("1", "1"), ("2", "2")]),
    (Isolation.SERIALIZABLE_SNAPSHOT, [("1", "1"), ("2", "2")]),
    (Isolation.REPEATABLE_READS, [("1", "2"), ("2", "2")]),
])
def test_read_skew(client, prefix, isolation, seen):
    """Serializable levels read every key at the first read's revision (no read skew);
    repeatable reads may see a mix, and only the commit's compares catch it."""
    a, b = prefix + "/a", prefix + "/b"
    client.txn(kv.txn_request([], [kv.op_put(a, "1"), kv.op_put(b, "1")]))
    reads = []

    def apply(stm):
        va = stm.get(a)
        if not reads:
            client.txn(kv.txn_request([], [kv.op_put(a, "2"), kv.op_put(b, "2")]))
        reads.append((va, stm.get(b)))
        stm.put(prefix + "/sum", str(int(va) + int(reads[-1][1])))

    new_stm(client, apply, isolation=isolation)
    assert reads == seen
    assert _get(client, prefix + "/sum") == b"4"


@pytest.mark.parametrize("isolation,attempts", [
    (Isolation.SERIALIZABLE_SNAPSHOT, 2), (Isolation.SERIALIZABLE, 1)])
def test_write_conflict_on_blind_write(client, prefix, isolation, attempts):
    """SERIALIZABLE_SNAPSHOT also refuses to overwrite a key changed since its first read."""
    client.put(prefix + "/a", "0")
    tries = []

    def apply(stm):
        tries.append(1)
        stm.get(prefix + "/a")
        if len(tries) == 1:
            client.put(prefix + "/b", "other")
        stm.put(prefix + "/b", "mine")

    new_stm(client, apply, isolation=isolation)
    assert len(tries) == attempts
    assert _get(client, prefix + "/b") == b"mine"


def test_prefetch_reads_in_one_request_and_after_conflict_from_else(client, prefix):
    keys = [f"{prefix}/p{i}" for i in range(3)]
    for k in keys:
        client.put(k, "1")
    tries = []

    def apply(stm):
        tries.append(1)
        vals = [stm.get(k) for k in keys]
        if len(tries) == 1:
            client.put(keys[0], "5")
        stm.put(prefix + "/out", ",".join(vals))

    before = client.stats["txn"]
    new_stm(client, apply, prefetch=keys)
    # attempt 1: one read txn for the prefetch + the failed commit (whose Else re-reads);
    # attempt 2: reads served from that Else, then the commit
    assert client.stats["txn"] - before == 3
    assert len(tries) == 2
    assert _get(client, prefix + "/out") == b"5,1,1"


def test_get_missing_delete_rev_and_lease(client, sessions, prefix):
    client.put(prefix + "/gone", "x")
    lease = client.lease_grant(30).ID

    def apply(stm):
        assert stm.get(prefix + "/missing") == ""
        assert stm.rev(prefix + "/missing") == 0
        assert stm.rev(prefix + "/gone") > 0
        stm.delete(prefix + "/gone")
        assert stm.get(prefix + "/gone") == ""  # the write set answers first
        stm.put(prefix + "/leased", "v", lease=lease)

    try:
        resp = new_stm(client, apply)
        assert resp.succeeded
        assert _get(client, prefix + "/gone") is None
        _, meta = client.get(prefix + "/leased")
        assert meta.lease_id == lease
    finally:
        client.lease_revoke(lease)


def test_apply_error_ends_without_writing(client, prefix):
    def apply(stm):
        stm.put(prefix + "/x", "1")
        raise ValueError("no")

    with pytest.raises(ValueError):
        new_stm(client, apply)
    assert _get(client, prefix + "/x") is None
