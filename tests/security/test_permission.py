"""A role without the permission the worker needs: said once, naming the key; unhealthy; out of
leadership; retried about once per TTL (etcd's own counters prove it does not hammer); and
recovered without a restart once the permission is granted."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.system.helpers import await_leader, await_records
from worker.keys import Keys

from .conftest import cli, credentials, grant, make_user, worker_process, write_config

TTL = 2
#: how long the blocked worker is watched for retries: several TTLs
WINDOW = 3 * TTL


def _denials(worker) -> list[dict]:
    """Warnings and errors that mention a denied permission (the recovery line is info)."""
    return [e for e in worker.log_events()
            if e.get("level") in ("warning", "error") and "permission denied" in json.dumps(e).lower()]


def _worker_metric(worker, name: str, **labels: str) -> float:
    code, text = worker.get("/metrics")
    assert code == 200
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _await(predicate, timeout: float) -> bool:
    """Poll a process's observable state (its log file, its HTTP answers) until true; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("role", ["read-only", "other-prefix"])
def test_missing_permission_is_reported_once_and_recovers_when_granted(secure_etcd, ns, tmp_path, workers, role):
    user = f"{role}-{ns[5:]}"
    admin = secure_etcd.admin()
    grants = [(ns + "/", "read")] if role == "read-only" else [("/somewhere-else/", "readwrite")]
    make_user(admin, user, grants)
    keys = Keys(ns)
    creds = credentials(tmp_path, secure_etcd, user, "file")

    # reconcile --once: exit 1, the same message naming the key
    config = write_config(tmp_path / "cli.toml", secure_etcd, ns, creds, ttl=TTL, timeout=0.6)
    once = cli("reconcile", "--once", "--config", str(config))
    assert once.returncode == 1, (once.stdout, once.stderr)
    assert re.search(rf"permission denied on {re.escape(keys.election)}/[0-9a-f]+ ", once.stderr), once.stderr

    # the daemon: one log line, /healthz 503, never leading
    worker = worker_process("blocked", secure_etcd, ns, tmp_path / "logs", creds, ttl=TTL, request_timeout=0.6)
    workers.append(worker.start())
    assert _await(lambda: _denials(worker), 15), worker.log_path.read_text()[-3000:]
    assert worker.wait_http("/healthz", status=503, timeout=5)
    first = _denials(worker)[0]
    assert first["level"] == "error" and first["event"] == "permission_denied"
    assert re.match(rf"permission denied on {re.escape(keys.election)}/[0-9a-f]+ ", first["error"]), first
    assert first["key"].startswith(keys.election + "/")

    # it retries slowly: over several TTLs, about one attempt per TTL (counted by etcd itself)
    etcd_before = secure_etcd.denied_requests()
    worker_before = _worker_metric(worker, "protection_worker_etcd_errors_total", kind="auth")
    time.sleep(WINDOW)  # the claim is about a rate over time: a bounded, deliberate wait
    etcd_denied = secure_etcd.denied_requests() - etcd_before
    worker_denied = _worker_metric(worker, "protection_worker_etcd_errors_total", kind="auth") - worker_before
    attempts = WINDOW / TTL + 1
    # per attempt: the campaign's write (plus, without any read right, one read of the election
    # and one of the control keys); a retry loop at the old 0.2 s pace would be ~30 attempts
    per_attempt = 1 if role == "read-only" else 3
    assert 1 <= etcd_denied <= attempts * per_attempt, etcd_denied
    assert 1 <= worker_denied <= attempts * (per_attempt + 1), worker_denied
    assert len(_denials(worker)) == 1, _denials(worker)  # said once, not once per retry
    code, health = worker.get("/healthz")
    assert code == 503 and "permission denied on" in health["blocked"]
    assert worker.get("/leader")[0] == 503 and _worker_metric(worker, "protection_worker_is_leader") == 0
    # out of leadership: no key of it in line, nothing written under the namespace
    client = secure_etcd.admin()
    assert client.get_prefix_response(keys.election + "/").count == 0
    assert client.get_prefix_response(ns + "/").count == 0

    # granted: healthy, campaigning, leading, without a restart
    grant(admin, user, ns + "/", "readwrite")
    leader, _term, _ = await_leader(client, keys, timeout=4 * TTL + 5)
    assert leader == worker.instance_id
    assert worker.wait_http("/healthz", status=200, timeout=5), worker.get("/healthz")
    assert worker.wait_http("/leader", status=200, timeout=5)
    events = [e["event"] for e in worker.log_events()]
    assert "permission_restored" in events and "became_leader" in events
    assert len(_denials(worker)) == 1


def test_permission_revoked_while_leading_steps_down_once_and_comes_back(secure_etcd, ns, tmp_path, workers):
    from pyetcd import etcdrpc

    from worker.etcd import kv

    from .conftest import auth_call, least_privilege_user

    user = f"revoked-{ns[5:]}"
    admin = secure_etcd.admin()
    least_privilege_user(admin, ns, user)
    keys = Keys(ns)
    admin.put(keys.cluster("c-1"), json.dumps({"allocated": True, "dr_site": None}))
    creds = credentials(tmp_path, secure_etcd, user, "env")
    worker = worker_process("leader", secure_etcd, ns, tmp_path / "logs", creds, ttl=TTL, request_timeout=0.6)
    workers.append(worker.start())
    leader, term, _ = await_leader(admin, keys)
    assert leader == worker.instance_id and worker.wait_http("/leader", timeout=10)

    prefix = ns + "/"
    auth_call(admin, "RoleRevokePermission", etcdrpc.AuthRoleRevokePermissionRequest(
        role=user, key=prefix.encode(), range_end=kv.prefix_end(prefix)))
    admin.put(keys.cluster("c-2"), json.dumps({"allocated": True, "dr_site": None}))  # work for the leader
    assert _await(lambda: _denials(worker), 15), worker.log_path.read_text()[-3000:]
    assert worker.wait_http("/healthz", status=503, timeout=5)
    assert worker.get("/leader")[0] == 503
    etcd_before = secure_etcd.denied_requests()
    time.sleep(WINDOW)  # a rate over time: a bounded, deliberate wait
    assert secure_etcd.denied_requests() - etcd_before <= (WINDOW / TTL + 1) * 3  # no retry loop
    assert len(_denials(worker)) == 1, _denials(worker)

    grant(admin, user, prefix, "readwrite")
    assert worker.wait_http("/leader", status=200, timeout=4 * TTL + 5), worker.log_path.read_text()[-3000:]
    assert worker.wait_http("/healthz", status=200, timeout=5)
    await_records(admin, keys, lambda r: "c-2" in r, timeout=10)  # and it catches up
    assert len(_denials(worker)) == 1
