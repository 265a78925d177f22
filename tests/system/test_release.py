"""Fast release after a crash: the shipped unit's ``ExecStopPost=`` revokes a dead instance's lease.

Real worker processes run by a stand-in for systemd that reads the shipped unit file
(``tests/system/systemd_standin.py``), a real etcd, the default election TTL (10 s): a takeover
before the dead process's lease could have expired (at least TTL - TTL/3 after its last
keepalive) is the release's doing, and the release's own output names the lease it revoked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.system.conftest import put_inventory
from tests.system.helpers import await_leader, await_records, await_watched, leader_of, states
from tests.system.systemd_standin import TTL, UNIT, start_units
from worker.daemon import lease_file
from worker.etcd import kv
from worker.ops.audit import audit
from worker.demo.embedded_etcd import free_port
from worker.demo.instances import SupervisedWorker, stop_group
from worker.demo.supervisor import ServiceSpec, parse_seconds, read_unit

KILLED = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
#: a takeover this soon cannot be the TTL's: the dead lease was renewed at most TTL/3 before the kill
BEFORE_EXPIRY = TTL / 2


@pytest.fixture
def units(tmp_path: Path, etcd_endpoints: list[str], keys) -> Iterator:
    started: list[SupervisedWorker] = []

    def start(count: int = 2, **kw) -> dict[str, SupervisedWorker]:
        group = start_units(count, etcd_endpoints, keys.namespace, tmp_path / f"u{len(started)}", **kw)
        started.extend(group)
        return {w.instance_id: w for w in group}

    yield start
    stop_group(started)  # type: ignore[arg-type]


def line(client, keys) -> dict[int, str]:
    """lease -> instance_id of every election key in line."""
    resp = client.range(kv.range_request(keys.election + "/", prefix=True))
    return {item.lease: json.loads(item.value)["instance_id"] for item in resp.kvs}


def lease_of(client, keys, instance_id: str) -> int:
    (lease,) = [lease for lease, who in line(client, keys).items() if who == instance_id]
    return lease


def await_line(client, keys, check, timeout: float = 30.0) -> dict[int, str]:
    return await_watched(client, keys.election + "/", lambda: line(client, keys), check, timeout, "the line")


def stop_post_after(worker: SupervisedWorker, t0: float):
    """The ``ExecStopPost=`` run after ``t0`` (awaited)."""
    assert worker.service is not None
    worker.service.wait_event("stop_post", after=t0, timeout=30)
    return next(run for run in worker.service.stop_posts if run.started >= t0)


def release_argv(worker: SupervisedWorker) -> list[str]:
    """The unit's own ``ExecStopPost=`` command line, for this instance (as the stand-in runs it)."""
    spec = ServiceSpec.from_unit(UNIT.read_text(), {worker.BINARY: worker.script(),
                                                    worker.CONFIG: str(worker._config_path)})
    return spec.exec_stop_post[0].argv


def run_release(worker: SupervisedWorker, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert worker.service is not None and worker.service.runtime_dir is not None
    return subprocess.run([*release_argv(worker), *extra], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RUNTIME_DIRECTORY": str(worker.service.runtime_dir), **env})


# -- the unit --------------------------------------------------------------------------------
def test_unit_releases_after_death_and_ends_a_hang_within_watchdog_plus_one_second() -> None:
    d = read_unit(UNIT.read_text())
    stop_post = d["ExecStopPost"]
    assert len(stop_post) == 1 and stop_post[0].startswith("-/usr/bin/protection-worker release ")
    assert "--config /etc/protection-worker/config.toml" in stop_post[0]
    assert d["RuntimeDirectory"] == ["protection-worker"]
    assert d["RuntimeDirectoryPreserve"] == ["restart"]
    assert d["WatchdogSignal"] == ["SIGABRT"]
    assert parse_seconds(d["TimeoutAbortSec"][0]) <= 1.0  # else a stopped process lives TimeoutStopSec more


def test_the_template_unit_is_the_shipped_unit_with_a_directory_and_config_per_instance() -> None:
    template = UNIT.with_name("protection-worker@.service")
    plain, per_instance = read_unit(UNIT.read_text()), read_unit(template.read_text())
    expected = {key: [v.replace("/etc/protection-worker/config.toml", "/etc/protection-worker/%i.toml")
                      for v in values] for key, values in plain.items()}
    expected["RuntimeDirectory"] = ["protection-worker-%i"]
    assert per_instance == expected
    assert read_unit(template.read_text(), "Install") == read_unit(UNIT.read_text(), "Install")
    assert "Description=protection-worker %i:" in template.read_text()


# -- the lease file --------------------------------------------------------------------------
def test_lease_file_names_the_process_by_pid_and_start_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    lease_file.record(0xABC, "me")
    rec = lease_file.read(tmp_path / lease_file.NAME)
    assert rec is not None and (rec.lease, rec.instance_id, rec.pid) == (0xABC, "me", os.getpid())
    assert lease_file.alive(rec)
    # the same pid with another start time is another process (a reused pid): dead
    assert not lease_file.alive(lease_file.LeaseRecord(rec.lease, "me", rec.pid, (rec.start_time or 0) + 1))
    child = subprocess.Popen(["true"])
    child.wait()
    assert not lease_file.alive(lease_file.LeaseRecord(1, "x", child.pid, rec.start_time))
    assert [p.name for p in tmp_path.iterdir()] == [lease_file.NAME]  # written by rename: no leftovers
    lease_file.clear()
    assert lease_file.read(tmp_path / lease_file.NAME) is None


def test_a_pid_that_cannot_be_inspected_counts_as_alive(monkeypatch) -> None:
    """Under ``ProtectProc=invisible`` another DynamicUser's ``/proc/PID`` cannot be read, while the
    process runs: only "no such process" (ESRCH) is dead; EPERM from ``kill(pid, 0)`` is alive."""
    live = subprocess.Popen(["sleep", "30"])
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    try:
        monkeypatch.setattr(lease_file, "start_time", lambda pid: None)      # /proc/PID hidden
        monkeypatch.setattr(lease_file, "_stat_readable", lambda pid: False)
        assert lease_file.alive(lease_file.LeaseRecord(1, "hidden", live.pid, 123))
        assert not lease_file.alive(lease_file.LeaseRecord(1, "gone", reaped.pid, 123))
        real_kill = os.kill

        def eperm(pid: int, sig: int) -> None:  # another user's process: we may not signal it
            if pid == live.pid and sig == 0:
                raise PermissionError(1, "Operation not permitted")
            real_kill(pid, sig)

        monkeypatch.setattr(os, "kill", eperm)
        assert lease_file.alive(lease_file.LeaseRecord(1, "hidden", live.pid, 123))
        # and a release of such a record refuses (no etcd contacted)
        assert lease_file.gone(reaped.pid, None) and not lease_file.gone(live.pid, 123)
    finally:
        live.kill()
        live.wait()


def test_a_record_from_another_boot_is_dead(tmp_path: Path) -> None:
    rec = lease_file.LeaseRecord(1, "x", os.getpid(), lease_file.start_time(os.getpid()), boot_id="not-this-boot")
    assert not lease_file.alive(rec)


def test_release_never_takes_another_invocations_record(tmp_path: Path, monkeypatch, client) -> None:
    """Two instances sharing one runtime directory (the shipped unit's fixed name, run twice on a
    host): the record of the other instance is never released by this one's ``ExecStopPost=``,
    even when its pid looks dead from here; the same invocation's own record is."""
    from worker.ops.release import FOREIGN, REVOKED, release
    dead = subprocess.Popen(["true"])
    dead.wait()
    file = tmp_path / lease_file.NAME
    lease = client.lease_grant(60).ID
    lease_file.write(lease_file.LeaseRecord(lease, "pw-3", dead.pid, None, invocation_id="a" * 32,
                                            unit="protection-worker-3.service"), file)
    monkeypatch.setenv("INVOCATION_ID", "b" * 32)
    from worker.etcd import connect as connect_etcd
    connected: list[int] = []

    def connect():
        connected.append(1)
        return connect_etcd([client.endpoint_url])

    result = release(file, connect)
    assert result.outcome == FOREIGN and "invocation" in result.detail, result
    assert connected == [] and client.lease_time_to_live(lease).TTL > 0   # untouched
    assert lease_file.read(file) is not None                                # and its record kept
    monkeypatch.setenv("INVOCATION_ID", "a" * 32)                          # its own ExecStopPost=
    monkeypatch.setattr(lease_file, "own_unit", lambda: "protection-worker-3.service")
    assert release(file, connect).outcome == REVOKED
    assert client.lease_time_to_live(lease).TTL == -1


def test_the_record_names_the_invocation_unit_and_boot(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("INVOCATION_ID", "c" * 32)
    lease_file.record(0xABC, "me")
    rec = lease_file.read(tmp_path / lease_file.NAME)
    assert rec is not None and rec.invocation_id == "c" * 32 and rec.boot_id == lease_file.boot_id()
    assert lease_file.own_unit(str(_cgroup(tmp_path, "0::/system.slice/protection-worker@a.service\n"))) == \
        "protection-worker@a.service"
    assert lease_file.own_unit(str(_cgroup(tmp_path, "0::/user.slice\n"))) is None


def _cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return path


# -- with real instances ---------------------------------------------------------------------
@pytest.mark.slow
def test_leader_sigkill_the_release_hands_over_before_the_ttl(client, keys, units) -> None:
    workers = units(2)
    old_id, _, _ = await_leader(client, keys)
    lease = lease_of(client, keys, old_id)
    old = workers[old_id]
    t0 = time.monotonic()
    old.signal(signal.SIGKILL)
    new_id, _, seen = await_leader(client, keys, other_than=old_id, timeout=BEFORE_EXPIRY)
    assert new_id != old_id and seen - t0 < BEFORE_EXPIRY
    run = stop_post_after(old, t0)
    assert run.variables == KILLED
    assert run.returncode == 0 and f"released lease {lease:x} of {old_id}" in run.output, run.output
    # Restart=: the unit comes back with a new lease, in line behind the new leader
    await_line(client, keys, lambda now: lease not in now and sorted(now.values()) == sorted(workers))
    assert leader_of(client, keys)[0] == new_id


@pytest.mark.slow
def test_follower_sigkill_its_key_leaves_the_line_at_once(client, keys, units) -> None:
    workers = units(2)
    leader_id, term, _ = await_leader(client, keys)
    follower_id = next(i for i in workers if i != leader_id)
    await_line(client, keys, lambda now: len(now) == 2)
    lease = lease_of(client, keys, follower_id)
    t0 = time.monotonic()
    workers[follower_id].signal(signal.SIGKILL)
    await_line(client, keys, lambda now: lease not in now, timeout=BEFORE_EXPIRY)
    assert time.monotonic() - t0 < BEFORE_EXPIRY
    run = stop_post_after(workers[follower_id], t0)
    assert run.variables == KILLED and f"released lease {lease:x} of {follower_id}" in run.output, run.output
    assert leader_of(client, keys) == (leader_id, term)  # the leader never noticed


@pytest.mark.slow
def test_sigterm_nothing_to_release_exit_0_and_no_restart(client, keys, units) -> None:
    workers = units(2)
    old_id, _, _ = await_leader(client, keys)
    old = workers[old_id]
    assert old.service is not None
    t0 = time.monotonic()
    old.signal(signal.SIGTERM)
    await_leader(client, keys, other_than=old_id)
    dead = old.service.wait_event("dead", after=t0)
    assert dead.data == {"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"}
    run = stop_post_after(old, t0)
    assert run.returncode == 0 and "nothing to release: no lease recorded" in run.output, run.output
    assert not [e for e in old.service.events if e.kind == "started" and e.at > t0]  # clean exit: no restart


@pytest.mark.slow
def test_watchdog_kills_a_stopped_leader_and_the_release_follows(client, keys, units) -> None:
    workers = units(2)
    old_id, _, _ = await_leader(client, keys)
    old = workers[old_id]
    service = old.service
    assert service is not None and service.spec.watchdog_sec
    t0 = time.monotonic()
    old.signal(signal.SIGSTOP)  # frozen: it sends no watchdog ping
    fired = service.wait_event("watchdog", after=t0, timeout=service.spec.watchdog_sec + 5)
    assert fired.data["signal"] == "SIGABRT"
    reaped = service.wait_event("reaped", after=t0)
    # as systemd 252 does (tests/system/test_real_systemd.py): SIGABRT, then SIGCONT, so the stopped
    # process dies of the SIGABRT at once; no SIGKILL after TimeoutAbortSec
    assert {k: reaped.data[k] for k in KILLED} == {**KILLED, "SERVICE_RESULT": "watchdog", "EXIT_STATUS": "ABRT"}
    assert not [e for e in service.events if e.kind == "abort_timeout" and e.at > t0]
    assert reaped.at - fired.at < 1.0, f"died {reaped.at - fired.at:.1f} s after the watchdog fired"
    new_id, _, _ = await_leader(client, keys, other_than=old_id, timeout=TTL)
    run = stop_post_after(old, t0)
    assert run.returncode == 0 and run.variables["SERVICE_RESULT"] == "watchdog"
    assert f"of {old_id}" in run.output, run.output  # released, or found already expired
    service.wait_event("ready", after=reaped.at)  # restarted


@pytest.mark.slow
def test_release_of_a_live_instance_refuses_and_forced_it_causes_no_stale_write(client, keys, units) -> None:
    expected = put_inventory(client, keys, count=20)
    workers = units(2)
    await_records(client, keys, lambda cur: states(cur) == expected)
    old_id, term, _ = await_leader(client, keys)
    old = workers[old_id]
    lease = lease_of(client, keys, old_id)
    pid = old.pid

    refused = run_release(old)
    assert refused.returncode == 0 and f"not released: lease {lease:x} of {old_id}" in refused.stdout, refused
    assert leader_of(client, keys) == (old_id, term) and client.lease_time_to_live(lease).TTL > 0

    # forced, while the leader writes: input changes keep it busy before, during and after the revoke
    since = client.current_revision() + 1
    stop = threading.Event()

    def churn() -> None:
        flip = 0
        while not stop.is_set():
            flip += 1
            for i in range(1, 20, 2):
                client.put(keys.dr_key(f"c-{i}"), json.dumps({"replication": ("broken", "in_sync")[flip % 2]}))
            time.sleep(0.01)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        time.sleep(0.3)
        forced = run_release(old, "--force")
        await_leader(client, keys, other_than=old_id)
        time.sleep(0.3)
    finally:
        stop.set()
        churner.join(10)
    assert forced.returncode == 0 and "while it was running (--force)" in forced.stdout, forced
    report = audit(client, keys, since)
    assert report.checked > 0 and report.violations == [], report.violations
    # the old process was not killed: it noticed its lost lease, campaigns again and recorded the new one
    assert old.pid == pid
    await_line(client, keys, lambda now: lease not in now and old_id in now.values())
    assert old.service is not None and old.service.runtime_dir is not None
    rec = lease_file.read(old.service.runtime_dir / lease_file.NAME)
    assert rec is not None and rec.pid == pid and rec.lease == lease_of(client, keys, old_id)


@pytest.mark.slow
def test_release_racing_the_restart_leaves_the_new_process_lease(client, keys, units) -> None:
    """The instance crashed and was restarted before its release ran (the release came late): the
    record is the new process's own, and the release must not revoke it."""
    workers = units(1, release=False)  # the unit without its ExecStopPost: the release is run late, below
    (worker,) = workers.values()
    assert worker.service is not None and worker.service.runtime_dir is not None
    old_lease = lease_of(client, keys, worker.instance_id)
    t0 = time.monotonic()
    worker.signal(signal.SIGKILL)
    worker.service.wait_event("ready", after=worker.service.wait_event("reaped", after=t0).at)
    now = await_line(client, keys, lambda now: len(now) == 2)  # the dead one's key until its TTL, and the new
    new_lease = next(lease for lease in now if lease != old_lease)
    rec = lease_file.read(worker.service.runtime_dir / lease_file.NAME)
    assert rec is not None and rec.lease == new_lease and rec.pid == worker.pid

    late = run_release(worker, **KILLED)
    assert late.returncode == 0 and f"not released: lease {new_lease:x}" in late.stdout, late
    assert client.lease_time_to_live(new_lease).TTL > 0
    assert new_lease in line(client, keys)
    assert lease_file.read(worker.service.runtime_dir / lease_file.NAME) == rec


@pytest.mark.slow
def test_drill_kill_of_a_local_leader_measures_the_release_path(client, keys, units, etcd_endpoints, capsys) -> None:
    from worker.cli import main
    units(2, release=False)  # no ExecStopPost= here: the drill's own release is what is measured
    old_id, _, _ = await_leader(client, keys)
    code = main(["drill", "--mode", "kill", "--json", "--endpoints", ",".join(etcd_endpoints),
                 "--namespace", keys.namespace])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["old_leader"] == old_id, result
    # the drill revoked the dead leader's lease itself, once its pid was gone: well before the TTL
    assert result["handover_ms"] < BEFORE_EXPIRY * 1000, result


def test_release_is_idempotent_and_bounded_by_the_timeouts(client, etcd_endpoints, tmp_path: Path) -> None:
    """A dead process's record: revoked once; then nothing to release; a lease already gone is not
    an error; etcd out of reach fails (exit 1) within the configured timeouts, not the TTL."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    runtime = tmp_path / "run"
    runtime.mkdir()

    def release(endpoint: str) -> tuple[subprocess.CompletedProcess[str], float]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[etcd]\nendpoints = ["{endpoint}"]\ndial_timeout = 0.5\nrequest_timeout = 0.5\n')
        t0 = time.monotonic()
        proc = subprocess.run([str(Path(sys.executable).parent / "protection-worker"), "release", "--config",
                               str(cfg), "--json"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "RUNTIME_DIRECTORY": str(runtime)})
        return proc, time.monotonic() - t0

    def recorded(lease: int) -> None:
        lease_file.write(lease_file.LeaseRecord(lease, "gone", dead.pid, None), runtime / lease_file.NAME)

    lease = client.lease_grant(60).ID
    recorded(lease)
    first, _ = release(etcd_endpoints[0])
    again, _ = release(etcd_endpoints[0])
    assert first.returncode == 0 and json.loads(first.stdout)["outcome"] == "revoked", first
    assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "nothing", again
    assert client.lease_time_to_live(lease).TTL == -1  # gone
    recorded(lease)
    gone, _ = release(etcd_endpoints[0])
    assert gone.returncode == 0 and json.loads(gone.stdout)["outcome"] == "gone", gone
    recorded(client.lease_grant(60).ID)
    unreachable, took = release(f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "expires by its TTL" in unreachable.stderr, unreachable
    assert took < 10  # request timeouts of 0.5 s, retried a bounded number of times: not a hang


@pytest.mark.slow
def test_demo_supervisor_releases_the_killed_leader() -> None:
    proc = subprocess.run([sys.executable, "-m", "worker", "demo", "--clusters", "20"], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    crash = proc.stdout[proc.stdout.index("crash failover"):]
    assert "release (signal, killed KILL): released lease " in crash, proc.stdout
    assert "release (success, exited 0): nothing to release" in proc.stdout, proc.stdout
