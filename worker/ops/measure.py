"""Measuring a failover from the outside, the way an operator would see it.

All three figures are milliseconds from the fault (the signal, the resign or the lease revoke):

* ``handover_ms`` — until a new candidate's key holds the lowest create revision (seen on a watch
  of the election prefix: etcd's own word on who leads);
* ``leaderless_ms`` — until the new leader actually leads (its ``/leader`` answers 200: it holds
  the Mutex); the old one stopped leading at the fault, so this is the window with no working leader;
* ``first_reconcile_ms`` — until the new leader reports its first completed pass of the new term.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Callable

from worker.daemon.identity import parse_identity
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.watch import Watch
from worker.protection.keys import Keys

POLL = 0.002


@dataclass
class Failover:
    mode: str
    old_leader: str | None
    new_leader: str | None
    handover_ms: float
    leaderless_ms: float
    first_reconcile_ms: float
    new_term: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def current_leader(client: EtcdClient, keys: Keys) -> tuple[dict[str, Any], Any] | None:
    """(identity, KeyValue) of the lowest election key, or None."""
    resp = client.range(kv.first_create(keys.election + "/"))
    if not resp.kvs:
        return None
    return parse_identity(resp.kvs[0].value), resp.kvs[0]


def http_json(url: str, timeout: float = 0.5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return 0, None


def proclaimed_health_url(identity: dict[str, Any]) -> str | None:
    http = identity.get("http")
    return f"http://{http}/healthz" if http else None


def measure_failover(client: EtcdClient, keys: Keys, fault: Callable[[], None], *, mode: str,
                     health_url: Callable[[dict[str, Any]], str | None] | None = None,
                     timeout: float = 30.0) -> Failover:
    """Trigger ``fault`` and time the takeover. ``health_url(identity)`` gives the new leader's
    ``/healthz`` URL (default: the ``http`` address it proclaims); without one, ``leaderless_ms``
    and ``first_reconcile_ms`` fall back to ``handover_ms``."""
    before = current_leader(client, keys)
    old_id = before[0]["instance_id"] if before else None
    old_term = before[1].create_revision if before else 0
    prefix = keys.election + "/"
    # a raw watch on the election prefix: every change wakes us, and one read tells who is lowest
    with Watch(client, prefix, range_end=kv.prefix_end(prefix)) as watch:
        watch.started.wait(5)
        start = time.monotonic()
        fault()
        deadline = start + timeout
        while True:
            leader = current_leader(client, keys)
            if leader is not None and leader[1].create_revision != old_term:
                handover = time.monotonic() - start
                new_identity, new_term = leader[0], leader[1].create_revision
                new_id = new_identity["instance_id"]
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no new leader within {timeout} s of the fault")
            watch.get(timeout=left)
    leading = first_pass = None
    url = (health_url or proclaimed_health_url)(new_identity)
    while url and (leading is None or first_pass is None) and time.monotonic() < deadline:
        code, body = http_json(url.replace("/healthz", "/leader"))
        if leading is None and code == 200:
            leading = time.monotonic() - start
        code, body = http_json(url)
        last = (body or {}).get("last_pass") or {}
        if first_pass is None and last.get("term") == new_term:
            first_pass = time.monotonic() - start
            leading = leading if leading is not None else first_pass
        time.sleep(POLL)
    leading = leading if leading is not None else handover
    first_pass = first_pass if first_pass is not None else leading
    return Failover(mode, old_id, new_id, round(handover * 1000, 1), round(leading * 1000, 1),
                    round(first_pass * 1000, 1), new_term)
