"""Retry is the one backoff object every etcd retry in the worker uses (kazoo's ``KazooRetry``).

One object holds the policy: capped exponential backoff with jitter for an unreachable etcd, and a
longer fixed wait (``refused``) after a refusal (``EtcdAuthError``: credentials, permissions),
since asking again sooner cannot help and only hammers etcd. ``copy()`` gives each call or each
long-lived loop its own attempt count; ``sleep`` is injectable (the daemon's sleep beats the
watchdog and ends early on a stop; tests pass a recorder). Two ways to use it:

* ``retry(fn, *args)`` runs ``fn`` until it returns, retrying on ``retry_on`` errors, bounded by
  ``max_tries``, ``deadline`` and ``stop`` (the last error is raised when a bound is reached);
* ``retry.pause(error)`` is for a loop whose body is a long-lived stream (watch, keepalive): it
  sleeps the next backoff and returns False once ``stop`` is set; ``reset()`` after a success.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, TypeVar

from worker.etcd.errors import EtcdAuthError, EtcdError

T = TypeVar("T")


class Retry:
    """Retry waits ``initial`` seconds doubling up to ``maximum`` (plus up to ``initial`` of
    jitter), or ``refused`` seconds after an ``EtcdAuthError``."""

    def __init__(self, initial: float = 0.1, maximum: float = 2.0, refused: float = 10.0, *,
                 max_tries: int | None = None, deadline: float | None = None,
                 retry_on: tuple[type[BaseException], ...] = (EtcdError,), jitter: bool = True,
                 sleep: Callable[[float], object] | None = None, stop: threading.Event | None = None,
                 on_retry: Callable[[BaseException, int], None] | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.refused = refused
        self.max_tries = max_tries
        self.deadline = deadline
        self.retry_on = retry_on
        self.jitter = jitter
        self.stop = stop
        self.on_retry = on_retry
        self._sleep = sleep
        #: failed attempts since the last ``reset()``
        self.attempts = 0

    def copy(self, **changes: object) -> Retry:
        """A fresh copy (attempt count 0) with ``changes`` applied (any constructor argument)."""
        fields: dict[str, Any] = dict(initial=self.initial, maximum=self.maximum, refused=self.refused,
                                      max_tries=self.max_tries, deadline=self.deadline, retry_on=self.retry_on,
                                      jitter=self.jitter, sleep=self._sleep, stop=self.stop, on_retry=self.on_retry)
        fields.update(changes)
        return Retry(**fields)

    def with_refused(self, seconds: float) -> Retry:
        """The same policy waiting ``seconds`` after a refusal (the daemon uses its TTL)."""
        return self.copy(refused=seconds)

    def reset(self) -> None:
        self.attempts = 0

    def wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (counting from 1)."""
        if isinstance(error, EtcdAuthError):
            return self.refused
        delay = self.initial * 2 ** (max(1, attempt) - 1)
        if self.jitter:
            delay += random.uniform(0, self.initial)
        return min(delay, self.maximum)

    def _do_sleep(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif self.stop is not None:
            self.stop.wait(seconds)
        else:
            time.sleep(seconds)

    def pause(self, error: BaseException | None = None, limit: float | None = None) -> bool:
        """Count one failed attempt and sleep its backoff (at most ``limit`` seconds); False when
        ``stop`` is set (before or after the sleep): the loop should end."""
        self.attempts += 1
        if self.stop is not None and self.stop.is_set():
            return False
        if self.on_retry is not None and error is not None:
            self.on_retry(error, self.attempts)
        seconds = self.wait(self.attempts, error)
        if limit is not None:
            seconds = max(0.0, min(seconds, limit))
        self._do_sleep(seconds)
        return not (self.stop is not None and self.stop.is_set())

    def __call__(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run ``fn(*args, **kwargs)`` until it returns; a ``retry_on`` error is retried until
        ``max_tries`` attempts, ``deadline`` seconds or ``stop``, then raised."""
        run = self.copy()
        started = time.monotonic()
        while True:
            try:
                return fn(*args, **kwargs)
            except run.retry_on as err:
                tries = run.attempts + 1
                if run.max_tries is not None and tries >= run.max_tries:
                    raise
                left = None if run.deadline is None else run.deadline - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise
                if not run.pause(err, limit=left):
                    raise


#: the default policy
DEFAULT = Retry()
