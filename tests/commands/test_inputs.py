"""The operator commands through ``worker.cli.main``: exit codes, output, and what lands in etcd."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from worker.cli import main
from worker.concurrency import Election, Mutex, Session
from worker.concurrency.errors import SessionExpiredError, WaitTimeoutError
from worker.etcd import connect
from worker.demo.embedded_etcd import find_binary
from worker.keys import Keys

from tests.protection.helpers import cluster, count, dr, get, put, record


@pytest.fixture(autouse=True)
def _restore_logging():
    """The commands configure logging for their process; give the next test the old configuration."""
    import logging

    import structlog
    saved, handlers, level = structlog.get_config(), list(logging.getLogger().handlers), logging.getLogger().level
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers
    logging.getLogger().setLevel(level)


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def cli(etcd_endpoints, keys, capsys):
    def run(*argv: str, endpoints: list[str] | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*argv, "--endpoints", ",".join(endpoints or etcd_endpoints), "--namespace", keys.namespace])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_clusters_put_rm_ls_and_dr_set(cli, client, keys):
    assert cli("clusters", "put", "c1", "--dr-site", "site-b")[0] == 0
    assert json.loads(get(client, keys.cluster("c1")).value) == {"allocated": True, "dr_site": "site-b"}
    assert cli("clusters", "put", "c2", "--reclaimed")[0] == 0
    assert json.loads(get(client, keys.cluster("c2")).value) == {"allocated": False, "dr_site": None}
    assert cli("dr", "set", "c1", "in_sync")[0] == 0
    assert json.loads(get(client, keys.dr_key("c1")).value) == {"replication": "in_sync"}
    code, out, _ = cli("reconcile", "--once")
    assert code == 0 and "2 clusters seen, 1 created" in out
    code, out, _ = cli("clusters", "ls")
    assert code == 0 and "c1" in out and "protected" in out and "2 clusters" in out
    code, out, _ = cli("clusters", "ls", "--json")
    listed = json.loads(out)["clusters"]
    assert [(c["id"], c["allocated"], c["dr_site"], c["state"]) for c in listed] == [
        ("c1", True, "site-b", "protected"), ("c2", False, None, "none")]
    assert cli("clusters", "rm", "c1")[0] == 0 and get(client, keys.cluster("c1")) is None
    code, _, err = cli("clusters", "rm", "c1")
    assert code == 1 and "does not exist" in err
    cli("reconcile", "--once")
    assert record(client, keys, "c1") is None


@pytest.mark.parametrize("argv,message", [
    (("clusters", "put", "a/b"), "invalid cluster id"),
    (("clusters", "put", "x" * 129), "invalid cluster id"),
    (("clusters", "put", "ok", "--dr-site", ""), "--dr-site"),
    (("dr", "set", "c1", "bogus"), "invalid DR status"),
    (("dr", "set", "bad id", "in_sync"), "invalid cluster id"),
    (("clusters", "rm", "../x"), "invalid cluster id"),
])
def test_bad_operator_input_exits_2_and_writes_nothing(cli, client, keys, argv, message):
    before = client.current_revision()
    code, out, err = cli(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert client.current_revision() == before


def test_config_error_and_unreachable_etcd(cli, capsys):
    code, _, err = cli("reconcile", "--once", "--ttl", "1")
    assert code == 2 and "election.ttl" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("status", endpoints=["http://127.0.0.1:9"])
    assert code == 1 and "127.0.0.1:9" in err and len(err.strip().splitlines()) == 1


def test_dry_run_prints_changes_and_writes_nothing(cli, client, keys, monkeypatch):
    put(client, keys.cluster("a"), cluster(True, "s"))
    put(client, keys.cluster("b"), cluster(True, None))
    put(client, keys.protection_key("gone"), "{}")
    before = client.current_revision()
    # the command's own client, to see every request it sent (a lease granted and revoked again
    # leaves nothing in etcd to look at afterwards)
    from worker import config
    made = []
    real_connect = config.connect
    monkeypatch.setattr(config, "connect", lambda cfg: made.append(real_connect(cfg)) or made[-1])
    monkeypatch.setattr("worker.commands.common.connect", config.connect)
    code, out, _ = cli("reconcile", "--once", "--dry-run")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[:-1] == ["create a none -> protecting", "create b none -> unprotected",
                          "delete gone unknown -> none"]
    assert "(planned)" in lines[-1] and "0 writes in 0 txns" in lines[-1]
    assert client.current_revision() == before
    assert count(client, keys.election) == 0
    [cmd_client] = made
    # reads only: no lease, no txn, no watch (the server version at connect comes from
    # GET /version, not a gRPC Status, so it is not among the requests)
    assert set(cmd_client.stats) == {"range"}, cmd_client.stats


def test_status_json_fields(cli, client, make_client, keys):
    put(client, keys.cluster("a"), cluster(True, "s"))
    put(client, keys.dr_key("a"), dr("in_sync"))
    put(client, keys.cluster("bad"), "[]")
    assert cli("reconcile", "--once")[0] == 0
    sessions = [Session(make_client(), ttl=10) for _ in range(2)]
    try:
        first, second = (Election(s, keys.election) for s in sessions)
        first.campaign(json.dumps({"instance_id": "one"}))
        def wait_in_line() -> None:
            try:
                second.campaign(json.dumps({"instance_id": "two"}), timeout=5)
            except (SessionExpiredError, WaitTimeoutError):
                pass  # its session closed (the end of the test) while it waited in line

        t = threading.Thread(target=wait_in_line)
        t.start()
        for _ in range(100):
            if count(client, keys.election + "/") == 2:
                break
            time.sleep(0.02)
        mutex = Mutex(sessions[0], keys.lock)
        mutex.lock()
        code, out, _ = cli("status", "--json")
        assert code == 0
        status = json.loads(out)
        assert set(status) >= {"leader", "candidates", "lock_holder", "states", "invalid", "revision"}
        assert status["leader"] == {"instance_id": "one", "key": first.key, "term": first.rev}
        assert [c["instance_id"] for c in status["candidates"]] == ["one", "two"]
        assert status["lock_holder"] == mutex.key
        assert status["states"] == {"protected": 1}
        assert status["invalid"] == [{"key": keys.cluster("bad"), "mod_revision": get(client, keys.cluster("bad")).mod_revision,
                                      "error": "cluster value is not a JSON object (got list)"}]
        assert status["revision"] >= get(client, keys.lock + "/" + mutex.key.rsplit("/", 1)[1]).mod_revision
        code, out, _ = cli("status")
        assert code == 0 and "leader:      one" in out and "protected 1" in out
        mutex.unlock()
    finally:
        for s in sessions:
            s.close()
        t.join(10)
    code, out, _ = cli("status", "--json")
    assert json.loads(out)["leader"] is None and json.loads(out)["lock_holder"] is None


def test_reconcile_once_leaves_no_key_and_no_lease(private_etcd, keys, capsys):
    endpoints = private_etcd.endpoints
    c = connect(endpoints)
    try:
        put(c, keys.cluster("a"), cluster(True, None))
        capsys.readouterr()
        code = main(["reconcile", "--once", "--endpoints", ",".join(endpoints), "--namespace", keys.namespace])
        out, _ = capsys.readouterr()
        assert code == 0 and "1 created" in out
        rec = record(c, keys, "a")
        assert rec["state"] == "unprotected" and rec["term"] > 0
        assert count(c, keys.election) == 0 and count(c, keys.lock) == 0
        leases = subprocess.run([find_binary("etcdctl"), "--endpoints", endpoints[0], "lease", "list"],
                                capture_output=True, text=True, timeout=10).stdout
        assert "found 0 leases" in leases
    finally:
        c.close()


def test_reconcile_once_only_plans_in_maintenance_mode(cli, client, keys):
    from worker.control import set_paused
    put(client, keys.cluster("a"), cluster(True, None))
    set_paused(client, keys, True, by="test")
    code, out, err = cli("reconcile", "--once")
    assert code == 0 and "create a none -> unprotected" in out and "paused" in err
    assert record(client, keys, "a") is None and count(client, keys.election) == 0
    set_paused(client, keys, False, by="test")
    assert cli("reconcile", "--once")[0] == 0 and record(client, keys, "a")["state"] == "unprotected"


def test_reconcile_once_json_is_one_object_with_the_moves(cli, client, keys):
    put(client, keys.cluster("a"), cluster(True, "s"))
    put(client, keys.dr_key("a"), dr("in_sync"))
    put(client, keys.cluster("b"), cluster(True, None))
    code, out, _ = cli("reconcile", "--once", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["created"], result["states"]) == (2, {"protected": 1, "unprotected": 1})
    assert result["moved"] == {"protected": 1, "unprotected": 1}
    put(client, keys.dr_key("a"), dr("broken"))
    result = json.loads(cli("reconcile", "--once", "--json")[1])
    assert (result["updated"], result["moved"]) == (1, {"protected": -1, "degraded": 1})
