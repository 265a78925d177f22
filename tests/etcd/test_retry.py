"""Retry: one backoff object (kazoo's KazooRetry) — copied per call, injectable sleep, bounded."""

from __future__ import annotations

import threading

import pytest

from worker.etcd.errors import EtcdAuthError, EtcdUnavailableError
from worker.etcd.retry import Retry


def _failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return calls, fn


def test_retries_until_it_works_with_capped_doubling_waits() -> None:
    slept: list[float] = []
    retry = Retry(0.1, 0.5, jitter=False, sleep=slept.append)
    calls, fn = _failing(5, EtcdUnavailableError("down"))
    assert retry(fn) == "ok"
    assert len(calls) == 6 and slept == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_each_call_counts_its_own_attempts() -> None:
    slept: list[float] = []
    retry = Retry(0.1, 2.0, jitter=False, sleep=slept.append)
    for _ in range(2):
        _, fn = _failing(2, EtcdUnavailableError("down"))
        retry(fn)
    assert slept == [0.1, 0.2, 0.1, 0.2] and retry.attempts == 0


def test_a_refusal_waits_the_refused_time() -> None:
    slept: list[float] = []
    retry = Retry(0.1, 2.0, refused=7.0, sleep=slept.append)
    _, fn = _failing(1, EtcdAuthError("no"))
    retry(fn)
    assert slept == [7.0]


def test_bounded_by_tries_and_other_errors_pass_through() -> None:
    retry = Retry(0.01, 0.01, max_tries=3, sleep=lambda s: None)
    calls, fn = _failing(10, EtcdUnavailableError("down"))
    with pytest.raises(EtcdUnavailableError):
        retry(fn)
    assert len(calls) == 3
    calls, fn = _failing(10, ValueError("not etcd"))
    with pytest.raises(ValueError):
        retry(fn)
    assert len(calls) == 1


def test_a_stop_ends_the_retries_with_the_last_error() -> None:
    stop = threading.Event()
    seen: list[int] = []

    def on_retry(err: BaseException, attempt: int) -> None:
        seen.append(attempt)
        if attempt == 2:
            stop.set()

    retry = Retry(0.01, 0.01, stop=stop, on_retry=on_retry, sleep=lambda s: None)
    calls, fn = _failing(10, EtcdUnavailableError("down"))
    with pytest.raises(EtcdUnavailableError):
        retry(fn)
    assert seen == [1, 2] and len(calls) == 2


def test_pause_for_stream_loops() -> None:
    stop = threading.Event()
    slept: list[float] = []
    retry = Retry(0.1, 1.0, jitter=False, sleep=slept.append, stop=stop)
    assert retry.pause() and retry.pause(limit=0.05)
    assert slept == [0.1, 0.05]
    retry.reset()
    stop.set()
    assert retry.pause() is False
