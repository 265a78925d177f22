"""``deploy/grafana/protection-worker.json``: importable as is, and every query it makes answers.

A real Prometheus scrapes three real instances through an input change, a graceful failover and a
pause; then every panel query and annotation of the checked-in JSON runs through Prometheus's
HTTP API the way Grafana would send it (range or instant, ``$__rate_interval`` and ``$__interval``
filled in) and must return at least one series: an empty answer means a misspelt metric or label.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.security.test_alerts import _exposed_names
from tests.system.conftest import put_inventory
from tests.system.helpers import await_leader, leader_of
from tests.system.prom import INTERVAL, Prometheus, needs_prometheus
from worker.control import set_paused

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "protection-worker.json"
#: what Grafana fills in: $__rate_interval is at least four scrape intervals
FILL = {"$__rate_interval": f"{int(INTERVAL * 8 * 1000)}ms", "$__interval": f"{int(INTERVAL * 4 * 1000)}ms",
        "$__range": "1m"}


def board() -> dict:
    return json.loads(DASHBOARD.read_text())


def targets(doc: dict) -> list[tuple[str, dict]]:
    """(where, target) for every panel target and annotation query."""
    out = [(f"panel {p['id']} {p['title']!r} {t['refId']}", t) for p in doc["panels"] for t in p["targets"]]
    out += [(f"annotation {a['name']!r}", a) for a in doc["annotations"]["list"] if "expr" in a]
    return out


def fill(expr: str) -> str:
    for name, value in FILL.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not fill in: {expr}"
    return expr


def test_the_json_has_what_grafana_needs_to_import_it():
    doc = board()
    assert doc["uid"] == "protection-worker" and doc["title"]
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] >= 39  # Grafana 11
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in doc["panels"]:
        assert panel["type"] and panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no target"
    allowed = _exposed_names()
    for where, target in targets(doc):
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert target["expr"].strip(), where
        used = set(re.findall(r"\bprotection_worker_[a-z_]+", target["expr"]))
        assert used and used <= allowed, (where, used - allowed)
    # the issue's panels, by the metric each one shows
    shown = " ".join(t["expr"] for _, t in targets(doc))
    for name in ("is_leader", "term", "reconcile_duration_seconds_bucket", "reconcile_runs_total", "writes_total",
                 "fenced_writes_total", "clusters", "invalid_inputs", "lease_ttl_seconds", "etcd_errors_total",
                 "last_etcd_contact_timestamp_seconds", "is_paused", "etcd_server_info",
                 "last_pass_timestamp_seconds"):
        assert f"protection_worker_{name}" in shown, name


@pytest.mark.skipif(importlib.util.find_spec("grafana_foundation_sdk") is None,
                    reason="grafana-foundation-sdk not installed (pip install -e '.[dashboard]')")
def test_the_checked_in_json_is_what_build_py_generates():
    done = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_prometheus
@pytest.mark.slow
def test_every_panel_query_answers_from_a_real_prometheus(client, keys, spawn, tmp_path, etcd_endpoints):
    put_inventory(client, keys, 8)
    client.put(keys.dr_key("c-1"), json.dumps({"replication": "lost-in-space"}))  # an invalid input
    workers = spawn(3, etcd_endpoints, keys.namespace, interval=1.0)
    by_id = {w.instance_id: w for w in workers}
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{w.port}" for w in workers])
    try:
        start = time.time() - 1
        first, _term, _ = await_leader(client, keys)
        prom.await_query("protection_worker_last_pass_timestamp_seconds{mode=\"full\"} > 0", what="a full pass")
        client.put(keys.dr_key("c-3"), json.dumps({"replication": "broken"}))  # an incremental pass
        prom.await_query("protection_worker_last_pass_timestamp_seconds{mode=\"incremental\"} > 0",
                         what="an incremental pass")
        # a graceful failover, then the old leader back in line
        old = by_id[first]
        old.terminate()
        second, _, _ = await_leader(client, keys, other_than=first)
        old.start()
        assert old.wait_http("/readyz")
        prom.await_query(f"protection_worker_is_leader{{instance=\"127.0.0.1:{by_id[second].port}\"}} == 1",
                         what="the new leader scraped")
        # a pause and a resume
        set_paused(client, keys, True, by="test")
        prom.await_query("max(protection_worker_is_paused) == 1", what="paused scraped")
        set_paused(client, keys, False, by="test")
        prom.await_query("max(protection_worker_is_paused) == 0", what="resumed scraped")
        prom.await_query("protection_worker_is_leader == 1", what="a leader after the resume")
        time.sleep(INTERVAL * 8)  # one more rate window of scrapes after the resume
        end = time.time()
        counts = []
        for where, target in targets(board()):
            expr = fill(target["expr"])
            if target.get("instant"):
                result = prom.query(expr)
            else:
                result = prom.query_range(expr, start, end, step=INTERVAL * 2)
            counts.append((where, len(result)))
            assert result, f"{where}: empty answer from Prometheus for {expr}"
        print("\ndashboard queries against a real Prometheus (series returned):")
        for where, count in counts:
            print(f"  {count:3d}  {where}")
        assert leader_of(client, keys) is not None
    finally:
        prom.close()
