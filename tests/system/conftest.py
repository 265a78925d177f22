from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from worker.demo.instances import WorkerProcess, start_group, stop_group, wait_ready
from worker.keys import Keys


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """Start worker processes; every one is stopped (SIGCONT, SIGTERM, then SIGKILL) afterwards."""
    started: list[WorkerProcess] = []

    def start(count: int, endpoints: list[str], namespace: str, **kw) -> list[WorkerProcess]:
        group = start_group(count, endpoints, namespace, tmp_path / f"g{len(started)}", **kw)
        started.extend(group)
        wait_ready(group)
        return group

    yield start
    stop_group(started)


def put_inventory(client, keys: Keys, count: int = 6) -> dict[str, str]:
    """Clusters c-0..c-N: even ones without DR site, odd ones with a DR site in various states.
    Returns the expected protection state of each."""
    expected = {}
    dr_states = ["in_sync", "syncing", "broken", None]
    for i in range(count):
        cid = f"c-{i}"
        if i % 2 == 0:
            client.put(keys.cluster(cid), json.dumps({"allocated": True, "dr_site": None}))
            expected[cid] = "unprotected"
        else:
            client.put(keys.cluster(cid), json.dumps({"allocated": True, "dr_site": "site-b"}))
            status = dr_states[(i // 2) % len(dr_states)]
            if status is not None:
                client.put(keys.dr_key(cid), json.dumps({"replication": status}))
            expected[cid] = {"in_sync": "protected", "syncing": "protecting", "broken": "degraded",
                             None: "protecting"}[status]
    return expected
