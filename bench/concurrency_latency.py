"""Lock handoff and election takeover latency: our Python port next to Go's (``etcdctl``).

    python bench/concurrency_latency.py [--runs 20]

Starts its own etcd (``EtcdCluster``), then, N times each:

* lock handoff: a holder unlocks -> the queued waiter's ``lock`` returns. For etcdctl, the holder
  is an ``etcdctl lock`` process that gets SIGINT (it unlocks then), and the time is taken when
  the waiting ``etcdctl lock`` prints its key line.
* election takeover: the leader resigns -> the next candidate's ``campaign`` returns. For
  etcdctl, ``etcdctl elect`` gets SIGINT (it resigns) and the next one prints its key line.

The waiter is always queued (its key exists, its watch had time to start) before the release,
so the numbers are the handoff path only: delete -> watch event -> re-read -> return. The Go
side includes the process's stdout write and our pipe read, about tens of microseconds.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from worker.concurrency import Election, Mutex, Session  # noqa: E402
from worker.etcd import EtcdClient, connect, kv  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster, find_binary  # noqa: E402

SETTLE = (0.05, 0.15)  # after the waiter's key appears, let its watch start (random: etcd's
# 100 ms watcher sync loop must not phase-lock with the runs)


def count_keys(client: EtcdClient, prefix: str) -> int:
    return int(client.range(kv.range_request(prefix, prefix=True, count_only=True)).count)


def wait_keys(client: EtcdClient, prefix: str, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while count_keys(client, prefix) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{prefix}: expected {n} keys")
        time.sleep(0.005)
    time.sleep(random.uniform(*SETTLE))


def python_runs(client_a: EtcdClient, client_b: EtcdClient, runs: int, kind: str) -> list[float]:
    """Handoffs between two sessions that swap roles each run."""
    sa, sb = Session(client_a, ttl=30), Session(client_b, ttl=30)
    name = f"/bench/py-{kind}"
    out: list[float] = []
    try:
        holder_s, waiter_s = sa, sb
        for i in range(runs):
            if kind == "lock":
                holder: Mutex | Election = Mutex(holder_s, name)
                holder.lock()
                waiter: Mutex | Election = Mutex(waiter_s, name)
                acquire: Callable[[], None] = lambda w=waiter: w.lock(timeout=10)  # noqa: E731
                release: Callable[[], None] = holder.unlock
            else:
                holder = Election(holder_s, name)
                holder.campaign(f"v{i}")
                waiter = Election(waiter_s, name)
                acquire = lambda w=waiter, i=i: w.campaign(f"w{i}", timeout=10)  # noqa: E731
                release = holder.resign
            done_at: list[float] = []
            t = threading.Thread(target=lambda: (acquire(), done_at.append(time.perf_counter())))
            t.start()
            wait_keys(client_a, name + "/", 2)
            start = time.perf_counter()
            release()
            t.join(10)
            out.append(done_at[0] - start)
            (waiter.unlock if kind == "lock" else waiter.resign)()  # type: ignore[union-attr]
            holder_s, waiter_s = waiter_s, holder_s
    finally:
        sa.close()
        sb.close()
    return out


class Ctl:
    """One etcdctl process; ``first_line_at`` is when it printed its first line (it holds then)."""

    def __init__(self, endpoints: list[str], *args: str) -> None:
        self.proc = subprocess.Popen([find_binary("etcdctl"), "--endpoints", ",".join(endpoints), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def first_line_at(self, timeout: float = 10.0) -> float:
        at, _ = self.lines.get(timeout=timeout)
        return at

    def release(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # etcdctl can hang after SIGINT; never leave one behind
            self.proc.wait(5)


def etcdctl_runs(client: EtcdClient, endpoints: list[str], runs: int, kind: str) -> list[float]:
    name = f"/bench/go-{kind}"
    args = ["lock", name] if kind == "lock" else ["elect", name]
    extra = [] if kind == "lock" else ["v"]
    out: list[float] = []
    holder = Ctl(endpoints, *args, *extra)
    holder.first_line_at()
    try:
        for _ in range(runs):
            waiter = Ctl(endpoints, *args, *extra)
            wait_keys(client, name + "/", 2)
            start = time.perf_counter()
            holder.release()
            out.append(waiter.first_line_at() - start)
            holder.finish()
            holder = waiter
    finally:
        holder.release()
        holder.finish()
    return out


pct = benchlib.percentile  # the one percentile every bench reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    started = time.monotonic()
    with EtcdCluster(1) as cluster:
        a, b = connect(cluster.endpoints), connect(cluster.endpoints)
        try:
            results = {}
            for kind in ("lock", "election"):
                results[(kind, "python")] = python_runs(a, b, args.runs, kind)
                results[(kind, "etcdctl")] = etcdctl_runs(a, cluster.endpoints, args.runs, kind)
        finally:
            a.close()
            b.close()
    print(f"concurrency handoff latency, {args.runs} runs each, one local etcd "
          f"(etcd {subprocess.run([find_binary('etcd'), '--version'], capture_output=True, text=True).stdout.split()[2]})")
    print(f"{'what':<20}{'client':<10}{'median ms':>11}{'p99 ms':>9}{'min ms':>9}{'py/go median':>14}")
    for kind, label in (("lock", "lock handoff"), ("election", "elect takeover")):
        go_median = statistics.median(results[(kind, "etcdctl")])
        for client_name in ("python", "etcdctl"):
            values = results[(kind, client_name)]
            median = statistics.median(values)
            ratio = f"{median / go_median:.2f}x" if client_name == "python" else ""
            print(f"{label:<20}{client_name:<10}{median * 1000:>11.2f}{pct(values, 99) * 1000:>9.2f}"
                  f"{min(values) * 1000:>9.2f}{ratio:>14}")
    print(f"(total {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
