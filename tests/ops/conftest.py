"""Fixtures for the operator tools: a leader in this process, fenced like the daemon's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from worker.concurrency import Election, Mutex, Session
from worker.keys import Keys
from worker.protection.writer import Fence, leader_fence


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@dataclass
class Leader:
    session: Session
    election: Election
    mutex: Mutex
    fence: Fence

    @property
    def term(self) -> int:
        return self.election.rev

    def stamp(self, *, term: int | None = None, lease: int | None = None) -> str:
        """The stamp this leader's fence puts (or a forged one with another term or lease)."""
        return json.dumps({"term": self.term if term is None else term,
                           "lease": f"{self.session.lease if lease is None else lease:x}", "instance_id": "forged"})


def _lead(client: Any, keys: Keys, instance_id: str, made: list[Session]) -> Leader:
    session = Session(client, ttl=30)
    made.append(session)
    election = Election(session, keys.election)
    election.campaign(json.dumps({"instance_id": instance_id}), timeout=10)
    mutex = Mutex(session, keys.lock)
    mutex.lock(timeout=10)
    fence = leader_fence(keys, term=election.rev, election_key=election.key, owner=mutex.is_owner(),
                         lease=session.lease, instance_id=instance_id)
    return Leader(session, election, mutex, fence)


@pytest.fixture
def lead(client, keys) -> Iterator:
    """``lead(instance_id)``: campaign, take the Mutex, return the ``Leader`` (its fence like the
    daemon's). Sessions are revoked afterwards."""
    made: list[Session] = []
    yield lambda instance_id="leader": _lead(client, keys, instance_id, made)
    for session in made:
        session.close(timeout=0.5)
