"""The etcd server's version, read once at connect: logged, and a warning for known-bad releases.

etcd 3.5.0, 3.5.1 and 3.5.2 have a data-inconsistency bug (a member that crashes may come back
with data that differs from its peers), fixed in 3.5.3. A worker whose fencing relies on etcd's
consistency says so loudly instead of running silently on one.

The version is read from the member's ``GET /version`` (served on the client URL, no etcd user
needed), not from ``Maintenance.Status``: etcd 3.5.28 made Status admin-only (relaxed again in
3.5.32), so a least-privilege worker's Status was refused on every connect (one
``PermissionDenied`` in etcd's metrics and logs per connection, which is what an operator alerting
on refusals would page on). Status stays the fallback where ``/version`` is not served (an etcd
with ``--listen-client-http-urls`` serves HTTP elsewhere).
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.request
from typing import Any, Protocol

import structlog

from worker.etcd.errors import EtcdError

#: release -> why it is known bad. Auth: from 3.5.28 (CVE-2026-33413/-33343) leases need an
#: authenticated user with put permission on the keys attached, and Maintenance.Status needs root
#: until 3.5.32; the generated role meets all of it (``worker.ops.etcd_role.RELEASE_NOTES``), so no
#: release is listed for its auth rules. A release whose rules the role cannot meet belongs here.
class _VersionClient(Protocol):
    @property
    def endpoint_url(self) -> str: ...

    @property
    def transport(self) -> Any: ...

    @property
    def request_timeout(self) -> float: ...

    def server_status(self) -> str: ...


KNOWN_BAD = {v: "data inconsistency after a crash (fixed in 3.5.3)" for v in ("3.5.0", "3.5.1", "3.5.2")}


def known_bad(version: str | None) -> str | None:
    """known_bad returns why ``version`` is a known-bad etcd release, or None."""
    return KNOWN_BAD.get((version or "").strip().lstrip("v"))


def read_server_version(client: _VersionClient) -> str | None:
    """The version the answering member reports (``GET /version``, else Maintenance Status), logged once; a warning when
    it is a known-bad release. None (logged, not raised) when the member will not say."""
    version = _http_version(client)
    if version is None:
        version = _status_version(client)
    if version is None:
        return None
    why = known_bad(version)
    if why:
        _log("warning", "etcd_server_known_bad", version=version, endpoint=client.endpoint_url, problem=why,
             advice="upgrade etcd to 3.5.3 or later")
    else:
        _log("info", "etcd_server", version=version, endpoint=client.endpoint_url)
    return version


def _http_version(client: _VersionClient) -> str | None:
    """``etcdserver`` of the answering member's ``GET /version`` (with the client's own TLS files),
    or None when it does not answer so."""
    endpoint = client.transport.endpoint_in_use
    context = None
    files = getattr(endpoint, "tls_files", None)
    if files is not None:
        ca_cert, cert, key = files
        context = ssl.create_default_context(cafile=ca_cert)
        if cert:
            context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(client.endpoint_url + "/version", timeout=client.request_timeout,
                                    context=context) as response:
            version = json.loads(response.read()).get("etcdserver")
    except Exception:  # noqa: BLE001 - not served here, or refused: fall back to Status
        return None
    return str(version) if isinstance(version, str) and version else None


def _status_version(client: _VersionClient) -> str | None:
    """The version from Maintenance Status (admin-only on 3.5.28-3.5.31), or None (logged)."""
    try:
        return client.server_status()
    except EtcdError as err:
        _log("warning", "etcd_server_version_unknown", error=str(err), endpoint=client.endpoint_url)
        return None


def _log(level: str, event: str, **fields: Any) -> None:
    """Through structlog when the program configured it (the daemon, the CLI: JSON on stderr);
    otherwise through the stdlib (a library user's own logging, or warnings on stderr), never
    structlog's unconfigured default, which prints on stdout."""
    if structlog.is_configured():
        getattr(structlog.get_logger(logger_name="worker.etcd"), level)(event, **fields)
    else:
        getattr(logging.getLogger("worker.etcd"), level)(
            "%s %s", event, " ".join(f"{key}={value}" for key, value in fields.items()))
