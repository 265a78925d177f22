"""worker.daemon.notify: sd_notify messages arrive on a real unix datagram socket, in order."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Iterator

import pytest

from worker.daemon.notify import Notifier, watchdog_usec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sock_path() -> Iterator[tuple[socket.socket, str]]:
    # a short directory: AF_UNIX paths are limited to ~108 bytes and pytest's tmp_path can exceed it
    with tempfile.TemporaryDirectory(prefix="pw-notify-") as d:
        path = os.path.join(d, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.setblocking(False)
        try:
            yield s, path
        finally:
            s.close()


def received(s: socket.socket) -> list[str]:
    """Every datagram queued so far (sendto on a unix datagram socket is synchronous: no waiting)."""
    out = []
    while True:
        try:
            out.append(s.recv(4096).decode())
        except BlockingIOError:
            return out


def test_messages_arrive_in_order(sock_path: tuple[socket.socket, str]) -> None:
    s, path = sock_path
    clock = Clock()
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "6000000"}, clock=clock)
    assert n.enabled and n.watchdog_timeout == 6.0 and n.watchdog_interval == 1.5
    assert n.ready() and n.status("leader term=7") and n.watchdog() and n.stopping()
    assert received(s) == ["READY=1\n", "STATUS=leader term=7\n", "WATCHDOG=1\n", "STOPPING=1\n"]


def test_watchdog_pings_only_when_a_quarter_of_the_timeout_passed(sock_path: tuple[socket.socket, str]) -> None:
    s, path = sock_path
    clock = Clock()
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}, clock=clock)
    assert n.watchdog() is True        # the first call always pings
    clock.now += 0.9
    assert n.watchdog() is False       # not due: interval is 1 s (progress calls it far more often)
    clock.now += 0.1
    assert n.watchdog() is True
    assert n.watchdog(force=True) is True
    assert received(s) == ["WATCHDOG=1\n"] * 3


def test_addr_argument_and_multiline_status(sock_path: tuple[socket.socket, str]) -> None:
    s, path = sock_path
    n = Notifier(addr=path, env={})
    n.status("follower\nin line: 2")
    n.reloading()
    n.ready()
    got = received(s)
    assert got[0] == "STATUS=follower in line: 2\n"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=") and got[2] == "READY=1\n"
    assert n.watchdog_interval is None and n.watchdog() is False  # no WATCHDOG_USEC: watchdog off


def test_everything_is_a_noop_without_notify_socket() -> None:
    n = Notifier(env={"WATCHDOG_USEC": "6000000"})
    assert not n.enabled and n.watchdog_interval is None
    assert (n.ready(), n.status("x"), n.watchdog(), n.stopping()) == (False, False, False, False)


def test_default_environment_is_read(sock_path: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    s, path = sock_path
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_interval == 1.0 and n.ready()
    assert received(s) == ["READY=1\n"]


def test_a_vanished_socket_is_logged_not_raised() -> None:
    with tempfile.TemporaryDirectory(prefix="pw-notify-") as d:
        n = Notifier(addr=os.path.join(d, "gone"), env={"WATCHDOG_USEC": "1000000"})
        assert n.ready() is False
        assert n.watchdog() is False


def test_watchdog_usec_follows_sd_watchdog_enabled() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "5000000"}) == 5_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}, pid=2) is None  # another process's
    assert watchdog_usec({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "2"}, pid=2) == 5_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "abc"}) is None
    assert watchdog_usec({}) is None
