"""The demo prints what it observed (issue 19): the invalid input as ``status`` lists it (key, mod
revision, the validation error), its record as read back, and its summary names the SIGTERM
handover ``sigterm`` (the drill's ``resign`` is a switchover through etcd), with each figure's source."""

from __future__ import annotations

import re
import subprocess
import sys


def test_the_demo_prints_the_invalid_input_and_its_record_as_observed():
    proc = subprocess.run([sys.executable, "-m", "worker", "demo", "--clusters", "40"], capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # the status line: full key, mod revision, the validator's own words
    assert re.search(r"^invalid     /protection-worker/dr/cluster-002 @ \d+: .*'lost-in-space'", out, re.M), out
    assert re.search(r"^            protection/cluster-002 read back: no record: left untouched \(none before",
                     out, re.M), out
    summary = out[out.index("summary"):]
    assert re.search(r"^            sigterm\s+[\d.]+\s+[\d.]+\s+[\d.]+$", summary, re.M), summary
    assert re.search(r"^            kill\s+[\d.]+\s+[\d.]+\s+[\d.]+$", summary, re.M), summary
    assert "resign" not in summary
    assert "sources: handover_ms etcd, leaderless_ms etcd, first_reconcile_ms http" in summary, summary
