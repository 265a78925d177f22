"""What a candidate proclaims in its election key: who it is, so operators and drills can tell."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from worker import __version__


def identity(instance_id: str, http: str | None = None) -> str:
    """The election value: JSON with ``instance_id``, host, pid, version and the HTTP address
    (``host:port``, so a drill can find the new leader's ``/healthz``)."""
    return json.dumps({"instance_id": instance_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "version": __version__, "http": http}, sort_keys=True)


def parse_identity(value: bytes | str) -> dict[str, Any]:
    """The identity in an election value; values not written by us (``etcdctl elect``) are kept raw."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        data = json.loads(text)
    except ValueError:
        return {"instance_id": text}
    return data if isinstance(data, dict) and "instance_id" in data else {"instance_id": text}


def http_address(listen: str, port: int) -> str:
    """``host:port`` others can reach for ``[http] listen`` (a wildcard address names this host)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"
