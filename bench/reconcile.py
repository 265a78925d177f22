"""Benchmark: full passes at scale against the floor (a bare paged read of the same keys).

Not a test: prints one table. Starts its own etcd (``EtcdCluster(1)``, 8 GiB quota), and for each
size (10,000 / 100,000 clusters by default; ``--sizes``) loads the inputs into its own namespace
with the batched loader (``worker.demo.inventory.put_batched``), then measures, in this order:

* ``first``       the first pass of a term: every record created (fenced like the daemon's: election,
                  Mutex, pause key, audit stamp; a fresh memo, as a new term starts cold);
* ``floor``       the reference: a paged read of ``clusters/``, ``dr/`` and ``protection/`` at one
                  revision, 10,000 keys a page, parsing nothing (every other row's ``x floor`` divides
                  by this one);
* ``no-op``       nothing changed, no memo (every value parsed, every cluster decided): writes 0 keys;
* ``no-op memo``  nothing changed, with the term's memo warmed by the previous passes (clusters whose
                  three mod revisions are unchanged skip parsing and deciding): writes 0 keys;
* ``1% memo``     1% of the DR inputs changed, with the memo;
* ``status``      ``protection-worker status``'s read (counts by state, invalid inputs), from the store.

Columns: wall time, the ratio to the floor read of the same size, etcd requests issued
(``client.stats``), keys written, store revision before and after, the process peak RSS after
the row (``ru_maxrss``: it only grows, so the 100,000 rows show the peak of the whole run; run one
size alone for its own peak), and etcd's database size after the row (all sizes so far, history
included: the bench never compacts, like the worker).
``--naive-max N`` adds the naive baseline (one get per key and one unfenced put per cluster) for
sizes up to N (slow: 4 requests per cluster).

    python bench/reconcile.py --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from dataclasses import replace
from typing import Any, Callable

from worker.concurrency import Election, Mutex, Session
from worker.etcd import connect, kv
from worker.demo.embedded_etcd import EtcdCluster
from worker.demo import inventory
from worker.keys import Keys
from worker.protection.reconcile import InvalidLog, full_pass
from worker.protection.records import format_time
from worker.protection.rules import Observed, decide
from worker.protection.status import read_status
from worker.protection.writer import Fence, leader_fence

try:  # absent before issue 11: the bench then runs without the memo rows
    from worker.protection.memo import PassMemo
except ImportError:  # pragma: no cover
    PassMemo = None  # type: ignore[assignment,misc]

FLOOR_PAGE = 10_000


def populate(client: Any, keys: Keys, n: int, seed: int = 1) -> list[str]:
    """``n`` clusters: every 17th reclaimed, every 5th DR status absent (``inventory.populate``)."""
    return inventory.populate(client, keys, n, seed, prefix="cluster-", reclaimed_every=17, dr_missing_every=5)


def change_one_percent(client: Any, keys: Keys, ids: list[str], salt: int) -> int:
    rnd = random.Random(salt)
    chosen = rnd.sample(ids, max(1, len(ids) // 100))
    return inventory.set_replications(client, keys, chosen, salt)


def floor_read(client: Any, keys: Keys, page_size: int = FLOOR_PAGE) -> int:
    """The reference: every key of the three prefixes at one revision, paged, nothing parsed."""
    seen = 0
    revision = 0
    for prefix in (keys.clusters, keys.dr, keys.protection):
        start = kv.to_bytes(prefix)
        end = kv.prefix_end(start)
        while True:
            response = client.range(kv.range_request(start, range_end=end, limit=page_size, revision=revision))
            revision = revision or response.header.revision
            kvs = response.kvs
            seen += len(kvs)
            if not response.more or not kvs:
                break
            start = kvs[-1].key + b"\0"
    return seen


def naive_pass(client: Any, keys: Keys, term: int) -> int:
    """One get per key and one unfenced put per cluster (no comparison, no batching, no fence)."""
    listing = client.range(kv.range_request(keys.clusters, prefix=True, keys_only=True))
    updated_at = format_time()
    puts = 0
    for item in listing.kvs:
        cid = item.key.decode()[len(keys.clusters):]
        got = [client.range(kv.range_request(k)).kvs for k in
               (keys.cluster(cid), keys.dr_key(cid), keys.protection_key(cid))]
        obs = Observed(cid, *(g[0] if g else None for g in got))
        d = decide(obs, term=term, updated_at=updated_at)
        if d.action == "unchanged" and d.old is not None:   # naive: rewrites it anyway
            d = replace(d, new=replace(d.old, term=term, updated_at=updated_at))
        if d.new is not None:
            client.put(keys.protection_key(cid), d.new.to_json())
            puts += 1
    return puts


def requests(client: Any) -> int:
    return sum(client.stats.values())


def db_mib(client: Any) -> float:
    """etcd's database file size (``etcdctl endpoint status``'s DB SIZE): history included."""
    return client.status().db_size / 1024 ** 2


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(client: Any, fn: Callable[[], Any]) -> dict[str, Any]:
    rev0, req0 = client.current_revision(), requests(client)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    req = requests(client) - req0
    rev1 = client.current_revision()
    return {"wall": wall, "requests": req, "rev0": rev0, "rev1": rev1, "out": out}


class Bench:
    def __init__(self, client: Any, session: Session, naive_max: int) -> None:
        self.client = client
        self.session = session
        self.naive_max = naive_max
        self.rows: list[dict] = []

    def fence(self, keys: Keys) -> tuple[Fence, Election, Mutex]:
        """The daemon's fence on this namespace: election key, Mutex, pause key, audit stamp."""
        election = Election(self.session, keys.election)
        election.campaign(json.dumps({"instance_id": "bench"}))
        mutex = Mutex(self.session, keys.lock)
        mutex.lock()
        fence = leader_fence(keys, term=election.rev, election_key=election.key, owner=mutex.is_owner(),
                             lease=self.session.lease, instance_id="bench")
        return fence, election, mutex

    def row(self, n: int, phase: str, m: dict, writes: int | str) -> None:
        floor = next((r["wall"] for r in self.rows if r["clusters"] == n and r["phase"] == "floor"), None)
        self.rows.append({"clusters": n, "phase": phase, "wall": m["wall"], "requests": m["requests"],
                          "writes": writes, "rev0": m["rev0"], "rev1": m["rev1"], "rss": rss_mib(),
                          "x_floor": m["wall"] / floor if floor else None, "db": db_mib(self.client)})
        print(f"  {n:>7} {phase:<11} {m['wall']:8.3f}s {m['requests']:>6} req {writes!s:>7} writes "
              f"rev {m['rev0']}->{m['rev1']} rss {rss_mib():.0f} MiB", file=sys.stderr, flush=True)

    def run_size(self, n: int) -> None:
        client = self.client
        keys = Keys(f"/bench/{n}/opt")
        t0 = time.perf_counter()
        ids = populate(client, keys, n)
        print(f"  {n:>7} populated in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        fence, election, mutex = self.fence(keys)
        quiet = InvalidLog()
        memo = PassMemo() if PassMemo is not None else None
        with_memo = {"memo": memo} if memo is not None else {}

        def opt_pass(**kw: Any) -> Any:
            return full_pass(client, keys, fence, invalid_log=quiet, **kw)

        try:
            m = measure(client, lambda: opt_pass(**with_memo))
            self.row(n, "first", m, m["out"].writes)
            m = measure(client, lambda: floor_read(client, keys))
            self.rows.append({"clusters": n, "phase": "floor", "wall": m["wall"], "requests": m["requests"],
                              "writes": "-", "rev0": m["rev0"], "rev1": m["rev1"], "rss": rss_mib(), "x_floor": 1.0,
                              "db": db_mib(client)})
            m = measure(client, opt_pass)
            self.row(n, "no-op", m, m["out"].writes)
            if memo is not None:
                opt_pass(memo=memo)   # the first pass memoized nothing it wrote: warm up once
                m = measure(client, lambda: opt_pass(memo=memo))
                self.row(n, "no-op memo", m, m["out"].writes)
            change_one_percent(client, keys, ids, 7)
            m = measure(client, lambda: opt_pass(**with_memo))
            self.row(n, "1% memo" if memo is not None else "1%", m, m["out"].writes)
            m = measure(client, lambda: read_status(client, keys))
            self.row(n, "status", m, "-")
            if n <= self.naive_max:
                nai = Keys(f"/bench/{n}/naive")
                populate(client, nai, n)
                m = measure(client, lambda: naive_pass(client, nai, fence.term))
                self.row(n, "naive first", m, m["out"])
                m = measure(client, lambda: naive_pass(client, nai, fence.term))
                self.row(n, "naive no-op", m, m["out"])
        finally:
            mutex.unlock()
            election.resign()


def print_table(rows: list[dict]) -> None:
    head = (f"| {'clusters':>8} | {'phase':<11} | {'wall s':>7} | {'x floor':>7} | {'etcd req':>8} | {'writes':>7} "
            f"| {'rev before -> after':>21} | {'peak RSS MiB':>12} | {'etcd DB MiB':>11} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        ratio = f"{r['x_floor']:.2f}" if r["x_floor"] is not None else "-"
        revs = f"{r['rev0']} -> {r['rev1']}"
        print(f"| {r['clusters']:>8} | {r['phase']:<11} | {r['wall']:>7.3f} | {ratio:>7} | {r['requests']:>8} "
              f"| {r['writes']!s:>7} | {revs:>21} | {r['rss']:>12.0f} | {r['db']:>11.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated cluster counts")
    parser.add_argument("--naive-max", type=int, default=0,
                        help="run the naive baseline for sizes up to this (0: never; it issues 4 requests per cluster)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with EtcdCluster(1, extra_args=["--quota-backend-bytes", str(8 * 1024 ** 3)]) as etcd:
        client = connect(etcd.endpoints, request_timeout=30.0, dial_timeout=5.0)
        session = Session(client, ttl=60)
        bench = Bench(client, session, args.naive_max)
        try:
            for n in sizes:
                bench.run_size(n)
        finally:
            session.close()
            client.close()
    print_table(bench.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
