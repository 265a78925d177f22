"""The etcd server's version, read once at connect: logged, and a warning for known-bad releases.

etcd 3.5.0, 3.5.1 and 3.5.2 have a data-inconsistency bug (a member that crashes may come back
with data that differs from its peers), fixed in 3.5.3. A worker whose fencing relies on etcd's
consistency says so loudly instead of running silently on one.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import structlog

from worker.etcd.errors import EtcdError



class _StatusClient(Protocol):
    @property
    def endpoint_url(self) -> str: ...

    def server_status(self) -> str: ...

#: release -> why it is known bad
KNOWN_BAD = {v: "data inconsistency after a crash (fixed in 3.5.3)" for v in ("3.5.0", "3.5.1", "3.5.2")}


def known_bad(version: str | None) -> str | None:
    """known_bad returns why ``version`` is a known-bad etcd release, or None."""
    return KNOWN_BAD.get((version or "").strip().lstrip("v"))


def read_server_version(client: _StatusClient) -> str | None:
    """The version the answering member reports (Maintenance Status), logged once; a warning when
    it is a known-bad release. None (logged, not raised) when the member will not say."""
    try:
        version = client.server_status()
    except EtcdError as err:
        _log("warning", "etcd_server_version_unknown", error=str(err), endpoint=client.endpoint_url)
        return None
    why = known_bad(version)
    if why:
        _log("warning", "etcd_server_known_bad", version=version, endpoint=client.endpoint_url, problem=why,
             advice="upgrade etcd to 3.5.3 or later")
    else:
        _log("info", "etcd_server", version=version, endpoint=client.endpoint_url)
    return version


def _log(level: str, event: str, **fields: Any) -> None:
    """Through structlog when the program configured it (the daemon, the CLI: JSON on stderr);
    otherwise through the stdlib (a library user's own logging, or warnings on stderr), never
    structlog's unconfigured default, which prints on stdout."""
    if structlog.is_configured():
        getattr(structlog.get_logger(logger_name="worker.etcd"), level)(event, **fields)
    else:
        getattr(logging.getLogger("worker.etcd"), level)(
            "%s %s", event, " ".join(f"{key}={value}" for key, value in fields.items()))
