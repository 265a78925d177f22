"""Measuring a failover from the outside, the way an operator would see it.

All three figures are milliseconds from the fault (the signal, the resign or the lease revoke), and
each one is a measurement or null, never a copy of another figure:

* ``handover_ms`` — until a new candidate's key holds the lowest create revision (from etcd: a watch
  on the namespace wakes us, ``worker.concurrency.leader()`` says who leads);
* ``leaderless_ms`` — until the new leader actually leads: its ``/leader`` answers 200 (it holds the
  Mutex and knows it); when its HTTP address cannot be reached, from etcd: the lowest key under the
  Mutex prefix is the new leader's (same lease as its election key);
* ``first_reconcile_ms`` — until the new leader reports its first completed pass of the new term
  (``/healthz`` ``last_pass``); when its HTTP address cannot be reached, from etcd: the first audit
  stamp put by the new term (its first write). A pass that writes nothing leaves no trace in etcd:
  then the figure is null.

``sources`` says where each figure came from (``etcd`` or ``http``); ``unmeasured`` gives the reason
for each null figure.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from worker.etcd import DeleteEvent

from worker.concurrency.line import leader as line_leader
from worker.daemon.identity import parse_identity
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.watch import Watch
from worker.protection.stamp import WriteStamp
from worker.untrusted import loads as untrusted_loads

#: the largest HTTP answer read from an instance (the address comes from an election value)
_MAX_ANSWER = 1024 * 1024
from worker.protection.keys import Keys

#: seconds between polls of the new leader's HTTP answers (a watch event wakes us sooner)
POLL = 0.002
#: an HTTP address that refuses or times out for this long after the handover counts as unreachable;
#: a pass that writes shows its first stamp within this long after the new leader holds the Mutex
GRACE = 2.0

FIGURES = ("handover_ms", "leaderless_ms", "first_reconcile_ms")


@dataclass
class Failover:
    mode: str
    old_leader: str | None
    new_leader: str | None
    handover_ms: float | None
    leaderless_ms: float | None
    first_reconcile_ms: float | None
    new_term: int = 0
    #: figure -> "etcd" | "http" for each measured figure
    sources: dict[str, str] = field(default_factory=dict)
    #: figure -> why it is null
    unmeasured: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def problem(self) -> str | None:
        """One line naming what could not be measured (None: every figure was measured)."""
        if not self.unmeasured:
            return None
        return "; ".join(f"{name} not measured: {why}" for name, why in self.unmeasured.items())


def format_ms(value: float | None) -> str:
    """A figure for people: ``12.3 ms``, or ``unmeasured`` for null."""
    return "unmeasured" if value is None else f"{value:.1f} ms"


def current_leader(client: EtcdClient, keys: Keys) -> tuple[dict[str, Any], Any] | None:
    """(identity, ``Candidate``) of the current leader (``worker.concurrency.leader``), or None."""
    found = line_leader(client, keys.election)
    return (parse_identity(found.value), found) if found is not None else None


def http_json(url: str, timeout: float = 0.5) -> tuple[int, Any]:
    """(status, JSON body) of a GET; status 0 when the address cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, untrusted_loads(response.read(_MAX_ANSWER + 1), "HTTP answer")
    except urllib.error.HTTPError as err:
        try:
            return err.code, untrusted_loads(err.read(_MAX_ANSWER + 1), "HTTP answer")
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return 0, None


def proclaimed_health_url(identity: dict[str, Any]) -> str | None:
    http = identity.get("http")
    return f"http://{http}/healthz" if http else None


class _Probe:
    """The new leader's HTTP answers: ``/leader`` and ``/healthz``, until they fail for ``GRACE``."""

    def __init__(self, url: str | None, why_none: str) -> None:
        self.url = url
        self.failing_since: float | None = None
        self.unreachable: str | None = None if url else why_none

    def get(self, path: str) -> tuple[int, Any]:
        if self.unreachable or self.url is None:
            return 0, None
        url = self.url.replace("/healthz", path)
        code, body = http_json(url)
        now = time.monotonic()
        if code:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since >= GRACE:
            self.unreachable = f"the new leader's HTTP address {url.rsplit('/', 1)[0]} is unreachable " \
                               f"(no answer for {GRACE:g} s)"
        return code, body


def measure_failover(client: EtcdClient, keys: Keys, fault: Callable[[], None], *, mode: str,
                     health_url: Callable[[dict[str, Any]], str | None] | None = None,
                     timeout: float = 30.0) -> Failover:
    """Trigger ``fault`` and time the takeover. ``health_url(identity)`` gives the new leader's
    ``/healthz`` URL (default: the ``http`` address it proclaims). Raises ``TimeoutError`` when no
    new leader appears within ``timeout``; a later figure that cannot be measured is null."""
    before = current_leader(client, keys)
    old_id = before[0]["instance_id"] if before else None
    old_term = before[1].create_revision if before else 0
    lock_prefix = (keys.lock + "/").encode()
    stamp_key = keys.stamp.encode()
    # one watch on the namespace: election, Mutex and stamp changes all wake us
    with Watch(client, keys.root, range_end=kv.prefix_end(keys.root)) as watch:
        watch.started.wait(5)
        start = time.monotonic()
        fault()
        deadline = start + timeout
        elapsed = lambda: round((time.monotonic() - start) * 1000, 1)  # noqa: E731
        while True:
            found = current_leader(client, keys)
            if found is not None and found[1].create_revision != old_term:
                handover = elapsed()
                identity, new = found
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no new leader within {timeout:g} s of the fault")
            watch.get(timeout=left)
        result = Failover(mode, old_id, identity["instance_id"], handover, None, None, new.create_revision,
                          sources={"handover_ms": "etcd"})
        url = (health_url or proclaimed_health_url)(identity)
        probe = _Probe(url, "the new leader proclaims no HTTP address")
        etcd_leading: float | None = None
        etcd_first_write: float | None = None
        holder = line_leader(client, keys.lock)
        if holder is not None and holder.lease == new.lease:
            etcd_leading = elapsed()
        while time.monotonic() < deadline:
            if result.leaderless_ms is None and probe.get("/leader")[0] == 200:
                result.leaderless_ms, result.sources["leaderless_ms"] = elapsed(), "http"
            if result.first_reconcile_ms is None:
                last = (probe.get("/healthz")[1] or {}).get("last_pass") or {}
                if last.get("term") == new.create_revision:
                    result.first_reconcile_ms, result.sources["first_reconcile_ms"] = elapsed(), "http"
            if result.first_reconcile_ms is not None and result.leaderless_ms is None and etcd_leading is not None:
                # the pass finished between two polls of /leader: etcd saw it take the Mutex
                result.leaderless_ms, result.sources["leaderless_ms"] = etcd_leading, "etcd"
            if probe.unreachable:
                if result.leaderless_ms is None and etcd_leading is not None:
                    result.leaderless_ms, result.sources["leaderless_ms"] = etcd_leading, "etcd"
                if result.first_reconcile_ms is None and etcd_first_write is not None:
                    result.first_reconcile_ms, result.sources["first_reconcile_ms"] = etcd_first_write, "etcd"
                if etcd_leading is not None and time.monotonic() - start - etcd_leading / 1000 >= GRACE:
                    break   # leading for GRACE and nothing written: the pass leaves no trace in etcd
            if result.leaderless_ms is not None and result.first_reconcile_ms is not None:
                break
            response = watch.get(timeout=POLL)
            for event in response.events if response is not None else ():
                if isinstance(event, DeleteEvent):
                    continue
                if etcd_leading is None and event.key.startswith(lock_prefix):
                    holder = line_leader(client, keys.lock)
                    if holder is not None and holder.lease == new.lease:
                        etcd_leading = elapsed()
                elif etcd_first_write is None and event.key == stamp_key:
                    if _stamp_term(event.value) == new.create_revision:
                        etcd_first_write = elapsed()
    why = probe.unreachable or f"no answer within the timeout of {timeout:g} s"
    if result.leaderless_ms is None:
        result.unmeasured["leaderless_ms"] = (
            f"{why}, and the new leader never held the Mutex in etcd" if probe.unreachable else why)
    if result.first_reconcile_ms is None:
        result.unmeasured["first_reconcile_ms"] = (
            f"{why}, and the new term wrote nothing to etcd (a pass without writes leaves no trace there)"
            if probe.unreachable else why)
    return result


def _stamp_term(value: bytes) -> int | None:
    stamp = WriteStamp.parse(value)
    return stamp.term if stamp is not None else None
