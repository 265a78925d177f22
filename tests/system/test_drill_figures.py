"""Drill figures that mean what the spec says (issue 19): ``stale_writes`` counts writes whose term was
not the leader's, and only those; the audit's other findings (an operator's ``etcdctl del``:
``unattributed``) are reported beside it, by kind, and still fail the drill."""

from __future__ import annotations

import json
import threading

from tests.system.conftest import put_inventory
from tests.system.helpers import await_records, run_cli, states
from worker.etcd import PutEvent, Watch, kv
from worker.ops.audit import KINDS


def test_an_operator_delete_during_the_drill_is_not_a_stale_write(client, keys, etcd_endpoints, spawn, capsys):
    expected = put_inventory(client, keys)
    spawn(2, etcd_endpoints, keys.namespace, ttl=3)
    await_records(client, keys, lambda cur: states(cur) == expected)
    # as the drill's switchover key lands, an operator deletes a record with no stamp of a leader
    key = keys.switchover
    watch = Watch(client, key, start_revision=client.current_revision() + 1)
    done = threading.Event()

    def operator() -> None:
        try:
            while not done.is_set():
                response = watch.get(timeout=0.2)
                if response is not None and any(isinstance(e, PutEvent) for e in response.events):
                    client.txn(kv.txn_request([], [kv.op_delete(keys.protection_key("c-0"))]))
                    return
        finally:
            done.set()

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        code, out, err = run_cli(capsys, "drill", "--mode", "resign", "--json", "--endpoints",
                                 ",".join(etcd_endpoints), "--namespace", keys.namespace)
    finally:
        done.set()
        thread.join(5)
        watch.close()
    result = json.loads(out)
    with capsys.disabled():
        print(out, err)   # the note quotes it
    assert result["stale_writes"] == 0, result
    assert result["audit_violations"]["unattributed"] == 1 and result["audit_violations"]["stale_term"] == 0
    assert [v["kind"] for v in result["violations"]] == ["unattributed"]
    assert result["ok"] is False and code == 1
    # a clean drill: ok; each figure from one source, whatever the timing (leading: etcd's Mutex, always)
    code, out, err = run_cli(capsys, "drill", "--mode", "resign", "--json", "--endpoints", ",".join(etcd_endpoints),
                             "--namespace", keys.namespace)
    result = json.loads(out)
    with capsys.disabled():
        print(out, err)   # the note quotes it
    assert code == 0 and result["ok"] is True and result["audit_violations"] == dict.fromkeys(KINDS, 0)
    assert {k: v for k, v in result["sources"].items() if k != "first_write_ms"} == {
        "handover_ms": "etcd", "leaderless_ms": "etcd", "first_reconcile_ms": "http"}
    # the human line says both
    code, out, _ = run_cli(capsys, "drill", "--mode", "resign", "--endpoints", ",".join(etcd_endpoints),
                           "--namespace", keys.namespace)
    with capsys.disabled():
        print(out)
    assert code == 0 and "stale writes: 0" in out and "leading" in out and "(etcd)" in out, out
