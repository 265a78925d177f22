"""``deploy/prometheus``: the alert rules and the scrape config stay valid and only use metric names
of the contract, so the files cannot rot when the code changes. ``promtool`` (package
``prometheus``) checks and unit-tests them when installed; the structural checks always run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from tests.daemon.test_metrics import ADDED, CONTRACT
from worker.daemon.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
PROMTOOL = shutil.which("promtool")
#: .ci/run sets it after installing promtool: in CI these tests must run, never skip
REQUIRED_BY_CI = os.environ.get("PROTECTION_WORKER_REQUIRE_PROMTOOL") == "1"
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not REQUIRED_BY_CI,
                                    reason="promtool not installed (apt-get install prometheus)")

#: the alerts the deployment guide promises, by what they watch
REQUIRED = {
    "ProtectionWorkerNoLeader": "protection_worker_is_leader",
    "ProtectionWorkerSeveralLeaders": "protection_worker_is_leader",
    "ProtectionWorkerFencedWrites": "protection_worker_fenced_writes_total",
    "ProtectionWorkerInvalidInputs": "protection_worker_invalid_inputs",
    "ProtectionWorkerEtcdErrors": "protection_worker_etcd_errors_total",
    "ProtectionWorkerLeaseTTLLow": "protection_worker_lease_ttl_seconds",
    "ProtectionWorkerEtcdContactOld": "protection_worker_last_etcd_contact_timestamp_seconds",
    "ProtectionWorkerPausedTooLong": "protection_worker_is_paused",
    "ProtectionWorkerLeaderStalled": "protection_worker_last_pass_timestamp_seconds",
}


def _exposed_names() -> set[str]:
    """Every series name the contract allows: counters with _total, histograms with their parts."""
    names = set()
    for name, kind in (CONTRACT | ADDED).items():
        full = "protection_worker_" + name
        names |= {"counter": {full + "_total"}, "histogram": {full + "_bucket", full + "_sum", full + "_count"}}.get(
            kind, {full})
    return names


def _rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"} and isinstance(doc["groups"], list) and doc["groups"]
    rules = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"], group
        rules += group["rules"]
    return rules


def test_the_contract_names_are_what_the_daemon_exposes():
    text = generate_latest(Metrics().registry).decode()
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples
               if not s.name.endswith("_created")}
    # etcd_server_info has a series only once the server's version is known
    assert exposed == _exposed_names() - {"protection_worker_etcd_server_info"}


def test_alert_rules_are_well_formed_and_use_only_contract_metrics():
    allowed = _exposed_names()
    names = []
    for rule in _rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert isinstance(rule["alert"], str) and isinstance(rule["expr"], str), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh](\d+[smh])*", str(rule["for"])), rule
        used = set(re.findall(r"\bprotection_worker_[a-z_]+", rule["expr"]))
        assert used <= allowed, (rule["alert"], used - allowed)
        names.append(rule["alert"])
    assert len(names) == len(set(names))
    by_name = {r["alert"]: r for r in _rules()}
    for alert, metric in REQUIRED.items():
        assert metric in by_name[alert]["expr"], alert
    assert by_name["ProtectionWorkerSeveralLeaders"]["expr"].startswith("sum(protection_worker_is_leader) > 1")
    assert "increase(protection_worker_fenced_writes_total[10m]) > 0" in by_name["ProtectionWorkerFencedWrites"]["expr"]


def test_scrape_config_loads_the_rules_and_scrapes_the_workers():
    doc = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "protection-worker"]
    assert job["metrics_path"] == "/metrics" and len(job["static_configs"][0]["targets"]) == 3
    # ProtectionWorkerDown matches this job name
    assert 'job="protection-worker"' in {r["alert"]: r for r in _rules()}["ProtectionWorkerDown"]["expr"]


@needs_promtool
@pytest.mark.parametrize("argv", [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                                  ["test", "rules", "alerts.test.yml"]], ids=lambda a: " ".join(a[:2]))
def test_promtool_accepts_them(argv):
    assert PROMTOOL is not None, "promtool is required here (PROTECTION_WORKER_REQUIRE_PROMTOOL=1)"
    done = subprocess.run([PROMTOOL, *argv], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
