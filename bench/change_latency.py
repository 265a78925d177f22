"""Benchmark: input change -> protection record, open loop, while full passes run at 100,000 clusters.

Not a test: prints one table. Starts its own etcd (``EtcdCluster(1)``), loads 100,000 clusters
(``--clusters``) with the batched loader of ``bench/reconcile.py``, starts one real daemon
(``python -m worker run``, ``worker.demo.instances.WorkerProcess``) with ``--interval`` 0.2 s so
that full passes run back to back, waits for its first full pass, then changes inputs OPEN LOOP:
change k is sent at ``t0 + k / rate`` by the clock (20/s for 30 s by default), whatever the worker
does, so a change that waits behind a full pass shows as latency (a closed loop, waiting for each
change, would hide the queueing).

Each change puts ``dr/ID`` = ``in_sync`` for a distinct allocated cluster with a DR site and no DR
status yet (state ``protecting``), so its record must become ``protected`` with ``dr_revision`` = the
put's revision. A watch on ``protection/`` matches records by id and DR revision; the latency is
the watch's arrival time minus the change's scheduled time. Reported: p50 / p99 / max, changes that
never landed (within ``--settle`` s), and the full passes the daemon completed during the window
(from its ``reconcile_pass`` log lines) with their median duration. Then, in the same run, the
reference: the same schedule on other ids against a fresh daemon whose ``--interval`` keeps full
passes away (``--no-reference`` skips it), so the table shows what running full passes add.

    python bench/change_latency.py                       # 100,000 clusters, 20/s for 30 s
    python bench/change_latency.py --clusters 10000 --duration 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import benchlib  # noqa: E402
from bench.reconcile import populate  # noqa: E402
from worker.etcd import Watch, connect, kv  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster  # noqa: E402
from worker.demo.instances import WorkerProcess  # noqa: E402
from worker.keys import Keys  # noqa: E402

NAMESPACE = "/protection-worker"


def changeable(n: int) -> list[str]:
    """Ids that ``populate`` leaves allocated, with a DR site and no DR key: state ``protecting``."""
    return [f"cluster-{i:06d}" for i in range(n) if i % 3 and i % 17 and i % 5 == 0]


def full_passes(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [e for e in worker.log_events() if e.get("event") == "reconcile_pass" and e.get("mode") == "full"]


def await_first_pass(worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not full_passes(worker):
        if not worker.running() or time.monotonic() > deadline:
            tail = worker.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon finished no full pass within {timeout} s: {tail}")
        time.sleep(0.2)


class Landed:
    """Watches ``protection/``: when each id's record arrived carrying a DR revision >= the one wanted."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self.seen: dict[str, tuple[int, float]] = {}
        self.lock = threading.Lock()
        start = client.current_revision(keys.root) + 1
        self.watch = Watch(client, keys.protection, range_end=kv.prefix_end(keys.protection), start_revision=start)
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()
        self.watch.started.wait(5)

    def _consume(self) -> None:
        strip = len(self.keys.protection)
        for response in self.watch:
            now = time.monotonic()
            for event in response.events:
                try:
                    dr_rev = json.loads(event.value).get("dr_revision") or 0
                except ValueError:
                    continue
                cid = event.key.decode()[strip:]
                with self.lock:
                    if cid not in self.seen or dr_rev > self.seen[cid][0]:
                        self.seen[cid] = (dr_rev, now)   # the first record carrying this DR revision

    def at(self, cid: str, revision: int) -> float | None:
        with self.lock:
            got = self.seen.get(cid)
        return got[1] if got is not None and got[0] >= revision else None

    def close(self) -> None:
        self.watch.close()
        self.thread.join(2)


def percentile(values: list[float], q: float) -> float:
    """The bench library's nearest-rank percentile, ``q`` as a fraction (0.99 = p99)."""
    return benchlib.percentile(values, q * 100)


def window(client: Any, keys: Keys, etcd: Any, tmp: Path, args: argparse.Namespace, interval: float,
           ids: list[str], name: str) -> dict[str, Any]:
    """One daemon at ``interval``; ``ids`` changed open loop at ``args.rate``; its latencies."""
    worker = WorkerProcess(name, etcd.endpoints, NAMESPACE, tmp, ttl=10, interval=interval,
                           request_timeout=2.0).start()
    try:
        t = time.monotonic()
        await_first_pass(worker, timeout=120)
        print(f"{name}: first full pass done {time.monotonic() - t:.1f} s after start", file=sys.stderr, flush=True)
        landed = Landed(client, keys)
        sent: list[tuple[str, int, float]] = []
        passes_before = len(full_passes(worker))
        late = 0.0
        t0 = time.monotonic() + 0.5
        for k, cid in enumerate(ids):
            due = t0 + k / args.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)          # the schedule: open loop, by the clock
            late = max(late, time.monotonic() - due)
            rev = client.txn(kv.txn_request([], [kv.op_put(keys.dr_key(cid), '{"replication": "in_sync"}')]))
            sent.append((cid, rev.header.revision, due))
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and any(landed.at(c, r) is None for c, r, _ in sent):
            time.sleep(0.05)
        passes = full_passes(worker)[passes_before:]
        landed.close()
    finally:
        worker.terminate(timeout=10)
    latencies = [(landed.at(c, r) - due) * 1000 for c, r, due in sent if landed.at(c, r) is not None]
    durations = [float(p.get("duration", 0)) for p in passes]
    return {"clusters": args.clusters, "changes": len(sent), "rate": args.rate, "duration": args.duration,
            "interval": interval, "landed": len(latencies),
            "p50": percentile(latencies, 0.5) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None, "max": max(latencies) if latencies else None,
            "full_passes": len(passes), "pass_median": statistics.median(durations) if durations else None,
            "sender_late_ms": late * 1000}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The window with full passes back to back, then (``--reference``) the same schedule on other
    ids with no full pass running: what the passes add."""
    keys = Keys(NAMESPACE)
    with EtcdCluster(1, extra_args=["--quota-backend-bytes", str(8 * 1024 ** 3)]) as etcd, \
            tempfile.TemporaryDirectory(prefix="change-latency-") as tmp:
        client = connect(etcd.endpoints, request_timeout=10.0, dial_timeout=5.0)
        try:
            t = time.monotonic()
            populate(client, keys, args.clusters)
            print(f"loaded {args.clusters} clusters in {time.monotonic() - t:.1f} s", file=sys.stderr, flush=True)
            ids = changeable(args.clusters)
            count = int(args.rate * args.duration)
            windows = [("bench-1", args.interval)] + ([("bench-ref", REFERENCE_INTERVAL)] if args.reference else [])
            if count * len(windows) > len(ids):
                raise SystemExit(f"only {len(ids)} changeable clusters for {count} changes a window: "
                                 "lower --rate/--duration")
            return [window(client, keys, etcd, Path(tmp), args, interval, ids[i * count:(i + 1) * count], name)
                    for i, (name, interval) in enumerate(windows)]
        finally:
            client.close()


#: the reference window's --interval: no full pass after the first one during the window
REFERENCE_INTERVAL = 3600.0


def print_table(results: list[dict[str, Any]]) -> None:
    def ms(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "-"

    head = (f"| {'full passes':<22} | {'clusters':>8} | {'changes':>7} | {'rate/s':>6} | {'landed':>6} | {'p50 ms':>8} "
            f"| {'p99 ms':>8} | {'max ms':>8} | {'full passes meanwhile':>21} | {'pass median s':>13} "
            f"| {'sender late ms':>14} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in results:
        what = ("none (reference)" if r["interval"] == REFERENCE_INTERVAL
                else f"back to back ({r['interval']:g} s)")
        median = f"{r['pass_median']:.2f}" if r["pass_median"] is not None else "-"
        print(f"| {what:<22} | {r['clusters']:>8} | {r['changes']:>7} | {r['rate']:>6g} | {r['landed']:>6} "
              f"| {ms(r['p50']):>8} | {ms(r['p99']):>8} | {ms(r['max']):>8} | {r['full_passes']:>21} "
              f"| {median:>13} | {r['sender_late_ms']:>14.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second (open loop)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of changes")
    parser.add_argument("--interval", type=float, default=0.2, help="the daemon's --interval: full passes back to back")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait for the last records")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also the same schedule with no full pass running (default: on)")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    return 0 if all(r["landed"] == r["changes"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
