"""What a candidate proclaims in its election key: who it is, so operators and drills can tell."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from worker import __version__
from worker.untrusted import UntrustedValueError, loads_object, quote


def identity(instance_id: str, http: str | None = None) -> str:
    """The election value: JSON with ``instance_id``, host, pid, version and the HTTP address
    (``host:port``, so a drill can find the new leader's ``/healthz``)."""
    return json.dumps({"instance_id": instance_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "version": __version__, "http": http}, sort_keys=True)


#: the longest election value shown as an identity (``etcdctl elect`` values are kept raw, cut)
MAX_IDENTITY_CHARS = 256


def parse_identity(value: bytes | str) -> dict[str, Any]:
    """The identity in an election value (total: any value); values not written by us
    (``etcdctl elect``) are kept raw, cut to ``MAX_IDENTITY_CHARS``; fields of ours that are not
    short scalars are dropped."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    raw = {"instance_id": text if len(text) <= MAX_IDENTITY_CHARS else quote(text, MAX_IDENTITY_CHARS)}
    try:
        data = loads_object(value, "election value", max_bytes=16 * 1024)
    except UntrustedValueError:
        return raw
    if not isinstance(data.get("instance_id"), str):
        return raw
    return {k: v for k, v in data.items()
            if isinstance(k, str) and len(k) <= 64 and (v is None or isinstance(v, (bool, int, float))
                                                        or (isinstance(v, str) and len(v) <= MAX_IDENTITY_CHARS))}


def http_address(listen: str, port: int) -> str:
    """``host:port`` others can reach for ``[http] listen`` (a wildcard address names this host)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"
