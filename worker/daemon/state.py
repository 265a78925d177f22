"""What one instance knows about itself, shared by the main loop (writer) and the probes (readers).

The main loop is the only writer (through ``Core.transition``); HTTP handlers, metrics and logs read.
Whether this instance leads is not a flag: ``leading()`` compares the monotonic clock with the
deadline of the lease's last answered keepalive minus a margin, at the moment it is asked. Reads and writes of single
attributes are atomic in CPython, and every field is replaced whole, so no lock is needed except
for the multi-field snapshot of ``status``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

FOLLOWER, LEADER, CONNECTING, STOPPING = "follower", "leader", "connecting", "stopping"


@dataclass
class DaemonState:
    instance_id: str
    ttl: float
    role: str = CONNECTING
    term: int | None = None
    #: the leader as last observed: {"instance_id", "key", "term"} or None
    leader: dict[str, Any] | None = None
    holds_lock: bool = False
    #: while the term waits for the reconcile lock: ``term_lock.LockWait`` (who holds it, since when)
    lock_wait: Any = None
    paused: bool = False
    connected: bool = False
    campaigning: bool = False
    session_alive: bool = False
    last_tick: float = field(default_factory=time.monotonic)
    last_error: str | None = None
    #: the last completed reconcile pass: {"mode", "term", "revision", "finished_at", "duration"}
    last_pass: dict[str, Any] | None = None
    #: a refusal that retrying cannot fix (auth, permission): unhealthy until it works again
    blocked: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: while a term holds the Mutex: the lease's deadline (monotonic, moves with each keepalive)
    lease_deadline: Callable[[], float] | None = field(default=None, repr=False)
    #: leadership ends this long before the lease deadline (at least one request timeout)
    margin: float = 0.0

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_tick

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the main loop ticked within the TTL and the session's lease is alive."""
        stalled = self.stalled_for()
        ok = stalled < self.ttl and self.session_alive and self.blocked is None
        return ok, {"ok": ok, "role": self.shown_role(), "session_alive": self.session_alive,
                    "main_loop_stalled_seconds": round(stalled, 3), "last_error": self.last_error,
                    "blocked": self.blocked, "term": self.term, "last_pass": self.last_pass}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self.connected and self.campaigning
        return ok, {"ok": ok, "role": self.shown_role(), "connected": self.connected, "campaigning": self.campaigning}

    def leading(self) -> bool:
        """Leader now: elected, holding the Mutex, and the lease certainly alive for ``margin``
        more seconds by this process's monotonic clock (no two instances are ever both true)."""
        deadline = self.lease_deadline
        return (self.role == LEADER and self.holds_lock and deadline is not None
                and time.monotonic() < deadline() - self.margin)

    def shown_role(self) -> str:
        """The role /status and /healthz show: "leader" only while ``leading()``."""
        if self.role == LEADER and not self.leading():
            return FOLLOWER
        return self.role
