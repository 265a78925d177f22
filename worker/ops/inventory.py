"""Loading sample inputs fast: many puts per transaction (the demo, the benches, the soak)."""

from __future__ import annotations

from typing import Any, Iterable

from worker.etcd import kv

#: puts per transaction: below etcd's default --max-txn-ops (128)
BATCH = 120


def put_batched(client: Any, items: Iterable[tuple[str, str]], batch: int = BATCH) -> int:
    """Put every (key, value) with ``batch`` puts per transaction; returns how many were put."""
    ops: list[Any] = []
    count = 0
    for key, value in items:
        ops.append(kv.op_put(key, value))
        count += 1
        if len(ops) >= batch:
            client.txn(kv.txn_request([], ops))
            ops = []
    if ops:
        client.txn(kv.txn_request([], ops))
    return count
