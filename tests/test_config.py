"""worker.config: the example file, key/type checks, timing rules, overrides and password sources."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from worker import config as cfgmod
from worker.config import Config, ConfigError, add_arguments, load, parse, read_password, validate

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, session=True, daemon=True)
    return parser.parse_args(list(argv))


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (cfgmod.CONFIG_ENV, cfgmod.PASSWORD_ENV, "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)


def test_example_file_parses_and_validates_to_the_defaults() -> None:
    cfg = validate(cfgmod.read_file(str(EXAMPLE)))
    assert cfg == validate(Config(path=str(EXAMPLE)))
    assert cfg.etcd.endpoints == ["http://127.0.0.1:2379"] and cfg.election.ttl == 10
    assert cfg.http.listen == "127.0.0.1:9464" and cfg.log.format == "json"


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, cls in cfgmod._SECTIONS.items():
        assert f"[{section}]" in text
        for f in cls.__dataclass_fields__:
            assert f"\n{f} = " in text or f"\n#{f} = " in text, f"{section}.{f} missing from the example"


def test_example_uncommented_tls_and_auth_keys_parse(tmp_path: Path) -> None:
    """The commented-out keys are spelt right: uncommented, they parse (files need not exist to parse)."""
    text = EXAMPLE.read_text().replace("\n#ca_cert", "\nca_cert").replace("\n#cert", "\ncert") \
        .replace("\n#key", "\nkey").replace("\n#username", "\nusername").replace("\n#password_file", "\npassword_file")
    cfg = parse(text)
    assert cfg.etcd.username == "protection-worker" and cfg.etcd.ca_cert.endswith("ca.pem")


@pytest.mark.parametrize("text,key", [
    ("[etcd]\nendpoint = ['http://a:1']\n", "etcd.endpoint"),
    ("[election]\nttl = 10\nleader = true\n", "election.leader"),
    ("[metrics]\nport = 1\n", "metrics"),
])
def test_unknown_key_is_named(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: unknown"):
        parse(text)


@pytest.mark.parametrize("text,key", [
    ("[election]\nttl = '10'\n", "election.ttl"),
    ("[election]\nttl = 10.5\n", "election.ttl"),
    ("[election]\nttl = true\n", "election.ttl"),
    ("[etcd]\nendpoints = 'http://a:1'\n", "etcd.endpoints"),
    ("[etcd]\nendpoints = [1]\n", "etcd.endpoints"),
    ("[reconcile]\ninterval = nan\n", "reconcile.interval"),
    ("[etcd]\nrequest_timeout = inf\n", "etcd.request_timeout"),
    ("etcd = 1\n", "etcd"),
])
def test_wrong_type_is_named(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}"):
        parse(text)


def test_int_is_accepted_for_seconds() -> None:
    assert parse("[reconcile]\ninterval = 5\n").reconcile.interval == 5.0


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse("[etcd\n")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config: cannot read"):
        load(args("--config", str(tmp_path / "missing.toml")))


def test_password_in_the_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="etcd.password: a password is never written in the config file"):
        parse("[etcd]\npassword = 'hunter2'\n")


@pytest.mark.parametrize("text,rule", [
    ("[election]\nttl = 1\n", r"election.ttl: must be at least 2"),
    ("[election]\nttl = 3\n", r"etcd.dial_timeout: 2 s .* <= ttl / 3 = 1 s"),
    ("[election]\nttl = 6\n[etcd]\nrequest_timeout = 2.5\n", r"etcd.request_timeout: 2.5 s .* <= ttl / 3 = 2 s"),
    ("[etcd]\ndial_timeout = 0\n", r"etcd.dial_timeout: must be > 0"),
    ("[reconcile]\ninterval = -1\n", r"reconcile.interval: must be > 0"),
])
def test_unsafe_timing_is_refused_with_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        validate(parse(text))


def test_ttl_3_with_half_second_timeouts_is_valid() -> None:
    cfg = validate(parse("[etcd]\ndial_timeout = 0.5\nrequest_timeout = 0.5\n[election]\nttl = 3\n"))
    assert cfg.election.ttl == 3 and cfg.etcd.request_timeout == 0.5


def test_timeouts_of_exactly_ttl_over_3_are_valid() -> None:
    validate(parse("[election]\nttl = 6\n"))  # 2.0 <= 6 / 3


def test_cli_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[etcd]\nendpoints = ['http://a:1']\nnamespace = '/file'\n"
                           "[election]\nttl = 30\ninstance_id = 'file'\n[reconcile]\ninterval = 60\n"
                           "[http]\nlisten = '127.0.0.1:1'\n[log]\nlevel = 'info'\nformat = 'json'\n")
    cfg = load(args("--config", path, "--endpoints", "http://b:2, http://c:3", "--namespace", "/cli/",
                    "--ttl", "12", "--instance-id", "cli", "--interval", "5", "--listen", "",
                    "--log-level", "debug", "--log-format", "console"))
    assert cfg.etcd.endpoints == ["http://b:2", "http://c:3"]
    assert cfg.etcd.namespace == "/cli"  # normalised
    assert (cfg.election.ttl, cfg.election.instance_id, cfg.instance_id) == (12, "cli", "cli")
    assert cfg.reconcile.interval == 5.0 and cfg.http.listen == ""
    assert (cfg.log.level, cfg.log.format, cfg.path) == ("debug", "console", path)


def test_file_values_stay_when_no_flag_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[election]\nttl = 30\n")
    monkeypatch.setenv(cfgmod.CONFIG_ENV, path)  # the file can come from the environment too
    cfg = load(args())
    assert cfg.election.ttl == 30 and cfg.reconcile.interval == 30.0 and cfg.path == path


def test_cli_override_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="election.ttl"):
        load(args("--ttl", "1"))


def test_default_instance_id_is_hostname_pid() -> None:
    assert Config().instance_id.endswith(f"-{os.getpid()}")


# --- etcd auth and TLS ---------------------------------------------------------------------------

def secure(**etcd: str) -> Config:
    lines = "".join(f"{k} = {v!r}\n" for k, v in etcd.items())
    return parse("[etcd]\nendpoints = ['https://etcd-1:2379', 'https://etcd-2:2379']\n" + lines)


def test_username_over_http_is_refused(tmp_path: Path) -> None:
    pw = write(tmp_path, "s3cret\n", "pw")
    for endpoints in ("['http://a:2379']", "['a:2379']", "['https://a:2379', 'http://b:2379']"):
        cfg = parse(f"[etcd]\nendpoints = {endpoints}\nusername = 'u'\npassword_file = {pw!r}\n")
        with pytest.raises(ConfigError, match=r"^etcd\.(username|endpoints)"):
            validate(cfg)


def test_tls_files_with_http_endpoints_are_refused(tmp_path: Path) -> None:
    ca = write(tmp_path, "x", "ca.pem")
    with pytest.raises(ConfigError, match=r"^etcd\.ca_cert"):
        validate(parse(f"[etcd]\nca_cert = {ca!r}\n"))


def test_cert_without_key_and_missing_files_are_refused(tmp_path: Path) -> None:
    ca, cert = write(tmp_path, "x", "ca.pem"), write(tmp_path, "x", "c.pem")
    with pytest.raises(ConfigError, match=r"^etcd\.cert, etcd\.key"):
        validate(secure(ca_cert=ca, cert=cert))
    with pytest.raises(ConfigError, match=r"^etcd\.ca_cert: cannot read"):
        validate(secure(ca_cert=str(tmp_path / "nope.pem")))


def test_bad_endpoint_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^etcd\.endpoints: 'ftp://a:1'"):
        validate(parse("[etcd]\nendpoints = ['ftp://a:1']\n"))


def test_password_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_pw = write(tmp_path, "from-file\n", "pw")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "etcd-password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv(cfgmod.PASSWORD_ENV, "from-env")

    cfg = validate(secure(username="u", password_file=file_pw))
    assert read_password(cfg.etcd) == "from-file"                   # 1. password_file (newline stripped)
    cfg = validate(secure(username="u"))
    assert read_password(cfg.etcd) == "from-credential"             # 2. systemd credential
    (creds / "etcd-password").unlink()
    assert read_password(cfg.etcd) == "from-env"                    # 3. environment
    monkeypatch.delenv(cfg_env := cfgmod.PASSWORD_ENV)
    with pytest.raises(ConfigError, match=rf"etcd.username: no password.*{cfg_env}"):
        read_password(cfg.etcd)


def test_no_username_means_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cfgmod.PASSWORD_ENV, "from-env")
    assert read_password(Config().etcd) is None


def test_password_file_needs_username_and_must_not_be_empty(tmp_path: Path) -> None:
    pw = write(tmp_path, "x", "pw")
    with pytest.raises(ConfigError, match="etcd.password_file: set etcd.username"):
        validate(secure(password_file=pw))
    empty = write(tmp_path, "\n", "empty")
    with pytest.raises(ConfigError, match="etcd.password_file: .* is empty"):
        read_password(validate(secure(username="u", password_file=empty)).etcd)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_password_file_is_refused(tmp_path: Path) -> None:
    pw = write(tmp_path, "x", "pw")
    os.chmod(pw, 0)
    try:
        with pytest.raises(ConfigError, match="etcd.password_file: cannot read"):
            validate(secure(username="u", password_file=pw))
    finally:
        os.chmod(pw, stat.S_IRUSR | stat.S_IWUSR)


def test_password_never_in_config_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cfgmod.PASSWORD_ENV, "hunter2")
    cfg = validate(secure(username="u"))
    assert "hunter2" not in repr(cfg)


@pytest.mark.parametrize("listen,expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("[::1]:0", ("::1", 0)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert cfgmod.parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "host:", "host:port", "h:70000"])
def test_bad_listen_is_named(listen: str) -> None:
    with pytest.raises(ConfigError, match="http.listen"):
        validate(parse(f"[http]\nlisten = {listen!r}\n"))


@pytest.mark.parametrize("text,key", [
    ("[log]\nlevel = 'verbose'\n", "log.level"), ("[log]\nformat = 'xml'\n", "log.format"),
    ("[etcd]\nnamespace = 'relative'\n", "etcd.namespace"), ("[etcd]\nnamespace = '/'\n", "etcd.namespace"),
    ("[etcd]\nendpoints = []\n", "etcd.endpoints"),
])
def test_other_bad_values_are_named(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}"):
        validate(parse(text))
