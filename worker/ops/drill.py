"""``protection-worker drill``: a failover drill against running instances, from any host.

The drill finds the leader in etcd, triggers the fault, times the takeover (``measure``) and audits
etcd's history since just before the fault (``audit``): a drill passes only when someone else
leads, the new leader's first pass was seen, and no protection write lacks its leader's evidence.
A figure it could not measure (the new leader's HTTP address unreachable from here, and nothing in
etcd to take its place) is null with a reason in ``unmeasured``, and the drill fails: it never
reports a figure it did not measure.

Faults: ``resign`` asks the leader to hand over through the switchover control key (it honours it
at once); ``kill``/``stop`` send SIGKILL/SIGSTOP when the leader runs on this host (a killed
process's lease is then released as soon as its pid is gone, as the unit's ``ExecStopPost=`` does:
``worker.ops.release``; a stopped process is resumed after the handover, so it can campaign
again), and otherwise revoke the
leader's lease, which is what etcd sees when a process dies: its keys go, the others take over,
and the instance itself notices the lost lease and campaigns again.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import asdict
from typing import Any, Callable

from worker.control import clear_switchover, request_switchover
from worker.concurrency.line import candidates
from worker.etcd.client import EtcdClient
from worker.identity import Identity
from worker.errors import WorkerError
from worker.ops.audit import KINDS, audit
from worker.ops.measure import current_leader, measure_failover
from worker.ops.release import release_killed
from worker.keys import Keys

MODES = ("resign", "kill", "stop")


class DrillError(WorkerError):
    """The drill could not run (no leader, nothing to fail over to)."""


def _local_pid(identity: Identity) -> int | None:
    """The leader's pid when it runs on this host and is alive (signals then reach it)."""
    pid = identity.pid
    if identity.host != socket.gethostname() or pid is None:
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def run_drill(client: EtcdClient, keys: Keys, mode: str, *, timeout: float = 60.0, use_signals: bool = True,
              say: Callable[[str], None] = lambda _: None,
              health_url: Callable[[Identity], str | None] | None = None) -> dict[str, Any]:
    """Run one drill; returns the ``drill --json`` object. ``ok`` needs a new leader of a new term,
    its first pass seen, every figure measured and no violation of any kind in the history since the
    fault (``stale_writes`` counts the ``stale_term`` ones, ``audit_violations`` every kind);
    ``problem`` (when not null) is the one line saying what could not be measured."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    leader = current_leader(client, keys)
    if leader is None:
        raise DrillError("no leader: nothing to fail over (is any instance running?)")
    identity, leader_kv = leader
    _, line = candidates(client, keys.election)
    if len(line) < 2:
        raise DrillError(f"only {len(line)} candidate in line: a failover needs a second instance")
    pid = _local_pid(identity) if use_signals else None
    from_revision = client.current_revision(keys.root) + 1
    term = leader_kv.create_revision

    def fault() -> None:
        if mode == "resign":
            request_switchover(client, keys, to=None, from_term=term, expires_in=timeout)
        elif pid is None:
            client.lease_revoke(leader_kv.lease)
        elif mode == "kill":
            os.kill(pid, signal.SIGKILL)
            release_killed(client, pid, leader_kv.lease)  # dead for sure: as ExecStopPost= does
        else:
            os.kill(pid, signal.SIGSTOP)

    how = ("switchover key" if mode == "resign" else
           f"{'SIGKILL' if mode == 'kill' else 'SIGSTOP'} to pid {pid}" if pid is not None else
           f"revoking lease {leader_kv.lease:x}")
    say(f"leader {identity.instance_id} (term {term}); fault: {mode} by {how}")
    try:
        result = measure_failover(client, keys, fault, mode=mode, timeout=timeout, health_url=health_url)
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
    # the spec's figure: writes whose term was not the leader's at their revision; every other
    # finding of the audit beside it, by kind (a violation counts under each of its kinds)
    out["stale_writes"] = sum(1 for v in report.violations if "stale_term" in v.kinds)
    out["audit_violations"] = {kind: sum(1 for v in report.violations if kind in v.kinds) for kind in KINDS}
    out["problem"] = result.problem()
    out["ok"] = (bool(result.new_leader) and result.new_term != term and not report.violations
                 and out["problem"] is None)
    if report.violations:
        out["violations"] = [asdict(v) for v in report.violations]
    return out
