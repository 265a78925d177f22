"""systemd notifications (``Type=notify``): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Built on ``systemd_watchdog.WatchDog`` (maintained, typed, handles abstract ``@`` sockets) rather
than ``sdnotify``, which has been unmaintained since 2017. Two things are done here instead of in
the library: ``STOPPING=1``/``RELOADING=1`` (it has no method for them), and the watchdog timing,
which uses a monotonic clock, because the library compares wall-clock datetimes and an NTP step
would make it skip or spam pings. Everything is a no-op without ``NOTIFY_SOCKET`` (not under
systemd), and a failed send is logged once and otherwise ignored: losing the notify socket must
never take the daemon down (systemd's watchdog will act if it really matters).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping

from systemd_watchdog import WatchDog

from worker.daemon.logs import get_logger

log = get_logger("worker.daemon.notify")


class _WatchDog(WatchDog):
    def stopping(self) -> None:
        self._send("STOPPING=1\n")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\n")


def watchdog_usec(env: Mapping[str, str] | None = None, pid: int | None = None) -> int | None:
    """The watchdog timeout systemd set for this process, like ``sd_watchdog_enabled(3)``; None if off."""
    env = os.environ if env is None else env
    usec, wpid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if wpid is not None and wpid != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. our parent)
    return int(usec)


class Notifier:
    """sd_notify for the daemon. ``addr``/``env`` default to the process environment."""

    def __init__(self, addr: str | None = None, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        self._addr = addr if addr is not None else env.get("NOTIFY_SOCKET") or None
        self._wd = _WatchDog(addr=self._addr) if self._addr else None
        usec = watchdog_usec(env) if self._addr else None
        self.watchdog_timeout: float | None = usec / 1e6 if usec else None
        #: how often ``watchdog()`` actually pings at most: a quarter of the timeout (progress calls it
        #: on every page and batch; sd_watchdog_enabled(3) asks for at least every half)
        self.watchdog_interval: float | None = self.watchdog_timeout / 4 if self.watchdog_timeout else None
        self._clock = clock
        self._last_ping: float | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._wd is not None

    def _send(self, what: Callable[[_WatchDog], None], name: str) -> bool:
        if self._wd is None:
            return False
        try:
            what(self._wd)
        except OSError as exc:
            if not self._failed:  # once: the socket going away is not news on every tick
                log.warning("systemd notify failed", message=name, error=str(exc))
            self._failed = True
            return False
        self._failed = False
        return True

    def ready(self) -> bool:
        """``READY=1``: connected and campaigning (systemd then considers the start finished)."""
        return self._send(lambda wd: wd.ready(), "READY")

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (e.g. the role)."""
        return self._send(lambda wd: wd.status(" ".join(text.splitlines())), "STATUS")

    def reloading(self) -> bool:
        """``RELOADING=1`` on SIGHUP; send ``ready()`` again once the reload is done."""
        return self._send(lambda wd: wd.reloading(), "RELOADING")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown began (resign, revoke, exit)."""
        return self._send(lambda wd: wd.stopping(), "STOPPING")

    def watchdog(self, force: bool = False) -> bool:
        """``WATCHDOG=1`` if a quarter of the timeout passed since the last one (or ``force``); True if sent.

        Call it from the main loop only: a hung main loop must stop the pings so systemd kills it.
        """
        if self._wd is None or self.watchdog_interval is None:
            return False
        now = self._clock()
        if not force and self._last_ping is not None and now - self._last_ping < self.watchdog_interval:
            return False
        if self._send(lambda wd: wd.notify(), "WATCHDOG"):
            self._last_ping = now
            return True
        return False
