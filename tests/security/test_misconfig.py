"""Unsafe or broken security settings stop ``protection-worker run`` at start: exit 2 and one line
naming the key, before any connection (the endpoints here lead nowhere: nothing may be dialled)."""

from __future__ import annotations

import time

import pytest

from .conftest import PASSWORD, cli


def _run(tmp_path, etcd_lines: list[str], env: dict[str, str] | None = None):
    config = tmp_path / "worker.toml"
    config.write_text("[etcd]\n" + "\n".join(etcd_lines) + '\n[http]\nlisten = ""\n')
    started = time.monotonic()
    result = cli("run", "--config", str(config), env=env, timeout=30)
    return result, time.monotonic() - started


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_a_password_over_plain_http_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    result, took = _run(tmp_path, ['endpoints = ["http://127.0.0.1:1"]', 'username = "w"',
                                   f'password_file = "{pw}"'])
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("protection-worker: config error: etcd.username:") and "http://" in line
    assert took < 10


def test_a_password_from_the_environment_over_plain_http_is_refused(tmp_path):
    result, _ = _run(tmp_path, ['endpoints = ["http://127.0.0.1:1"]', 'username = "w"'],
                     env={"PROTECTION_WORKER_ETCD_PASSWORD": PASSWORD})
    assert result.returncode == 2
    assert "etcd auth needs TLS" in _one_line(result)


def test_a_client_certificate_without_a_ca_is_refused(tmp_path, certs):
    result, _ = _run(tmp_path, ['endpoints = ["https://127.0.0.1:1"]', f'cert = "{certs.client_cert}"',
                                f'key = "{certs.client_key}"'])
    assert result.returncode == 2
    assert _one_line(result) == ("protection-worker: config error: etcd.cert: a client certificate without "
                                 "etcd.ca_cert is refused (it would not be verified, or silently go plaintext)")


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_an_unreadable_password_file_is_refused(tmp_path, certs, what):
    # (a directory: unreadable as a file even for root, who may read any mode-000 file)
    path = tmp_path / "nope" if what == "missing" else tmp_path
    result, _ = _run(tmp_path, ['endpoints = ["https://127.0.0.1:1"]', f'ca_cert = "{certs.ca}"',
                                'username = "w"', f'password_file = "{path}"'])
    assert result.returncode == 2
    line = _one_line(result)
    assert "config error: etcd.password_file: " in line and str(path) in line


def test_an_unreadable_systemd_credential_is_refused(tmp_path, certs):
    creds = tmp_path / "creds"
    (creds / "etcd-password").mkdir(parents=True)  # present but not a readable file
    result, _ = _run(tmp_path, ['endpoints = ["https://127.0.0.1:1"]', f'ca_cert = "{certs.ca}"', 'username = "w"'],
                     env={"CREDENTIALS_DIRECTORY": str(creds), "PROTECTION_WORKER_ETCD_PASSWORD": PASSWORD})
    assert result.returncode == 2
    assert "config error: $CREDENTIALS_DIRECTORY/etcd-password: cannot read" in _one_line(result)


def test_a_username_without_any_password_source_is_refused(tmp_path, certs):
    result, _ = _run(tmp_path, ['endpoints = ["https://127.0.0.1:1"]', f'ca_cert = "{certs.ca}"', 'username = "w"'])
    assert result.returncode == 2
    assert "etcd.username: no password" in _one_line(result)


def test_a_password_in_the_config_file_is_refused_and_not_echoed(tmp_path, certs):
    result, _ = _run(tmp_path, ['endpoints = ["https://127.0.0.1:1"]', f'ca_cert = "{certs.ca}"', 'username = "w"',
                                f'password = "{PASSWORD}"'])
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("protection-worker: config error: etcd.password: a password is never written")
    assert PASSWORD not in result.stderr + result.stdout


def test_a_wrong_ca_is_one_clear_line_not_a_screen_of_grpc_logs(secure_etcd, tmp_path):
    """gRPC's C core would print every failed handshake to stderr; the operator gets one line."""
    config = tmp_path / "wrong-ca.toml"
    config.write_text(f'[etcd]\nendpoints = ["{secure_etcd.endpoints[0]}"]\nca_cert = "{secure_etcd.certs.other_cert}"\n'
                      f'cert = "{secure_etcd.certs.client_cert}"\nkey = "{secure_etcd.certs.client_key}"\n'
                      'username = "w"\n')
    result = cli("status", "--config", str(config), env={"PROTECTION_WORKER_ETCD_PASSWORD": PASSWORD})
    assert result.returncode == 1
    assert "etcd's server certificate is not signed by etcd.ca_cert" in _one_line(result)
