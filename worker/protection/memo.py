"""PassMemo: what a leader's full passes already worked out, keyed by the three mod revisions.

The rules are a pure function of the values of ``clusters/ID``, ``dr/ID`` and ``protection/ID``, and
a (key, mod revision) pair names one value for good (revisions only grow; a key deleted and put
again gets a new one; absent is 0). So when a cluster's three mod revisions are those of the last
pass, its outcome is the last pass's: no JSON parsing, no decision.

Only outcomes that write nothing are kept: ``unchanged`` (with the stored state, for the counts),
``none`` (reclaimed without a record) and ``invalid`` (with the bad input, which the pass still
reports: listed in ``PassResult.invalid``, logged once per occurrence by the ``InvalidLog``, counted
by ``status``). A write is always decided afresh, so the memo can never make a pass write something
a fresh leader would not; at worst a miss costs one parse. ``updated_at`` and ``term`` of a stored
record play no part: its mod revision names its whole value.

The caller owns one memo per term (the daemon creates it when it starts leading; a new term
starts cold) and passes it to ``full_pass``. Each completed pass keeps exactly the ids it saw (ids
gone from the store are dropped); a pass that fails midway leaves the memo empty (cold again).
"""

from __future__ import annotations

from typing import Any, Union

from worker.protection.records import STATES
from worker.protection.rules import InvalidInput

#: bits per revision in the packed key: revisions below 2**42 (4.4e12) pack without overlap
_BITS = 42
#: the outcome codes kept in the entry's low 3 bits: a stored state (``unchanged``) by its index, or
#: ``_NONE`` (``none``), or ``_ASIDE`` (the outcome is kept in a side table: ``invalid``)
_STATES = STATES + ("unknown",)
_CODE = {state: i for i, state in enumerate(_STATES)}
_NONE = 6
_ASIDE = 7

#: the outcome of one id: the stored state (``unchanged``), None (``none``), or
#: ``(InvalidInput, stored state or None)`` (``invalid``)
Outcome = Union[str, None, tuple[InvalidInput, Union[str, None]]]


def revisions_key(cluster: Any, dr: Any, protection: Any) -> int:
    """The three mod revisions (0 when absent) packed into one int."""
    c = cluster.mod_revision if cluster is not None else 0
    d = dr.mod_revision if dr is not None else 0
    p = protection.mod_revision if protection is not None else 0
    return (((c << _BITS) | d) << _BITS) | p


class PassMemo:
    """Per-term memo of full-pass outcomes that need no write (see the module doc).

    One dict entry per id, updated in place (the id's bytes are kept once): an int holding the
    packed revisions, the pass generation's parity (bit 3) and the outcome's code (bits 0-2); about
    140 bytes an id. Invalid outcomes (rare) sit in a side table. A completed pass drops the entries
    it did not visit (ids gone from the store)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, int] = {}
        self._aside: dict[bytes, Outcome] = {}
        self._gen = 0
        self._visited = 0
        #: lookups answered / not answered by the memo in the current or last pass
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self) -> None:
        """A full pass starts: entries it does not visit are dropped when it completes."""
        self._gen ^= 1
        self._visited = self.hits = self.misses = 0

    def lookup(self, cid: bytes, revisions: int) -> tuple[bool, Outcome]:
        """``(True, outcome)`` when ``cid`` had these revisions last pass (kept for the next pass)."""
        entry = self._entries.get(cid)
        if entry is None or entry >> 4 != revisions:
            self.misses += 1
            if entry is not None:   # decided afresh now: stored again unless it writes
                del self._entries[cid]
                self._aside.pop(cid, None)
            return False, None
        self.hits += 1
        self._visited += 1
        if (entry >> 3) & 1 != self._gen:
            self._entries[cid] = entry ^ 8
        code = entry & 7
        return True, _STATES[code] if code < _NONE else None if code == _NONE else self._aside[cid]

    def store(self, cid: bytes, revisions: int, outcome: Outcome) -> None:
        if outcome is None:
            code = _NONE
        elif isinstance(outcome, str) and outcome in _CODE:
            code = _CODE[outcome]
        else:
            code = _ASIDE
            self._aside[cid] = outcome
        self._entries[cid] = (revisions << 4) | (self._gen << 3) | code
        self._visited += 1

    def commit(self) -> None:
        """The pass completed: drop what it did not visit (ids gone from the store)."""
        if len(self._entries) > self._visited:
            gen = self._gen
            self._entries = {cid: e for cid, e in self._entries.items() if (e >> 3) & 1 == gen}
            self._aside = {cid: o for cid, o in self._aside.items() if cid in self._entries}

    def reset(self) -> None:
        """Forget everything (a pass failed midway): the next pass starts cold."""
        self._entries, self._aside = {}, {}
        self._visited = 0
