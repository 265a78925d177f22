"""etcd's auth tokens expire (here after ``TOKEN_TTL`` = 2 idle seconds): a running leader renews
its token and keeps leading, without a restart, a new term or a missed input change."""

from __future__ import annotations

import json
import time

from tests.system.helpers import await_leader, await_records, leader_of
from worker.protection.keys import Keys

from .conftest import TOKEN_TTL, credentials, least_privilege_user, worker_process

ROUNDS = 3


def _logins(worker) -> int:
    code, health = worker.get("/healthz")
    assert code == 200, health
    return health["etcd_requests"].get("authenticate", 0)


def test_a_leader_keeps_leading_across_token_expiry(secure_etcd, ns, tmp_path, workers):
    user = f"token-{ns[5:]}"
    least_privilege_user(secure_etcd.admin(), ns, user)
    client = secure_etcd.client(user)
    keys = Keys(ns)
    client.put(keys.cluster("c-1"), json.dumps({"allocated": True, "dr_site": "site-b"}))
    creds = credentials(tmp_path, secure_etcd, user, "credentials")
    # interval 30 s: between input changes the leader sends nothing that would refresh its token
    worker = worker_process("leader", secure_etcd, ns, tmp_path / "logs", creds, ttl=3, interval=30.0)
    workers.append(worker.start())
    leader, term, _ = await_leader(client, keys)
    assert leader == worker.instance_id
    assert worker.wait_http("/leader", timeout=10)
    await_records(client, keys, lambda r: r.get("c-1", {}).get("state") == "protecting")
    logins = _logins(worker)
    for i, replication in enumerate(["in_sync", "broken", "in_sync"][:ROUNDS]):
        # No event announces a token's expiry: idling past it is the only way. etcd sweeps expired
        # simple tokens once a second, so TTL + 1.5 s of idleness guarantees the leader's is gone.
        time.sleep(TOKEN_TTL + 1.5)
        client.put(keys.dr_key("c-1"), json.dumps({"replication": replication}))
        want = "protected" if replication == "in_sync" else "degraded"
        current = await_records(client, keys, lambda r: r["c-1"]["state"] == want, timeout=10)
        assert current["c-1"]["term"] == term
        assert leader_of(client, keys) == (worker.instance_id, term), f"round {i}: leadership changed"
        now = _logins(worker)
        assert now > logins, f"round {i}: the token did not expire (no re-login), so nothing was tested"
        logins = now
    assert worker.get("/leader")[0] == 200
    events = [e["event"] for e in worker.log_events()]
    assert events.count("became_leader") == 1
    assert not {"stepped_down", "lease_lost", "reconcile_failed", "fenced_write"} & set(events), events
