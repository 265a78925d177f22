"""The soak benchmark's short run as a test: three daemons, 1,000 clusters, 50 changes/s for 30 s,
the leader SIGKILLed, SIGSTOPped and SIGTERMed in turn (restarted like systemd would); the run must
converge with every record as the rules say and no stale write in etcd's history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.timeout(180)
def test_short_soak_converges_with_no_stale_write():
    proc = subprocess.run([sys.executable, str(SOAK), "--short", "--json", "--quiet"], capture_output=True,
                          text=True, timeout=170)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, json.dumps(summary, indent=1)
    assert summary["ok"] is True
    assert summary["converged"] is True and summary["planned_changes_left"] == 0
    assert summary["audit"]["violations"] == 0 and summary["audit"]["checked"] > 0
    assert summary["changes_applied"] >= 0.9 * 50 * 30, summary["changes_applied"]
    assert summary["faults_injected"] >= 3
    assert set(summary["faults_by_mode"]) == {"kill", "stop", "term"}
    assert all(summary["faults_by_mode"][m] >= 1 for m in ("kill", "stop", "term")), summary["faults_by_mode"]
    for failover in summary["failovers"]:
        assert failover["ok"] and failover["new_leader"] != failover["old_leader"], failover
        # a crash or freeze is noticed through the lease (TTL 3 s); a SIGTERM hands over at once
        limit = 1000.0 if failover["mode"] == "term" else (3 + 2) * 1000.0
        assert failover["handover_ms"] <= limit, failover
    assert summary["errors"] == [] and summary["invalid_inputs"] == 0
    assert len(summary["leaders"]) == 1
