"""The one retry policy: how long to wait before trying etcd again, and how to wait.

Every loop that retries etcd (opening a session and campaigning, a reconcile pass, the controls
watch, the keepalive and watch streams of ``worker.etcd``) asks a policy object instead of keeping
its own backoff: capped exponential backoff with jitter for an unreachable etcd, and one TTL
between attempts when etcd refuses our credentials or a permission (asking again sooner cannot
help and only hammers etcd). Built on tenacity.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import tenacity

# worker.etcd's errors are imported where used: worker.concurrency (below worker.etcd's users,
# above its errors) takes its backoff from here too


@dataclass(frozen=True)
class RetryPolicy:
    """RetryPolicy waits ``initial`` doubling up to ``maximum`` seconds (jittered), or ``refused``
    seconds after a refusal (``EtcdAuthError``: credentials, permissions)."""

    initial: float = 0.1
    maximum: float = 2.0
    refused: float = 10.0

    def wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        from worker.etcd.errors import EtcdAuthError
        if isinstance(error, EtcdAuthError):
            return self.refused
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = max(1, attempt)
        return float(tenacity.wait_exponential_jitter(initial=self.initial, max=self.maximum, jitter=self.initial)(state))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return self.wait(state.attempt_number, error)

    def call(self, fn: Callable[[], Any], *, stop: threading.Event, sleep: Callable[[float], None],
             on_retry: Callable[[BaseException, int], None] | None = None) -> Any:
        """call runs ``fn`` until it returns, retrying on ``EtcdError`` until ``stop`` is set (then
        the last error is raised). ``sleep`` does the waiting (the daemon's sleep beats the
        watchdog and ends early on a stop); ``on_retry(error, attempt)`` is told before each wait."""
        from worker.etcd.errors import EtcdError

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                on_retry(state.outcome.exception(), state.attempt_number)

        return tenacity.Retrying(retry=tenacity.retry_if_exception_type(EtcdError), wait=self._wait,
                                 stop=tenacity.stop_when_event_set(stop), sleep=sleep,
                                 before_sleep=before_sleep, reraise=True)(fn)

    def with_refused(self, seconds: float) -> RetryPolicy:
        """The same policy waiting ``seconds`` after a refusal (the daemon uses its TTL)."""
        return RetryPolicy(self.initial, self.maximum, seconds)


#: the default policy
DEFAULT = RetryPolicy()
