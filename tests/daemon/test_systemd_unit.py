"""systemd/protection-worker.service: systemd-analyze accepts it and it has the directives we rely on."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.config import Config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "protection-worker.service"


def directives() -> dict[str, list[str]]:
    """``Key`` -> every value it is given in [Service] (systemd allows repeats, so no ConfigParser)."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60}
    for unit, factor in units.items():
        if value.endswith(unit) and value[: -len(unit)].replace(".", "").isdigit():
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_unit_runs_the_daemon_as_a_notify_service() -> None:
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["ExecStart"][0].split()[:2] == ["/usr/bin/protection-worker", "run"]
    assert "--config /etc/protection-worker/config.toml" in d["ExecStart"][0]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Restart"] == ["on-failure"]
    assert "TimeoutStopSec" in d


def test_watchdog_fires_before_the_default_election_ttl() -> None:
    watchdog = seconds(directives()["WatchdogSec"][0])
    assert 0 < watchdog < Config().election.ttl


@pytest.mark.parametrize("key,value", [
    ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"), ("CapabilityBoundingSet", ""),
    ("SystemCallFilter", "@system-service"), ("LockPersonality", "yes"),
    ("ConfigurationDirectory", "protection-worker"),
])
def test_hardening(key: str, value: str) -> None:
    assert value in directives()[key]


def test_runs_as_an_unprivileged_user() -> None:
    d = directives()
    assert d.get("DynamicUser") == ["yes"] or d.get("User", ["root"]) != ["root"]


def test_credential_example_is_documented() -> None:
    assert "#LoadCredential=etcd-password:/etc/protection-worker/etcd-password" in UNIT.read_text()


def test_install_section() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed "
                    "(apt-get install systemd); the unit file was not verified")
def test_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point a copy at this venv's console script
    script = Path(sys.executable).parent / "protection-worker"
    exe = str(script) if script.exists() else shutil.which("true")
    text = UNIT.read_text().replace("ExecStart=/usr/bin/protection-worker", f"ExecStart={exe}")
    unit = tmp_path / "protection-worker.service"
    unit.write_text(text)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values too (it only warns): any line about our file fails
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt value and an unknown key are reported."""
    unit = tmp_path / "broken.service"
    unit.write_text(textwrap.dedent(f"""\
        [Service]
        Type=notifyy
        WatchdogSecs=6s
        ExecStart={shutil.which("true")}
        """))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "broken.service" in proc.stdout + proc.stderr


MDWE_CHILD = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    sys.exit(77)
from worker.etcd import connect
client = connect(sys.argv[1:])
lease = client.lease_grant(5)
client.lease_revoke(lease.ID)
print(client.current_revision())
client.close()
"""


def test_grpc_to_etcd_works_without_writable_executable_memory(etcd_endpoints: list[str]) -> None:
    """Why the unit may set MemoryDenyWriteExecute=yes: a real gRPC round trip under the kernel's equivalent."""
    proc = subprocess.run([sys.executable, "-c", MDWE_CHILD, *etcd_endpoints], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 0
    assert "MemoryDenyWriteExecute=yes" in UNIT.read_text()
