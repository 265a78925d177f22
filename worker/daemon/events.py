"""Everything that can happen to the daemon, as typed events in one queue.

Background threads (campaign, observer, lease keeper, watches, the lease-deadline timer, signal
handlers, the control watch) only post these; the main loop alone acts on them, with ``match``.
Events of a candidacy carry its ``generation``, so a late event of an abandoned session is
recognised and dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from worker.control import Controls


@dataclass(frozen=True)
class Stop:
    """SIGTERM/SIGINT (or the embedding code): resign, release, exit 0."""


@dataclass(frozen=True)
class Reload:
    """SIGHUP: re-read the config file."""


@dataclass(frozen=True)
class ControlsChanged:
    """The controls under ``{ns}/control/`` as read at ``controls.revision``."""

    controls: Controls


@dataclass(frozen=True)
class Queued:
    """Our election key is in line."""

    generation: int


@dataclass(frozen=True)
class Elected:
    """Our key is the lowest in line: we may lead (after taking the Mutex)."""

    generation: int


@dataclass(frozen=True)
class LeaderSeen:
    """The observer saw ``leader`` (an etcd key-value) lead."""

    generation: int
    leader: Any


@dataclass(frozen=True)
class LeaseLost:
    """The session's lease is lost (expired, revoked, or no keepalive answered within the TTL)."""

    generation: int
    reason: str


@dataclass(frozen=True)
class CampaignFailed:
    generation: int
    error: Exception


@dataclass(frozen=True)
class InputsChanged:
    """Cluster ids whose input keys a watch reported changed."""

    generation: int
    ids: frozenset[str]
    #: the highest mod revision among the reported changes (0: unknown)
    revision: int = 0


@dataclass(frozen=True)
class WatchFailed:
    """An input watch lost its place (compacted, refused): the history has a hole."""

    generation: int
    error: Exception


@dataclass(frozen=True)
class KeyDeleted:
    """Our election key was deleted (resigned elsewhere, or by an operator)."""

    generation: int


@dataclass(frozen=True)
class LeaseDeadline:
    """The lease is no longer certainly alive by our own clock (last answered keepalive's
    deadline minus the margin): the term ends now, whatever the loop was doing."""

    generation: int


@dataclass(frozen=True)
class Wedge:
    """Test hook: the main loop blocks on ``release`` (a truly stuck loop; liveness must stop)."""

    release: threading.Event


Event = (Stop | Reload | ControlsChanged | Queued | Elected | LeaderSeen | LeaseLost | CampaignFailed
         | InputsChanged | WatchFailed | KeyDeleted | LeaseDeadline | Wedge)
