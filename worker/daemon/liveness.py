"""Liveness is progress: every step the main thread makes beats, and only that feeds ``/healthz``
and systemd's watchdog.

A step is a loop tick, a page read, a write transaction answered, a retry attempt. All of them
happen on the main thread, so a loop that is truly stuck (a deadlock, a hang outside any etcd
call) stops beating: ``/healthz`` turns 503 after a TTL and systemd kills the process after
``WatchdogSec``. A long pass or a slow etcd keeps beating. ``Notifier.watchdog`` rate-limits the
WATCHDOG=1 datagrams, so beating on every page costs nothing.
"""

from __future__ import annotations

from worker.daemon.notify import Notifier
from worker.daemon.state import DaemonState


class Liveness:
    """Liveness records progress in ``state`` (for /healthz) and pings the watchdog."""

    def __init__(self, state: DaemonState, notifier: Notifier) -> None:
        self.state = state
        self.notifier = notifier
        self.beats = 0

    def beat(self) -> None:
        """beat: the main thread made progress (call it from the main thread only)."""
        self.beats += 1
        self.state.tick()
        self.notifier.watchdog()
