"""A production-like etcd for the security tests: TLS with client certificates (mutual TLS), auth
enabled, simple tokens that expire after ``TOKEN_TTL`` idle seconds; certificates from trustme.

One member serves the whole directory (starting etcd and enabling auth costs about a second);
each test isolates itself with its own namespace, user and role. Every secret used here is
distinctive, so a test can grep everything the worker printed or stored for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

from tests.etcd.conftest import Certs, certs  # noqa: F401 - the trustme CA and certificates (a fixture)
from worker.etcd import EtcdClient, connect, kv
from worker.demo.embedded_etcd import EtcdCluster
from worker.ops.etcd_role import RolePlan, apply as apply_role
from worker.demo.instances import WorkerProcess

#: the worker's password in every test: distinctive, so that "it leaked" is one grep
PASSWORD = "Zq7-leakcanary-pw-4c9e1b"
ROOT_PASSWORD = "Rt3-leakcanary-root-8d2f0a"
#: simple-token TTL: etcd forgets a token unused for this long (the least it accepts is 1)
TOKEN_TTL = 2
AUTH_ARGS = ["--auth-token", "simple", "--auth-token-ttl", str(TOKEN_TTL)]


@dataclass
class SecureEtcd:
    cluster: EtcdCluster
    certs: Certs
    _clients: list[EtcdClient] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def client(self, user: str = "root", password: str | None = None) -> EtcdClient:
        """A client with the test client certificate (mutual TLS) and a password login."""
        c = connect(self.endpoints, ca_cert=self.certs.ca, cert=self.certs.client_cert, key=self.certs.client_key,
                    username=user, password=password or (ROOT_PASSWORD if user == "root" else PASSWORD),
                    dial_timeout=5.0, request_timeout=5.0)
        self._clients.append(c)
        return c

    def admin(self) -> EtcdClient:
        return self.client("root")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of etcd's own Prometheus series ``name`` whose labels include ``labels``."""
        member = self.cluster.members[0]
        with urllib.request.urlopen(member.endpoint + "/metrics", timeout=5, context=member._context()) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
            if m is None:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def denied_requests(self) -> float:
        """Unary requests etcd refused with PermissionDenied so far (all users)."""
        return self.metric("grpc_server_handled_total", grpc_code="PermissionDenied")

    def close(self) -> None:
        for c in self._clients:
            c.close()


def enable_auth(endpoint: str, certs: Certs) -> None:
    """root (role root) with ``ROOT_PASSWORD``, then auth enable."""
    c = connect([endpoint], ca_cert=certs.ca, cert=certs.client_cert, key=certs.client_key, dial_timeout=5.0)
    try:
        stub = c.authstub
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD), 5)
        stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), 5)
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), 5)
        stub.AuthEnable(etcdrpc.AuthEnableRequest(), 5)
    finally:
        c.close()


@pytest.fixture(scope="session")
def secure_etcd(certs: Certs) -> Iterator[SecureEtcd]:  # noqa: F811
    cluster = EtcdCluster(1, tls=certs.server_tls(mutual=True), extra_args=AUTH_ARGS)
    cluster.start()
    try:
        enable_auth(cluster.endpoints[0], certs)
        etcd = SecureEtcd(cluster, certs)
        yield etcd
        etcd.close()
    finally:
        cluster.close()


@pytest.fixture
def ns() -> str:
    return f"/sec-{uuid.uuid4().hex[:10]}"


def auth_call(admin: EtcdClient, method: str, request: Any) -> Any:
    """One Auth API request through the client (so an expired token is renewed, as for any request)."""
    call = getattr(admin.authstub, method)
    return admin._send(method, lambda: call(request, 5, metadata=admin.metadata), idempotent=False)


def grant(admin: EtcdClient, role: str, prefix: str, perm: str = "readwrite") -> None:
    """Grant ``perm`` (read, write, readwrite) on ``prefix`` (a prefix range) to ``role``."""
    kind = {"read": auth_pb2.Permission.READ, "write": auth_pb2.Permission.WRITE,
            "readwrite": auth_pb2.Permission.READWRITE}[perm]
    permission = auth_pb2.Permission(permType=kind, key=prefix.encode(), range_end=kv.prefix_end(prefix))
    auth_call(admin, "RoleGrantPermission", etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=permission))


def make_user(admin: EtcdClient, user: str, grants: list[tuple[str, str]]) -> None:
    """User ``user`` (password ``PASSWORD``) with its own role holding ``grants`` [(prefix, perm)]."""
    auth_call(admin, "UserAdd", etcdrpc.AuthUserAddRequest(name=user, password=PASSWORD))
    auth_call(admin, "RoleAdd", etcdrpc.AuthRoleAddRequest(name=user))
    for prefix, perm in grants:
        grant(admin, user, prefix, perm)
    auth_call(admin, "UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=user))


def least_privilege_user(admin: EtcdClient, namespace: str, user: str) -> None:
    """What ``protection-worker etcd-role --apply`` makes: readwrite on ``{ns}/`` only."""
    apply_role(admin, RolePlan(namespace, user, user), PASSWORD, say=lambda _line: None)


@dataclass
class Credentials:
    """Where a worker finds its password: "file" (etcd.password_file), "env"
    ($PROTECTION_WORKER_ETCD_PASSWORD) or "credentials" ($CREDENTIALS_DIRECTORY/etcd-password)."""

    settings: dict[str, str]
    env: dict[str, str]


def credentials(tmp: Path, etcd: SecureEtcd, user: str, source: str = "file", mutual: bool = True) -> Credentials:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = {"ca_cert": etcd.certs.ca, "username": user}
    if mutual:
        settings.update(cert=etcd.certs.client_cert, key=etcd.certs.client_key)
    env: dict[str, str] = {}
    if source == "file":
        path = tmp / f"{user}.password"
        path.write_text(PASSWORD + "\n")
        path.chmod(0o600)
        settings["password_file"] = str(path)
    elif source == "env":
        env["PROTECTION_WORKER_ETCD_PASSWORD"] = PASSWORD
    elif source == "credentials":
        cred_dir = tmp / f"credentials-{user}"
        cred_dir.mkdir(exist_ok=True)
        (cred_dir / "etcd-password").write_text(PASSWORD + "\n")
        env["CREDENTIALS_DIRECTORY"] = str(cred_dir)
    else:
        raise ValueError(source)
    return Credentials(settings, env)


def write_config(path: Path, etcd: SecureEtcd, namespace: str, creds: Credentials, *, ttl: int = 3,
                 timeout: float = 1.0) -> Path:
    lines = ["[etcd]", f"endpoints = [{', '.join(repr(e) for e in etcd.endpoints)}]".replace("'", '"'),
             f'namespace = "{namespace}"', f"dial_timeout = {timeout}", f"request_timeout = {timeout}"]
    lines += [f'{k} = "{v}"' for k, v in creds.settings.items()]
    lines += ["[election]", f"ttl = {ttl}", "[http]", 'listen = ""', "[log]", 'format = "json"']
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``protection-worker ARGS`` as a real process; its stdout and stderr are captured."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PROTECTION_WORKER_ETCD_PASSWORD",
                                                                 "CREDENTIALS_DIRECTORY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


def worker_process(instance_id: str, etcd: SecureEtcd, namespace: str, log_dir: Path, creds: Credentials,
                   **kw: Any) -> WorkerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    kw.setdefault("request_timeout", 1.0)
    return WorkerProcess(instance_id, etcd.endpoints, namespace, log_dir, etcd_settings=creds.settings,
                         env=creds.env, **kw)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts: all stopped afterwards (SIGCONT, SIGTERM, then SIGKILL)."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.terminate(timeout=5)
