"""Loading sample inputs fast: many puts per transaction (the demo, the benches, the soak)."""

from __future__ import annotations

import json
import random
from typing import Any, Iterable

from worker.etcd.client import EtcdClient
from worker.etcd.txn import Op
from worker.keys import Keys

#: puts per transaction: below etcd's default --max-txn-ops (128)
BATCH = 120


def put_batched(client: EtcdClient, items: Iterable[tuple[str, str]], batch: int = BATCH) -> int:
    """Put every (key, value) with ``batch`` puts per transaction; returns how many were put."""
    ops: list[Op] = []
    count = 0
    for key, value in items:
        ops.append(Op.put(key, value))
        count += 1
        if len(ops) >= batch:
            client.txn().then(*ops).commit()
            ops = []
    if ops:
        client.txn().then(*ops).commit()
    return count


REPLICATIONS = ("in_sync", "syncing", "broken")


def populate(client: EtcdClient, keys: Keys, n: int, seed: int = 1, *, prefix: str = "c-", reclaimed_every: int = 0,
             dr_missing_every: int = 0) -> list[str]:
    """populate puts ``n`` synthetic clusters in transaction batches and returns their ids (in key
    order): a third without a DR site, the rest on one of four sites with a random replication
    state; every ``reclaimed_every``-th cluster reclaimed and every ``dr_missing_every``-th DR
    status absent (0: none)."""
    rnd = random.Random(seed)
    ids = [f"{prefix}{i:06d}" for i in range(n)]

    def items() -> Any:
        for i, cid in enumerate(ids):
            site = None if i % 3 == 0 else f"site-{i % 4}"
            allocated = not (reclaimed_every and i % reclaimed_every == 0)
            yield keys.cluster(cid), json.dumps({"allocated": allocated, "dr_site": site})
            if site and not (dr_missing_every and i % dr_missing_every == 0):
                yield keys.dr_key(cid), json.dumps({"replication": rnd.choice(REPLICATIONS)})

    put_batched(client, items())
    return ids


def set_replications(client: EtcdClient, keys: Keys, ids: Iterable[str], salt: int) -> int:
    """set_replications changes the DR status of every id in ``ids`` (cycling through the states
    from ``salt``), in transaction batches; returns how many were put."""
    return put_batched(client, ((keys.dr_key(cid), json.dumps({"replication": REPLICATIONS[(salt + i) % 3]}))
                                for i, cid in enumerate(ids)))
