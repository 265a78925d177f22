"""Configuration: a TOML file, overridden by command-line flags, checked as a whole at start.

Every mistake is a ``ConfigError`` naming the key (the CLI exits 2 with that one line), including
timing that cannot be safe: the leader stops writing at TTL minus a margin after its last confirmed
keepalive, so no single request may outlast a third of the TTL. A password never comes from the
TOML file itself: ``password_file``, systemd's ``$CREDENTIALS_DIRECTORY/etcd-password``, or
``$PROTECTION_WORKER_ETCD_PASSWORD``, in that order.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from worker.errors import ConfigError
from worker.etcd.endpoints import parse_etcd_settings

PASSWORD_ENV = "PROTECTION_WORKER_ETCD_PASSWORD"
CONFIG_ENV = "PROTECTION_WORKER_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    namespace: str = "/protection-worker"
    dial_timeout: float = 2.0
    request_timeout: float = 2.0
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class ElectionConfig:
    ttl: int = 10
    instance_id: str = ""


@dataclass(frozen=True)
class ReconcileConfig:
    interval: float = 30.0


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class Config:
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    election: ElectionConfig = field(default_factory=ElectionConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    #: the file it was read from (None: defaults and flags only); SIGHUP re-reads it
    path: str | None = None

    @property
    def instance_id(self) -> str:
        return self.election.instance_id or f"{socket.gethostname()}-{os.getpid()}"


_SECTIONS: dict[str, type] = {"etcd": EtcdConfig, "election": ElectionConfig, "reconcile": ReconcileConfig,
                              "http": HttpConfig, "log": LogConfig}
# the types a TOML value may have for each field (int is accepted where a float is expected)
_TYPES: dict[str, tuple[type, ...]] = {
    "endpoints": (list,), "namespace": (str,), "dial_timeout": (int, float), "request_timeout": (int, float),
    "ca_cert": (str,), "cert": (str,), "key": (str,), "username": (str,), "password_file": (str,),
    "ttl": (int,), "instance_id": (str,), "interval": (int, float), "listen": (str,), "level": (str,),
    "format": (str,),
}


def _section(name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a table")
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if name == "etcd" and key == "password":
            raise ConfigError("etcd.password: a password is never written in the config file; use "
                              f"etcd.password_file, systemd LoadCredential=etcd-password or ${PASSWORD_ENV}")
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key")
        types = _TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{name}.{key}: expected {want}, got {type(value).__name__} {value!r}")
        if key == "endpoints" and not all(isinstance(e, str) for e in value):  # type: ignore[attr-defined]
            raise ConfigError("etcd.endpoints: expected a list of strings")
        if isinstance(value, float) and not math.isfinite(value):  # TOML allows inf and nan
            raise ConfigError(f"{name}.{key}: must be a finite number, got {value!r}")
        values[key] = float(value) if types == (int, float) else value  # type: ignore[arg-type]
    return cls(**values)


def parse(text: str, path: str | None = None) -> Config:
    """A ``Config`` from TOML text (unchecked; see ``validate``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path or 'config'}: not valid TOML: {exc}") from exc
    sections = {}
    for name, raw in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{name}: unknown section")
        sections[name] = _section(name, raw)
    return Config(path=path, **sections)


def read_file(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path!r}: {exc.strerror}") from exc
    return parse(text, path)


def validate(cfg: Config) -> Config:
    """Check the whole configuration; returns it with the namespace normalised."""
    e, el = cfg.etcd, cfg.election
    if not e.endpoints:
        raise ConfigError("etcd.endpoints: at least one endpoint is required")
    ns = e.namespace.rstrip("/")
    if not ns.startswith("/") or len(ns) < 2:
        raise ConfigError(f"etcd.namespace: must start with '/' and name something, got {e.namespace!r}")
    for name in ("dial_timeout", "request_timeout"):
        if getattr(e, name) <= 0:
            raise ConfigError(f"etcd.{name}: must be > 0 seconds")
    if el.ttl < 2:
        raise ConfigError(f"election.ttl: must be at least 2 seconds, got {el.ttl}")
    for name in ("dial_timeout", "request_timeout"):
        if getattr(e, name) > el.ttl / 3:
            raise ConfigError(f"etcd.{name}: {getattr(e, name):g} s does not fit the election TTL: it must be "
                              f"<= ttl / 3 = {el.ttl / 3:g} s, so a leader can stop writing before its lease "
                              "could expire")
    if cfg.reconcile.interval <= 0:
        raise ConfigError("reconcile.interval: must be > 0 seconds")
    if cfg.log.level not in LOG_LEVELS:
        raise ConfigError(f"log.level: one of {', '.join(LOG_LEVELS)}, got {cfg.log.level!r}")
    if cfg.log.format not in LOG_FORMATS:
        raise ConfigError(f"log.format: one of {', '.join(LOG_FORMATS)}, got {cfg.log.format!r}")
    if cfg.http.listen:
        parse_listen(cfg.http.listen)
    if e.password_file is not None and not os.access(e.password_file, os.R_OK):
        raise ConfigError(f"etcd.password_file: cannot read {e.password_file!r}")
    if e.password_file and not e.username:
        raise ConfigError("etcd.password_file: set etcd.username too")
    # the same parser connect() uses: endpoints, TLS and auth rules are written once
    parse_etcd_settings(e.endpoints, ca_cert=e.ca_cert, cert=e.cert, key=e.key, username=e.username,
                        password_known=False, dial_timeout=e.dial_timeout, request_timeout=e.request_timeout)
    return replace(cfg, etcd=replace(e, namespace=ns))


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"http.listen: expected HOST:PORT or \"\", got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser, *, logs: bool = True, session: bool = False,
                  daemon: bool = False) -> None:
    """The configuration flags a sub-command uses, each overriding its key in the file: the file and
    etcd's ``--endpoints``/``--namespace`` always; ``logs``: ``--log-level``/``--log-format``;
    ``session`` (it campaigns): ``--ttl``/``--instance-id``; ``daemon`` (``run`` only):
    ``--interval``/``--listen``. A flag a command ignores is not offered (argparse refuses it)."""
    g = parser.add_argument_group("configuration (each flag overrides its key in the file)")
    g.add_argument("--config", metavar="FILE",
                   help=f"TOML config file (default: ${CONFIG_ENV}, else built-in defaults)")
    g.add_argument("--endpoints", metavar="URLS", help="etcd.endpoints, comma-separated")
    g.add_argument("--namespace", metavar="NS", help="etcd.namespace")
    if session:
        g.add_argument("--ttl", type=int, metavar="SECONDS", help="election.ttl")
        g.add_argument("--instance-id", metavar="ID", help="election.instance_id")
    if daemon:
        g.add_argument("--interval", type=float, metavar="SECONDS", help="reconcile.interval")
        g.add_argument("--listen", metavar="HOST:PORT", help='http.listen ("" disables)')
    if logs:
        g.add_argument("--log-level", choices=LOG_LEVELS, help="log.level")
        g.add_argument("--log-format", choices=LOG_FORMATS, help="log.format")


def load(args: argparse.Namespace) -> Config:
    """File (if any), then flags, then ``validate``."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV) or None
    cfg = read_file(path) if path else Config()
    return validate(apply_overrides(cfg, args))


def apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    def given(name: str) -> Any:
        return getattr(args, name, None)

    etcd, election, rec, http, log = cfg.etcd, cfg.election, cfg.reconcile, cfg.http, cfg.log
    if given("endpoints"):
        etcd = replace(etcd, endpoints=[u.strip() for u in args.endpoints.split(",") if u.strip()])
    if given("namespace"):
        etcd = replace(etcd, namespace=args.namespace)
    if given("ttl") is not None:
        election = replace(election, ttl=args.ttl)
    if given("instance_id"):
        election = replace(election, instance_id=args.instance_id)
    if given("interval") is not None:
        rec = replace(rec, interval=args.interval)
    if given("listen") is not None:
        http = replace(http, listen=args.listen)
    if given("log_level"):
        log = replace(log, level=args.log_level)
    if given("log_format"):
        log = replace(log, format=args.log_format)
    return replace(cfg, etcd=etcd, election=election, reconcile=rec, http=http, log=log)


def read_password(cfg: EtcdConfig) -> str | None:
    """The etcd password for ``cfg.username``, from the first source that has one."""
    if not cfg.username:
        return None
    candidates: list[tuple[str, str]] = []
    if cfg.password_file:
        candidates.append(("etcd.password_file", cfg.password_file))
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not cfg.password_file and cred_dir and os.path.exists(os.path.join(cred_dir, "etcd-password")):
        candidates.append(("$CREDENTIALS_DIRECTORY/etcd-password", os.path.join(cred_dir, "etcd-password")))
    for what, path in candidates:
        try:
            with open(path, encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror}") from exc
        if not password:
            raise ConfigError(f"{what}: {path!r} is empty")
        return password
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    raise ConfigError(f"etcd.username: no password: set etcd.password_file, systemd LoadCredential=etcd-password, "
                      f"or ${PASSWORD_ENV}")


def connect(cfg: Config) -> Any:
    """An ``EtcdClient`` for this configuration (see ``worker.etcd.connect`` for its errors)."""
    from worker.etcd import connect as etcd_connect

    e = cfg.etcd
    return etcd_connect(e.endpoints, ca_cert=e.ca_cert, cert=e.cert, key=e.key, username=e.username,
                        password=read_password(e), dial_timeout=e.dial_timeout,
                        request_timeout=e.request_timeout)
