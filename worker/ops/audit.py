"""The history auditor: was every protection write, put or delete, made by the leader of its revision?

etcd keeps every revision until compaction, so the question has an exact answer. Every fenced
write transaction also puts the audit stamp ``keys.stamp`` (``{"term", "lease", "instance_id"}``)
in the same transaction, so each protection put *and delete* has its writer's evidence at its own
revision. Replay the namespace's history from ``from_revision`` in revision order, keeping the
election keys, the reconcile Mutex keys and the pause key as they were just before each revision.
A protection event at revision ``r`` is legitimate when:

* a stamp was put at ``r`` (else ``unattributed``: e.g. an operator's ``etcdctl del``);
* the stamp's term is the create revision of the lowest election key just before ``r``, and a
  put's record carries that term too (else ``stale_term``: a stale leader wrote);
* the pause key did not exist just before ``r`` (else ``paused``);
* its term is not lower than a term a legitimate write already used (else ``term_backwards``:
  the lowest election key's create revision never decreases, so neither may the writers' terms);
* the lowest key under the Mutex prefix just before ``r`` belonged to the stamp's lease (else
  ``mutex``: the writer did not hold the reconcile Mutex).

One violation per event; ``kind`` is the first of its ``kinds`` in the order above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from worker.concurrency.line import candidates
from worker.etcd import EtcdClient, Event, Watch
from worker.etcd.errors import CompactedError, EtcdError
from worker.keys import Keys
from worker.protection.stamp import WriteStamp
from worker.untrusted import UntrustedValueError, loads_object

#: violation kinds, in the order ``kind`` picks the first of an event's ``kinds``
KINDS = ("unattributed", "stale_term", "paused", "term_backwards", "mutex")


@dataclass
class Violation:
    key: str
    revision: int
    #: a put's record term; for a delete, the stamp's term (None: no evidence)
    term: int | None
    #: create revision of the lowest election key just before ``revision`` (None: nobody led)
    leader_term: int | None
    kind: str = "stale_term"
    kinds: list[str] = field(default_factory=list)
    op: str = "put"
    #: the stamp at ``revision``: the writer's term, lease (hex) and instance id (None: no stamp)
    stamp: dict[str, Any] | None = None
    #: the lease (hex) of the lowest Mutex key just before ``revision`` (None: nobody held it)
    lock_lease: str | None = None

    def describe(self) -> str:
        """One line for an operator."""
        who = (f"stamp term {self.stamp.get('term')} lease {self.stamp.get('lease')} "
               f"({self.stamp.get('instance_id')})" if self.stamp else "no stamp")
        return (f"{self.kind}: {self.op} {self.key} at revision {self.revision}: term {self.term}, "
                f"leader's term {self.leader_term}, {who}, Mutex holder lease {self.lock_lease}"
                + (f" [{', '.join(self.kinds)}]" if len(self.kinds) > 1 else ""))


@dataclass
class AuditReport:
    from_revision: int
    to_revision: int
    #: protection events examined: puts and deletes
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"from_revision": self.from_revision, "to_revision": self.to_revision, "checked": self.checked,
                "violations": [asdict(v) for v in self.violations]}


class AuditCompactedError(CompactedError):
    """The range asked for is no longer retained by etcd: said so, never hidden."""


class AuditIncompleteError(EtcdError):
    """AuditIncompleteError: the history could not be read up to ``to_revision`` (the watch went
    silent and etcd did not confirm, by a progress notification, that nothing more is coming).
    The audit then reports nothing: never a short "0 violations"."""

    def __init__(self, message: str, *, read_to: int, to_revision: int) -> None:
        super().__init__(message)
        self.read_to = read_to
        self.to_revision = to_revision


def oldest_auditable_revision(client: EtcdClient, keys: Keys) -> int:
    """The first revision whose history (and the one before it) etcd still retains."""
    # a key nobody writes: etcd answers the compaction point on creation, and streams nothing else
    with client.watch(keys.root + "\0audit-probe", start_revision=1) as probe:
        try:
            probe.get(timeout=0.5)
        except CompactedError as err:
            return max(2, err.compact_revision + 1)
    return 1


@dataclass
class _State:
    """The namespace's control keys as they are just before the revision being checked."""

    election: dict[bytes, int] = field(default_factory=dict)            # key -> create revision
    lock: dict[bytes, tuple[int, int]] = field(default_factory=dict)    # key -> (create revision, lease)
    paused: bool = False
    #: the highest term a legitimate protection write used so far
    high_term: int = 0

    def leader_term(self) -> int | None:
        return min(self.election.values()) if self.election else None

    def lock_lease(self) -> int | None:
        return min(self.lock.values())[1] if self.lock else None


def _state_at(client: EtcdClient, keys: Keys, revision: int) -> _State:
    state = _State()
    if revision < 1:
        return state
    _, line = candidates(client, keys.election, revision=revision)
    state.election = {c.key.encode(): c.create_revision for c in line}
    _, holders = candidates(client, keys.lock, revision=revision)
    state.lock = {c.key.encode(): (c.create_revision, c.lease or _lease_of_key(c.key)) for c in holders}
    state.paused = client.range(keys.paused, revision=revision, count_only=True).count > 0
    return state


def _lease_of_key(key: str | bytes) -> int:
    """A Mutex/election key ends in its lease in hex (Go's layout)."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    try:
        return int(text.rsplit("/", 1)[-1], 16)
    except ValueError:
        return 0


def _revisions(watch: Watch, from_revision: int, to_revision: int, wait: float,
               ) -> Iterator[tuple[int, list[Event]]]:
    """The namespace's events grouped by revision, in order, up to ``to_revision``. Proven
    complete: when the watch goes quiet before ``to_revision``, a progress request must confirm
    that etcd has delivered everything up to ``to_revision`` (``AuditIncompleteError`` if etcd
    does not answer within ``wait``)."""
    pending: list[Event] = []
    revision = from_revision - 1
    asked = False
    while revision < to_revision:
        try:
            response = watch.get(timeout=wait)
        except CompactedError as err:
            raise AuditCompactedError(f"history from revision {from_revision} is compacted: {err}",
                                      compact_revision=err.compact_revision) from err
        if response is None:
            if asked:
                raise AuditIncompleteError(
                    f"history read only up to revision {revision} of {to_revision}: the watch stalled "
                    f"and etcd did not confirm progress within {wait:g} s", read_to=revision,
                    to_revision=to_revision)
            watch.request_progress()  # quiet: did the last revisions touch other keys only?
            asked = True
            continue
        if not response.events:
            if response.revision >= to_revision:
                break  # etcd: every event up to here is delivered (the rest touched other keys)
            continue  # an older progress notification: the question stays asked
        asked = False
        for event in response.events:
            if event.kv.mod_revision > to_revision:
                revision = to_revision   # past the range: what is pending is complete
                break
            if pending and event.kv.mod_revision != revision:
                yield revision, pending
                pending = []
            revision = event.kv.mod_revision
            pending.append(event)
    if pending:
        revision = pending[0].kv.mod_revision
        yield revision, pending


def audit(client: EtcdClient, keys: Keys, from_revision: int, to_revision: int | None = None,
          wait: float = 5.0) -> AuditReport:
    """Check every protection put and delete in ``[from_revision, to_revision]`` (default: up to now)."""
    to_revision = to_revision or client.current_revision(keys.root)
    report = AuditReport(from_revision, to_revision)
    if from_revision > to_revision:
        return report
    try:
        state = _state_at(client, keys, from_revision - 1)
    except CompactedError as err:
        raise AuditCompactedError(f"revision {from_revision - 1} is compacted: {err}") from err
    with client.watch(keys.root, prefix=True, start_revision=from_revision) as watch:
        for revision, events in _revisions(watch, from_revision, to_revision, wait):
            _check_revision(keys, state, revision, events, report)
            _apply(keys, state, events)
    return report


def _check_revision(keys: Keys, state: _State, revision: int, events: list[Event], report: AuditReport) -> None:
    """Check the protection events of one revision against the state just before it."""
    protection = keys.protection.encode()
    stamp_key = keys.stamp.encode()
    raw_stamp = next((e.kv.value for e in events if e.kv.key == stamp_key and e.kind == "put"), None)
    parsed = WriteStamp.parse(raw_stamp)
    # a value at the stamp key that is not a stamp is evidence of nothing: unattributed
    stamp = parsed.to_json() if parsed is not None else None
    stamp_term = parsed.term if parsed is not None else None
    stamp_lease = parsed.lease if parsed is not None else None
    leader_term = state.leader_term()
    lock_lease = state.lock_lease()
    legit_terms: list[int] = []
    for event in events:
        if not event.kv.key.startswith(protection):
            continue
        report.checked += 1
        deleted = event.kind == "delete"
        term = stamp_term if deleted else _int((_json(event.kv.value) or {}).get("term"))
        kinds = []
        if stamp is None:
            kinds.append("unattributed")
        if (stamp is not None and stamp_term != leader_term) or (not deleted and term != leader_term):
            kinds.append("stale_term")
        if state.paused:
            kinds.append("paused")
        if term is not None and term < state.high_term:
            kinds.append("term_backwards")
        if stamp is not None and (stamp_lease is None or stamp_lease != lock_lease):
            kinds.append("mutex")
        if kinds:
            report.violations.append(Violation(
                _key_text(event.kv.key), revision, term, leader_term, kinds[0], kinds,
                "delete" if deleted else "put", stamp, f"{lock_lease:x}" if lock_lease is not None else None))
        elif term is not None:
            legit_terms.append(term)
    state.high_term = max([state.high_term, *legit_terms])


def _apply(keys: Keys, state: _State, events: list[Event]) -> None:
    """Move the control keys' state past one revision."""
    election = (keys.election + "/").encode()
    lock = (keys.lock + "/").encode()
    paused = keys.paused.encode()
    for event in events:
        deleted = event.kind == "delete"
        if event.kv.key.startswith(election):
            if deleted:
                state.election.pop(event.kv.key, None)
            else:
                state.election[event.kv.key] = event.kv.create_revision
        elif event.kv.key.startswith(lock):
            if deleted:
                state.lock.pop(event.kv.key, None)
            else:
                state.lock[event.kv.key] = (event.kv.create_revision, event.kv.lease or _lease_of_key(event.kv.key))
        elif event.kv.key == paused:
            state.paused = not deleted


def _json(value: bytes) -> dict[str, Any] | None:
    """A stored JSON object, or None for anything else (total: ``worker.untrusted``)."""
    try:
        return loads_object(value, "protection record")
    except UntrustedValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _key_text(key: bytes) -> str:
    """A key as text for the report: bounded (keys are written by others too)."""
    text = key.decode("utf-8", "replace")
    return text if len(text) <= 300 else f"{text[:256]}... ({len(key)} bytes)"
