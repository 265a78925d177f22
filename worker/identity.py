"""Identity is what a candidate proclaims in its election key: who it is, so operators and drills
can tell. The one definition: the daemon writes it (``dump``), and everything that reads a line
(``worker.concurrency.line``, drills, measurements, status) reads it with ``Identity.parse``.

An election value is written by others too (``etcdctl elect``, anyone with write access to the
prefix), so ``parse`` is total and bounded: any bytes, of any size or shape, give an ``Identity``
and never raise. A value that is not our JSON is kept as the instance id (truncated).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from worker import __version__
from worker.untrusted import UntrustedValueError, loads_object

#: a value longer than this is not parsed as JSON (it is not ours); an id is cut to ID_CHARS
MAX_VALUE_BYTES = 64 * 1024
ID_CHARS = 256


def _text(value: Any, limit: int = ID_CHARS) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (int, float, bool)) else None
    return None if text is None else text[:limit]


@dataclass(frozen=True)
class Identity:
    """Who holds an election key: ``instance_id`` (None: an empty value), and for our own
    candidates the ``host``, ``pid``, ``version`` and ``http`` address (``host:port``)."""

    instance_id: str | None
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    http: str | None = None

    @staticmethod
    def mine(instance_id: str, http: str | None = None) -> Identity:
        """This process's identity."""
        return Identity(instance_id, socket.gethostname(), os.getpid(), __version__, http)

    def dump(self) -> str:
        """The election value: JSON with every field (sorted keys)."""
        return json.dumps({"instance_id": self.instance_id, "host": self.host, "pid": self.pid,
                           "version": self.version, "http": self.http}, sort_keys=True)

    @staticmethod
    def parse(value: bytes | str) -> Identity:
        """The identity in an election value; never raises (see the module's doc)."""
        if isinstance(value, str):
            text = value[:MAX_VALUE_BYTES + 1]
        else:
            text = bytes(value[:MAX_VALUE_BYTES + 1]).decode("utf-8", "replace")
        raw = Identity(text[:ID_CHARS] or None)
        if len(text) > MAX_VALUE_BYTES or not text.lstrip().startswith("{"):
            return raw
        try:
            data = loads_object(value, "election value", max_bytes=MAX_VALUE_BYTES)
        except UntrustedValueError:
            return raw
        if "instance_id" not in data:
            return raw
        pid = data.get("pid")
        return Identity(_text(data.get("instance_id")), _text(data.get("host")),
                        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                        _text(data.get("version")), _text(data.get("http")))


def http_address(listen: str, port: int) -> str:
    """``host:port`` others can reach for ``[http] listen`` (a wildcard address names this host)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"
