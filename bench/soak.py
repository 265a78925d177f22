"""Soak: three real daemons, a large inventory changing all the time, and the leader struck down
again and again — then every record must be what the rules say, and no stale write may exist.

Starts its own etcd (``EtcdCluster``, loopback, temporary data dir) and three ``protection-worker
run`` processes (TTL 3 s, request timeout 0.5 s), writes ``--clusters`` clusters, then for
``--duration`` seconds:

* a changer thread writes ``--rate`` input changes per second (DR status flips, DR site set or
  cleared, reclaims and re-allocations, removals and re-creations), paced on a fixed schedule;
* every ``--fault-every`` seconds the current leader gets one of SIGKILL, SIGSTOP (SIGCONT after
  TTL + 1 s) or SIGTERM, in random order (each kind once per round of three); a killed or terminated instance is started again
  half a second after it exited, as systemd's ``Restart=always`` would. Each takeover is timed
  from the signal with ``worker.ops.measure`` (handover, leaderless, first reconcile).

Then the changes stop and it waits (bounded) for convergence: a dry-run full pass (no fence, no
writes) that plans 0 changes, one instance answering ``/leader`` 200. Finally the auditor replays
etcd's history since the first daemon started: every protection write must carry the term of the
leader at its revision. Prints a summary (``--json``: one JSON object on stdout); exit status 0
only when it converged, the audit found 0 violations, and every fault was followed by a takeover.

    python bench/soak.py                  # 10,000 clusters, 200 changes/s, 300 s, a fault every 20 s
    python bench/soak.py --short          # 1,000 clusters, 50 changes/s, 30 s, a fault every 8 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.etcd import connect, kv  # noqa: E402
from worker.etcd.errors import EtcdError  # noqa: E402
from worker.etcd.watch import Watch  # noqa: E402
from worker.ops.audit import audit  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster  # noqa: E402
from worker.demo.inventory import put_batched  # noqa: E402
from worker.demo.instances import WorkerProcess, stop_group  # noqa: E402
from worker.ops.measure import current_leader, measure_failover  # noqa: E402
from worker.keys import Keys  # noqa: E402
from worker.protection.reconcile import full_pass  # noqa: E402

REPLICATIONS = ("in_sync", "syncing", "broken")
SITES = ("site-a", "site-b", "site-c")
FAULTS = ("kill", "stop", "term")
RESTART_SEC = 0.5


def say(text: str, quiet: bool) -> None:
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def populate(client: Any, keys: Keys, n: int, rnd: random.Random) -> list[str]:
    ids = [f"cl-{i:06d}" for i in range(n)]

    def items() -> Any:
        for i, cid in enumerate(ids):
            site = None if i % 4 == 0 else rnd.choice(SITES)
            yield keys.cluster(cid), json.dumps({"allocated": i % 13 != 0, "dr_site": site})
            if site and i % 7:
                yield keys.dr_key(cid), json.dumps({"replication": rnd.choice(REPLICATIONS)})

    put_batched(client, items())
    return ids


class Changer(threading.Thread):
    """Input changes at a fixed rate until stopped; counts what it applied (and what etcd refused)."""

    def __init__(self, client: Any, keys: Keys, ids: list[str], rate: float, seed: int) -> None:
        super().__init__(name="changer", daemon=True)
        self.client, self.keys, self.ids, self.rate = client, keys, ids, rate
        self.rnd = random.Random(seed)
        self.stop = threading.Event()
        self.applied = 0
        self.failed = 0
        self.by_kind: dict[str, int] = {}
        self.behind_max = 0.0

    def change(self) -> str:
        rnd, keys = self.rnd, self.keys
        cid = rnd.choice(self.ids)
        roll = rnd.random()
        if roll < 0.6:
            self.client.put(keys.dr_key(cid), json.dumps({"replication": rnd.choice(REPLICATIONS)}))
            return "dr"
        if roll < 0.75:
            self.client.put(keys.cluster(cid), json.dumps({"allocated": True,
                                                           "dr_site": rnd.choice((None, *SITES))}))
            return "site"
        if roll < 0.9:
            self.client.put(keys.cluster(cid), json.dumps({"allocated": rnd.random() < 0.5,
                                                           "dr_site": rnd.choice(SITES)}))
            return "allocation"
        if roll < 0.95:
            self.client.delete(keys.cluster(cid))
            return "remove"
        self.client.put(keys.cluster(cid), json.dumps({"allocated": True, "dr_site": rnd.choice(SITES)}))
        return "create"

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = start + n / self.rate
            now = time.monotonic()
            if due > now:
                if self.stop.wait(due - now):  # pacing on a fixed schedule
                    break
            else:
                self.behind_max = max(self.behind_max, now - due)
            n += 1
            try:
                kind = self.change()
            except EtcdError:
                self.failed += 1
                continue
            self.applied += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def planned_changes(client: Any, keys: Keys) -> tuple[int, int]:
    """(changes a dry-run full pass would make, invalid inputs): (0, 0) when every record is right."""
    result = full_pass(client, keys, None, dry_run=True)
    return len(result.changes) + result.changes_dropped, len(result.invalid)


def leaders(workers: list[WorkerProcess]) -> list[str]:
    return [w.instance_id for w in workers if w.get("/leader", timeout=1.0)[0] == 200]


def await_convergence(client: Any, keys: Keys, workers: list[WorkerProcess], timeout: float) -> tuple[bool, float, int]:
    """Re-check after every protection write (a watch), or every second when nothing is written."""
    start = time.monotonic()
    deadline = start + timeout
    planned = -1
    with Watch(client, keys.protection, range_end=kv.prefix_end(keys.protection)) as watch:
        watch.started.wait(5)
        while True:
            try:
                planned, _invalid = planned_changes(client, keys)
                if planned == 0 and len(leaders(workers)) == 1:
                    return True, time.monotonic() - start, 0
            except EtcdError:
                pass
            if time.monotonic() >= deadline:
                return False, time.monotonic() - start, planned
            # drain what arrived, then wait for the next write (or a second of silence)
            while watch.get(timeout=0) is not None:
                pass
            watch.get(timeout=min(1.0, max(0.0, deadline - time.monotonic())))


class Faults:
    def __init__(self, client: Any, keys: Keys, workers: list[WorkerProcess], ttl: int, rnd: random.Random,
                 quiet: bool) -> None:
        self.client, self.keys, self.workers, self.ttl, self.rnd, self.quiet = client, keys, workers, ttl, rnd, quiet
        self.results: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._restarts: list[threading.Thread] = []
        self._deck: list[str] = []

    def by_id(self, instance_id: str) -> WorkerProcess | None:
        return next((w for w in self.workers if w.instance_id == instance_id), None)

    def _restart_later(self, worker: WorkerProcess, mode: str) -> None:
        def run() -> None:
            assert worker.proc is not None
            try:
                code = worker.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - did not exit: say so, kill it, start it anyway
                self.errors.append(f"{worker.instance_id} did not exit after SIG{mode.upper()}")
                worker.kill()
                code = worker.proc.returncode
            if mode == "term" and code != 0:
                self.errors.append(f"{worker.instance_id} exited {code} on SIGTERM (expected 0)")
            time.sleep(RESTART_SEC)  # systemd's RestartSec=
            worker.start()
            if not worker.wait_http("/readyz", 200, timeout=20):
                self.errors.append(f"{worker.instance_id} not ready after its restart")
        thread = threading.Thread(target=run, name=f"restart-{worker.instance_id}", daemon=True)
        self._restarts.append(thread)
        thread.start()

    def strike(self) -> None:
        leader = current_leader(self.client, self.keys)
        worker = self.by_id(leader[0].instance_id) if leader else None
        if worker is None or not worker.running():
            self.errors.append("no leader to strike (skipped)")
            return
        if not self._deck:  # every kind once per round, in random order: even a short run sees all
            self._deck = self.rnd.sample(FAULTS, len(FAULTS))
        mode = self._deck.pop()
        sig = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM}[mode]
        fault_at: list[float] = []

        def fault() -> None:
            fault_at.append(time.monotonic())
            worker.signal(sig)

        try:
            result = measure_failover(self.client, self.keys, fault, mode=mode, timeout=4 * self.ttl + 10)
            row = result.to_json()
            row["ok"] = bool(row["new_leader"]) and row["new_leader"] != row["old_leader"]
        except (TimeoutError, EtcdError) as err:
            row = {"mode": mode, "old_leader": worker.instance_id, "new_leader": None, "ok": False,
                   "error": str(err)}
        finally:
            if mode == "stop":
                # resumed TTL + 1 s after the freeze: it wakes long after losing its lease
                resume_at = (fault_at[0] if fault_at else time.monotonic()) + self.ttl + 1
                time.sleep(max(0.0, resume_at - time.monotonic()))
                worker.signal(signal.SIGCONT)
            else:
                self._restart_later(worker, mode)
        self.results.append(row)
        say(f"fault {len(self.results)}: SIG{mode.upper()} {row['old_leader']} -> {row.get('new_leader')}: "
            f"handover {row.get('handover_ms')} ms, leaderless {row.get('leaderless_ms')} ms, "
            f"first pass {row.get('first_reconcile_ms')} ms", self.quiet)

    def join(self) -> None:
        for thread in self._restarts:
            thread.join(timeout=40)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": round(statistics.median(values), 1), "max": max(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="pw-soak-"))
    keys = Keys("/soak")
    summary: dict[str, Any] = {"clusters": args.clusters, "rate": args.rate, "duration": args.duration,
                               "fault_every": args.fault_every, "ttl": args.ttl, "log_dir": str(base)}
    etcd = EtcdCluster(args.etcd_members, base_dir=str(base / "etcd")).start()
    client = connect(etcd.endpoints, request_timeout=2.0)
    workers: list[WorkerProcess] = []
    try:
        t0 = time.monotonic()
        ids = populate(client, keys, args.clusters, rnd)
        say(f"{len(ids)} clusters written in {time.monotonic() - t0:.1f} s", args.quiet)
        from_revision = client.current_revision(keys.root) + 1
        workers = [WorkerProcess(f"worker-{i + 1}", etcd.endpoints, keys.namespace, base, ttl=args.ttl,
                                 request_timeout=args.request_timeout, interval=args.interval).start()
                   for i in range(3)]
        for worker in workers:
            if not worker.wait_http("/readyz", 200, timeout=30):
                raise RuntimeError(f"{worker.instance_id} never became ready: {worker.log_path}")
        ok, took, _ = await_convergence(client, keys, workers, timeout=120)
        summary["initial_convergence_s"] = round(took, 2)
        if not ok:
            raise RuntimeError("the initial reconcile never converged")
        say(f"initial state converged in {took:.1f} s; soaking for {args.duration:g} s", args.quiet)

        changer = Changer(client, keys, ids, args.rate, args.seed + 1)
        faults = Faults(client, keys, workers, args.ttl, random.Random(args.seed + 2), args.quiet)
        stop = threading.Event()
        start = time.monotonic()
        end = start + args.duration
        changer.start()
        next_fault = start + args.fault_every
        while True:
            if stop.wait(max(0.0, min(next_fault, end) - time.monotonic())):
                break
            if time.monotonic() >= end:
                break
            faults.strike()
            next_fault = max(next_fault + args.fault_every, time.monotonic() + 1.0)
        changer.stop.set()
        changer.join(timeout=10)
        changes_end = time.monotonic()
        faults.join()
        say(f"{changer.applied} changes applied ({changer.failed} refused by etcd); waiting for convergence",
            args.quiet)
        converged, took, planned = await_convergence(client, keys, workers, timeout=args.converge_timeout)
        summary["convergence_s"] = round(time.monotonic() - changes_end, 2)
        summary["converged"] = converged
        summary["planned_changes_left"] = planned
        planned, invalid = planned_changes(client, keys)
        t_audit = time.monotonic()
        report = audit(client, keys, from_revision)
        summary["audit"] = {"from_revision": report.from_revision, "to_revision": report.to_revision,
                            "checked": report.checked, "violations": len(report.violations),
                            "seconds": round(time.monotonic() - t_audit, 2)}
        if report.violations:
            summary["violations"] = [v.__dict__ for v in report.violations[:20]]
        protection = client.range(kv.range_request(keys.protection, prefix=True, count_only=True)).count
        handovers = [f["handover_ms"] for f in faults.results if f.get("ok")]
        summary.update({
            "changes_applied": changer.applied, "changes_refused": changer.failed, "changes_by_kind": changer.by_kind,
            "changer_behind_max_s": round(changer.behind_max, 3),
            "faults_injected": len(faults.results),
            "faults_by_mode": {m: sum(1 for f in faults.results if f["mode"] == m) for m in FAULTS},
            "failovers": faults.results,
            "handover_ms": _stats(handovers),
            "handover_ms_by_mode": {m: _stats([f["handover_ms"] for f in faults.results
                                               if f.get("ok") and f["mode"] == m]) for m in FAULTS},
            "first_reconcile_ms": _stats([f["first_reconcile_ms"] for f in faults.results if f.get("ok")]),
            "errors": faults.errors, "invalid_inputs": invalid, "records": protection,
            "leaders": leaders(workers),
        })
        summary["ok"] = bool(converged and planned == 0 and not report.violations and faults.results
                             and all(f.get("ok") for f in faults.results) and not faults.errors
                             and len(summary["leaders"]) == 1)
        return summary
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)
        stop_group(workers)
        client.close()
        etcd.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def print_summary(s: dict[str, Any]) -> None:
    print(f"soak: {s['clusters']} clusters, {s['rate']:g} changes/s for {s['duration']:g} s, "
          f"a fault every {s['fault_every']:g} s, TTL {s['ttl']} s")
    print(f"  initial convergence   {s.get('initial_convergence_s')} s")
    print(f"  changes applied       {s.get('changes_applied')} ({s.get('changes_refused')} refused) "
          f"{s.get('changes_by_kind')}")
    print(f"  faults injected       {s.get('faults_injected')} {s.get('faults_by_mode')}")
    for i, f in enumerate(s.get("failovers", []), 1):
        print(f"    {i:3d}. SIG{f['mode'].upper():5s} {f['old_leader']} -> {f.get('new_leader')}: "
              f"handover {f.get('handover_ms')} ms, leaderless {f.get('leaderless_ms')} ms, "
              f"first pass {f.get('first_reconcile_ms')} ms" + (f"  ERROR {f['error']}" if f.get("error") else ""))
    print(f"  takeover (handover)   {s.get('handover_ms')} ms; by mode {s.get('handover_ms_by_mode')}")
    print(f"  first reconcile       {s.get('first_reconcile_ms')} ms")
    print(f"  convergence           {s.get('convergence_s')} s after the last change "
          f"(converged: {s.get('converged')}, changes left: {s.get('planned_changes_left')})")
    print(f"  records               {s.get('records')}, invalid inputs {s.get('invalid_inputs')}")
    audit_ = s.get("audit", {})
    print(f"  audit                 {audit_.get('checked')} protection writes checked, "
          f"{audit_.get('violations')} violations ({audit_.get('seconds')} s)")
    if s.get("errors"):
        print(f"  errors                {s['errors']}")
    print(f"  result                {'OK' if s.get('ok') else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="input changes per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of changes and faults")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--short", action="store_true",
                        help="1,000 clusters, 50 changes/s, 30 s, a fault every 8 s (the test suite's run)")
    parser.add_argument("--ttl", type=int, default=3)
    parser.add_argument("--request-timeout", type=float, default=0.5)
    parser.add_argument("--interval", type=float, default=30.0, help="the daemons' full-pass interval")
    parser.add_argument("--etcd-members", type=int, default=1)
    parser.add_argument("--converge-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    parser.add_argument("--keep", action="store_true", help="keep the logs and etcd data dir")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.short:
        args.clusters, args.rate, args.duration, args.fault_every = 1000, 50.0, 30.0, 8.0
    summary = run(args)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
