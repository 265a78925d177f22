"""Go's ``concurrency.NewLocker``: a ``Mutex`` as a plain lock object (``sync.Locker``).

``acquire``/``release`` and the context-manager protocol, like ``threading.Lock``, so code that
takes "a lock" can take a distributed one. As in Go, errors are not swallowed: Go's locker
panics, this one raises the ``Mutex``'s own errors (``SessionExpiredError``, etcd errors).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from worker.concurrency.errors import LockedError, WaitCancelledError, WaitTimeoutError
from worker.concurrency.mutex import Mutex

if TYPE_CHECKING:
    from worker.concurrency.session import Session


class Locker:
    """Locker is a lock over a ``Mutex`` on ``prefix`` for ``session``."""

    def __init__(self, session: Session, prefix: str) -> None:
        self.mutex = Mutex(session, prefix)

    def acquire(self, blocking: bool = True, timeout: float = -1, cancel: threading.Event | None = None) -> bool:
        """acquire takes the lock, like ``threading.Lock.acquire``: True once held; False when
        ``blocking`` is False and it is taken, or when ``timeout`` (seconds, -1: none) ran out."""
        if not blocking:
            try:
                self.mutex.try_lock()
            except LockedError:
                return False
            return True
        try:
            self.mutex.lock(timeout=None if timeout is None or timeout < 0 else timeout, cancel=cancel)
        except WaitCancelledError:
            raise  # the caller's own wish: not the same as a timeout
        except WaitTimeoutError:
            return False
        return True

    def release(self) -> None:
        """release deletes our key (``LockReleasedError`` when not held)."""
        self.mutex.unlock()

    def locked(self) -> bool:
        """locked: whether this locker holds the lock now (as far as it knows)."""
        return self.mutex.held

    def __enter__(self) -> Locker:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def new_locker(session: Session, prefix: str) -> Locker:
    """new_locker is Go's ``NewLocker``: a lock object over a ``Mutex`` on ``prefix``."""
    return Locker(session, prefix)
