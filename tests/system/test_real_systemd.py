"""The shipped unit under a real systemd (252 here), booted as PID 1 of a namespace of its own.

Three instances of ``systemd/protection-worker@.service``, the shipped file unchanged but for an
operator's drop-in (the venv's script in ``ExecStart=``/``ExecStopPost=``, and
``DefaultDependencies=no`` for the minimal boot), with the default election TTL (10 s, above the
unit's ``WatchdogSec=6s``), on one etcd. What systemd itself does is read back from systemd
(``systemctl show``, the journal); who leads, from etcd's election keys. Events are awaited, never
slept on. The tier skips only where systemd cannot run (it says why); under ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.system.helpers import await_leader
from tests.system.real_systemd import RealSystemd, SystemdWorkers, service_venv, unavailable
from worker.etcd import connect, kv
from worker.demo.embedded_etcd import EtcdCluster
from worker.keys import Keys

WHY = unavailable()
if WHY and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI=true: the real-systemd tier must run, but systemd cannot: {WHY}")
pytestmark = [pytest.mark.skipif(WHY is not None, reason=f"no real systemd here: {WHY}"), pytest.mark.slow]

NAMES = ("1", "2", "3")


@pytest.fixture(scope="module")
def systemd() -> Iterator[RealSystemd]:
    with RealSystemd() as booted:
        yield booted


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return service_venv()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(f"/real-systemd-{os.getpid()}")


@pytest.fixture(scope="module")
def client(etcd: EtcdCluster):
    c = connect(etcd.endpoints)
    yield c
    c.close()


@pytest.fixture(scope="module")
def workers(systemd: RealSystemd, bin_dir: Path, etcd: EtcdCluster, keys: Keys) -> Iterator[SystemdWorkers]:
    group = SystemdWorkers(systemd, bin_dir, etcd.endpoints, keys.namespace)
    group.start(*NAMES)
    yield group
    group.stop_all()


def name_of(instance_id: str) -> str:
    return instance_id.removeprefix("pw-")


def lease_of(client, keys: Keys, instance_id: str) -> int | None:
    import json
    resp = client.range(kv.range_request(keys.election + "/", prefix=True))
    for item in resp.kvs:
        if json.loads(item.value)["instance_id"] == instance_id:
            return item.lease
    return None


def await_running(workers: SystemdWorkers, name: str, timeout: float = 30.0, restarts: int | None = None) -> dict:
    props = ("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts", "Result")
    seen: dict[str, str] = {}

    def ready() -> bool:
        seen.update(workers.show(name, *props))
        return (seen.get("ActiveState") == "active" and seen.get("SubState") == "running"
                and bool(seen.get("StatusText")) and (restarts is None or int(seen.get("NRestarts", 0)) >= restarts))

    assert workers.systemd.await_(ready, timeout, 0.05), (name, seen, workers.journal(name)[-2000:])
    return seen


def await_journal(workers: SystemdWorkers, name: str, *texts: str, timeout: float = 15.0) -> str:
    """The unit's journal once it holds every one of ``texts`` (the journal lags the event a little)."""
    seen = [""]

    def has() -> bool:
        seen[0] = workers.journal(name)
        return all(t in seen[0] for t in texts)

    assert workers.systemd.await_(has, timeout, 0.1), (texts, _digest(seen[0]))
    return seen[0]


def _digest(journal: str) -> str:
    """systemd's lines and the last few of the worker's, for an assertion message."""
    lines = journal.splitlines()
    return "\n".join([line for line in lines if not line.startswith("{")][-40:] + lines[-8:])


def test_active_running_after_ready_with_status(workers, client, keys) -> None:
    """Type=notify: `active (running)` only after READY=1, and STATUS= shows the role."""
    statuses = {name: await_running(workers, name)["StatusText"] for name in NAMES}
    leader, _, _ = await_leader(client, keys, timeout=30)
    assert leader in {workers.instance_id(n) for n in NAMES}
    assert workers.systemd.await_(
        lambda: "lead" in workers.show(name_of(leader), "StatusText")["StatusText"].lower(), 10), statuses
    for name in NAMES:
        text = workers.systemd.systemctl("status", workers.unit(name), "--no-pager", check=False).stdout
        assert "active (running)" in text, text


def test_reload_is_sighup_to_the_same_pid(workers) -> None:
    before = workers.show("2", "MainPID")["MainPID"]
    workers.systemd.systemctl("reload", workers.unit("2"))
    await_journal(workers, "2", "reload")
    after = await_running(workers, "2")
    assert after["MainPID"] == before


def test_sigkilled_leader_is_released_replaced_and_restarted(workers, client, keys) -> None:
    leader, _, _ = await_leader(client, keys, timeout=30)
    name = name_of(leader)
    restarts = int(workers.show(name, "NRestarts")["NRestarts"])
    lease = lease_of(client, keys, leader)
    others = {workers.instance_id(n): lease_of(client, keys, workers.instance_id(n)) for n in NAMES if n != name}
    pid = workers.host_pid(name)
    assert pid is not None and lease is not None and all(others.values())
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    successor, _, seen = await_leader(client, keys, other_than=leader, timeout=30)
    assert seen - t0 < workers.ttl / 2, "the takeover waited for the TTL: the release did not run"
    assert client.lease_time_to_live(lease).TTL == -1  # the dead process's lease: revoked
    # the other instances on this host (their own runtime directories): their leases untouched
    assert {i: lease_of(client, keys, i) for i in others} == others
    assert all(client.lease_time_to_live(other).TTL > 0 for other in others.values())
    await_journal(workers, name, f"released lease {lease:x} of {leader}", "exit_code=killed exit_status=KILL")
    await_running(workers, name, restarts=restarts + 1)  # systemd restarted it (Restart=on-failure)


def test_sigstopped_leader_is_killed_by_the_watchdog_with_sigabrt(workers, client, keys) -> None:
    leader, _, _ = await_leader(client, keys, timeout=30)
    name = name_of(leader)
    await_running(workers, name)
    pid = workers.host_pid(name)
    assert pid is not None
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    successor, _, seen = await_leader(client, keys, other_than=leader, timeout=30)
    hung = seen - t0
    # WatchdogSec=6s, then SIGABRT and SIGCONT: the stopped process dies of the SIGABRT at once
    # (no SIGKILL after TimeoutAbortSec), its release runs, the next in line leads
    assert hung < workers.ttl, f"replaced {hung:.1f} s after the SIGSTOP: the TTL's doing, not the watchdog's"
    # systemd's own messages about the unit are in its journal too
    journal = await_journal(workers, name, "Watchdog timeout", "with signal SIGABRT",
                            "code=killed, status=6/ABRT", "Failed with result 'watchdog'",
                            "released lease", "exit_code=killed exit_status=ABRT")
    last = journal[journal.rindex("Watchdog timeout"):]
    assert "SIGKILL" not in last, last  # SIGCONT followed the SIGABRT: no TimeoutAbortSec kill
    await_running(workers, name)


def test_systemctl_stop_hands_over_exits_0_and_leaves_nothing_to_release(workers, client, keys) -> None:
    leader, _, _ = await_leader(client, keys, timeout=30)
    name = name_of(leader)
    await_running(workers, name)
    t0 = time.monotonic()
    workers.systemd.systemctl("stop", workers.unit(name))
    successor, _, seen = await_leader(client, keys, other_than=leader, timeout=30)
    assert seen - t0 < workers.ttl / 2
    info = workers.show(name, "ExecMainStatus", "ExecMainCode", "Result", "ActiveState")
    assert info["ActiveState"] == "inactive" and info["Result"] == "success", info
    assert info["ExecMainStatus"] == "0", info
    await_journal(workers, name, "nothing to release")
    workers.start(name)
    await_running(workers, name)


def test_two_instances_sharing_the_runtime_directory_never_release_each_other(
        systemd, bin_dir, etcd, client) -> None:
    """The plain unit installed twice on one host (same RuntimeDirectory=protection-worker): killing
    one runs its release, which must leave the other's lease alone (the other's pid is invisible
    under ProtectProc=invisible; its record is another invocation's)."""
    keys = Keys(f"/shared-dir-{os.getpid()}")
    pair = {}
    for name in ("pw-a.service", "pw-b.service"):
        group = SystemdWorkers(systemd, bin_dir, etcd.endpoints, keys.namespace,
                               unit_file="protection-worker.service")
        pair[name] = group
    # the plain unit names one config path: each copy gets a drop-in of its own for it
    text = (Path(__file__).resolve().parents[2] / "systemd" / "protection-worker.service").read_text()
    from tests.system.real_systemd import operator_dropin
    for name, group in pair.items():
        group.configure(name, config_name=name)
        systemd.install(name, text, {name: operator_dropin(bin_dir, f"/etc/protection-worker/{name}.toml")})
    try:
        systemd.systemctl("start", "pw-a.service")
        await_running(pair["pw-a.service"], "pw-a.service")
        systemd.systemctl("start", "pw-b.service")
        await_running(pair["pw-b.service"], "pw-b.service")
        ids = {n: pair[n].instance_id(n) for n in pair}
        assert systemd.await_(lambda: all(lease_of(client, keys, i) for i in ids.values()), 20)
        # pw-b started last: the shared lease file is its record now
        victim, other = "pw-a.service", "pw-b.service"
        other_lease = lease_of(client, keys, ids[other])
        pid = pair[victim].host_pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert systemd.await_(lambda: "protection-worker release:" in pair[victim].journal(victim), 20), \
            pair[victim].journal(victim)[-2000:]
        journal = pair[victim].journal(victim)
        print(*[line for line in journal.splitlines() if line.startswith("protection-worker release:")], sep="\n")
        assert "not released" in journal and ids[other] in journal, journal[-2000:]
        assert client.lease_time_to_live(other_lease).TTL > 0, "the live instance's lease was revoked"
        assert lease_of(client, keys, ids[other]) == other_lease
        assert pair[other].show(other, "NRestarts")["NRestarts"] == "0"
    finally:
        systemd.systemctl("stop", "pw-a.service", "pw-b.service", check=False)


def test_template_instances_have_runtime_directories_of_their_own(workers, systemd) -> None:
    dirs = {name: workers.show(name, "RuntimeDirectory")["RuntimeDirectory"] for name in NAMES}
    assert dirs == {name: f"protection-worker-{name}" for name in NAMES}


def test_load_credential_for_an_auth_enabled_etcd_and_release_as_the_dynamic_user(
        systemd, bin_dir, tmp_path_factory) -> None:
    """Mutual TLS, auth on, the least-privilege role: the password reaches the DynamicUser only
    through LoadCredential= (root:root 0600 on the host), the client key likewise; the instance
    leads, and a SIGKILL's ExecStopPost= release (same credential) revokes its lease."""
    import trustme

    from tests.security.conftest import AUTH_ARGS, PASSWORD, ROOT_PASSWORD, enable_auth, least_privilege_user
    from worker.demo.embedded_etcd import TLSFiles

    base = tmp_path_factory.mktemp("sd-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("worker@protection-worker.test", common_name="worker")
    files = {"ca.pem": ca.cert_pem, "server.pem": server.cert_chain_pems[0], "server-key.pem": server.private_key_pem,
             "client.pem": client_cert.cert_chain_pems[0], "client-key.pem": client_cert.private_key_pem}
    for name, blob in files.items():
        blob.write_to_path(str(base / name))

    class _Certs:  # what enable_auth needs
        ca, client_cert, client_key = str(base / "ca.pem"), str(base / "client.pem"), str(base / "client-key.pem")

    keys = Keys(f"/sd-auth-{os.getpid()}")
    user = "pw-systemd"
    with EtcdCluster(1, tls=TLSFiles(str(base / "server.pem"), str(base / "server-key.pem"), str(base / "ca.pem")),
                     extra_args=AUTH_ARGS) as etcd:
        enable_auth(etcd.endpoints[0], _Certs)
        admin = connect(etcd.endpoints, ca_cert=_Certs.ca, cert=_Certs.client_cert, key=_Certs.client_key,
                        username="root", password=ROOT_PASSWORD, dial_timeout=5.0)
        try:
            least_privilege_user(admin, keys.namespace, user)
            # the operator's files: certificates readable (0644), the secrets root-only (0600)
            for name in ("ca.pem", "client.pem"):
                dest = systemd.etc(f"protection-worker/tls/{name}")
                dest.write_bytes((base / name).read_bytes())
                dest.chmod(0o644)
                dest.parent.chmod(0o755)
            for name, data in (("auth.etcd-password", PASSWORD + "\n"),
                               ("tls/client-key.pem", (base / "client-key.pem").read_text())):
                dest = systemd.etc(f"protection-worker/{name}")
                dest.write_text(data)
                dest.chmod(0o600)
            group = SystemdWorkers(systemd, bin_dir, etcd.endpoints, keys.namespace, etcd_settings={
                "ca_cert": "/etc/protection-worker/tls/ca.pem", "cert": "/etc/protection-worker/tls/client.pem",
                "key": "/run/credentials/protection-worker@auth.service/etcd-key", "username": user})
            # the unit's commented LoadCredential= line, uncommented by the operator (one more drop-in)
            systemd.etc("systemd/system/protection-worker@auth.service.d/credentials.conf").write_text(
                "[Service]\nLoadCredential=etcd-password:/etc/protection-worker/%i.etcd-password\n"
                "LoadCredential=etcd-key:/etc/protection-worker/tls/client-key.pem\n")
            systemd.systemctl("daemon-reload")
            group.start("auth")
            try:
                await_running(group, "auth")
                leader, _, _ = await_leader(admin, keys, timeout=30)
                assert leader == group.instance_id("auth")
                lease = lease_of(admin, keys, leader)
                pid = group.host_pid("auth")
                assert pid is not None and lease is not None
                os.kill(pid, signal.SIGKILL)
                await_journal(group, "auth", f"released lease {lease:x} of {leader}")
                assert admin.lease_time_to_live(lease).TTL == -1
                journal = group.journal("auth")
                assert PASSWORD not in journal and "permission denied" not in journal.lower(), journal[-2000:]
                await_running(group, "auth", restarts=1)
            finally:
                group.stop_all()
        finally:
            admin.close()
