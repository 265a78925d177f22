"""The lease file: where a running instance records the lease it holds, for ``protection-worker release``.

Under systemd the file lives in ``$RUNTIME_DIRECTORY`` (``RuntimeDirectory=``, kept across a
restart with ``RuntimeDirectoryPreserve=restart``), which only this unit sees; ``ExecStopPost=``
then revokes exactly the lease the dead process held. Without ``$RUNTIME_DIRECTORY`` nothing is
recorded.

The record names the lease, the instance id, the process id and the process's start time (field 22
of ``/proc/PID/stat``, clock ticks since boot): a pid alone could be reused, a pid with its start
time cannot. It is written whole (a temporary file renamed over the old one), so a reader sees the
previous record or the new one, never half of either. Nothing here raises: recording is a help for
a faster failover, never a reason for the daemon to stop (without a record the lease expires by TTL).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

NAME = "lease.json"


@dataclass(frozen=True)
class LeaseRecord:
    """What one process recorded: its lease (an etcd lease id), who it is, and which process."""

    lease: int
    instance_id: str
    pid: int
    start_time: int | None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "lease_hex": f"{self.lease:x}"}, sort_keys=True)


def runtime_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The first directory of ``$RUNTIME_DIRECTORY`` (systemd lists several with ``:``), or None."""
    value = (os.environ if env is None else env).get("RUNTIME_DIRECTORY", "")
    first = value.split(":")[0]
    return Path(first) if first else None


def path(env: Mapping[str, str] | None = None) -> Path | None:
    """Where the record lives, or None when there is no runtime directory (not under systemd)."""
    directory = runtime_dir(env)
    return None if directory is None else directory / NAME


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (``/proc/PID/stat`` field 22), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # exited, not reaped yet: it acts no more
        return None
    return int(fields[19])


def alive(record: LeaseRecord) -> bool:
    """Is the process that wrote ``record`` still running (same pid, same start time)?"""
    now = start_time(record.pid)
    return now is not None and (record.start_time is None or now == record.start_time)


def write(record: LeaseRecord, file: Path) -> None:
    """Replace ``file`` with ``record`` atomically (write a temporary file, then rename it)."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(record.to_json() + "\n")
    os.replace(tmp, file)


def read(file: Path) -> LeaseRecord | None:
    """The record in ``file``; None when there is none. ``ValueError`` when it is unreadable as a record."""
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{file}: {exc}") from exc
    try:
        return LeaseRecord(int(raw["lease"]), str(raw["instance_id"]), int(raw["pid"]),
                           None if raw.get("start_time") is None else int(raw["start_time"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: not a lease record ({exc})") from exc


def record(lease: int, instance_id: str) -> None:
    """Record ``lease`` as held by this process (replacing any earlier record of this process)."""
    file = path()
    if file is None:
        return
    pid = os.getpid()
    try:
        write(LeaseRecord(int(lease), instance_id, pid, start_time(pid)), file)
    except OSError:
        pass  # no record: a crash is then released by the lease's TTL, as without systemd


def clear() -> None:
    """Forget the record after a clean stop (the lease was revoked already); only this process's own."""
    file = path()
    if file is None:
        return
    try:
        current = read(file)
        if current is not None and current.pid == os.getpid():
            file.unlink()
    except (OSError, ValueError):
        pass
