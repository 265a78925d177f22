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

    One entry per id: an int, the packed revisions shifted left 3 bits with the outcome's code in
    the low bits (about 140 bytes an id with the id itself); invalid outcomes (rare) sit aside."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}
        self._last_aside: dict[bytes, Outcome] = {}
        self._next: dict[bytes, int] | None = None
        self._next_aside: dict[bytes, Outcome] = {}
        #: lookups answered / not answered by the memo in the last pass (for benches and tests)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._last)

    def begin(self) -> None:
        """A full pass starts: lookups answer from the last completed pass."""
        self._next, self._next_aside = {}, {}
        self.hits = self.misses = 0

    def lookup(self, cid: bytes, revisions: int) -> tuple[bool, Outcome]:
        """``(True, outcome)`` when ``cid`` had these revisions last pass (kept for the next pass)."""
        entry = self._last.get(cid)
        if entry is None or entry >> 3 != revisions:
            self.misses += 1
            return False, None
        self.hits += 1
        code = entry & 7
        outcome: Outcome = _STATES[code] if code < _NONE else None if code == _NONE else self._last_aside[cid]
        if self._next is not None:
            self._next[cid] = entry
            if code == _ASIDE:
                self._next_aside[cid] = outcome
        return True, outcome

    def store(self, cid: bytes, revisions: int, outcome: Outcome) -> None:
        if self._next is None:
            return
        if outcome is None:
            code = _NONE
        elif isinstance(outcome, str) and outcome in _CODE:
            code = _CODE[outcome]
        else:
            code = _ASIDE
            self._next_aside[cid] = outcome
        self._next[cid] = (revisions << 3) | code

    def commit(self) -> None:
        """The pass completed: what it saw becomes what the next pass looks up."""
        if self._next is not None:
            self._last, self._last_aside = self._next, self._next_aside
            self._next, self._next_aside = None, {}

    def reset(self) -> None:
        """Forget everything (a pass failed midway): the next pass starts cold."""
        self._last, self._last_aside, self._next, self._next_aside = {}, {}, None, {}
