"""Fixtures: real etcd processes on loopback (never mocks), cleaned up whatever happens.

* ``etcd_endpoints`` — one member shared by the session; tests isolate themselves by ``prefix``.
* ``private_etcd`` — a member of the test's own, for tests that kill, pause or restart it.
* ``etcd3`` — a 3-member cluster of the test's own.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from worker.etcd import EtcdClient, connect
from worker.demo.embedded_etcd import EtcdCluster

os.environ.setdefault("PROTECTION_WORKER_TEST", "1")


@pytest.fixture(scope="session")
def shared_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def etcd_endpoints(shared_etcd: EtcdCluster) -> list[str]:
    return shared_etcd.endpoints


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses (tests share one etcd)."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
    return f"/t/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(etcd_endpoints: list[str]) -> Iterator[EtcdClient]:
    c = connect(etcd_endpoints)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def make_client(etcd_endpoints: list[str]) -> Iterator:
    """Factory for extra clients (each candidate of an election gets its own, like separate hosts)."""
    made: list[EtcdClient] = []

    def make(endpoints: list[str] | None = None, **kw) -> EtcdClient:
        c = connect(endpoints or etcd_endpoints, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as cluster:
        yield cluster
