"""Helpers for the concurrency tests: sessions that are always closed, etcdctl subprocesses that
are always killed, and waits on etcd state that block on a watch rather than sleeping."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from worker.concurrency import Session
from worker.etcd import Watch, kv
from worker.demo.embedded_etcd import find_binary

HERE = Path(__file__).parent


@pytest.fixture
def sessions(client) -> Iterator[Callable[..., Session]]:
    """``sessions(ttl=.., client=..)`` makes a Session that is closed after the test."""
    made: list[Session] = []

    def make(ttl: int = 60, on: Any = None, lease: int | None = None) -> Session:
        s = Session(on or client, ttl=ttl, lease=lease)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close(timeout=0.5)


def keys_under(client, prefix: str) -> list[Any]:
    return list(client.range(kv.range_request(prefix, prefix=True, sort_target="create",
                                               sort_order="ascend")).kvs)


def wait_until(client, prefix: str, predicate: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
    """Block until ``predicate(keys under prefix)`` holds, woken by a watch on the prefix."""
    deadline = time.monotonic() + timeout
    with Watch(client, prefix, range_end=kv.prefix_end(prefix)) as watch:
        assert watch.started.wait(timeout)
        while True:
            kvs = keys_under(client, prefix)
            if predicate(kvs):
                return kvs
            left = deadline - time.monotonic()
            assert left > 0, f"condition on {prefix!r} not met within {timeout} s: {[k.key for k in kvs]}"
            watch.get(timeout=left)


def join(thread: threading.Thread, timeout: float = 10.0) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} still running after {timeout} s"


class Proc:
    """A child process whose stdout lines are read into a queue (to synchronise on them)."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 10.0) -> str:
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from {self.args} within {timeout} s") from None
        if item is None:
            self.lines.put(None)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"{self.args} exited ({self.proc.poll()}): {err}")
        return item

    def no_line(self, timeout: float) -> bool:
        """True when nothing was printed within ``timeout`` (a blocked waiter stays silent)."""
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            return True
        self.lines.put(item)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream:
                stream.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """Start child processes (etcdctl, the holder script); every one is SIGKILLed at the end:
    etcdctl traps SIGINT/SIGTERM and can hang."""
    procs: list[Proc] = []

    def start(args: list[str]) -> Proc:
        p = Proc(args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


@pytest.fixture
def etcdctl(spawn, etcd_endpoints) -> Callable[..., Proc]:
    binary = find_binary("etcdctl")

    def run(*args: str, endpoints: list[str] | None = None) -> Proc:
        return spawn([binary, "--endpoints", ",".join(endpoints or etcd_endpoints), *args])

    return run


@pytest.fixture
def holder(spawn) -> Callable[..., Proc]:
    """Run ``holder.py`` (a lock or election held by another process) with this interpreter."""

    def run(endpoints: list[str], kind: str, name: str, ttl: int, value: str = "held") -> Proc:
        return spawn([sys.executable, str(HERE / "holder.py"), ",".join(endpoints), kind, name, str(ttl), value])

    return run
