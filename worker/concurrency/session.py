"""Go's ``concurrency.Session``: a lease kept alive for as long as the process lives (session.go).

Elections and mutexes put their keys under the session's lease, so a crashed holder's keys vanish
after the TTL and the next in line takes over. Differences from Go, each avoiding a pitfall:

* ``done`` is set when the lease is *certainly* at risk: the server answered TTL 0 (expired or
  revoked) or no keepalive was answered within the TTL (``LeaseKeeper``'s conservative deadline),
  also while etcd is stopped and never answers. As in Go, ``orphan()``/``close()`` set it too.
* Adopting an existing lease (Go's ``WithLease``) first asks etcd for its TTL, so the keepalive
  interval and deadline match the lease's, and a lease that no longer exists fails at once
  (``LeaseNotFoundError``) instead of yielding a session that is done a moment later.
* Go's ``WithContext`` is ``cancel=``: a ``threading.Event`` whose setting orphans the session
  (the keepalive stops, ``done`` is set, the lease is left to expire by its TTL).
* ``close()`` revokes with a short timeout and never raises for an unreachable etcd: Go waits up
  to the TTL (60 s by default) for the revoke, a shutdown that hangs on a dead etcd for a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError, LeaseNotFoundError, PermissionDeniedError

log = logging.getLogger(__name__)

DEFAULT_TTL = 60
"""Go's ``defaultSessionTTL`` (seconds)."""


class Session:
    """A lease (granted, or adopted with ``lease=``) kept alive at TTL/3 until closed or lost."""

    def __init__(self, client: EtcdClient, ttl: int = DEFAULT_TTL, lease: int | None = None,
                 cancel: threading.Event | None = None) -> None:
        if ttl <= 0:  # Go's WithTTL: warn and keep the default
            log.warning("Session: TTL should be > 0, preserving default TTL %d", DEFAULT_TTL)
            ttl = DEFAULT_TTL
        self.client = client
        sent_at = time.monotonic()
        if lease is None or lease == 0:
            granted = client.lease_grant(ttl)
            lease, ttl, granted_at = granted.id, granted.ttl, sent_at
        else:
            info = client.lease_time_to_live(lease)
            if info.ttl <= 0:
                raise LeaseNotFoundError(f"session: lease {lease:x} not found (expired or revoked)")
            # the lease is alive for info.ttl more seconds, counted from before we asked
            ttl = info.granted_ttl or ttl
            granted_at = sent_at + info.ttl - ttl
        self.lease: int = lease
        self.ttl: int = ttl
        #: set when the lease is lost (or the session orphaned/closed); see ``lost_reason``
        self.done = threading.Event()
        self.lost_reason: str | None = None
        self._closed = False
        self._keeper = client.keep_alive(lease, ttl, on_lost=self._on_lost, granted_at=granted_at)
        if cancel is not None:
            threading.Thread(target=self._orphan_on, args=(cancel,), name=f"session-cancel {lease:x}",
                             daemon=True).start()

    def _orphan_on(self, cancel: threading.Event) -> None:
        """Go's ``WithContext``: the context's end orphans the session (checked until it is done)."""
        while not self.done.is_set():
            if cancel.wait(0.05):
                self.orphan()
                return

    def _on_lost(self, reason: str) -> None:
        self.lost_reason = reason
        log.warning("session %x lost: %s", self.lease, reason)
        self.done.set()

    @property
    def deadline(self) -> float:
        """Monotonic time until which the lease is certainly alive on the server."""
        return self._keeper.deadline

    def remaining(self) -> float:
        """Seconds the lease is certainly still alive (0 once lost)."""
        return self._keeper.remaining()

    @property
    def lost(self) -> bool:
        """True when the lease was lost (as opposed to the session being orphaned or closed)."""
        return self.lost_reason is not None

    def orphan(self) -> None:
        """Stop the keepalive and leave the lease to expire by its TTL (Go's ``Orphan``)."""
        self._keeper.stop()
        self.done.set()

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the keepalive and revoke the lease, deleting every key under it (Go's ``Close``).

        The revoke is bounded by ``timeout`` per attempt (and the client's request timeout for
        retries); when etcd cannot be reached the lease expires by itself within the TTL.
        Returns True when the lease was revoked here; never raises for etcd errors.
        """
        self.orphan()
        if self._closed:
            return False
        self._closed = True
        try:
            self.client.lease_revoke(self.lease, timeout=min(float(self.ttl), timeout))
            return True
        except LeaseNotFoundError:
            return False
        except PermissionDeniedError:
            # etcd checks write permission on the lease's keys: a role that lost it cannot revoke
            # (the caller reports the refusal itself, once); the lease expires within the TTL
            log.info("session %x: revoke refused for lack of permission on its keys; the lease expires "
                     "within %d s", self.lease, self.ttl)
            return False
        except EtcdError as err:
            log.warning("session %x: revoke failed (%s); the lease expires within %d s", self.lease, err, self.ttl)
            return False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session lease={self.lease:x} ttl={self.ttl}{' done' if self.done.is_set() else ''}>"
