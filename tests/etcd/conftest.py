"""Fixtures for the etcd layer's own tests: certificates from ``trustme`` and TLS etcd members.

Everything is real: a trustme CA issues the server certificate (IP SAN 127.0.0.1 and DNS
localhost, because gRPC checks the certificate against the host it dials) and client
certificates; a second, unrelated CA issues a client certificate etcd must refuse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import trustme

from worker.etcd import EtcdTimeoutError, EtcdUnavailableError
from worker.etcd import kv
from worker.demo.embedded_etcd import EtcdCluster, TLSFiles


@dataclass(frozen=True)
class Certs:
    ca: str            # the CA that signed the server and the good client certificate
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_cert: str    # a client certificate from an unrelated CA
    other_key: str

    def server_tls(self, mutual: bool = True) -> TLSFiles:
        return TLSFiles(self.server_cert, self.server_key, self.ca if mutual else None)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    base: Path = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    other_ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("worker@protection-worker.test", common_name="worker")
    other = other_ca.issue_cert("intruder@elsewhere.test", common_name="intruder")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(base / "server.pem"))
    server.private_key_pem.write_to_path(str(base / "server-key.pem"))
    client.cert_chain_pems[0].write_to_path(str(base / "client.pem"))
    client.private_key_pem.write_to_path(str(base / "client-key.pem"))
    other.cert_chain_pems[0].write_to_path(str(base / "other.pem"))
    other.private_key_pem.write_to_path(str(base / "other-key.pem"))
    return Certs(str(base / "ca.pem"), str(base / "server.pem"), str(base / "server-key.pem"),
                 str(base / "client.pem"), str(base / "client-key.pem"),
                 str(base / "other.pem"), str(base / "other-key.pem"))


@pytest.fixture(scope="module")
def tls_etcd(certs: Certs) -> Iterator[Callable[..., EtcdCluster]]:
    """Factory: a started 1-member TLS etcd (mutual TLS unless ``mutual=False``), shared by the
    tests of one module that ask for the same settings; a test that restarts it asks ``own=True``."""
    made: dict[tuple, EtcdCluster] = {}
    own: list[EtcdCluster] = []

    def make(mutual: bool = True, extra_args: list[str] | None = None, own_member: bool = False) -> EtcdCluster:
        key = (mutual, tuple(extra_args or ()))
        if not own_member and key in made:
            return made[key]
        cluster = EtcdCluster(1, tls=certs.server_tls(mutual), extra_args=extra_args)
        (own.append(cluster) if own_member else made.__setitem__(key, cluster))
        return cluster.start()

    yield make
    for cluster in [*made.values(), *own]:
        cluster.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def create_retrying(client, key: str, value: str, timeout: float = 5.0) -> None:
    """Create ``key`` while etcd comes back (or elects a leader): retried on "unavailable" and
    "timeout", bounded in time. A timed-out write may have been applied, so the write is a
    create-if-absent transaction: a retry never produces a second event."""
    request = kv.txn_request([kv.cmp_create(key, "=", 0)], [kv.op_put(key, value)])
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.txn(request)
            return
        except (EtcdUnavailableError, EtcdTimeoutError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
