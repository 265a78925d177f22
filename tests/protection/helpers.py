"""Helpers for the protection tests: write inputs, read records, a fence that holds."""

from __future__ import annotations

import json
from typing import Any

from worker.etcd import kv
from worker.protection.keys import Keys
from worker.protection.writer import Fence


def cluster(allocated: bool = True, dr_site: str | None = None) -> str:
    return json.dumps({"allocated": allocated, "dr_site": dr_site})


def dr(replication: str) -> str:
    return json.dumps({"replication": replication})


def put(client: Any, key: str, value: str) -> int:
    return client.txn(kv.txn_request([], [kv.op_put(key, value)])).header.revision


def put_many(client: Any, items: dict[str, str]) -> int:
    items_l = list(items.items())
    rev = 0
    for i in range(0, len(items_l), 100):
        rev = client.txn(kv.txn_request([], [kv.op_put(k, v) for k, v in items_l[i:i + 100]])).header.revision
    return rev


def delete(client: Any, key: str) -> int:
    return client.txn(kv.txn_request([], [kv.op_delete(key)])).header.revision


def get(client: Any, key: str) -> Any:
    kvs = client.range(kv.range_request(key)).kvs
    return kvs[0] if kvs else None


def record(client: Any, keys: Keys, cid: str) -> dict | None:
    got = get(client, keys.protection_key(cid))
    return json.loads(got.value) if got else None


def count(client: Any, prefix: str) -> int:
    return client.range(kv.range_request(prefix, prefix=True, count_only=True)).count


def make_fence(client: Any, keys: Keys) -> Fence:
    """A fence like the daemon's: the create revision of a key standing in for the election key."""
    key = keys.election + "/fence-test"
    rev = client.txn(kv.txn_request([kv.cmp_create(key, "=", 0)], [kv.op_put(key, "{}")], [kv.op_get(key)]))
    term = rev.header.revision if rev.succeeded else kv.response_kvs(rev, 0)[0].create_revision
    return Fence(term, [kv.cmp_create(key, "=", term)])


class DeadlineTooClose(Exception):
    """What the daemon's guard raises when its lease deadline is too close for one more request."""


def refusing_fence(fence: Fence, allowed: int) -> Fence:
    """``fence`` with a guard (the daemon's own-clock check) that lets ``allowed`` transactions go,
    then raises ``DeadlineTooClose``."""
    sent = []

    def guard() -> None:
        if len(sent) == allowed:
            raise DeadlineTooClose()
        sent.append(1)

    return Fence(fence.term, fence.compares, guard=guard)
