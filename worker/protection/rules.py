"""The protection rules as a pure function: what to do with one cluster id (no I/O).

``decide`` takes what the store holds for one id — the ``clusters/``, ``dr/`` and ``protection/``
key-values, any of them absent — and returns a ``Decision``:

* ``none``       nothing stored and nothing to store (reclaimed without a record; gone without one)
* ``unchanged``  the stored record is already right (ignoring ``updated_at``/``term``)
* ``create``     no record yet: write one
* ``update``     recompute in place (the key's create revision stays)
* ``recreate``   allocated and the stored record is ``deleted``: delete it and create a fresh one
* ``delete``     the cluster key is gone (removal, or an orphan on a full pass)
* ``invalid``    an input is bad: the stored record is left untouched and the input is reported

Key-values are duck-typed (``key``, ``value``, ``mod_revision``): etcd's ``KeyValue`` messages
or the ``KV`` tuples the tests build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog

from worker.protection.inputs import REPLICATION_STATES, ClusterSpec, InputError, check_id, parse_cluster, parse_dr
from worker.protection.records import FIELDS, STATES, Record, loads
from worker.untrusted import quote

log = structlog.get_logger(__name__)

WRITES = ("create", "update", "recreate", "delete")
REASON_RECLAIMED = "cluster reclaimed"
REASON_NO_DR = "no DR site"
FIELD_SET = frozenset(FIELDS)


class KV(NamedTuple):
    """A stored key-value, as far as the rules need it."""

    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int = 0


class InvalidInput(NamedTuple):
    """A bad input, by its full key: what the log line, the gauge and ``status`` report."""

    key: str
    mod_revision: int
    error: str


@dataclass(frozen=True)
class Observed:
    """Everything stored for one id at one revision."""

    id: str
    cluster: Any = None
    dr: Any = None
    protection: Any = None


@dataclass(frozen=True)
class Decision:
    action: str
    id: str
    old: Record | None = None
    #: the stored state ("none" without a record, "unknown" for a record that does not parse)
    old_state: str = "none"
    new: Record | None = None
    invalid: InvalidInput | None = None

    @property
    def new_state(self) -> str:
        if self.action in ("delete", "none"):
            return "none"
        if self.action in ("unchanged", "invalid"):
            return self.old_state
        assert self.new is not None
        return self.new.state

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    def line(self) -> str:
        """``create|update|recreate|delete ID old-state -> new-state``."""
        return f"{self.action} {self.id} {self.old_state} -> {self.new_state}"


#: the longest key text an ``InvalidInput`` carries (keys are written by others too)
MAX_KEY_CHARS = 300


def _key_text(key: bytes | str) -> str:
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return text if len(text) <= MAX_KEY_CHARS else f"{text[:256]}... ({len(key)} bytes)"


def failed(cid: str, kv: Any, exc: BaseException) -> InvalidInput:
    """An unexpected error while deciding one cluster, reported like a bad input of its cluster
    key (the pass goes on with the others): the error's type and a bounded text."""
    key = _key_text(kv.key) if kv is not None else cid
    return InvalidInput(key, kv.mod_revision if kv is not None else 0,
                        f"unexpected error deciding this cluster: {type(exc).__name__}: {quote(str(exc))}")


def decide_isolated(obs: Observed, *, term: int = 0, updated_at: str = "") -> Decision:
    """``decide``, and an unexpected error marks this cluster ``invalid`` instead of escaping."""
    try:
        return decide(obs, term=term, updated_at=updated_at)
    except Exception as exc:  # noqa: BLE001 - one cluster's bug must not stop the others
        log.error("cluster_failed", id=quote(obs.id), error=f"{type(exc).__name__}: {quote(str(exc))}",
                  exc_info=True)
        old_state = "none" if obs.protection is None else stored_state(obs.protection.value)
        return Decision("invalid", obs.id, None, old_state, invalid=failed(obs.id, obs.cluster, exc))


def stored_record(kv: Any) -> tuple[Record | None, str]:
    """The stored record and its state; ("none" when absent, "unknown" when it does not parse)."""
    if kv is None:
        return None, "none"
    try:
        record = Record.from_json(kv.value)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None, "unknown"
    return record, record.state


def stored_state(raw: bytes) -> str:
    """The state of a stored record value, as ``stored_record`` gives it, without building the
    record ("unknown" when it does not parse): what ``status`` counts."""
    try:
        data = loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError):
        return "unknown"
    if not isinstance(data, dict) or data.keys() != FIELD_SET:
        return "unknown"
    state = data["state"]
    return state if isinstance(state, str) and state in STATES else "unknown"


def checked_inputs(cid: str, cluster: Any, dr: Any) -> tuple[ClusterSpec, str | None] | InvalidInput:
    """The parsed inputs of one id — its cluster spec and, when consulted (allocated, ``dr_site``
    set, DR key present), its replication — or the first bad input. ``cluster`` must be present."""
    try:
        check_id(cid)
        spec = parse_cluster(cluster.value)
    except InputError as exc:
        return InvalidInput(_key_text(cluster.key), cluster.mod_revision, str(exc))
    if not spec.allocated or spec.dr_site is None or dr is None:
        return spec, None     # reclaimed or no DR site: the DR key is not consulted
    try:
        return spec, parse_dr(dr.value)
    except InputError as exc:
        return InvalidInput(_key_text(dr.key), dr.mod_revision, str(exc))


def desired(obs: Observed, term: int = 0, updated_at: str = "") -> Record | InvalidInput | None:
    """The record the rules call for (carrying ``term`` and ``updated_at``, which no comparison
    looks at), ``None`` for "no record", or the first bad input. ``obs.cluster`` must be present."""
    cluster = obs.cluster
    checked = checked_inputs(obs.id, cluster, obs.dr)
    if isinstance(checked, InvalidInput):
        return checked
    spec, replication = checked
    if not spec.allocated:
        # reclaim: the DR key is not consulted; "unprotected" and "none" stay (handled by decide)
        return Record("deleted", REASON_RECLAIMED, spec.dr_site, cluster.mod_revision, None, term, updated_at)
    if spec.dr_site is None:
        return Record("unprotected", REASON_NO_DR, None, cluster.mod_revision, None, term, updated_at)
    if replication is None:
        return Record("protecting", f"DR site {spec.dr_site} has no replication status yet", spec.dr_site,
                      cluster.mod_revision, None, term, updated_at)
    return Record(REPLICATION_STATES[replication], f"DR site {spec.dr_site} replication {replication}",
                  spec.dr_site, cluster.mod_revision, obs.dr.mod_revision, term, updated_at)


def decide(obs: Observed, *, term: int = 0, updated_at: str = "") -> Decision:
    """Apply the spec's tables to one id. The new record (if any) carries ``term`` and ``updated_at``."""
    old, old_state = stored_record(obs.protection)
    if obs.cluster is None:
        if obs.protection is None:
            return Decision("none", obs.id)
        return Decision("delete", obs.id, old, old_state)          # removal / orphan: deleted outright
    want = desired(obs, term, updated_at)
    if isinstance(want, InvalidInput):
        return Decision("invalid", obs.id, old, old_state, invalid=want)
    assert want is not None
    if want.state == "deleted":                                     # reclaimed
        if obs.protection is None:
            return Decision("none", obs.id)                         # none stays none
        if old_state == "unprotected":
            return Decision("unchanged", obs.id, old, old_state)    # not rewritten at all
    recreate = old_state == "deleted" and want.state != "deleted"   # allocation: a new lifecycle
    if obs.protection is not None and not recreate and want.same(old):
        return Decision("unchanged", obs.id, old, old_state)
    if obs.protection is None:
        return Decision("create", obs.id, None, old_state, want)
    if recreate:
        return Decision("recreate", obs.id, old, old_state, want)
    return Decision("update", obs.id, old, old_state, want)
