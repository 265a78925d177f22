"""Who is in line: ``candidates()`` and ``leader()``, the one place that answers it.

Go's election (and ``etcdctl elect``) puts one key per candidate under ``prefix + "/"``; the key
with the lowest create revision leads, the others wait in create-revision order. Like kazoo's
``Election.contenders()``, this module is the only place that turns the keys into a line: the
daemon, ``status``, the drill, the audit and the switchover all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.etcd.client import EtcdClient
from worker.etcd.kv import prefix_end, to_bytes
from worker.etcd.txn import FIRST_CREATE
from worker.etcd.types import KV
from worker.identity import Identity

#: keys read per request; a line is short, paging only bounds a pathological one
PAGE = 1000


@dataclass(frozen=True)
class Candidate:
    """Candidate is one key in line: its key, create revision (the term it leads with), lease and value."""

    key: str
    create_revision: int
    lease: int
    value: bytes

    @property
    def identity(self) -> Identity:
        """Who proclaimed this key (``worker.identity``: total, never raises)."""
        return Identity.parse(self.value)

    @property
    def instance_id(self) -> str | None:
        """The proclaimed ``instance_id`` (our JSON values), or the raw value (``etcdctl elect``)."""
        return self.identity.instance_id

    @property
    def term(self) -> int:
        return self.create_revision


def _of(item: KV) -> Candidate:
    return Candidate(item.key.decode("utf-8", "replace"), int(item.create_revision), int(item.lease),
                     bytes(item.value))


def candidates(client: EtcdClient, prefix: str, *, revision: int = 0) -> tuple[int, list[Candidate]]:
    """candidates returns ``(revision, line)``: every key under ``prefix + "/"`` at one revision
    (0: now), leader first, then in create-revision order."""
    start = to_bytes(prefix.rstrip("/") + "/")
    end = prefix_end(start)
    found: list[Candidate] = []
    while True:
        resp = client.range(start, range_end=end, limit=PAGE, revision=revision)
        revision = revision or resp.revision
        found.extend(_of(item) for item in resp.kvs)
        if not resp.more or not resp.kvs:
            break
        start = resp.kvs[-1].key + b"\0"
    found.sort(key=lambda c: c.create_revision)
    return revision, found


def leader(client: EtcdClient, prefix: str, *, revision: int = 0) -> Candidate | None:
    """leader returns the candidate with the lowest create revision under ``prefix + "/"`` (None: nobody)."""
    resp = client.range(prefix.rstrip("/") + "/", revision=revision, **FIRST_CREATE)
    return _of(resp.kvs[0]) if resp.kvs else None
