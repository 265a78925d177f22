"""Endpoint URLs and TLS credentials, validated before anything is dialled.

pyetcd silently talks plaintext when given a client certificate without a CA and shuns a failed
node for 300 s; both are fixed here: TLS settings are checked as a whole (any mistake is a
``ConfigError``), and endpoints are built with a short retry time so failover can come back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
from pyetcd import Endpoint

from worker.errors import ConfigError

# gRPC's defaults back off reconnects up to 120 s: after an etcd restart the client would stay
# "unavailable" long after etcd is back. Keepalive pings find a dead peer under a quiet stream.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),   # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

#: seconds a failed endpoint is skipped before it is tried again (pyetcd's default: 300)
ENDPOINT_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class EndpointURL:
    scheme: str  # "http" or "https"
    host: str
    port: int

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def parse_endpoint(text: str) -> EndpointURL:
    """``http://host:port``, ``https://host:port`` or bare ``host:port`` (plaintext)."""
    raw = text.strip()
    parts = urlsplit(raw if "://" in raw else "http://" + raw)
    try:
        port = parts.port or 2379
    except ValueError:
        raise ConfigError(f"etcd.endpoints: {text!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"etcd.endpoints: {text!r}: expected http://HOST:PORT or https://HOST:PORT")
    return EndpointURL(parts.scheme, parts.hostname, port)


@dataclass(frozen=True)
class EtcdSettings:
    """Validated connection settings: the endpoints and, for https://, the TLS files."""

    urls: tuple[EndpointURL, ...]
    secure: bool
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    def build(self) -> list[Endpoint]:
        """pyetcd Endpoints (channels) for the URLs, with the TLS credentials read now."""
        creds = tls_credentials(self.ca_cert, self.cert, self.key) if self.secure else None
        built = [Endpoint(p.host, p.port, secure=self.secure, creds=creds, time_retry=ENDPOINT_RETRY_SECONDS,
                          opts=CHANNEL_OPTIONS) for p in self.urls]
        for endpoint in built:  # for worker.etcd.dial's diagnosis of a refused handshake
            endpoint.tls_files = (self.ca_cert, self.cert, self.key) if self.secure else None
        return built


def parse_etcd_settings(endpoints: list[str] | str, *, ca_cert: str | None = None, cert: str | None = None,
                        key: str | None = None, username: str | None = None, password: str | None = None,
                        password_known: bool = True, dial_timeout: float = 2.0,
                        request_timeout: float = 2.0) -> EtcdSettings:
    """The one check of etcd connection settings, used by ``worker.config.validate`` and by
    ``connect``: every TLS mix-up that would end in plaintext or an unverified peer, auth without
    TLS, bad URLs, bad timeouts and unreadable files are a ``ConfigError`` naming the setting.
    ``password_known=False``: the password is read later (the config names a file)."""
    if isinstance(endpoints, str):
        endpoints = [e for e in endpoints.split(",") if e.strip()]
    if not endpoints:
        raise ConfigError("etcd.endpoints: at least one endpoint is required")
    for name, value in (("dial_timeout", dial_timeout), ("request_timeout", request_timeout)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"etcd.{name}: must be > 0 seconds, got {value!r}")
    for name, path in (("ca_cert", ca_cert), ("cert", cert), ("key", key)):
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"etcd.{name}: cannot read {path!r}")
    if password_known:
        if password is not None and not username:
            raise ConfigError("etcd.username: a password was given without a username")
        if username and password is None:
            raise ConfigError("etcd.username: a username was given without a password")
    if (cert is None) != (key is None):
        raise ConfigError("etcd.cert, etcd.key: a client certificate needs its key, and a key its certificate")
    if (cert or key) and not ca_cert:
        raise ConfigError("etcd.cert: a client certificate without etcd.ca_cert is refused "
                          "(it would not be verified, or silently go plaintext)")
    parsed = tuple(parse_endpoint(u) for u in endpoints)
    schemes = {p.scheme for p in parsed}
    if len(schemes) > 1:
        raise ConfigError("etcd.endpoints: mixing http:// and https:// endpoints is not allowed")
    secure = schemes == {"https"}
    if not secure and (ca_cert or cert or key):
        raise ConfigError("etcd.ca_cert: TLS files are set but the endpoints are http://: use https:// endpoints")
    if not secure and username:
        raise ConfigError("etcd.username: etcd auth needs TLS: a password is never sent over http:// endpoints")
    return EtcdSettings(parsed, secure, ca_cert, cert, key)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"etcd.{what}: cannot read {path!r}: {exc.strerror}") from exc


def tls_credentials(ca_cert: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    root = _read(ca_cert, "ca_cert") if ca_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read(key, "key") if key else None,
        certificate_chain=_read(cert, "cert") if cert else None,
    )
