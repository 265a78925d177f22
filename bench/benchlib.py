"""What the benches share: one percentile, the table row, the inventory loader, the etcdctl
drivers, and the pair of worker daemons a failover bench measures.

Every bench reports percentiles through ``percentile`` (nearest rank: the smallest value with at
least p % of the values at or below it), so a p99 means the same in every bench's table.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from worker.etcd import EtcdClient, kv  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster, find_binary  # noqa: E402
from worker.demo.instances import SupervisedWorker, WorkerProcess  # noqa: E402
from worker.ops.measure import Failover, current_leader, measure_failover  # noqa: E402
from worker.ops import inventory  # noqa: E402
from worker.keys import Keys  # noqa: E402

NAMESPACE = "/protection-worker"
UNIT = Path(__file__).resolve().parents[1] / "systemd" / "protection-worker.service"
ELECT_NAME = "/bench/etcdctl-elect"
POLL_KEY = "/bench/client-go-lock"
SETTLE = (0.2, 0.4)  # the waiter's key exists: let its watch start (random, so runs do not
# phase-lock with etcd's 100 ms watcher sync loop or the leader's keepalive)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """percentile returns the nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def count_keys(client: EtcdClient, prefix: str) -> int:
    return int(client.range(kv.range_request(prefix, prefix=True, count_only=True)).count)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(step)


# -- inventory ---------------------------------------------------------------------------------
def load_inventory(client: EtcdClient, keys: Keys, n: int) -> list[str]:
    """``n`` clusters (most allocated with a DR site and a replication status), loaded with the one
    batched loader (``worker.demo.inventory.put_batched``); returns the ids whose DR input the
    incremental phase may flip (allocated, with a DR site)."""
    rnd = random.Random(1)
    items: list[tuple[str, str]] = []
    flippable = []
    for i in range(1, n + 1):
        cid = f"cluster-{i:05d}"
        allocated, site = i % 17 != 0, (None if i % 10 == 0 else f"site-{'abc'[i % 3]}")
        items.append((keys.cluster(cid), json.dumps({"allocated": allocated, "dr_site": site})))
        if site:
            items.append((keys.dr_key(cid), json.dumps(
                {"replication": rnd.choice(["in_sync", "in_sync", "syncing", "broken"])})))
            if allocated:
                flippable.append(cid)
    inventory.put_batched(client, items)
    return flippable


# -- the daemons -------------------------------------------------------------------------------
class NicedWorker(WorkerProcess):
    """A worker started under ``nice -n N`` (every thread inherits it)."""

    niceness = 0

    def command(self) -> list[str]:
        base = super().command()
        return ["nice", "-n", str(self.niceness), *base] if self.niceness else base


class Daemons:
    def __init__(self, endpoints: list[str], workdir: Path, ttl: int, client: EtcdClient, keys: Keys,
                 niceness: int = 0, unit: str | None = None) -> None:
        """``unit``: run the workers under the systemd stand-in with this unit file's text."""
        self.client, self.keys = client, keys
        workdir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, WorkerProcess] = {}
        for i in (1, 2):
            if unit is not None:
                worker: WorkerProcess = SupervisedWorker(f"worker-{i}", endpoints, NAMESPACE, workdir, ttl=ttl,
                                                         request_timeout=0.5, unit=unit)
            else:
                worker = NicedWorker(f"worker-{i}", endpoints, NAMESPACE, workdir, ttl=ttl, request_timeout=0.5)
                worker.niceness = niceness
            self.workers[worker.instance_id] = worker
        self.exit_codes: list[int | None] = []
        self.elected_ms: list[float] = []  # fault -> the new leader's became_leader log line
        self.pass_s: list[float] = []  # the new leader's first full pass, its own timer
        self.go_watch: GoWatch | None = None
        self.committed_s: list[float] = []  # fault -> its key's DELETE seen by a Go watcher
        self.restart_s: list[float] = []
        #: per supervised run, seconds from the fault: reaped, watchdog fired, release done
        self.supervised: list[dict[str, Any]] = []

    def start(self) -> None:
        for w in self.workers.values():
            w.start()
            time.sleep(0.3)  # worker-1 first: it leads
        wait_until(lambda: count_keys(self.client, self.keys.election + "/") == 2, 30, "two candidates")
        self.wait_first_pass()

    def leader(self) -> WorkerProcess:
        found = current_leader(self.client, self.keys)
        assert found is not None, "no leader"
        return self.workers[found[0].instance_id]

    def follower(self) -> WorkerProcess:
        lead = self.leader()
        return next(w for w in self.workers.values() if w is not lead)

    def wait_first_pass(self) -> None:
        def done() -> bool:
            found = current_leader(self.client, self.keys)
            if found is None or found[0].instance_id not in self.workers:
                return False
            body = self.workers[found[0].instance_id].get("/healthz")[1] or {}
            return (body.get("last_pass") or {}).get("term") == found[1].create_revision
        wait_until(done, 30, "the leader's first pass")

    def settled(self) -> None:
        """Both in line, the follower ready, its campaign watch given time to start."""
        wait_until(lambda: count_keys(self.client, self.keys.election + "/") == 2, 30, "two candidates")
        wait_until(lambda: self.follower().get("/readyz")[0] == 200, 30, "the follower ready")
        time.sleep(random.uniform(*SETTLE))

    def restart(self, worker: WorkerProcess, sig: int, fault_at: float = 0.0) -> None:
        t0 = time.monotonic()
        if isinstance(worker, SupervisedWorker):  # the stand-in restarts it (Restart=on-failure)
            assert worker.service is not None
            worker.service.wait_event("ready", after=worker.service.wait_event("reaped", after=fault_at).at)
            wait_until(lambda: worker.get("/readyz")[0] == 200, 30, f"{worker.instance_id} back in line")
            self.restart_s.append(time.monotonic() - t0)
            return
        if sig == signal.SIGKILL:
            worker.kill()
            self.exit_codes.append(None)
        else:
            # it is exiting already: a second SIGTERM during interpreter shutdown (default
            # handlers restored) would kill it with -15 and hide its real exit status
            assert worker.proc is not None
            try:
                worker.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.exit_codes.append(worker.terminate(timeout=5))
        worker.start()
        wait_until(lambda: worker.get("/readyz")[0] == 200, 30, f"{worker.instance_id} back in line")
        self.restart_s.append(time.monotonic() - t0)

    def failover(self, sig: int, mode: str, release: bool | None = None) -> Failover:
        """One fault to the leader, timed; ``release`` (supervised workers): run the unit's
        ``ExecStopPost=`` release after this death, or not."""
        self.settled()
        old = self.leader()
        fault_at: list[float] = []
        if release is not None:
            assert isinstance(old, SupervisedWorker)
            old.set_release(release)

        def fault() -> None:
            fault_at.append(time.time())
            fault_at.append(time.monotonic())
            old.signal(sig)

        result = measure_failover(self.client, self.keys, fault, mode=mode, timeout=60)
        if result.new_leader == old.instance_id:
            raise RuntimeError(f"{mode}: {old.instance_id} still leads")
        self.elected_ms.append(self.became_leader_at(result) - fault_at[0] * 1000)
        last = ((self.workers[result.new_leader or ""].get("/healthz")[1] or {}).get("last_pass") or {})
        if last.get("term") == result.new_term and last.get("mode") == "full":
            self.pass_s.append(float(last.get("duration", 0.0)))
        if self.go_watch is not None:
            self.committed_s.append(self.go_watch.first_delete_after(fault_at[1]))
        self.restart(old, sig, fault_at[1])
        if isinstance(old, SupervisedWorker) and old.service is not None:
            events = {e.kind: e.at for e in old.service.events if e.at >= fault_at[1]}
            runs = [r for r in old.service.stop_posts if r.started >= fault_at[1]]
            self.supervised.append({"reaped": events["reaped"] - fault_at[1],
                                    "watchdog": events.get("watchdog", fault_at[1]) - fault_at[1],
                                    "release_done": (runs[0].ended - fault_at[1]) if runs else None,
                                    "released": bool(runs) and "released lease" in runs[0].output})
        return result

    def became_leader_at(self, result: Failover) -> float:
        """Wall-clock ms of the new leader's own ``became_leader`` log line for its term: when the
        daemon itself knows it leads (what etcdctl's printed line says), before the Mutex."""
        worker = self.workers[result.new_leader or ""]
        for event in reversed(worker.log_events()):
            if event.get("event") == "became_leader" and event.get("term") == result.new_term:
                stamp = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                return stamp.timestamp() * 1000
        return float("nan")

    def stop(self) -> None:
        for w in self.workers.values():
            w.terminate(timeout=5)


# -- etcdctl elect -----------------------------------------------------------------------------
class Ctl:
    """One ``etcdctl elect NAME VALUE``; ``first_line_at`` is when it printed its key (it leads)."""

    def __init__(self, endpoints: list[str], value: str) -> None:
        self.proc = subprocess.Popen([find_binary("etcdctl"), "--endpoints", ",".join(endpoints),
                                      "elect", ELECT_NAME, value],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[float] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for _line in self.proc.stdout:
            self.lines.put(time.monotonic())

    def first_line_at(self, timeout: float = 10.0) -> float:
        return self.lines.get(timeout=timeout)

    def finish(self, timeout: float = 3.0) -> None:
        """Wait for a signalled etcdctl to exit; SIGKILL it otherwise (it traps SIGTERM)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class GoWatch:
    """``etcdctl watch --prefix P``: when etcd's DELETE of a leader key is visible to a Go watcher,
    independent of this Python process (which a busy host slows down)."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        self.proc = subprocess.Popen([find_binary("etcdctl"), "--endpoints", ",".join(endpoints), "watch",
                                      "--prefix", prefix], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self.deletes: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "DELETE":
                self.deletes.append(time.monotonic())

    def first_delete_after(self, t0: float, timeout: float = 2.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.deletes if t >= t0]
            if later:
                return later[0] - t0
            time.sleep(0.005)
        return float("nan")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


# -- report ------------------------------------------------------------------------------------
def row(name: str, values: list[float]) -> str:
    """One line of a table: seconds in, milliseconds out."""
    if not values:
        return f"  {name:<42}" + f"{'-':>10}" * 5 + f"{'n=0':>6}"
    cells = (statistics.median(values), percentile(values, 90), percentile(values, 99), min(values), max(values))
    return f"  {name:<42}" + "".join(f"{v * 1000:>10.1f}" for v in cells) + f"{len(values):>6}"


HEAD = f"  {'':<42}{'median':>10}{'p90':>10}{'p99':>10}{'min':>10}{'max':>10}{'n':>6}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def clean_up(daemons: Daemons | None, client: EtcdClient | None, etcd: EtcdCluster, workdir: Path,
             keep: bool) -> None:
    """Stop the workers (and the Go watcher), close the client, stop etcd, remove the work directory."""
    if daemons is not None:
        if daemons.go_watch is not None:
            daemons.go_watch.close()
        daemons.stop()
    if client is not None:
        client.close()
    etcd.close()
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"kept {workdir}")


