"""etcd's auth tokens expire (here after ``TOKEN_TTL`` = 2 idle seconds): a running leader renews
its token and keeps leading, without a restart, a new term or a missed input change.

Which request meets the expired token depends on the release, and the test holds on both:
before 3.5.28 LeaseKeepAlive carried no auth, so only the leader's reaction to an input change
does; from 3.5.28 (CVE-2026-33343) every keepalive is checked against the token, and each check
refreshes a simple token's TTL. So the election TTL here is long enough (keepalive every TTL/3 =
4 s) that the token idles past ``TOKEN_TTL`` between two keepalives: on 3.5.28+ the keepalive
stream itself meets "invalid auth token" and must log in again without losing the lease."""

from __future__ import annotations

import json
import time

from tests.etcd.conftest import wait_until
from tests.system.helpers import await_leader, await_records, leader_of
from worker.keys import Keys

from .conftest import TOKEN_TTL, credentials, least_privilege_user, worker_process

ROUNDS = 2
#: election TTL: keepalives every ELECTION_TTL / 3 = 4 s, longer than a token can idle (TTL + 1 s sweep)
ELECTION_TTL = 12
KEEPALIVE_EVERY = ELECTION_TTL / 3


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
    # interval 30 s: between input changes the leader sends nothing but keepalives
    worker = worker_process("leader", secure_etcd, ns, tmp_path / "logs", creds, ttl=ELECTION_TTL, interval=30.0)
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
        # the re-login came with the input change (keepalives without auth), or comes with the
        # second keepalive after it at the latest (keepalives checked against the token)
        relogged = wait_until(lambda: _logins(worker) > logins, 2 * KEEPALIVE_EVERY + 2)
        assert relogged, f"round {i}: the token did not expire (no re-login), so nothing was tested"
        assert leader_of(client, keys) == (worker.instance_id, term), f"round {i}: leadership changed"
        logins = _logins(worker)
    assert worker.get("/leader")[0] == 200
    events = [e["event"] for e in worker.log_events()]
    assert events.count("became_leader") == 1
    assert not {"stepped_down", "lease_lost", "reconcile_failed", "fenced_write"} & set(events), events
