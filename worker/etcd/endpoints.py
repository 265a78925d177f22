"""Endpoint URLs and TLS credentials, validated before anything is dialled.

pyetcd silently talks plaintext when given a client certificate without a CA and shuns a failed
node for 300 s; both are fixed here: TLS settings are checked as a whole (any mistake is a
``ConfigError``), and endpoints are built with a short retry time so failover can come back.
"""

from __future__ import annotations

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
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"etcd endpoint {text!r}: scheme must be http:// or https://")
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise ConfigError(f"etcd endpoint {text!r}: bad port") from exc
    if not parts.hostname:
        raise ConfigError(f"etcd endpoint {text!r}: no host")
    return EndpointURL(parts.scheme, parts.hostname, port)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"etcd.{what}: cannot read {path!r}: {exc.strerror}") from exc


def tls_credentials(ca_cert: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    if (cert is None) != (key is None):
        raise ConfigError("etcd.cert and etcd.key: a client certificate needs its key, and a key its certificate")
    root = _read(ca_cert, "ca_cert") if ca_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read(key, "key") if key else None,
        certificate_chain=_read(cert, "cert") if cert else None,
    )


def build_endpoints(urls: list[str], *, ca_cert: str | None = None, cert: str | None = None,
                    key: str | None = None, has_password: bool = False) -> list[Endpoint]:
    """pyetcd Endpoints for the URLs, refusing every TLS mix-up that would end in plaintext."""
    if not urls:
        raise ConfigError("etcd.endpoints: at least one endpoint is required")
    parsed = [parse_endpoint(u) for u in urls]
    schemes = {p.scheme for p in parsed}
    if len(schemes) > 1:
        raise ConfigError("etcd.endpoints: mixing http:// and https:// endpoints is not allowed")
    secure = schemes == {"https"}
    if (cert or key) and not ca_cert:
        raise ConfigError("etcd.cert: a client certificate without etcd.ca_cert is refused "
                          "(it would not be verified, or silently go plaintext)")
    if not secure and (ca_cert or cert or key):
        raise ConfigError("etcd.ca_cert/cert/key are set but the endpoints are http://: use https:// endpoints")
    if not secure and has_password:
        raise ConfigError("etcd.username: a password is never sent over http://: use https:// endpoints")
    creds = tls_credentials(ca_cert, cert, key) if secure else None
    built = [Endpoint(p.host, p.port, secure=secure, creds=creds, time_retry=ENDPOINT_RETRY_SECONDS,
                      opts=CHANNEL_OPTIONS) for p in parsed]
    for endpoint in built:  # for worker.etcd.dial's diagnosis of a refused handshake
        endpoint.tls_files = (ca_cert, cert, key) if secure else None
    return built
