"""The operator commands against real daemons: drill, audit, pause/resume, switchover."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import put_inventory
from tests.system.helpers import await_records, leader_of, run_cli, states

TTL = 3


_cli = run_cli


def _flags(endpoints, keys):
    return ["--endpoints", ",".join(endpoints), "--namespace", keys.namespace]


@pytest.mark.parametrize("mode", ["resign", "kill", "stop"])
def test_drill_fails_over_measures_and_finds_no_stale_write(mode, client, keys, etcd_endpoints, spawn, capsys):
    expected = put_inventory(client, keys)
    workers = {w.instance_id: w for w in spawn(3, etcd_endpoints, keys.namespace, ttl=TTL)}
    await_records(client, keys, lambda cur: states(cur) == expected)
    old_id, _ = leader_of(client, keys)
    code, out, err = _cli(capsys, "drill", "--mode", mode, "--json", *_flags(etcd_endpoints, keys))
    result = json.loads(out)
    assert code == 0, (out, err)
    assert set(result) >= {"mode", "old_leader", "new_leader", "handover_ms", "leaderless_ms",
                           "first_reconcile_ms", "stale_writes", "ok"}
    assert result["ok"] is True and result["stale_writes"] == 0
    assert result["old_leader"] == old_id and result["new_leader"] not in (None, old_id)
    for field in ("handover_ms", "leaderless_ms", "first_reconcile_ms"):
        assert isinstance(result[field], (int, float)) and result[field] >= 0
    # three measurements, each taken after the one before it: a figure copied from another (the old
    # fallback when the new leader's HTTP could not be read) would tie with it
    assert result["handover_ms"] < result["leaderless_ms"] < result["first_reconcile_ms"], result
    assert result["unmeasured"] == {} and result["sources"]["first_reconcile_ms"] == "http"
    if mode == "kill":
        assert not workers[old_id].running()  # only kill may end a process
    else:
        assert workers[old_id].running()
        # it campaigns again: back in line as a follower
        assert workers[old_id].wait_http("/readyz", 200, timeout=TTL + 5)


def test_audit_reports_a_forged_stale_write(client, keys, etcd_endpoints, spawn, capsys):
    expected = put_inventory(client, keys)
    spawn(2, etcd_endpoints, keys.namespace, ttl=TTL)
    await_records(client, keys, lambda cur: states(cur) == expected)
    since = client.current_revision() + 1
    code, out, _ = _cli(capsys, "audit", "--since-rev", str(since), "--json", *_flags(etcd_endpoints, keys))
    assert code == 0 and json.loads(out)["violations"] == []
    # a write that did not go through the fence, with an old term: exactly what a stale leader does
    record = json.loads(client.get(keys.protection_key("c-0"))[0])
    record["term"] = 1
    client.put(keys.protection_key("c-0"), json.dumps(record))
    code, out, _ = _cli(capsys, "audit", "--since-rev", str(since), "--json", *_flags(etcd_endpoints, keys))
    report = json.loads(out)
    assert code == 1
    assert [(v["key"], v["term"]) for v in report["violations"]][0] == (keys.protection_key("c-0"), 1)
    assert report["violations"][0]["leader_term"] == leader_of(client, keys)[1]


def test_audit_of_a_compacted_range_fails_and_says_so(client, keys, etcd_endpoints, capsys):
    client.put(keys.cluster("x"), "{}")
    old = client.current_revision()
    client.put(keys.cluster("x"), "{}")
    client.compact(client.current_revision())
    code, _, err = _cli(capsys, "audit", "--since-rev", str(old), *_flags(etcd_endpoints, keys))
    assert code == 1 and "compacted" in err


def test_pause_stops_writes_and_resume_catches_up(client, keys, etcd_endpoints, spawn, capsys):
    expected = put_inventory(client, keys)
    workers = {w.instance_id: w for w in spawn(2, etcd_endpoints, keys.namespace, ttl=TTL)}
    await_records(client, keys, lambda cur: states(cur) == expected)
    leader = workers[leader_of(client, keys)[0]]
    assert _cli(capsys, "pause", *_flags(etcd_endpoints, keys))[0] == 0
    # paused is visible on the leader (status and metric) before we change anything
    import time
    deadline = time.monotonic() + 5
    while leader.get("/status")[1].get("paused") is not True and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leader.get("/status")[1]["paused"] is True
    assert "protection_worker_is_paused 1.0" in leader.get("/metrics")[1]
    client.put(keys.dr_key("c-1"), json.dumps({"replication": "broken"}))
    changed_at = client.current_revision()
    # wait until the leader has run its (dry) pass over that change
    deadline = time.monotonic() + 5
    while (leader.get("/healthz")[1].get("last_pass") or {}).get("revision", 0) < changed_at:
        assert time.monotonic() < deadline, "the paused leader never looked at the change"
        time.sleep(0.02)
    assert client.current_revision() == changed_at, "a paused leader wrote"
    assert json.loads(client.get(keys.protection_key("c-1"))[0])["state"] == "protected"
    assert leader.get("/leader")[0] == 200
    assert _cli(capsys, "resume", *_flags(etcd_endpoints, keys))[0] == 0
    await_records(client, keys, lambda cur: cur["c-1"]["state"] == "degraded")


def test_switchover_to_a_named_candidate(client, keys, etcd_endpoints, spawn, capsys):
    put_inventory(client, keys)
    workers = spawn(3, etcd_endpoints, keys.namespace, ttl=TTL)
    old_id, _ = leader_of(client, keys)
    # the last in line, so the one in the middle must step aside too
    status = workers[0].get("/status")[1]
    target = status["candidates"][-1]["instance_id"]
    assert target != old_id
    code, out, err = _cli(capsys, "switchover", "--to", target, *_flags(etcd_endpoints, keys))
    assert code == 0, err
    assert leader_of(client, keys)[0] == target
    assert f"-> {target}" in out
    code, _, err = _cli(capsys, "switchover", "--to", "nobody", *_flags(etcd_endpoints, keys))
    assert code == 2 and "not a candidate" in err
