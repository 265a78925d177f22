"""The history auditor: was every protection write made by the leader of its revision?

etcd keeps every revision until compaction, so the question has an exact answer. Replay the
namespace's history from ``from_revision`` in revision order, keeping the set of election keys
(key → create revision); a protection record put at revision ``r`` is legitimate when its ``term``
equals the create revision of the lowest election key just before ``r`` (the fence compares that
key inside the same transaction), and a key's terms never go backwards. Anything else is a
violation: a stale leader wrote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pyetcd.events import DeleteEvent

from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.errors import CompactedError
from worker.etcd.watch import Watch
from worker.protection.keys import Keys


@dataclass
class Violation:
    key: str
    revision: int
    term: int | None
    leader_term: int | None


@dataclass
class AuditReport:
    from_revision: int
    to_revision: int
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"from_revision": self.from_revision, "to_revision": self.to_revision, "checked": self.checked,
                "violations": [asdict(v) for v in self.violations]}


class AuditCompactedError(CompactedError):
    """The range asked for is no longer retained by etcd: said so, never hidden."""


def _election_keys_at(client: EtcdClient, keys: Keys, revision: int) -> dict[bytes, int]:
    prefix = keys.election + "/"
    found: dict[bytes, int] = {}
    start: bytes = prefix.encode()
    end = kv.prefix_end(prefix)
    while True:
        resp = client.range(kv.range_request(start, range_end=end, revision=revision, limit=1000))
        for item in resp.kvs:
            found[item.key] = item.create_revision
        if not resp.more:
            return found
        start = resp.kvs[-1].key + b"\0"


def oldest_auditable_revision(client: EtcdClient, keys: Keys) -> int:
    """The first revision whose history (and the one before it) etcd still retains."""
    # a key nobody writes: etcd answers the compaction point on creation, and streams nothing else
    with Watch(client, keys.root + "\0audit-probe", start_revision=1) as probe:
        try:
            probe.get(timeout=0.5)
        except CompactedError as err:
            return max(2, err.compact_revision + 1)
    return 1


def audit(client: EtcdClient, keys: Keys, from_revision: int, to_revision: int | None = None,
          wait: float = 5.0) -> AuditReport:
    """Check every protection write in ``[from_revision, to_revision]`` (default: up to now)."""
    to_revision = to_revision or client.current_revision(keys.root)
    report = AuditReport(from_revision, to_revision)
    if from_revision > to_revision:
        return report
    try:
        election = _election_keys_at(client, keys, from_revision - 1) if from_revision > 1 else {}
    except CompactedError as err:
        raise AuditCompactedError(f"revision {from_revision - 1} is compacted: {err}") from err
    election_prefix = (keys.election + "/").encode()
    protection_prefix = keys.protection.encode()
    last_term: dict[bytes, int] = {}
    with Watch(client, keys.root, range_end=kv.prefix_end(keys.root), start_revision=from_revision) as watch:
        revision = from_revision - 1
        while revision < to_revision:
            try:
                response = watch.get(timeout=wait)
            except CompactedError as err:
                raise AuditCompactedError(f"history from revision {from_revision} is compacted: {err}",
                                          compact_revision=err.compact_revision) from err
            if response is None:
                break  # nothing more within the range (cannot happen unless etcd lost data)
            for event in response.events:
                revision = event.mod_revision
                if revision > to_revision:
                    break
                key = event.key
                if key.startswith(election_prefix):
                    if isinstance(event, DeleteEvent):
                        election.pop(key, None)
                    else:
                        election[key] = event.create_revision
                elif key.startswith(protection_prefix) and not isinstance(event, DeleteEvent):
                    report.checked += 1
                    leader_term = min(election.values()) if election else None
                    term = _term_of(event.value)
                    backwards = term is not None and key in last_term and term < last_term[key]
                    if term is None or term != leader_term or backwards:
                        report.violations.append(Violation(key.decode(), revision, term, leader_term))
                    if term is not None:
                        last_term[key] = term
    return report


def _term_of(value: bytes) -> int | None:
    try:
        term = json.loads(value).get("term")
    except (ValueError, AttributeError):
        return None
    return term if isinstance(term, int) and not isinstance(term, bool) else None
