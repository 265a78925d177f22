"""A stand-in for systemd that runs the shipped unit file, for tests that need systemd's part.

``start_units`` starts instances the way ``systemctl start protection-worker`` would on each of
``count`` hosts: ``worker.demo.supervisor`` reads ``systemd/protection-worker.service`` as it is
(``Environment=``, ``RuntimeDirectory=``, ``ExecStart=``, ``WatchdogSec=``/``WatchdogSignal=``/
``TimeoutAbortSec=``, ``ExecStopPost=``, ``Restart=``/``RestartSec=``); the only rewrite is the
binary path (to this venv's console script) and the config path (to each instance's test config).
The election TTL is the shipped default, 10 s, so a failover faster than that is the release's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.config import Config
from worker.demo.instances import SupervisedWorker, start_group, wait_ready

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "protection-worker.service"
TTL = Config().election.ttl


def start_units(count: int, endpoints: list[str], namespace: str, log_dir: Path, **kw: Any) -> list[SupervisedWorker]:
    """``count`` instances of the shipped unit, ready (connected and campaigning)."""
    kw.setdefault("unit", UNIT.read_text())
    group = start_group(count, endpoints, namespace, log_dir, kind=SupervisedWorker, ttl=TTL,
                        request_timeout=0.5, **kw)
    wait_ready(group)
    return group  # type: ignore[return-value]
