"""Parsing and validating the two inputs: ``clusters/{id}`` and ``dr/{id}`` (pure, no I/O).

The rules are those of ``shared/spec/protection-state.md``: a cluster value is a JSON object with a
boolean ``allocated`` and a ``dr_site`` that is null/absent or a non-empty string (of at most
``MAX_DR_SITE_BYTES`` as JSON: a record must fit one etcd request); a DR value is a
JSON object whose ``replication`` is one of the table's values. Unknown extra fields are ignored.
Every violation is an ``InputError`` whose message is what ``status`` shows and the log records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from worker.keys import valid_id
from worker.untrusted import UntrustedValueError, loads_object, quote

#: DR ``replication`` value -> protection state of an allocated cluster with a DR site
REPLICATION_STATES = {"in_sync": "protected", "syncing": "protecting", "broken": "degraded"}
REPLICATIONS = tuple(REPLICATION_STATES)


#: the longest ``dr_site`` a protection record can carry, in bytes of its JSON text: a record holds
#: it twice (``dr_site`` and ``reason``) and must fit one etcd request (``--max-request-bytes``,
#: 1.5 MiB by default) with room for its batch. Longer is invalid input: reported, never written,
#: so one oversized value can never stop the writes of every cluster after it.
MAX_DR_SITE_BYTES = 65_536


class InputError(UntrustedValueError):
    """An input value (or key) outside the spec's tables; the message names the problem (and
    quotes at most a short prefix of the value, plus its size)."""


@dataclass(frozen=True)
class ClusterSpec:
    allocated: bool
    dr_site: str | None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        return loads_object(raw, f"{what} value")
    except UntrustedValueError as exc:
        raise InputError(str(exc)) from None


class _ParseCache:
    """Parse results by raw value: inputs repeat (a few sites, three replications), and parsing is a
    pure function of the bytes, so a value seen before is answered without JSON. Bounded by count
    and by the bytes of the values it keeps (emptied when either is full; a value over
    ``max_value`` bytes is never kept). Errors are kept as messages and raised afresh."""

    def __init__(self, parse: Any, capacity: int = 4096, max_bytes: int = 4 * 1024 * 1024,
                 max_value: int = 4096) -> None:
        self.parse = parse
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_value = max_value
        self.bytes = 0
        self.results: dict[bytes | str, tuple[bool, Any]] = {}

    def __call__(self, raw: bytes | str) -> Any:
        hit = self.results.get(raw)
        if hit is None:
            try:
                hit = (True, self.parse(raw))
            except InputError as exc:
                hit = (False, str(exc))
            size = len(raw)
            if size <= self.max_value:
                if len(self.results) >= self.capacity or self.bytes + size > self.max_bytes:
                    self.results.clear()
                    self.bytes = 0
                self.results[raw] = hit
                self.bytes += size
        if not hit[0]:
            raise InputError(hit[1])
        return hit[1]


def _parse_cluster(raw: bytes | str) -> ClusterSpec:
    data = _json_object(raw, "cluster")
    if "allocated" not in data:
        raise InputError("cluster value has no 'allocated'")
    allocated = data["allocated"]
    if not isinstance(allocated, bool):
        raise InputError(f"cluster 'allocated' must be true or false, got {quote(allocated)}")
    dr_site = data.get("dr_site")
    if dr_site is not None and not (isinstance(dr_site, str) and dr_site):
        raise InputError(f"cluster 'dr_site' must be null or a non-empty string, got {quote(dr_site)}")
    if dr_site is not None and len(dr_site) * 12 > MAX_DR_SITE_BYTES:  # 12: the most one char takes in JSON
        size = len(json.dumps(dr_site)) - 2
        if size > MAX_DR_SITE_BYTES:
            raise InputError(f"cluster 'dr_site' is {size} bytes as JSON, over the {MAX_DR_SITE_BYTES} "
                             f"a protection record can carry")
    return ClusterSpec(allocated, dr_site)


def _parse_dr(raw: bytes | str) -> str:
    data = _json_object(raw, "DR")
    replication = data.get("replication")
    if not isinstance(replication, str) or replication not in REPLICATION_STATES:
        raise InputError(f"DR 'replication' must be one of {', '.join(REPLICATIONS)}, got {quote(replication)}")
    return replication


#: a cluster value: ``ClusterSpec`` or ``InputError`` (cached by value)
parse_cluster = _ParseCache(_parse_cluster)
#: the ``replication`` of a DR value, or ``InputError`` (cached by value)
parse_dr = _ParseCache(_parse_dr)


def check_id(cluster_id: str) -> None:
    if not valid_id(cluster_id):
        raise InputError(f"id {quote(cluster_id)} does not match [A-Za-z0-9._-]{{1,128}}")


def cluster_value(allocated: bool, dr_site: str | None) -> str:
    """The value operators write to ``clusters/{id}`` (validated like any input)."""
    value = json.dumps({"allocated": allocated, "dr_site": dr_site})
    parse_cluster(value)
    return value


def dr_value(replication: str) -> str:
    value = json.dumps({"replication": replication})
    parse_dr(value)
    return value
