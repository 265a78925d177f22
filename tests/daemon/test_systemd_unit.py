"""systemd/protection-worker.service: systemd-analyze accepts it and it has the directives we rely on."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
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


def verify(text: str, tmp_path: Path) -> tuple[int, list[str], str]:
    """``systemd-analyze verify`` on ``text`` as our unit file: (exit status, the lines about the
    file, all output). ExecStart points at this venv's console script (verify checks it exists)."""
    script = Path(sys.executable).parent / "protection-worker"
    exe = str(script) if script.exists() else shutil.which("true")
    unit = tmp_path / "protection-worker.service"
    unit.write_text(text.replace("ExecStart=/usr/bin/protection-worker", f"ExecStart={exe}"))
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice"}
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values too (it only warns): any line about our file counts
    output = proc.stdout + proc.stderr
    return proc.returncode, [line for line in output.splitlines() if unit.name in line], output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed "
                    "(apt-get install systemd); the unit file was not verified")
def test_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    code, complaints, output = verify(UNIT.read_text(), tmp_path)
    assert code == 0 and not complaints, output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("line,broken", [("Type=notify", "Type=notifyy"), ("WatchdogSec=6s", "WatchdogSecs=6s"),
                                         ("WatchdogSec=6s", "WatchdogSec=six")])
def test_the_same_check_fails_on_our_unit_with_one_mistake(tmp_path: Path, line: str, broken: str) -> None:
    """The check above can fail on *our* unit: one misspelt value or key in it is reported."""
    text = UNIT.read_text()
    assert f"\n{line}\n" in text
    code, complaints, output = verify(text.replace(f"\n{line}\n", f"\n{broken}\n"), tmp_path)
    assert code != 0 or complaints, output


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
