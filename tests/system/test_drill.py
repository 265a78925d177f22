"""The drill never reports a figure it did not measure: against real daemons whose new leader
proclaims an HTTP address nobody serves."""

from __future__ import annotations

import dataclasses
import json
import socket

from tests.system.conftest import put_inventory
from tests.system.helpers import await_records, leader_of, run_cli, states
from worker.concurrency import candidates
from worker.identity import Identity

TTL = 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again on exit: nothing listens there


def _proclaim(client, keys, candidate, http: str) -> None:
    """Rewrite a candidate's election value (same key, same lease: its create revision, the
    term it will lead with, is unchanged) so it proclaims ``http``."""
    value = dataclasses.asdict(Identity.parse(candidate.value)) | {"http": http}
    client.put(candidate.key, json.dumps(value), lease=candidate.lease)


def test_drill_with_an_unreachable_new_leader_reports_null_and_exits_1(client, keys, etcd_endpoints, spawn,
                                                                        capsys):
    expected = put_inventory(client, keys)
    spawn(2, etcd_endpoints, keys.namespace, ttl=TTL)
    await_records(client, keys, lambda cur: states(cur) == expected)
    old_id, _ = leader_of(client, keys)
    _, line = candidates(client, keys.election)
    dead = f"127.0.0.1:{_closed_port()}"
    _proclaim(client, keys, line[1], dead)
    code, out, err = run_cli(capsys, "drill", "--mode", "resign", "--json", "--endpoints", ",".join(etcd_endpoints),
                             "--namespace", keys.namespace)
    result = json.loads(out)
    print(out, err)   # the note quotes it
    assert code == 1
    assert result["new_leader"] not in (None, old_id) and result["handover_ms"] is not None
    assert result["sources"]["handover_ms"] == "etcd"
    # the Mutex is visible in etcd: leading is measured there, not copied from the handover
    assert result["sources"]["leaderless_ms"] == "etcd" and result["leaderless_ms"] > result["handover_ms"]
    # an unchanged inventory: the first pass writes nothing, so nothing in etcd shows it
    assert result["first_reconcile_ms"] is None and result["ok"] is False
    assert dead in result["unmeasured"]["first_reconcile_ms"]
    [last] = [line for line in err.splitlines() if line.startswith("protection-worker:")]
    assert last.startswith("protection-worker: drill: first_reconcile_ms not measured") and dead in last


def test_drill_measures_from_etcd_only_what_etcd_shows_when_http_is_unreachable(client, keys, etcd_endpoints, spawn,
                                                                                capsys):
    expected = put_inventory(client, keys)
    spawn(2, etcd_endpoints, keys.namespace, ttl=TTL)
    await_records(client, keys, lambda cur: states(cur) == expected)
    # a record the leader will only correct on its next full pass (its watches follow the inputs;
    # the full pass comes every 30 s): the new leader's first pass must write it, under its stamp
    record = json.loads(client.get(keys.protection_key("c-0"))[0]) | {"state": "protected"}
    client.put(keys.protection_key("c-0"), json.dumps(record))
    _, line = candidates(client, keys.election)
    _proclaim(client, keys, line[1], f"127.0.0.1:{_closed_port()}")
    code, out, err = run_cli(capsys, "drill", "--mode", "resign", "--json", "--endpoints", ",".join(etcd_endpoints),
                             "--namespace", keys.namespace)
    result = json.loads(out)
    print(out, err)
    # the first write is in etcd, under its own name; a completed pass is not: null, with the reason (issue 19)
    assert code == 1, err
    assert result["first_reconcile_ms"] is None and list(result["unmeasured"]) == ["first_reconcile_ms"]
    assert result["sources"] == {"handover_ms": "etcd", "leaderless_ms": "etcd", "first_write_ms": "etcd"}
    assert result["handover_ms"] < result["leaderless_ms"] < result["first_write_ms"]
    assert json.loads(client.get(keys.protection_key("c-0"))[0])["state"] == expected["c-0"]
