"""Helpers of the fault suite: a model of the inputs (what every record must become), etcd member
introspection (which member leads raft, which one a daemon talks to), bounded retries while etcd
recovers, and the end-of-scenario checks (records converged, audit clean, one leader)."""

from __future__ import annotations

import json
import random
import re
import time
import urllib.request
from typing import Any, Callable

from tests.system.helpers import await_records, leader_of, records
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError
from worker.ops.audit import audit
from worker.demo.embedded_etcd import EtcdMember
from worker.demo.instances import WorkerProcess
from worker.keys import Keys
from worker.protection.reconcile import full_pass

TTL = 3
REQUEST_TIMEOUT = 0.5
REPLICATION_STATE = {"in_sync": "protected", "syncing": "protecting", "broken": "degraded", None: "protecting"}


def retry(call: Callable[[], Any], timeout: float = 15.0, what: str = "etcd call") -> Any:
    """``call()`` until it stops raising ``EtcdError`` (etcd electing a raft leader, a member
    restarting); bounded by ``timeout``. A put repeated after a timeout is harmless here: inputs
    are written whole, so the last value wins either way."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return call()
        except EtcdError as err:
            if time.monotonic() + delay >= deadline:
                raise AssertionError(f"{what} kept failing for {timeout} s: {err}") from err
            time.sleep(delay)  # backoff between attempts, not synchronisation
            delay = min(delay * 2, 0.5)


class Inputs:
    """The inventory this test writes, and the protection state each cluster must end in
    (``shared/spec/protection-state.md``). Reclaims are only made of clusters whose record was
    settled before, so the expectation never depends on how fast the leader was."""

    def __init__(self, client: EtcdClient, keys: Keys, seed: int = 7) -> None:
        self.client = client
        self.keys = keys
        self.rnd = random.Random(seed)
        self.expected: dict[str, str] = {}
        self.dr_site: dict[str, str | None] = {}
        self.settled: set[str] = set()
        self.changes = 0
        self._next = 0

    def _put(self, key: str, value: dict[str, Any]) -> None:
        retry(lambda: self.client.put(key, json.dumps(value)), what=f"put {key}")
        self.changes += 1

    def allocate(self, dr_site: str | None = None, replication: str | None = None) -> str:
        cid = f"c-{self._next}"
        self._next += 1
        if replication is not None:
            self._put(self.keys.dr_key(cid), {"replication": replication})
        self._put(self.keys.cluster(cid), {"allocated": True, "dr_site": dr_site})
        self.dr_site[cid] = dr_site
        self.expected[cid] = "unprotected" if dr_site is None else REPLICATION_STATE[replication]
        return cid

    def set_dr(self, cid: str, replication: str) -> None:
        self._put(self.keys.dr_key(cid), {"replication": replication})
        if self.dr_site[cid] is not None:
            self.expected[cid] = REPLICATION_STATE[replication]
        self.settled.discard(cid)

    def reclaim(self, cid: str) -> None:
        assert cid in self.settled, "reclaim only settled clusters (the expectation depends on the record)"
        self._put(self.keys.cluster(cid), {"allocated": False, "dr_site": self.dr_site[cid]})
        if self.expected[cid] != "unprotected":
            self.expected[cid] = "deleted"
        self.settled.discard(cid)

    def remove(self, cid: str) -> None:
        retry(lambda: self.client.delete(self.keys.cluster(cid)), what=f"delete {cid}")
        self.changes += 1
        del self.expected[cid]
        self.settled.discard(cid)

    def populate(self, count: int = 8) -> None:
        for i in range(count):
            if i % 2 == 0:
                self.allocate(None)
            else:
                self.allocate("site-b", ("in_sync", "syncing", "broken", None)[(i // 2) % 4])

    def settle(self) -> None:
        """The records match: every cluster's expectation is now independent of timing."""
        self.settled = set(self.expected)

    def churn(self, count: int) -> None:
        """``count`` changes of every kind: DR status flips, new clusters, a reclaim, a removal."""
        for _ in range(count):
            dr_clusters = [c for c, site in self.dr_site.items() if site is not None and c in self.expected
                           and self.expected[c] != "deleted"]
            kind = self.rnd.choice(("dr", "dr", "dr", "new", "reclaim", "remove"))
            settled = sorted(self.settled)
            if kind == "dr" and dr_clusters:
                self.set_dr(self.rnd.choice(dr_clusters), self.rnd.choice(("in_sync", "syncing", "broken")))
            elif kind == "reclaim" and settled:
                self.reclaim(self.rnd.choice(settled))
            elif kind == "remove" and settled:
                self.remove(self.rnd.choice(settled))
            else:
                self.allocate(self.rnd.choice((None, "site-c")), self.rnd.choice(("in_sync", "broken")))

    def matches(self, current: dict[str, dict[str, Any]]) -> bool:
        return {cid: rec["state"] for cid, rec in current.items()} == self.expected

    def await_converged(self, timeout: float = 20.0) -> dict[str, dict[str, Any]]:
        """Until every state is as expected *and* a dry-run pass plans nothing (a change that
        keeps the state, such as a DR status written again, still updates the record's revisions)."""
        current = await_records(self.client, self.keys,
                                lambda cur: self.matches(cur) and plans_nothing(self.client, self.keys) == [],
                                timeout=timeout)
        self.settle()
        return current


def plans_nothing(client: EtcdClient, keys: Keys) -> list[str]:
    """A dry-run pass (no fence, no writes): the changes it would make; [] when converged."""
    result = retry(lambda: full_pass(client, keys, None, dry_run=True), what="dry-run pass")
    assert not result.invalid, result.invalid
    return result.changes


def assert_clean(client: EtcdClient, keys: Keys, from_revision: int, *, min_checked: int = 1) -> int:
    """The auditor finds no write by anyone but the leader of its revision; returns writes checked."""
    report = retry(lambda: audit(client, keys, from_revision), what="audit")
    assert report.violations == [], report.violations
    assert report.checked >= min_checked, f"only {report.checked} protection writes since {from_revision}"
    return report.checked


def await_new_term(client: EtcdClient, keys: Keys, old_term: int, timeout: float) -> tuple[str, int]:
    """Wait (election observer) for a leader whose term is not ``old_term``."""
    from worker.concurrency.observe import Observer
    from worker.identity import Identity

    deadline = time.monotonic() + timeout
    with Observer(client, keys.election + "/") as observer:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no leader of a term other than {old_term} within {timeout} s: "
                                     f"{leader_of(client, keys)}")
            leader = observer.get(timeout=left)
            if leader is not None and leader.create_revision != old_term:
                return Identity.parse(leader.value).instance_id, leader.create_revision


def one_leader(workers: list[WorkerProcess], client: EtcdClient, keys: Keys, timeout: float = 10.0) -> str:
    """Exactly one instance answers /leader 200, the one etcd says leads, and every instance is
    healthy and ready (polled: HTTP answers cannot be watched)."""
    deadline = time.monotonic() + timeout
    while True:
        leader = leader_of(client, keys)
        codes = {w.instance_id: (w.get("/leader")[0], w.get("/healthz")[0], w.get("/readyz")[0]) for w in workers}
        leading = [i for i, c in codes.items() if c[0] == 200]
        if leader is not None and leading == [leader[0]] and all(c[1:] == (200, 200) for c in codes.values()):
            return leader[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"not exactly one healthy leader: etcd says {leader}, instances {codes}")
        time.sleep(0.1)


def await_http(workers: list[WorkerProcess], path: str, status: int, timeout: float) -> float:
    """Poll until every instance answers ``path`` with ``status``; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        codes = {w.instance_id: w.get(path, timeout=0.5)[0] for w in workers}
        if all(code == status for code in codes.values()):
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never answered {status} on every instance within {timeout} s: {codes}")
        time.sleep(0.05)


# -- etcd members -----------------------------------------------------------------------------
def _post(member: EtcdMember, path: str) -> dict[str, Any]:
    request = urllib.request.Request(member.endpoint + path, data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=1.0) as response:
        return json.loads(response.read())


def raft_leader(members: list[EtcdMember], timeout: float = 10.0) -> EtcdMember:
    """The member that leads raft, per the maintenance Status RPC of each member."""
    deadline = time.monotonic() + timeout
    while True:
        ids = {}
        leader_id = None
        for member in members:
            if not member.running():
                continue
            try:
                status = _post(member, "/v3/maintenance/status")
            except OSError:
                continue
            ids[str(status["header"]["member_id"])] = member
            leader_id = str(status.get("leader") or "") or leader_id
        if leader_id in ids:
            return ids[leader_id]
        if time.monotonic() > deadline:
            raise AssertionError("no raft leader among the running members")
        time.sleep(0.1)


def move_raft_leader(members: list[EtcdMember], away_from: EtcdMember, timeout: float = 10.0) -> EtcdMember:
    """Make sure ``away_from`` does not lead raft (etcd's MoveLeader, sent to the current leader);
    returns the raft leader afterwards."""
    deadline = time.monotonic() + timeout
    while True:
        leader = raft_leader(members)
        if leader is not away_from:
            return leader
        target = next(m for m in members if m is not away_from and m.running())
        target_id = _post(target, "/v3/maintenance/status")["header"]["member_id"]
        request = urllib.request.Request(leader.endpoint + "/v3/maintenance/transfer-leadership",
                                         data=json.dumps({"targetID": target_id}).encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5.0):
                pass
        except OSError:
            pass  # asked again below, until the deadline
        if time.monotonic() > deadline:
            raise AssertionError(f"{away_from.name} still leads raft after {timeout} s")


_TXN = re.compile(r'^grpc_server_started_total\{grpc_method="Txn",grpc_service="etcdserverpb.KV",'
                  r'grpc_type="unary"\} (\S+)$', re.M)


def txn_counts(members: list[EtcdMember]) -> dict[str, float]:
    """Txn requests each member has served (its Prometheus counter)."""
    counts = {}
    for member in members:
        with urllib.request.urlopen(member.endpoint + "/metrics", timeout=1.0) as response:
            found = _TXN.search(response.read().decode())
        counts[member.name] = float(found.group(1)) if found else 0.0
    return counts


def member_serving_writes(members: list[EtcdMember], inputs: Inputs, attempts: int = 3) -> EtcdMember:
    """The member the leader daemon sends its writes to: make input changes and see which member
    served the Txns that reconciled them (only the leader's reconcile writes are Txns while the
    line is settled; the test writes with Put). Asked again when two members served some."""
    by_name = {m.name: m for m in members}
    for _ in range(attempts):
        before = txn_counts(members)
        cid = sorted(c for c, s in inputs.dr_site.items() if s is not None and c in inputs.expected
                     and inputs.expected[c] != "deleted")[0]
        flip = "broken" if inputs.expected[cid] != "degraded" else "in_sync"
        inputs.set_dr(cid, flip)
        inputs.await_converged()
        after = txn_counts(members)
        served = [name for name in after if after[name] > before[name]]
        if len(served) == 1:
            return by_name[served[0]]
    raise AssertionError(f"could not tell which member serves the leader's writes: {served}")


def log_events(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in worker.log_events() if e.get("event") == event]


def await_log(worker: WorkerProcess, event: str, timeout: float = 10.0,
              where: Callable[[dict[str, Any]], bool] = lambda e: True, contains: bool = False) -> dict[str, Any]:
    """The first ``event`` line (with ``contains``: a line whose event contains that text) matching
    ``where`` in the worker's JSON log (another process writes that file: nothing to watch but it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in worker.log_events() if where(e) and
                 (event in str(e.get("event")) if contains else e.get("event") == event)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{worker.instance_id} never logged {event} within {timeout} s: "
                                 f"{worker.log_path.read_text()[-3000:]}")
        time.sleep(0.05)


__all__ = ["Inputs", "TTL", "REQUEST_TIMEOUT", "assert_clean", "await_http", "await_log", "leader_of",
           "member_serving_writes", "one_leader", "plans_nothing", "raft_leader", "records", "retry",
           "log_events"]
