"""StatusBoard holds the store's side of ``/status`` (the ``status --json`` object), so that a GET
is answered from a snapshot instead of a full store read on the HTTP thread.

Two writers publish into it: the leading term after each pass (it has just read everything:
``publish(snapshot, max_age=None)`` keeps it until the term ends and ``expire()`` is called), and
the probe itself when no fresh snapshot is there (a follower, or a leader before its first pass):
it reads once and publishes with a short ``max_age``, so GETs within that window share one read.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

#: seconds a snapshot read by the probe answers later GETs (a follower's /status)
PROBE_MAX_AGE = 1.0


class StatusBoard:
    """The last published status snapshot, with the monotonic time it expires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] | None = None
        self._expires = 0.0
        #: snapshots published, and store reads done for GETs (tests and /status debugging)
        self.published = 0

    def publish(self, snapshot: dict[str, Any], max_age: float | None = None) -> None:
        """Publish ``snapshot`` (the ``status --json`` object); ``max_age`` None: until ``expire()``."""
        with self._lock:
            self._snapshot = dict(snapshot)
            self._expires = math.inf if max_age is None else time.monotonic() + max_age
            self.published += 1

    def expire(self) -> None:
        """The publisher stopped (a term ended): the next GET reads afresh."""
        with self._lock:
            self._expires = 0.0

    def current(self) -> dict[str, Any] | None:
        """The snapshot while it is fresh, else None."""
        with self._lock:
            if self._snapshot is None or time.monotonic() >= self._expires:
                return None
            return dict(self._snapshot)
