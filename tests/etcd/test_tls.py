"""TLS against a real etcd serving certificates from a trustme CA."""

from __future__ import annotations

import time

import pytest
import trustme

from worker.errors import ConfigError
from worker.etcd import EtcdTLSError, EtcdUnavailableError, connect
from worker.demo.embedded_etcd import EtcdCluster, TLSFiles


def test_server_auth_tls_with_ca_cert(tls_etcd, certs):
    cluster = tls_etcd(mutual=False)
    client = connect(cluster.endpoints, ca_cert=certs.ca)
    try:
        client.put("/tls/k", "v")
        assert client.get("/tls/k")[0] == b"v"
        assert client.endpoint_url.startswith("https://")
    finally:
        client.close()


def test_mutual_tls_with_client_cert(tls_etcd, certs):
    cluster = tls_etcd(mutual=True)
    client = connect(cluster.endpoints, ca_cert=certs.ca, cert=certs.client_cert, key=certs.client_key)
    try:
        client.put("/tls/k", "v")
        assert client.get("/tls/k")[0] == b"v"
    finally:
        client.close()


def test_mutual_tls_without_client_cert_is_refused(tls_etcd, certs):
    cluster = tls_etcd(mutual=True)
    started = time.monotonic()
    with pytest.raises(EtcdTLSError, match="refused our client certificate"):
        connect(cluster.endpoints, ca_cert=certs.ca, dial_timeout=2.0)
    assert time.monotonic() - started < 1.0  # a TLS mistake does not wait out the dial timeout


def test_mutual_tls_with_a_foreign_client_cert_is_refused_at_connect(tls_etcd, certs):
    cluster = tls_etcd(mutual=True)
    started = time.monotonic()
    with pytest.raises(EtcdTLSError, match="refused our client certificate") as info:
        connect(cluster.endpoints, ca_cert=certs.ca, cert=certs.other_cert, key=certs.other_key,
                dial_timeout=2.0)
    assert time.monotonic() - started < 1.0  # a TLS mistake does not wait out the dial timeout
    assert cluster.endpoints[0] in str(info.value)


def test_a_server_cert_from_another_ca_is_refused(tls_etcd, certs):
    cluster = tls_etcd(mutual=False)
    # the "other" client certificate is self-consistent but its CA never signed the server's
    started = time.monotonic()
    with pytest.raises(EtcdTLSError, match="not signed by etcd.ca_cert"):
        connect(cluster.endpoints, ca_cert=certs.other_cert, dial_timeout=2.0)
    assert time.monotonic() - started < 1.0


def test_plaintext_to_a_tls_endpoint_fails_fast_and_says_https(tls_etcd):
    cluster = tls_etcd(mutual=False)
    plain = cluster.endpoints[0].replace("https://", "http://")
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError, match="it serves TLS; use https://"):
        connect([plain], dial_timeout=2.0)
    assert time.monotonic() - started < 1.0


def test_client_cert_without_ca_is_a_config_error(certs):
    with pytest.raises(ConfigError, match="without etcd.ca_cert"):
        connect(["https://127.0.0.1:1"], cert=certs.client_cert, key=certs.client_key)


def test_password_over_plaintext_is_a_config_error():
    with pytest.raises(ConfigError, match="http://"):
        connect(["http://127.0.0.1:1"], username="worker", password="secret")


def test_unreadable_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        connect(["https://127.0.0.1:1"], ca_cert=str(tmp_path / "missing.pem"))


def test_a_server_cert_that_does_not_name_the_host_is_refused_at_once(tmp_path):
    """gRPC checks the certificate against the host dialled (here the IP 127.0.0.1), so etcd's
    certificate needs an IP SAN; without one, connect says so instead of timing out."""
    ca = trustme.CA()
    named = ca.issue_cert("etcd.example")  # no 127.0.0.1
    files = {"ca": ca.cert_pem, "cert": named.cert_chain_pems[0], "key": named.private_key_pem}
    paths = {name: str(tmp_path / f"{name}.pem") for name in files}
    for name, blob in files.items():
        blob.write_to_path(paths[name])
    with EtcdCluster(1, tls=TLSFiles(paths["cert"], paths["key"])) as cluster:
        started = time.monotonic()
        with pytest.raises(EtcdTLSError, match="does not name 127.0.0.1"):
            connect(cluster.endpoints, ca_cert=paths["ca"], dial_timeout=2.0)
        assert time.monotonic() - started < 1.0
