"""Everything that can happen to the daemon, as typed events in one queue.

Background threads (campaign, observer, lease keeper, watches, the lease-deadline timer, signal
handlers, the control watch) only post these; the main loop alone acts on them, with ``match``.
Events of a candidacy carry its ``generation``, so a late event of an abandoned session is
recognised and dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from worker.control import Controls
from worker.etcd.types import KV


@dataclass(frozen=True)
class Shutdown:
    """SIGTERM/SIGINT (or the embedding code): resign, release, exit 0."""


#: COMPAT (issue 18): the old name, kept for worker/daemon/leader.py (MIGRATION.md)
Stop = Shutdown


@dataclass(frozen=True)
class Reload:
    """SIGHUP: re-read the config file."""


@dataclass(frozen=True)
class ControlsChanged:
    """The controls under ``{ns}/control/`` as read at ``controls.revision``."""

    controls: Controls


@dataclass(frozen=True)
class TermEvent:
    """TermEvent is the base of every event of one candidacy: ``generation`` names the candidacy
    (a late event of an abandoned one is recognised by it and dropped)."""

    generation: int


@dataclass(frozen=True)
class Queued(TermEvent):
    """Our election key is in line."""


@dataclass(frozen=True)
class Elected(TermEvent):
    """Our key is the lowest in line: we may lead (after taking the Mutex)."""


@dataclass(frozen=True)
class LeaderSeen(TermEvent):
    """The observer saw ``leader`` (an etcd ``KV``) lead."""

    leader: KV


@dataclass(frozen=True)
class LeaseLost(TermEvent):
    """The session's lease is lost (expired, revoked, or no keepalive answered within the TTL)."""

    reason: str


@dataclass(frozen=True)
class CampaignFailed(TermEvent):
    """Campaigning failed with ``error`` (the candidacy is dropped and opened again)."""

    error: Exception


@dataclass(frozen=True)
class InputsChanged(TermEvent):
    """Cluster ids whose input keys a watch reported changed."""

    ids: frozenset[str]
    #: the highest mod revision among the reported changes (0: unknown)
    revision: int = 0


@dataclass(frozen=True)
class WatchFailed(TermEvent):
    """An input watch lost its place (compacted, refused): the history has a hole."""

    error: Exception


@dataclass(frozen=True)
class KeyDeleted(TermEvent):
    """Our election key was deleted (resigned elsewhere, or by an operator)."""


@dataclass(frozen=True)
class LeaseDeadline(TermEvent):
    """The lease is no longer certainly alive by our own clock (last answered keepalive's
    deadline minus the margin): the term ends now, whatever the loop was doing."""


@dataclass(frozen=True)
class Wedge:
    """Test hook: the main loop blocks on ``release`` (a truly stuck loop; liveness must stop)."""

    release: threading.Event


Event = (Shutdown | Reload | ControlsChanged | Queued | Elected | LeaderSeen | LeaseLost | CampaignFailed
         | InputsChanged | WatchFailed | KeyDeleted | LeaseDeadline | Wedge)
