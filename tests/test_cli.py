"""The command line itself: a bare command, usage errors, one-line errors, per-command help."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from worker.cli import build_parser, main, _load_commands

DAEMON_FLAGS = ("--interval", "--listen")
SESSION_FLAGS = ("--ttl", "--instance-id")


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", *argv], capture_output=True, text=True,
                          timeout=timeout)


def test_bare_command_prints_usage_and_exits_2():
    proc = _run()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: protection-worker") and "run" in proc.stderr
    assert main([]) == 2


def test_usage_error_is_one_line_exit_2():
    proc = _run("status", "--no-such-flag")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "protection-worker status: error: unrecognized arguments: --no-such-flag "
        "(see 'protection-worker status --help')"]


def _help(*path: str) -> str:
    _load_commands()
    parser = build_parser()
    for name in path:
        parser = parser._subparsers._group_actions[0].choices[name]
    return parser.format_help()


@pytest.mark.parametrize("path", [("status",), ("audit",), ("drill",), ("pause",), ("resume",), ("switchover",),
                                  ("clusters", "put"), ("clusters", "ls"), ("dr", "set"), ("etcd-role",),
                                  ("reconcile",), ("run",)])
def test_each_command_offers_only_the_flags_it_uses(path):
    text = _help(*path)
    assert "--endpoints" in text and "--namespace" in text and "--config" in text
    for flag in DAEMON_FLAGS:
        assert (flag in text) == (path == ("run",)), (path, flag)
    for flag in SESSION_FLAGS:
        assert (flag in text) == (path in (("run",), ("reconcile",))), (path, flag)
    assert ("--log-level" in text) == (path != ("etcd-role",))


def test_a_flag_the_command_does_not_use_is_refused():
    proc = _run("audit", "--listen", "127.0.0.1:1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_an_expected_error_escaping_a_command_is_one_line_not_a_traceback(etcd_endpoints):
    # the daemon's HTTP port is taken: an OSError from deep inside the daemon's start
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run("run", "--endpoints", ",".join(etcd_endpoints), "--namespace", "/t/cli-busy-port",
                    "--listen", f"127.0.0.1:{port}", "--log-level", "error")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("protection-worker:")]
    assert "Address already in use" in line and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_audit_refuses_a_revision_below_1():
    proc = _run("audit", "--since-rev", "0", "--endpoints", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["protection-worker: audit: --since-rev must be a revision >= 1, got 0"]
