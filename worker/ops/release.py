"""Releasing a dead instance's lease at once, instead of waiting out its TTL.

When an instance's process is gone for sure (systemd's ``ExecStopPost=`` runs only after the main
process was reaped; a drill saw its SIGKILLed pid die), nothing can renew its lease any more, so
revoking it loses nothing: etcd deletes its election key with it, and the next in line leads one
watch event later. Revoking is also safe when it is wrong: every protection write compares the
election key's create revision, so a holder that is in fact alive cannot write once its key is
gone — it steps down and campaigns again. A wrong release costs a handover, never a stale write.

Which lease: exactly the one the dead process recorded in its lease file
(``worker.daemon.lease_file``: lease, instance id, pid, start time, systemd invocation id, unit,
boot id). A release refuses

* while that pid is alive, or cannot be inspected (``ProtectProc=invisible`` hides another
  DynamicUser's ``/proc/PID``; ``kill(pid, 0)`` answering EPERM means alive): then the record is a
  live process's (for example the instance already restarted and recorded its new lease), and
  revoking it would only force a handover;
* when another run of a unit wrote the record (its ``$INVOCATION_ID`` or unit is not the
  caller's): two instances sharing one runtime directory would otherwise release each other.

Only ``force`` overrides that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from worker.daemon.lease_file import LeaseRecord, alive, foreign, gone, read
from worker.etcd.client import EtcdClient
from worker.etcd.errors import LeaseNotFoundError

#: outcomes of ``release``
REVOKED, GONE, NOTHING, ALIVE, UNREADABLE, FOREIGN = "revoked", "gone", "nothing", "alive", "unreadable", "foreign"
#: how often a drill looks whether a killed pid has died
POLL = 0.002


@dataclass
class Release:
    """What a release did: ``outcome`` (one of the constants above), the record it read, one line."""

    outcome: str
    record: LeaseRecord | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        return {"outcome": self.outcome, "detail": self.detail,
                "lease": None if rec is None else f"{rec.lease:x}",
                "instance_id": None if rec is None else rec.instance_id,
                "pid": None if rec is None else rec.pid,
                "invocation_id": None if rec is None else rec.invocation_id,
                "unit": None if rec is None else rec.unit}


def revoke_lease(client: EtcdClient, lease: int, timeout: float | None = None) -> bool:
    """Revoke ``lease``; True if this call revoked it, False if etcd no longer had it (idempotent)."""
    try:
        client.lease_revoke(lease, timeout=timeout)
    except LeaseNotFoundError:
        return False
    return True


def release(file: Path, connect: Callable[[], Any], *, force: bool = False,
            timeout: float | None = None) -> Release:
    """Revoke the lease recorded in ``file`` when the process that recorded it is dead.

    ``connect()`` gives an etcd client (called only when there is something to revoke; closed
    here). ``EtcdError`` propagates when etcd cannot be reached within its timeouts: the lease
    then expires by its TTL."""
    try:
        rec = read(file)
    except ValueError as exc:
        return Release(UNREADABLE, None, f"nothing released: {exc}")
    if rec is None:
        return Release(NOTHING, None, f"nothing to release: no lease recorded in {file}")
    who = f"lease {rec.lease:x} of {rec.instance_id} (pid {rec.pid})"
    other = foreign(rec)
    if other and not force:
        return Release(FOREIGN, rec, f"not released: {who} was {other}; each instance needs a runtime "
                                     "directory of its own (the template unit protection-worker@.service)")
    holder_alive = alive(rec)
    if holder_alive and not force:
        return Release(ALIVE, rec, f"not released: {who} is held by a running process "
                                   "(use --force to revoke it anyway: the fence keeps that safe)")
    client = connect()
    try:
        revoked = revoke_lease(client, rec.lease, timeout)
    finally:
        client.close()
    if not holder_alive and not other:
        _forget(file, rec)
    if not revoked:
        return Release(GONE, rec, f"nothing to release: {who} was already gone")
    return Release(REVOKED, rec, f"released {who}" + (" while it was running (--force)" if holder_alive else ""))


def _forget(file: Path, rec: LeaseRecord) -> None:
    """Remove the dead process's record, unless a new process replaced it meanwhile."""
    try:
        if read(file) == rec:
            file.unlink()
    except (OSError, ValueError):
        pass


def await_death(pid: int, born: int | None, timeout: float) -> bool:
    """Wait until the process ``pid`` started at ``born`` has exited (gone or a zombie); True if it has."""
    deadline = time.monotonic() + timeout
    while True:
        if gone(pid, born):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def release_killed(client: EtcdClient, pid: int, lease: int, *, born: int | None = None,
                   timeout: float = 5.0) -> bool:
    """After a SIGKILL to a local ``pid``: once it is certainly dead, revoke its ``lease`` (what
    ``ExecStopPost=`` does under systemd). True if revoked; False if it did not die within
    ``timeout`` (then nothing is revoked) or the lease was gone already."""
    if not await_death(pid, born, timeout):
        return False
    return revoke_lease(client, lease, timeout)
