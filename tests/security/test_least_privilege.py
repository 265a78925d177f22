"""End to end in production shape: https:// endpoints, a CA, client certificates (mutual TLS), and
a password login as the user ``etcd-role --apply`` makes (readwrite on ``{ns}/`` only).

Real worker processes campaign, lock, reconcile and follow the inputs; ``reconcile --once``,
``status``, ``drill`` and ``audit`` run as operators would run them. Every request stays under
``{ns}/`` (etcd refused none, by its own metrics), and the password appears nowhere: not in
logs, HTTP answers, CLI output or etcd values.
"""

from __future__ import annotations

import json
import re
import signal

from tests.system.conftest import put_inventory
from tests.system.helpers import await_leader, await_records, records, states
from worker.etcd import kv
from worker.keys import Keys

from .conftest import PASSWORD, ROOT_PASSWORD, cli, credentials, least_privilege_user, worker_process, write_config

HTTP_PATHS = ("/metrics", "/healthz", "/readyz", "/leader", "/status")


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_run_reconcile_status_drill_audit_as_the_least_privilege_user(secure_etcd, ns, tmp_path, workers):
    user = f"e2e-{ns[5:]}"
    least_privilege_user(secure_etcd.admin(), ns, user)
    client = secure_etcd.client(user)  # the tests' own reads and writes: the same user, no more rights
    keys = Keys(ns)
    denied_before = secure_etcd.denied_requests()
    outputs: list[str] = []  # everything the worker printed or answered, grepped for secrets at the end

    def run_cli(*args: str) -> dict:
        done = cli(*args, "--config", str(config), env=cli_creds.env)
        outputs.extend([done.stdout, done.stderr])
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout) if "--json" in args else {}

    # -- one pass from the command line (password from $PROTECTION_WORKER_ETCD_PASSWORD) -----------
    expected = put_inventory(client, keys, count=6)
    cli_creds = credentials(tmp_path / "cli", secure_etcd, user, "env")
    config = write_config(tmp_path / "cli.toml", secure_etcd, ns, cli_creds)
    once = run_cli("reconcile", "--once", "--json")
    assert once["created"] == len(expected)
    assert states(records(client, keys)) == expected

    # -- three daemons; each finds its password another way --------------------------------------
    for i, source in enumerate(("file", "env", "credentials")):
        creds = credentials(tmp_path / source, secure_etcd, user, source)
        workers.append(worker_process(f"w{i + 1}-{source}", secure_etcd, ns, tmp_path / "logs", creds,
                                      ttl=3, interval=30.0).start())
    for w in workers:
        assert w.wait_http("/readyz", timeout=20), w.log_path.read_text()[-2000:]
    leader, term, _ = await_leader(client, keys)
    assert leader in {w.instance_id for w in workers}

    # the leader follows the inputs through its watches
    client.put(keys.dr_key("c-1"), json.dumps({"replication": "broken"}))
    current = await_records(client, keys, lambda r: r.get("c-1", {}).get("state") == "degraded")
    assert current["c-1"]["term"] == term

    status = run_cli("status", "--json")
    assert status["leader"]["instance_id"] == leader and status["leader"]["term"] == term
    assert len(status["candidates"]) == 3 and status["lock_holder"] is not None

    # -- failover: a drill (switchover), then SIGTERM to the new leader ---------------------------
    drill = run_cli("drill", "--mode", "resign", "--json")
    assert drill["ok"] and drill["old_leader"] == leader and drill["new_leader"] != leader, drill
    assert drill["stale_writes"] == 0
    second = drill["new_leader"]
    by_id = {w.instance_id: w for w in workers}
    assert by_id[second].wait_http("/leader", timeout=10)
    by_id[second].signal(signal.SIGTERM)
    third, third_term, _ = await_leader(client, keys, other_than=second)
    assert by_id[second].proc.wait(timeout=10) == 0
    client.put(keys.dr_key("c-3"), json.dumps({"replication": "in_sync"}))
    current = await_records(client, keys, lambda r: r.get("c-3", {}).get("state") == "protected")
    assert current["c-3"]["term"] == third_term

    audit = run_cli("audit", "--json")
    assert audit["violations"] == [] and audit["checked"] >= len(expected) + 2

    # -- every request stayed under {ns}/: etcd refused nothing, the workers met no refusal --------
    answers = {}
    for w in workers:
        if not w.running():
            continue
        for path in HTTP_PATHS:
            code, body = w.get(path)
            assert code in (200, 503), (w.instance_id, path, code)
            answers[(w.instance_id, path)] = body if isinstance(body, str) else json.dumps(body)
        metrics = answers[(w.instance_id, "/metrics")]
        assert _metric(metrics, "protection_worker_etcd_errors_total", kind="auth") == 0, w.instance_id
        assert _metric(metrics, "protection_worker_etcd_errors_total", kind="tls") == 0, w.instance_id
        assert _metric(metrics, "protection_worker_is_leader") == (1 if w.instance_id == third else 0)
    assert secure_etcd.denied_requests() == denied_before, "a request outside {ns}/ was refused by etcd"
    logs = {w.instance_id: w.log_path.read_text() for w in workers}
    for instance_id, text in logs.items():
        assert "permission denied" not in text.lower(), (instance_id, text[-2000:])

    # -- and the password is nowhere ---------------------------------------------------------------
    resp = secure_etcd.admin().range(kv.range_request(b"\0", range_end=b"\0"))  # every key in etcd
    stored = [item.key.decode("utf-8", "replace") + "=" + item.value.decode("utf-8", "replace") for item in resp.kvs]
    assert any(s.startswith(keys.protection) for s in stored)  # (the grep below sees real data)
    haystacks = {"cli": outputs, "http": list(answers.values()), "logs": list(logs.values()), "etcd": stored,
                 "configs": [p.read_text() for p in (tmp_path / "logs").glob("*.toml")] + [config.read_text()]}
    assert all(haystacks.values())
    for secret in (PASSWORD, ROOT_PASSWORD):
        hits = {where: sum(text.count(secret) for text in texts) for where, texts in haystacks.items()}
        assert sum(hits.values()) == 0, hits
    # the password files really held it (so a leak would have been found)
    assert (tmp_path / "file" / f"{user}.password").read_text().strip() == PASSWORD
