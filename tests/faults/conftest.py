"""Fixtures of the fault suite: real etcd members, real daemon processes, real signals and sockets.

``workers`` starts ``protection-worker run`` processes, each with its own etcd endpoint list (and
environment), and stops every one afterwards (SIGCONT, SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.helpers import REQUEST_TIMEOUT, TTL
from worker.etcd import connect
from worker.demo.instances import WorkerProcess, stop_group, wait_ready
from worker.keys import Keys


@pytest.fixture
def fkeys() -> Keys:
    return Keys(f"/faults-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator:
    """``start(endpoint_lists, namespace, env=None, **kw)``: one worker per endpoint list."""
    started: list[WorkerProcess] = []

    def start(endpoint_lists: list[list[str]], namespace: str, *, envs: list[dict[str, str]] | None = None,
              **kw) -> list[WorkerProcess]:
        kw.setdefault("ttl", TTL)
        kw.setdefault("request_timeout", REQUEST_TIMEOUT)
        log_dir = tmp_path / f"g{len(started)}"
        log_dir.mkdir(parents=True, exist_ok=True)
        group = []
        for i, endpoints in enumerate(endpoint_lists):
            env = envs[i] if envs else None
            worker = WorkerProcess(f"worker-{len(started) + i + 1}", endpoints, namespace, log_dir, env=env, **kw)
            group.append(worker.start())
        started.extend(group)
        wait_ready(group)
        return group

    yield start
    stop_group(started)


@pytest.fixture
def cluster_client(etcd3) -> Iterator:
    """A test client on all three members (it fails over like the daemons do)."""
    client = connect(etcd3.endpoints, request_timeout=1.0, dial_timeout=2.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def direct(private_etcd) -> Iterator:
    """A test client straight to the private etcd (not through any fault proxy)."""
    client = connect(private_etcd.endpoints, request_timeout=1.0)
    try:
        yield client
    finally:
        client.close()
