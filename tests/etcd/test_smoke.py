"""The etcd layer against a real etcd: the basics every other test builds on."""

import pytest

from worker.errors import ConfigError
from worker.etcd import EtcdUnavailableError, Watch, connect
from worker.etcd import kv


def test_put_get_delete_round_trip(client, prefix):
    client.put(f"{prefix}/a", "1")
    value, meta = client.get(f"{prefix}/a")
    assert value == b"1"
    assert meta.create_revision > 0
    assert client.delete(f"{prefix}/a").deleted == 1
    assert client.get(f"{prefix}/a") == (None, None)


def test_raw_range_and_txn_return_headers(client, prefix):
    r1 = client.txn(kv.txn_request([kv.cmp_create(f"{prefix}/k", "=", 0)],
                                   [kv.op_put(f"{prefix}/k", "v")], [kv.op_get(f"{prefix}/k")]))
    assert r1.succeeded and r1.header.revision > 0
    r2 = client.txn(kv.txn_request([kv.cmp_create(f"{prefix}/k", "=", 0)],
                                   [kv.op_put(f"{prefix}/k", "v")], [kv.op_get(f"{prefix}/k")]))
    assert not r2.succeeded
    assert kv.response_kvs(r2, 0)[0].create_revision == r1.header.revision
    page = client.range(kv.range_request(prefix + "/", prefix=True, limit=10))
    assert [k.key for k in page.kvs] == [f"{prefix}/k".encode()]


def test_watch_delivers_events_after_start(client, prefix):
    with Watch(client, prefix + "/", range_end=kv.prefix_end(prefix + "/")) as watch:
        assert watch.started.wait(5)
        client.put(f"{prefix}/x", "1")
        client.delete(f"{prefix}/x")
        seen = []
        while len(seen) < 2:
            response = watch.get(timeout=5)
            assert response is not None, "no watch event within 5 s"
            seen += [(type(e).__name__, e.key) for e in response.events]
    assert seen == [("PutEvent", f"{prefix}/x".encode()), ("DeleteEvent", f"{prefix}/x".encode())]


def test_dead_endpoint_fails_fast_with_our_error():
    from worker.demo.embedded_etcd import free_port
    with pytest.raises(EtcdUnavailableError, match="cannot reach etcd"):
        connect([f"http://127.0.0.1:{free_port()}"], dial_timeout=0.5)


def test_client_cert_without_ca_is_a_config_error(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="without etcd.ca_cert"):
        connect(["https://127.0.0.1:2379"], cert=str(cert), key=str(cert))
