"""COMPAT (issue 18): the election identity is ``worker.identity.Identity``; this shim keeps
tests/system (issue 17's files) importing ``parse_identity`` until they move (MIGRATION.md)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from worker.identity import Identity


#: the longest election value shown as an identity (``etcdctl elect`` values are kept raw, cut)
MAX_IDENTITY_CHARS = 256


def parse_identity(value: bytes | str) -> dict[str, Any]:
    """``Identity.parse(value)`` as a dict."""
    return asdict(Identity.parse(value))
