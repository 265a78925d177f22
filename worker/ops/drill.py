"""``protection-worker drill``: a failover drill against running instances, from any host.

The drill finds the leader in etcd, triggers the fault, times the takeover (``measure``) and audits
etcd's history since just before the fault (``audit``): a drill passes only when someone else
leads, the new leader completed a pass, and no stale write exists.

Faults: ``resign`` asks the leader to hand over through the switchover control key (it honours it
at once); ``kill``/``stop`` send SIGKILL/SIGSTOP when the leader runs on this host (a stopped
process is resumed after the handover, so it can campaign again), and otherwise revoke the
leader's lease, which is what etcd sees when a process dies: its keys go, the others take over,
and the instance itself notices the lost lease and campaigns again.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, Callable

from worker.control import clear_switchover, request_switchover
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.errors import WorkerError
from worker.ops.audit import audit
from worker.ops.measure import current_leader, measure_failover
from worker.ops.release import release_killed
from worker.protection.keys import Keys

MODES = ("resign", "kill", "stop")


class DrillError(WorkerError):
    """The drill could not run (no leader, nothing to fail over to)."""


def _local_pid(identity: dict[str, Any]) -> int | None:
    """The leader's pid when it runs on this host and is alive (signals then reach it)."""
    pid = identity.get("pid")
    if identity.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def run_drill(client: EtcdClient, keys: Keys, mode: str, *, timeout: float = 60.0, use_signals: bool = True,
              say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    leader = current_leader(client, keys)
    if leader is None:
        raise DrillError("no leader: nothing to fail over (is any instance running?)")
    identity, leader_kv = leader
    candidates = client.range(kv.range_request(
        keys.election + "/", prefix=True, count_only=True)).count
    if candidates < 2:
        raise DrillError(f"only {candidates} candidate in line: a failover needs a second instance")
    pid = _local_pid(identity) if use_signals else None
    from_revision = client.current_revision(keys.root) + 1
    term = leader_kv.create_revision

    def fault() -> None:
        if mode == "resign":
            request_switchover(client, keys, to=None, from_term=term, expires_in=timeout)
        elif pid is not None:
            os.kill(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            if mode == "kill":  # dead for sure: release its lease at once, as ExecStopPost= does
                release_killed(client, pid, leader_kv.lease)
        else:
            client.lease_revoke(leader_kv.lease)

    how = ("switchover key" if mode == "resign" else
           f"{'SIGKILL' if mode == 'kill' else 'SIGSTOP'} to pid {pid}" if pid is not None else
           f"revoking lease {leader_kv.lease:x}")
    say(f"leader {identity['instance_id']} (term {term}); fault: {mode} by {how}")
    try:
        result = measure_failover(client, keys, fault, mode=mode, timeout=timeout)
    finally:
        if mode == "stop" and pid is not None:
            os.kill(pid, signal.SIGCONT)  # resumed after the handover: it must campaign again, not stay frozen
        if mode == "resign":
            current = current_leader(client, keys)
            if current is not None and current[1].create_revision != term:
                clear_switchover(client, keys)
    report = audit(client, keys, from_revision)
    out = result.to_json()
    out.pop("new_term", None)
    out["stale_writes"] = len(report.violations)
    out["ok"] = bool(result.new_leader) and result.new_term != term and not report.violations
    if report.violations:
        out["violations"] = [v.__dict__ for v in report.violations]
    return out
