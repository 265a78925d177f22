"""Helpers for the protection tests: write inputs, read records, a fence that holds."""

from __future__ import annotations

import json
from typing import Any

from worker.etcd import Cmp, EtcdClient, Op
from worker.keys import Keys
from worker.protection.writer import Fence


def cluster(allocated: bool = True, dr_site: str | None = None) -> str:
    return json.dumps({"allocated": allocated, "dr_site": dr_site})


def dr(replication: str) -> str:
    return json.dumps({"replication": replication})


def put(client: EtcdClient, key: str, value: str) -> int:
    return client.txn().then(Op.put(key, value)).commit().revision


def put_many(client: EtcdClient, items: dict[str, str]) -> int:
    items_l = list(items.items())
    rev = 0
    for i in range(0, len(items_l), 100):
        rev = client.txn().then(*(Op.put(k, v) for k, v in items_l[i:i + 100])).commit().revision
    return rev


def delete(client: EtcdClient, key: str) -> int:
    return client.txn().then(Op.delete(key)).commit().revision


def get(client: EtcdClient, key: str) -> Any:
    kvs = client.range(key).kvs
    return kvs[0] if kvs else None


def record(client: EtcdClient, keys: Keys, cid: str) -> dict | None:
    got = get(client, keys.protection_key(cid))
    return json.loads(got.value) if got else None


def count(client: EtcdClient, prefix: str) -> int:
    return client.range(prefix, prefix=True, count_only=True).count


def make_fence(client: EtcdClient, keys: Keys) -> Fence:
    """A fence like the daemon's: the create revision of a key standing in for the election key."""
    key = keys.election + "/fence-test"
    rev = client.txn().if_(Cmp.absent(key)).then(Op.put(key, "{}")).else_(Op.get(key)).commit()
    term = rev.revision if rev.succeeded else rev.range(0).kvs[0].create_revision
    return Fence(term, [Cmp.create(key, "=", term)])


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
