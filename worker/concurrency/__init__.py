"""A port of etcd's Go ``client/v3/concurrency``: sessions, elections, mutexes and STM.

Same keys and same transactions as Go, so Python processes share elections and locks with Go
programs and ``etcdctl elect``/``etcdctl lock``. Built on ``worker.etcd`` (resilient watches,
lease keepers), never on pyetcd's own lock or watch.
"""

from worker.concurrency.election import Election
from worker.concurrency.errors import (
    ConcurrencyError,
    LockedError,
    LockReleasedError,
    NoLeaderError,
    NotLeaderError,
    SessionExpiredError,
    STMAbortedError,
    WaitCancelledError,
    WaitTimeoutError,
)
from worker.concurrency.line import Candidate, candidates, leader
from worker.concurrency.locker import Locker, new_locker
from worker.concurrency.mutex import Mutex
from worker.concurrency.observe import Observer
from worker.concurrency.session import Session
from worker.concurrency.stm import (STM, Isolation, new_stm, new_stm_read_committed, new_stm_repeatable,
                                    new_stm_serializable)

__all__ = [
    "Candidate", "ConcurrencyError", "Election", "Isolation", "LockReleasedError", "LockedError", "Locker", "Mutex",
    "NoLeaderError", "NotLeaderError", "Observer", "STM", "STMAbortedError", "Session",
    "SessionExpiredError", "WaitCancelledError", "WaitTimeoutError", "candidates", "leader", "new_locker", "new_stm",
    "new_stm_read_committed", "new_stm_repeatable", "new_stm_serializable",
]
