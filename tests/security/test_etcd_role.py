"""``protection-worker etcd-role``: the least-privilege user and role, printed for etcdctl or
applied through the Auth API, against a real etcd with TLS and auth."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

from worker.etcd import PermissionDeniedError, kv
from worker.demo.embedded_etcd import find_binary
from worker.keys import Keys

from .conftest import PASSWORD, ROOT_PASSWORD, auth_call, cli, credentials, write_config


def _admin_config(tmp_path, etcd, ns):
    """An operator's config for etcd-role: endpoints and TLS files, no worker credentials."""
    path = tmp_path / "admin.toml"
    path.write_text(f'[etcd]\nendpoints = ["{etcd.endpoints[0]}"]\nnamespace = "{ns}"\n'
                    f'ca_cert = "{etcd.certs.ca}"\ncert = "{etcd.certs.client_cert}"\nkey = "{etcd.certs.client_key}"\n')
    return path


def _role_permissions(admin, role):
    resp = auth_call(admin, "RoleGet", etcdrpc.AuthRoleGetRequest(role=role))
    return [(auth_pb2.Permission.Type.Name(p.permType), p.key.decode(), p.range_end) for p in resp.perm]


def _user_roles(admin, user):
    return list(auth_call(admin, "UserGet", etcdrpc.AuthUserGetRequest(name=user)).roles)


@pytest.mark.parametrize("given", ["/prod/protection", "/prod/protection/"])
def test_print_names_the_prefix_with_its_trailing_slash(given):
    result = cli("etcd-role", "--print", "--namespace", given, "--endpoints", "https://etcd-1:2379")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, lines
    assert any(line.endswith("role grant-permission protection-worker --prefix=true readwrite /prod/protection/")
               for line in lines), lines
    assert "user add protection-worker" in lines[0] and "role add protection-worker" in lines[1]
    assert lines[3].endswith("user grant-role protection-worker protection-worker")
    assert all(line.startswith("etcdctl --endpoints=https://etcd-1:2379 ") for line in lines)
    # what etcd 3.5.28+ asks beyond readwrite, and why the role still suffices (on stderr)
    notes = result.stderr
    assert "3.5.28" in notes and "LeaseKeepAlive" in notes and "/prod/protection/" in notes
    assert "Maintenance.Status" in notes and "GET /version" in notes


def test_printed_commands_run_as_is_with_etcdctl(secure_etcd, ns, tmp_path):
    """The printed lines are real etcdctl commands: run them (adding only the passwords an operator
    would type at the prompts) and the worker's user can do a pass, and nothing outside ``{ns}/``."""
    user = f"printed-{ns[5:]}"
    config = _admin_config(tmp_path, secure_etcd, ns)
    result = cli("etcd-role", "--print", "--config", str(config), "--user", user, "--role", user)
    assert result.returncode == 0, result.stderr
    etcdctl = find_binary("etcdctl")
    for line in result.stdout.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "etcdctl" and f"--cert={secure_etcd.certs.client_cert}" in argv
        argv[0] = etcdctl
        argv.insert(argv.index("--user=root") + 1, f"--password={ROOT_PASSWORD}")  # the prompt's answer
        if "--interactive" in argv:
            argv[argv.index("--interactive")] = "--interactive=false"
            argv.append(f"--new-user-password={PASSWORD}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
    admin = secure_etcd.admin()
    assert _role_permissions(admin, user) == [("READWRITE", ns + "/", kv.prefix_end(ns + "/"))]
    assert _user_roles(admin, user) == [user]
    _the_user_runs_a_pass(secure_etcd, ns, user, tmp_path)


def test_apply_is_idempotent_and_its_user_runs_the_worker(secure_etcd, ns, tmp_path):
    user = f"applied-{ns[5:]}"
    config = _admin_config(tmp_path, secure_etcd, ns)
    (tmp_path / "root.pw").write_text(ROOT_PASSWORD + "\n")
    (tmp_path / "worker.pw").write_text(PASSWORD + "\n")
    argv = ["etcd-role", "--apply", "--config", str(config), "--user", user, "--role", user,
            "--admin-password-file", str(tmp_path / "root.pw"), "--password-file", str(tmp_path / "worker.pw")]
    first = cli(*argv)
    assert first.returncode == 0, first.stderr
    assert f"user {user}: created" in first.stdout
    assert f"role {user}: readwrite on prefix {ns}/" in first.stdout
    second = cli(*argv)
    assert second.returncode == 0, second.stderr
    assert f"user {user}: already there" in second.stdout and f"role {user}: already there" in second.stdout
    for out in (first, second):
        assert PASSWORD not in out.stdout + out.stderr and ROOT_PASSWORD not in out.stdout + out.stderr
    admin = secure_etcd.admin()
    # the second run changed nothing: still one grant, on the namespace prefix alone
    assert _role_permissions(admin, user) == [("READWRITE", ns + "/", kv.prefix_end(ns + "/"))]
    assert _user_roles(admin, user) == [user]
    _the_user_runs_a_pass(secure_etcd, ns, user, tmp_path)


def _the_user_runs_a_pass(etcd, ns, user, tmp_path):
    client = etcd.client(user)
    keys = Keys(ns)
    client.put(keys.cluster("c-1"), json.dumps({"allocated": True, "dr_site": "site-b"}))
    client.put(keys.dr_key("c-1"), json.dumps({"replication": "in_sync"}))
    with pytest.raises(PermissionDeniedError, match=r"permission denied on /elsewhere/k"):
        client.put("/elsewhere/k", "v")  # least privilege: nothing outside the namespace
    creds = credentials(tmp_path, etcd, user, "env")
    config = write_config(tmp_path / f"{user}.toml", etcd, ns, creds)
    done = cli("reconcile", "--once", "--json", "--config", str(config), env=creds.env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] == 1
    record = json.loads(client.get(keys.protection_key("c-1"))[0])
    assert record["state"] == "protected"
