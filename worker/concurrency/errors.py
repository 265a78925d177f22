"""Errors of the concurrency port, with Go's messages.

Go's ``concurrency`` package exposes sentinel errors (``ErrElectionNotLeader``…); callers compare
with ``errors.Is``. Here each sentinel is a class (catch it by type), every one a ``WorkerError``
so a daemon can tell "lost the election" from a programming error, and ``str()`` is Go's text so
logs read the same whichever client produced them.
"""

from __future__ import annotations

from worker.errors import WorkerError


class ConcurrencyError(WorkerError):
    """Any failure of an election, a mutex or an STM transaction (not of etcd itself)."""


class NotLeaderError(ConcurrencyError):
    """Go's ``ErrElectionNotLeader``: proclaim by a candidate that does not hold the leader key."""

    def __init__(self, message: str = "election: not leader") -> None:
        super().__init__(message)


class NoLeaderError(ConcurrencyError):
    """Go's ``ErrElectionNoLeader``: nobody holds a key under the election prefix."""

    def __init__(self, message: str = "election: no leader") -> None:
        super().__init__(message)


class LockedError(ConcurrencyError):
    """Go's ``ErrLocked``: ``try_lock`` found another session holding the mutex."""

    def __init__(self, message: str = "mutex: Locked by another session") -> None:
        super().__init__(message)


class SessionExpiredError(ConcurrencyError):
    """Go's ``ErrSessionExpired``: the session's lease (and so its key) is gone.

    Raised by ``Mutex.lock`` when its key vanished while waiting (Go's check), and by our waits
    when ``Session.done`` is set: waiting on for a lock or an election whose key is gone would
    only end in claiming something the lease no longer backs.
    """

    def __init__(self, message: str = "mutex: session is expired") -> None:
        super().__init__(message)


class LockReleasedError(ConcurrencyError):
    """Go's ``ErrLockReleased``: ``unlock`` of a mutex that is not held (never locked, or twice)."""

    def __init__(self, message: str = "mutex: lock has already been released") -> None:
        super().__init__(message)


class WaitTimeoutError(ConcurrencyError, TimeoutError):
    """A campaign or lock did not succeed within its timeout (Go: ``context.DeadlineExceeded``).

    By the time it is raised the waiter's key has been deleted again, so no key is left queued.
    """


class WaitCancelledError(WaitTimeoutError):
    """A campaign or lock was cancelled from another thread (Go: ``context.Canceled``).

    A subclass of ``WaitTimeoutError`` (and so of ``TimeoutError``): both mean "gave up waiting,
    key withdrawn", and callers that only care about that catch one type.
    """


class STMAbortedError(ConcurrencyError):
    """The STM's ``abort`` event was set (Go: the abort context was cancelled); nothing was written."""

    def __init__(self, message: str = "stm: aborted") -> None:
        super().__init__(message)
