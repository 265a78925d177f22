"""Measuring a failover from the outside, the way an operator would see it.

All three figures are milliseconds from the fault (the signal, the resign or the lease revoke), and
each one is a measurement or null, never a copy of another figure:

* ``handover_ms`` — until a new candidate's key holds the lowest create revision (from etcd: a watch
  on the namespace wakes us, ``worker.concurrency.leader()`` says who leads);
* ``leaderless_ms`` — until the new leader actually leads, always from etcd: the lowest key under
  the Mutex prefix is the new leader's (same lease as its election key). One source for every run,
  so figures of different drills compare (``/leader`` answers 200 from the same moment: the Mutex
  taken, its lease certainly alive);
* ``first_reconcile_ms`` — until the new leader's first completed pass of the new term, only as the
  new leader reports it (``/healthz`` ``last_pass``): etcd holds no trace of a completed pass. When
  that HTTP address cannot be reached, the figure is null with the reason;
* ``first_write_ms`` — until the new term's first write landed in etcd (its audit stamp), beside the
  others and never in their place: null when the new term wrote nothing while the drill watched
  (a pass with nothing to change writes nothing), which is not a failure of the drill.

``sources`` says where each figure came from (``etcd`` or ``http``); ``unmeasured`` gives the reason
for each null figure.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


from worker.concurrency.line import Candidate, leader as line_leader
from worker.identity import Identity
from worker.etcd.client import EtcdClient
from worker.keys import Keys
from worker.protection.stamp import WriteStamp
from worker.untrusted import loads as untrusted_loads

#: the largest HTTP answer read from an instance (the address comes from an election value)
_MAX_ANSWER = 1024 * 1024

#: seconds between polls of the new leader's HTTP answers (a watch event wakes us sooner)
POLL = 0.002
#: an HTTP address that refuses or times out for this long after the handover counts as unreachable;
#: a pass that writes shows its first stamp within this long after the new leader holds the Mutex
GRACE = 2.0



@dataclass
class Failover:
    mode: str
    old_leader: str | None
    new_leader: str | None
    handover_ms: float | None
    leaderless_ms: float | None
    first_reconcile_ms: float | None
    #: to the new term's first write in etcd (its stamp); null when it wrote nothing meanwhile
    first_write_ms: float | None = None
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


def current_leader(client: EtcdClient, keys: Keys) -> tuple[Identity, Candidate] | None:
    """(identity, ``Candidate``) of the current leader (``worker.concurrency.leader``), or None."""
    found = line_leader(client, keys.election)
    return (found.identity, found) if found is not None else None


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


def proclaimed_health_url(identity: Identity) -> str | None:
    return f"http://{identity.http}/healthz" if identity.http else None


class _Probe:
    """The new leader's ``/healthz`` answers, until they fail for ``GRACE``."""

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
                     health_url: Callable[[Identity], str | None] | None = None,
                     timeout: float = 30.0) -> Failover:
    """Trigger ``fault`` and time the takeover. ``health_url(identity)`` gives the new leader's
    ``/healthz`` URL (default: the ``http`` address it proclaims). Raises ``TimeoutError`` when no
    new leader appears within ``timeout``; a later figure that cannot be measured is null."""
    before = current_leader(client, keys)
    old_id = before[0].instance_id if before else None
    old_term = before[1].create_revision if before else 0
    lock_prefix = (keys.lock + "/").encode()
    stamp_key = keys.stamp.encode()
    # one watch on the namespace: election, Mutex and stamp changes all wake us
    with client.watch(keys.root, prefix=True) as watch:
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
        result = Failover(mode, old_id, identity.instance_id, handover, None, None,
                          new_term=new.create_revision, sources={"handover_ms": "etcd"})
        url = (health_url or proclaimed_health_url)(identity)
        probe = _Probe(url, "the new leader proclaims no HTTP address")
        holder = line_leader(client, keys.lock)
        if holder is not None and holder.lease == new.lease:
            result.leaderless_ms, result.sources["leaderless_ms"] = elapsed(), "etcd"

        def take(response: Any) -> None:
            """Mutex and stamp changes of a watch answer: leading, and the term's first write."""
            for event in response.events if response is not None else ():
                if event.kind == "delete":
                    continue
                if result.leaderless_ms is None and event.kv.key.startswith(lock_prefix):
                    now = line_leader(client, keys.lock)
                    if now is not None and now.lease == new.lease:
                        result.leaderless_ms, result.sources["leaderless_ms"] = elapsed(), "etcd"
                elif result.first_write_ms is None and event.kv.key == stamp_key:
                    if _stamp_term(event.kv.value) == new.create_revision:
                        result.first_write_ms, result.sources["first_write_ms"] = elapsed(), "etcd"

        def drain() -> None:
            """What the watch already holds, taken now (never waited for)."""
            while True:
                response = watch.get(timeout=0)
                if response is None:
                    return
                take(response)

        while time.monotonic() < deadline:
            drain()  # before the HTTP poll: the Mutex taken is stamped before the pass it starts is seen
            if result.first_reconcile_ms is None:
                last = (probe.get("/healthz")[1] or {}).get("last_pass") or {}
                if last.get("term") == new.create_revision:
                    if result.leaderless_ms is None:
                        # a completed pass means the Mutex was taken; its watch event can still be on
                        # the way: ask etcd now, so leading is never stamped after the pass it started
                        holder = line_leader(client, keys.lock)
                        if holder is not None and holder.lease == new.lease:
                            result.leaderless_ms, result.sources["leaderless_ms"] = elapsed(), "etcd"
                    result.first_reconcile_ms, result.sources["first_reconcile_ms"] = elapsed(), "http"
            if result.leaderless_ms is not None:
                if result.first_reconcile_ms is not None:
                    break
                if probe.unreachable and (result.first_write_ms is not None
                                          or time.monotonic() - start - result.leaderless_ms / 1000 >= GRACE):
                    break  # leading; the first write, if any, shows within GRACE: nothing more to see
            take(watch.get(timeout=POLL))
        drain()  # the first write, when the pass finished between two polls
    why = f"no answer within the timeout of {timeout:g} s"
    if result.leaderless_ms is None:
        result.unmeasured["leaderless_ms"] = f"{why}: the new leader never held the Mutex in etcd"
    if result.first_reconcile_ms is None:
        result.unmeasured["first_reconcile_ms"] = (
            f"{probe.unreachable}: a completed pass is reported only there (etcd keeps no trace of it)"
            if probe.unreachable else why)
    return result


def _stamp_term(value: bytes) -> int | None:
    stamp = WriteStamp.parse(value)
    return stamp.term if stamp is not None else None
