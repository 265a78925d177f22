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

from worker.protection.rules import InvalidInput

#: bits per revision in the packed key: revisions below 2**42 (4.4e12) pack without overlap
_BITS = 42

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
    """Per-term memo of full-pass outcomes that need no write (see the module doc)."""

    def __init__(self) -> None:
        self._last: dict[bytes, tuple[int, Outcome]] = {}
        self._next: dict[bytes, tuple[int, Outcome]] | None = None
        #: lookups answered / not answered by the memo in the last pass (for benches and tests)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._last)

    def begin(self) -> None:
        """A full pass starts: lookups answer from the last completed pass."""
        self._next = {}
        self.hits = self.misses = 0

    def lookup(self, cid: bytes, revisions: int) -> tuple[bool, Outcome]:
        """``(True, outcome)`` when ``cid`` had these revisions last pass (kept for the next pass)."""
        entry = self._last.get(cid)
        if entry is not None and entry[0] == revisions:
            self.hits += 1
            if self._next is not None:
                self._next[cid] = entry
            return True, entry[1]
        self.misses += 1
        return False, None

    def store(self, cid: bytes, revisions: int, outcome: Outcome) -> None:
        if self._next is not None:
            self._next[cid] = (revisions, outcome)

    def commit(self) -> None:
        """The pass completed: what it saw becomes what the next pass looks up."""
        if self._next is not None:
            self._last, self._next = self._next, None

    def reset(self) -> None:
        """Forget everything (a pass failed midway): the next pass starts cold."""
        self._last, self._next = {}, None
