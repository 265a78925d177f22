"""Benchmark: the fenced, batched, revision-pinned reconciler against a naive loop.

Not a test: prints a table. Starts its own etcd (``EtcdCluster(1)``), and for each size
(1,000 / 10,000 / 50,000 clusters by default; ``--sizes``) runs, on one namespace each:

* ``first``    every record created (the optimized pass: paged reads at one revision, 127 changes
               per fenced transaction);
* ``no-op``    nothing changed: must write 0 keys (etcd revision before/after printed);
* ``1%``       1% of the DR inputs changed;

and the same three phases with the naive baseline (list the cluster keys, then for each
cluster one get per key — cluster, DR, protection — and one unfenced put).

Columns: wall time, etcd requests issued (``client.stats``), keys written, store revision before
and after, and the peak Python heap of the phase (tracemalloc, measured by re-running the same
kind of phase with tracing on, so the timings are not slowed by it), plus the process peak RSS.

    python bench/reconcile.py --sizes 1000,10000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from dataclasses import replace
import tracemalloc
from typing import Any, Callable

from worker.concurrency import Election, Mutex, Session
from worker.etcd import connect, kv
from worker.ops.embedded_etcd import EtcdCluster
from worker.ops.inventory import put_batched
from worker.protection.keys import Keys
from worker.protection.reconcile import InvalidLog, full_pass
from worker.protection.records import format_time
from worker.protection.rules import Observed, decide
from worker.protection.writer import Fence

REPLICATIONS = ("in_sync", "syncing", "broken")


def populate(client: Any, keys: Keys, n: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    ids = [f"cluster-{i:06d}" for i in range(n)]

    def items() -> Any:
        for i, cid in enumerate(ids):
            site = None if i % 3 == 0 else f"site-{i % 4}"
            yield keys.cluster(cid), json.dumps({"allocated": i % 17 != 0, "dr_site": site})
            if site and i % 5:
                yield keys.dr_key(cid), json.dumps({"replication": rnd.choice(REPLICATIONS)})

    put_batched(client, items())
    return ids


def change_one_percent(client: Any, keys: Keys, ids: list[str], salt: int) -> int:
    rnd = random.Random(salt)
    chosen = rnd.sample(ids, max(1, len(ids) // 100))
    ops = [kv.op_put(keys.dr_key(cid), json.dumps({"replication": REPLICATIONS[(salt + i) % 3]}))
           for i, cid in enumerate(chosen)]
    for i in range(0, len(ops), 120):
        client.txn(kv.txn_request([], ops[i:i + 120]))
    return len(chosen)


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


def measure(client: Any, fn: Callable[[], Any]) -> dict[str, Any]:
    rev0, req0 = client.current_revision(), requests(client)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    req = requests(client) - req0
    rev1 = client.current_revision()
    return {"wall": wall, "requests": req, "rev0": rev0, "rev1": rev1, "out": out}


def heap_peak(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(client: Any, fence: Fence, n: int, naive: bool, rows: list[dict]) -> None:
    opt, nai = Keys(f"/bench/{n}/opt"), Keys(f"/bench/{n}/naive")
    ids = populate(client, opt, n)
    if naive:
        populate(client, nai, n)
    quiet = InvalidLog()

    def opt_pass() -> Any:
        return full_pass(client, opt, fence, invalid_log=quiet)

    def row(phase: str, impl: str, m: dict, writes: int, heap: float | None) -> None:
        rows.append({"clusters": n, "phase": phase, "impl": impl, "wall_s": m["wall"], "requests": m["requests"],
                     "writes": writes, "rev_before": m["rev0"], "rev_after": m["rev1"], "heap_kib": heap,
                     "rss_mib": rss_mib()})
        r = rows[-1]
        print(f"  {n:>6} {phase:<6} {impl:<6} {r['wall_s']:8.3f}s {r['requests']:>8} req {writes:>7} writes "
              f"rev {r['rev_before']}->{r['rev_after']}", file=sys.stderr, flush=True)

    # first pass
    m = measure(client, opt_pass)
    row("first", "fenced", m, m["out"].writes, None)
    if naive:
        m2 = measure(client, lambda: naive_pass(client, nai, fence.term))
        row("first", "naive", m2, m2["out"], None)
    # no-op pass
    m = measure(client, opt_pass)
    heap = heap_peak(opt_pass)
    row("no-op", "fenced", m, m["out"].writes, heap)
    if naive:
        m2 = measure(client, lambda: naive_pass(client, nai, fence.term))
        row("no-op", "naive", m2, m2["out"], heap_peak(lambda: naive_pass(client, nai, fence.term)) if n <= 10000 else None)
    # 1% of the inputs changed
    change_one_percent(client, opt, ids, 7)
    m = measure(client, opt_pass)
    change_one_percent(client, opt, ids, 8)
    heap = heap_peak(opt_pass)
    row("1%", "fenced", m, m["out"].writes, heap)
    if naive:
        change_one_percent(client, nai, ids, 7)
        m2 = measure(client, lambda: naive_pass(client, nai, fence.term))
        row("1%", "naive", m2, m2["out"], None)


def print_table(rows: list[dict]) -> None:
    head = (f"| {'clusters':>8} | {'phase':<5} | {'impl':<6} | {'wall s':>8} | {'etcd req':>8} | {'writes':>7} "
            f"| {'rev before -> after':>21} | {'heap peak KiB':>13} | {'RSS MiB':>7} | {'speed-up':>8} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    by = {(r["clusters"], r["phase"], r["impl"]): r for r in rows}
    for r in rows:
        other = by.get((r["clusters"], r["phase"], "naive"))
        speed = f"{other['wall_s'] / r['wall_s']:.1f}x" if r["impl"] == "fenced" and other else ""
        heap = f"{r['heap_kib']:.0f}" if r["heap_kib"] is not None else "-"
        revs = f"{r['rev_before']} -> {r['rev_after']}"
        print(f"| {r['clusters']:>8} | {r['phase']:<5} | {r['impl']:<6} | {r['wall_s']:>8.3f} | {r['requests']:>8} "
              f"| {r['writes']:>7} | {revs:>21} | {heap:>13} | {r['rss_mib']:>7.0f} | {speed:>8} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="comma-separated cluster counts")
    parser.add_argument("--naive-max", type=int, default=50000,
                        help="skip the naive baseline above this size (it issues 4 requests per cluster)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows: list[dict] = []
    with EtcdCluster(1, extra_args=["--quota-backend-bytes", str(8 * 1024 ** 3)]) as etcd:
        client = connect(etcd.endpoints, request_timeout=30.0, dial_timeout=5.0)
        session = Session(client, ttl=60)
        election = Election(session, "/bench/election")
        election.campaign(json.dumps({"instance_id": "bench"}))
        mutex = Mutex(session, "/bench/reconcile-lock")
        mutex.lock()
        fence = Fence(election.rev, [kv.cmp_create(election.key, "=", election.rev), mutex.is_owner()])
        try:
            for n in sizes:
                run_size(client, fence, n, n <= args.naive_max, rows)
        finally:
            mutex.unlock()
            election.resign()
            session.close()
            client.close()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
