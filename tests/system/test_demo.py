"""The README's main command: ``protection-worker demo``, end to end, and its clean-up on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


def test_demo_runs_failovers_and_finds_no_stale_write():
    proc = subprocess.run([sys.executable, "-m", "worker", "demo", "--clusters", "40"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"graceful failover.*\n.*new leader worker-\d .*handover [\d.]+ ms", out)
    assert re.search(r"crash failover.*\n.*new leader worker-\d .*handover [\d.]+ ms", out)
    assert ": 0 violations" in out
    assert "cleaned up" in out
    workdir = re.search(r"data in (\S+)/etcd\)", out).group(1)
    assert not Path(workdir).exists()
    assert _pids_mentioning(workdir) == []


def test_demo_cleans_up_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "worker", "demo", "--clusters", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        workdir = re.search(r"data in (\S+)/etcd\)", first).group(1)
        # wait until the instances run (their line is printed after they were started)
        for line in proc.stdout:
            if line.startswith("instances"):
                break
        assert _pids_mentioning(workdir), "demo instances not running"
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 130
        assert "cleaned up" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 5
    while _pids_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)  # processes being reaped by the kernel: nothing to await but /proc
    assert _pids_mentioning(workdir) == []
    assert not Path(workdir).exists()
