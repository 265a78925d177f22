"""StateRecorder and its one transition function: role, term, paused and blocked change here and
nowhere else (the main loop and the term decide; this records and announces).

Each change updates, together, the shared ``DaemonState`` (what /healthz, /status and /leader
read), the metrics (``is_leader``, ``term``, ``is_paused``), systemd's STATUS line and the log
(one line per change, with the event names of the contract: ``became_leader``, ``stepped_down``,
``paused``/``resumed``, ``permission_denied``/``auth_refused``/``permission_restored``).
"""

from __future__ import annotations

from typing import Any

import structlog

from worker.daemon import logs
from worker.daemon.metrics import Metrics
from worker.daemon.notify import Notifier
from worker.daemon.state import CONNECTING, FOLLOWER, LEADER, STOPPING, DaemonState
from worker.etcd.errors import PermissionDeniedError

log = structlog.get_logger("worker.daemon")

_UNSET: Any = object()


class StateRecorder:
    """StateRecorder is the one writer of ``DaemonState``: role, term, paused and blocked through
    ``transition``; the connection's facts through ``connection``; the observed leader through
    ``saw_leader``."""

    def __init__(self, state: DaemonState, metrics: Metrics, notifier: Notifier) -> None:
        self.state = state
        self.metrics = metrics
        self.notifier = notifier
        # is_leader is the lease-clock rule itself, evaluated at each scrape
        metrics.follow_leading(state.leading)

    def transition(self, *, role: str = _UNSET, term: int | None = _UNSET, paused: bool = _UNSET,
                   blocked: Exception | None = _UNSET, holds_lock: bool = _UNSET, lock_wait: Any = _UNSET,
                   why: str | None = None, **detail: Any) -> None:
        """transition applies the given changes and says each one once (state, metrics, STATUS, log)."""
        s = self.state
        if holds_lock is not _UNSET:
            s.holds_lock = holds_lock
        if lock_wait is not _UNSET:
            s.lock_wait = lock_wait
        was_role, was_term, was_paused, was_blocked = s.role, s.term, s.paused, s.blocked
        if term is not _UNSET:
            s.term = term
            if term is None:
                logs.clear_term()
            else:
                logs.set_term(term)
        if role is not _UNSET:
            s.role = role
        if paused is not _UNSET:
            s.paused = bool(paused)
            self.metrics.set_paused(s.paused)
        if blocked is not _UNSET:
            s.blocked = None if blocked is None else str(blocked)
        if (role is not _UNSET and role != was_role) or (term is not _UNSET and term != was_term):
            self.metrics.set_leader(s.role == LEADER, s.term if s.role == LEADER else None)
        self._say(was_role, was_term, was_paused, was_blocked, blocked, why, detail)
        self.notifier.status(self.status_line(why))

    def _say(self, was_role: str, was_term: int | None, was_paused: bool, was_blocked: str | None,
             blocked: Any, why: str | None, detail: dict[str, Any]) -> None:
        s = self.state
        if s.role == LEADER and (was_role != LEADER or s.term != was_term):
            log.info("became_leader", **detail)
        elif was_role == LEADER and s.role != LEADER:
            (log.info if why == "stopping" else log.warning)("stepped_down", reason=why, term=was_term)
        if s.paused != was_paused and s.role == LEADER:
            log.warning("paused" if s.paused else "resumed", **({"reason": why} if why else {}))
        if s.blocked is not None and was_blocked is None:
            event = "permission_denied" if isinstance(blocked, PermissionDeniedError) else "auth_refused"
            log.error(event, error=s.blocked, kind=getattr(blocked, "kind", "other"),
                      key=getattr(blocked, "key", None), retry_in=s.ttl)
        elif s.blocked is None and was_blocked is not None:
            log.info("permission_restored", was=was_blocked)

    def connection(self, *, connected: bool = _UNSET, campaigning: bool = _UNSET, session_alive: bool = _UNSET,
                   last_error: str | None = _UNSET, ttl: float = _UNSET) -> None:
        """Record what the connection knows (no log, no metric: the role says it)."""
        s = self.state
        for name, value in (("connected", connected), ("campaigning", campaigning),
                            ("session_alive", session_alive), ("last_error", last_error), ("ttl", ttl)):
            if value is not _UNSET:
                setattr(s, name, value)

    def saw_leader(self, leader: dict[str, Any] | None) -> None:
        """Record the leader as last observed (``{"instance_id", "key", "term"}``)."""
        self.state.leader = leader

    def refresh_status(self) -> None:
        """Send STATUS again (any thread): the lease-deadline timer calls it the moment leading ends."""
        self.notifier.status(self.status_line())

    def status_line(self, why: str | None = None) -> str:
        """systemd's STATUS: the role (as /status shows it), the term, paused, blocked."""
        s = self.state
        if s.blocked is not None:
            return f"blocked: {s.blocked}"
        if s.role == CONNECTING:
            return f"connecting: {s.last_error or why or 'etcd'}"
        if s.role == STOPPING:
            return "stopping"
        if s.role == LEADER and s.leading():
            text = f"leader: term {s.term}"
        elif s.role == LEADER and s.holds_lock:
            text = f"stepping down: term {s.term}, lease not certainly alive"
        elif s.role == LEADER and s.lock_wait is not None:
            text = (f"elected: term {s.term}, waiting for the reconcile lock held by "
                    f"{s.lock_wait.holder or 'another holder'}")
        elif s.role == LEADER:
            text = f"elected: term {s.term}, taking the reconcile lock"
        else:
            text = f"{FOLLOWER}: campaigning" + (f" ({why})" if why else "")
        return text + (", paused" if s.paused else "")


#: COMPAT (issue 18): the old name, kept for worker/daemon/leader.py (MIGRATION.md)
Core = StateRecorder
