"""Who is in line: ``candidates()`` and ``leader()``, the one place that answers it.

Go's election (and ``etcdctl elect``) puts one key per candidate under ``prefix + "/"``; the key
with the lowest create revision leads, the others wait in create-revision order. Like kazoo's
``Election.contenders()``, this module is the only place that turns the keys into a line: the
daemon, ``status``, the drill, the audit and the switchover all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.etcd import kv
from worker.untrusted import loads as untrusted_loads

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
    def instance_id(self) -> str | None:
        """The proclaimed ``instance_id`` (JSON values), or the raw value (``etcdctl elect``)."""
        text = self.value.decode("utf-8", "replace")
        try:
            data = untrusted_loads(self.value, "election value", max_bytes=16 * 1024)
        except ValueError:  # total: any value (etcdctl elect's, or hostile) is shown raw, cut
            return (text if len(text) <= 256 else text[:256] + "...") or None
        if isinstance(data, dict):
            got = data.get("instance_id")
            return got[:256] if isinstance(got, str) else None
        return (text if len(text) <= 256 else text[:256] + "...") or None

    @property
    def term(self) -> int:
        return self.create_revision


def _of(item: Any) -> Candidate:
    return Candidate(item.key.decode("utf-8", "replace"), int(item.create_revision), int(item.lease),
                     bytes(item.value))


def candidates(client: Any, prefix: str, *, revision: int = 0) -> tuple[int, list[Candidate]]:
    """candidates returns ``(revision, line)``: every key under ``prefix + "/"`` at one revision
    (0: now), leader first, then in create-revision order."""
    start = kv.to_bytes(prefix.rstrip("/") + "/")
    end = kv.prefix_end(start)
    found: list[Candidate] = []
    while True:
        resp = client.range(kv.range_request(start, range_end=end, limit=PAGE, revision=revision))
        revision = revision or int(resp.header.revision)
        found.extend(_of(item) for item in resp.kvs)
        if not resp.more or not resp.kvs:
            break
        start = resp.kvs[-1].key + b"\0"
    found.sort(key=lambda c: c.create_revision)
    return revision, found


def leader(client: Any, prefix: str, *, revision: int = 0) -> Candidate | None:
    """leader returns the candidate with the lowest create revision under ``prefix + "/"`` (None: nobody)."""
    resp = client.range(kv.first_create(prefix.rstrip("/") + "/", revision=revision))
    return _of(resp.kvs[0]) if resp.kvs else None
