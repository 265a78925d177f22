"""Operator controls stored under ``{ns}/control/``: maintenance pause and planned switchover.

They are keys, not RPCs to a process, so they work from any host with the config, survive a
leader change (a new leader honours them too) and leave a record in etcd's history. Every
instance watches the prefix (a watch is a stream, not a request: an idle follower stays quiet).

* ``paused`` present: the leader keeps leading but writes nothing (passes run as dry runs).
* ``switchover`` = ``{"to": ID or null, "from_term": T, "until": unix time}``: the leader of term
  ``T`` hands over; with ``to``, every candidate ahead of ``to`` steps to the back of the line, so
  ``to`` leads next. It expires so a request for a vanished target cannot loop forever: the key is
  bound to a lease of that many seconds, so etcd deletes it. No instance compares ``until`` with
  its own wall clock (clocks may disagree by any amount: the fault suite runs instances an hour
  apart); ``until`` is there for operators to read.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from worker.etcd.client import EtcdClient
from worker.keys import Keys
from worker.untrusted import UntrustedValueError, loads_object


@dataclass(frozen=True)
class Switchover:
    to: str | None
    from_term: int
    until: float


@dataclass(frozen=True)
class Controls:
    paused: bool = False
    switchover: Switchover | None = None
    revision: int = 0


def read_controls(client: EtcdClient, keys: Keys) -> Controls:
    resp = client.range(keys.control, prefix=True, limit=100)
    found = {item.key.decode("utf-8", "replace"): item.value for item in resp.kvs}
    switchover = None
    raw = found.get(keys.switchover)
    if raw is not None:
        switchover = parse_switchover(raw)  # None: not ours to interpret, ignored
    return Controls(paused=keys.paused in found, switchover=switchover, revision=resp.revision)


def set_paused(client: EtcdClient, keys: Keys, paused: bool, by: str) -> None:
    if paused:
        client.put(keys.paused, json.dumps({"by": by, "at": time.time()}))
    else:
        client.delete(keys.paused)


def request_switchover(client: EtcdClient, keys: Keys, *, to: str | None, from_term: int,
                       expires_in: float) -> None:
    lease = client.lease_grant(max(1, math.ceil(expires_in))).id
    client.put(keys.switchover, json.dumps({"to": to, "from_term": from_term,
                                                 "until": time.time() + expires_in}), lease=lease)


def clear_switchover(client: EtcdClient, keys: Keys) -> None:
    client.delete(keys.switchover)


def parse_switchover(raw: bytes | str) -> Switchover | None:
    """The switchover request in a stored value, or None when it is not one (total: any value)."""
    try:
        data = loads_object(raw, "switchover", max_bytes=4096)
    except UntrustedValueError:
        return None
    to, from_term, until = data.get("to"), data.get("from_term"), data.get("until")
    if to is not None and not (isinstance(to, str) and 0 < len(to) <= 256):
        return None
    if not isinstance(from_term, int) or isinstance(from_term, bool):
        return None
    if not isinstance(until, (int, float)) or isinstance(until, bool):
        return None
    return Switchover(to, from_term, float(until))
