"""The lease file: where a running instance records the lease it holds, for ``protection-worker release``.

Under systemd the file lives in ``$RUNTIME_DIRECTORY`` (``RuntimeDirectory=``, kept across a
restart with ``RuntimeDirectoryPreserve=restart``), which only this unit sees; ``ExecStopPost=``
then revokes exactly the lease the dead process held. Without ``$RUNTIME_DIRECTORY`` nothing is
recorded.

The record names the lease, the instance id, the process id and the process's start time (field 22
of ``/proc/PID/stat``, clock ticks since boot): a pid alone could be reused, a pid with its start
time cannot. It also names which run of which unit wrote it: systemd's ``$INVOCATION_ID`` (one per
start of a unit, shared by its ``ExecStopPost=``), the unit (from ``/proc/self/cgroup``) and the
boot id, so a release run by one unit's instance never takes another instance's record for its own
(two instances that share a runtime directory by mistake, or a record left by an earlier boot).

Whether the recording process still runs: a pid whose ``/proc/PID`` cannot be read is not
therefore dead. Under ``ProtectProc=invisible`` another DynamicUser's processes are hidden from
``/proc``, while ``kill(pid, 0)`` still answers EPERM for a live one: only ESRCH (no such process)
means dead, and a pid that exists but cannot be inspected counts as alive. It is written whole (a
temporary file renamed over the old one), so a reader sees the
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
#: where the daemon keeps a copy of its systemd credentials for ``release`` (see ``stage_credentials``)
STAGED = "credentials"


@dataclass(frozen=True)
class LeaseRecord:
    """What one process recorded: its lease (an etcd lease id), who it is, which process, and
    which run of which unit on which boot (None where unknown: not under systemd, an old record)."""

    lease: int
    instance_id: str
    pid: int
    start_time: int | None
    invocation_id: str | None = None
    unit: str | None = None
    boot_id: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "lease_hex": f"{self.lease:x}"}, sort_keys=True)


def invocation_id(env: Mapping[str, str] | None = None) -> str | None:
    """systemd's ``$INVOCATION_ID`` for this run of the unit, or None outside systemd."""
    return (os.environ if env is None else env).get("INVOCATION_ID") or None


def own_unit(cgroup_file: str = "/proc/self/cgroup") -> str | None:
    """The systemd unit this process runs in (the last ``*.service`` of its cgroup path), or None."""
    try:
        text = Path(cgroup_file).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith(".service"):
                return part
    return None


def boot_id() -> str | None:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), or None."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def foreign(record: LeaseRecord, env: Mapping[str, str] | None = None) -> str | None:
    """Why ``record`` is not this unit run's own (another invocation or unit wrote it), or None.
    Only what both sides know is compared: a record or a caller outside systemd is not foreign."""
    mine = invocation_id(env)
    if record.invocation_id and mine and record.invocation_id != mine:
        return f"recorded by invocation {record.invocation_id} of {record.unit or 'a unit'}, not this one ({mine})"
    unit = own_unit()
    if record.unit and unit and record.unit != unit:
        return f"recorded by unit {record.unit}, not by {unit}"
    return None


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


def exists(pid: int) -> bool:
    """Whether a process ``pid`` exists, visible or not: ``kill(pid, 0)``, EPERM included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, we may only not signal it
    return True


def alive(record: LeaseRecord) -> bool:
    """Is the process that wrote ``record`` still running (same pid, same start time)?

    Dead only when that is certain: a record from another boot; no process with that pid; a
    zombie or another process (another start time) under it. A pid that exists but whose
    ``/proc`` entry cannot be read (``ProtectProc=invisible``, another user) counts as alive."""
    if record.boot_id and record.boot_id != boot_id():
        return False
    now = start_time(record.pid)
    if now is not None:
        return record.start_time is None or now == record.start_time
    if _stat_readable(record.pid):
        return False  # readable and None: a zombie
    return exists(record.pid)


def gone(pid: int, born: int | None) -> bool:
    """Whether the process ``pid`` started at ``born`` has certainly exited (or is a zombie)."""
    return not alive(LeaseRecord(0, "", pid, born))


def _stat_readable(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/stat").read_bytes()
        return True
    except OSError:
        return False


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
        optional = {name: None if raw.get(name) is None else str(raw[name])
                    for name in ("invocation_id", "unit", "boot_id")}
        return LeaseRecord(int(raw["lease"]), str(raw["instance_id"]), int(raw["pid"]),
                           None if raw.get("start_time") is None else int(raw["start_time"]), **optional)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: not a lease record ({exc})") from exc


def record(lease: int, instance_id: str) -> None:
    """Record ``lease`` as held by this process (replacing any earlier record of this process)."""
    file = path()
    if file is None:
        return
    pid = os.getpid()
    stage_credentials()
    try:
        write(LeaseRecord(int(lease), instance_id, pid, start_time(pid), invocation_id(), own_unit(), boot_id()),
              file)
    except OSError:
        pass  # no record: a crash is then released by the lease's TTL, as without systemd


def stage_credentials(env: Mapping[str, str] | None = None) -> None:
    """Copy ``$CREDENTIALS_DIRECTORY``'s files to ``$RUNTIME_DIRECTORY/credentials`` (0700, files 0600).

    systemd loads ``LoadCredential=`` for the start of a unit only, not for ``ExecStopPost=``
    (systemd 252 here: the release found no ``/run/credentials/UNIT``), yet a release on an
    auth-enabled etcd needs the same password and client key to revoke the lease. The copy lives
    where the lease record does: memory-backed, readable by this unit's user only (as the
    credentials are), removed by systemd with the runtime directory at the unit's final stop."""
    env = os.environ if env is None else env
    source, runtime = env.get("CREDENTIALS_DIRECTORY", ""), runtime_dir(env)
    if not source or runtime is None or not os.path.isdir(source):
        return
    target = runtime / STAGED
    try:
        target.mkdir(mode=0o700, exist_ok=True)
        for entry in Path(source).iterdir():
            if entry.is_file():
                tmp = target / f".{entry.name}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(entry.read_bytes())
                os.replace(tmp, target / entry.name)
    except OSError:
        pass  # without the copy a release on an auth-enabled etcd fails; the lease expires by TTL


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
