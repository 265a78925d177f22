"""Crash and hang failover of the shipped unit: under a real systemd and under the stand-in, one run.

    python bench/failover_release.py [--runs 20] [--ttl 10] [--hang-runs 3] [--ttl-only-runs 3]
                                     [--clusters 1000] [--only systemd|standin]

Not a test: prints tables. The question: how fast does a follower lead after the leader's process
dies (SIGKILL: ``ExecStopPost=protection-worker release`` revokes its lease) or hangs (SIGSTOP: the
unit's watchdog kills it, then the release), with the shipped unit, the default TTL (10 s, which
the unit's ``WatchdogSec=6s`` is set against)?

1. real systemd (``tests/system/real_systemd.py``: systemd booted as PID 1 of a namespace, when
   it can run here): two instances of ``systemd/protection-worker@.service``, unchanged but for the
   operator's drop-in; SIGKILL/SIGSTOP to the leader's main process; systemd's own log for the
   watchdog and the release;
2. the stand-in (``worker.demo.supervisor``, for the demo only) reading ``systemd/protection-worker.service``,
   with runs without the release beside it (what etcd's TTL alone gives, as after a host power loss).

Both are timed the same way (``worker.ops.measure.measure_failover``: from the fault until the new
leader's election key is seen on a watch), on etcds of the same release, in the same run, and a
summary prints them side by side. About 5-6 minutes at the defaults.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import HEAD, NAMESPACE, UNIT, Daemons, clean_up, load_inventory, log, row, verdict  # noqa: E402

from worker.etcd import EtcdClient, connect  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster, binary_version  # noqa: E402
from worker.ops.measure import Failover, current_leader, format_ms, measure_failover  # noqa: E402
from worker.demo.supervisor import ServiceSpec  # noqa: E402
from worker.keys import Keys  # noqa: E402


def standin(args: argparse.Namespace) -> dict[str, Any]:
    """The shipped unit under the stand-in (``worker.demo.supervisor``): crash runs alternating with
    and without the release, then hangs; prints its table and returns its figures."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-release-"))
    keys = Keys(NAMESPACE)
    etcd = EtcdCluster(1, base_dir=str(workdir / "etcd"))
    unit = UNIT.read_text()
    spec = ServiceSpec.from_unit(unit)
    daemons: Daemons | None = None
    client: EtcdClient | None = None
    with_release: list[tuple[Failover, dict[str, Any]]] = []
    ttl_only: list[tuple[Failover, dict[str, Any]]] = []
    hangs: list[tuple[Failover, dict[str, Any]]] = []
    try:
        etcd.start()
        client = connect(etcd.endpoints)
        load_inventory(client, keys, args.clusters)
        log(f"etcd {etcd.endpoints[0]}, {args.clusters} clusters; two workers of {UNIT.name} under the systemd "
            f"stand-in (TTL {args.ttl} s)")
        daemons = Daemons(etcd.endpoints, workdir / "workers", args.ttl, client, keys, unit=unit)
        daemons.start()
        load_before = os.getloadavg()
        for i in range(args.runs + args.ttl_only_runs):  # alternating while both run: the same host
            release = i % 2 == 0 if i < 2 * min(args.runs, args.ttl_only_runs) else len(with_release) < args.runs
            result = daemons.failover(signal.SIGKILL, "crash", release=release)
            (with_release if release else ttl_only).append((result, daemons.supervised[-1]))
            log(f"stand-in crash {'with release' if release else 'TTL only    '} {len(with_release if release else ttl_only)}: "
                f"handover {format_ms(result.handover_ms)}, leading {format_ms(result.leaderless_ms)}")
        for i in range(args.hang_runs):
            result = daemons.failover(signal.SIGSTOP, "hang", release=True)
            hangs.append((result, daemons.supervised[-1]))
            log(f"stand-in hang {i + 1}/{args.hang_runs}: handover {format_ms(result.handover_ms)} "
                f"(watchdog fired {hangs[-1][1]['watchdog']:.2f} s after the SIGSTOP)")
        load_after = os.getloadavg()
    finally:
        clean_up(daemons, client, etcd, workdir, args.keep)

    def figures(runs: list[tuple[Failover, dict[str, Any]]], what: str) -> list[float]:
        if what in ("handover_ms", "leaderless_ms", "first_reconcile_ms"):  # null when unmeasured
            return [getattr(f, what) / 1000 for f, _ in runs if getattr(f, what) is not None]
        return [s[what] for _, s in runs if s.get(what) is not None]

    print(f"\n=== STAND-IN (worker.demo.supervisor, for the demo): {UNIT.name}, 2 worker processes, "
          f"{args.clusters} clusters, election TTL {args.ttl} s, {args.runs} crash runs with the release, "
          f"{args.ttl_only_runs} without, {os.cpu_count()} CPUs")
    print(f"host load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in load_before)}, at end "
          f"{'/'.join(f'{x:.1f}' for x in load_after)}")
    if load_before[0] > 1.0 or load_after[0] > 1.0:
        print("WARNING: other work ran on this host during the run: tails are inflated by CPU contention")
    print("all times in ms from the fault (the SIGKILL, or the SIGSTOP for a hang)\n")
    print("1. SIGKILL to the leader")
    print(HEAD)
    for label, runs in (("with release (ExecStopPost=)", with_release), ("TTL only (no ExecStopPost=)", ttl_only)):
        print(row(f"{label}: handover_ms", figures(runs, "handover_ms")))
        print(row("    leaderless_ms (/leader 200)", figures(runs, "leaderless_ms")))
        print(row("    first_reconcile_ms", figures(runs, "first_reconcile_ms")))
    print(row("with release: main process reaped", figures(with_release, "reaped")))
    print(row("with release: release command done", figures(with_release, "release_done")))
    released = sum(1 for _, s in with_release if s["released"])
    print(f"  the release revoked the dead leader's lease in {released} of {len(with_release)} runs")
    wd, abort = spec.watchdog_sec or 0.0, spec.timeout_abort_sec or 0.0
    print(f"\n2. hang: SIGSTOP to the leader (WatchdogSec {wd:g} s, WatchdogSignal "
          f"{signal.Signals(spec.watchdog_signal).name} then SIGCONT, as systemd does; TimeoutAbortSec "
          f"{abort:g} s only if it survives; then the release)")
    print(HEAD)
    print(row("watchdog fired", figures(hangs, "watchdog")))
    print(row("main process reaped (died of SIGABRT)", figures(hangs, "reaped")))
    print(row("handover_ms", figures(hangs, "handover_ms")))
    print(row("leaderless_ms (/leader 200)", figures(hangs, "leaderless_ms")))
    print("\ntargets")
    hand = figures(with_release, "handover_ms")
    hang = figures(hangs, "handover_ms")
    checks = [("with release: median handover <= 500 ms", f"{statistics.median(hand) * 1000:.1f} ms",
               statistics.median(hand) <= 0.5),
              ("with release: max handover <= 1000 ms", f"{max(hand) * 1000:.1f} ms", max(hand) <= 1.0)]
    if hang:
        checks.append((f"hang replaced within WatchdogSec + 1.5 s = {(wd + 1.5) * 1000:.0f} ms",
                       f"max {max(hang) * 1000:.1f} ms", max(hang) <= wd + 1.5))
    for name, value, ok in checks:
        print(f"  {verdict(ok)}  {name:<58} {value}")
    print(f"(stand-in total {time.monotonic() - started:.0f} s)")
    return {"crash": hand, "hang": hang}




def real_systemd(args: argparse.Namespace) -> dict[str, Any] | None:
    """The shipped template unit under a real systemd: crash runs, then hangs; prints its table."""
    from tests.system.real_systemd import RealSystemd, SystemdWorkers, service_venv, unavailable
    why = unavailable()
    if why:
        print(f"\n=== REAL SYSTEMD: not measured here: {why}")
        return None
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-systemd-"))
    keys = Keys(NAMESPACE + "-systemd")
    etcd = EtcdCluster(1, base_dir=str(workdir / "etcd"))
    crash: list[Failover] = []
    hang: list[Failover] = []
    released = 0
    bin_dir = service_venv()
    client: EtcdClient | None = None
    with RealSystemd() as systemd:
        try:
            etcd.start()
            client = connect(etcd.endpoints)
            load_inventory(client, keys, args.clusters)
            workers = SystemdWorkers(systemd, bin_dir, etcd.endpoints, keys.namespace, ttl=args.ttl)
            names = ("1", "2")
            workers.start(*names)
            log(f"real systemd: {' '.join(workers.unit(n) for n in names)} on etcd {etcd.endpoints[0]}, "
                f"{args.clusters} clusters, TTL {args.ttl} s")

            def settled() -> str:
                """Both instances running and in line; the leader's name."""
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    found = current_leader(client, keys)
                    states = [workers.show(n, "ActiveState", "SubState", "StatusText") for n in names]
                    if found and all(s["SubState"] == "running" and s["StatusText"] for s in states):
                        code = 0
                        leader = found[0].instance_id.removeprefix("pw-")
                        others = [n for n in names if n != leader]
                        from urllib.request import urlopen
                        try:
                            with urlopen(f"http://127.0.0.1:{workers.ports[others[0]]}/healthz", timeout=1) as r:
                                code = r.status
                        except OSError:
                            pass
                        if code in (200, 503):
                            return leader
                    time.sleep(0.05)
                raise TimeoutError("the instances did not settle within 60 s")

            def fault_run(sig: int, mode: str) -> Failover:
                time.sleep(0.3)
                leader = settled()
                pid = workers.host_pid(leader)
                assert pid is not None
                result = measure_failover(client, keys, lambda: os.kill(pid, sig), mode=mode, timeout=60)
                if result.new_leader == f"pw-{leader}":
                    raise RuntimeError(f"{mode}: pw-{leader} still leads")
                return result

            for i in range(args.runs):
                result = fault_run(signal.SIGKILL, "crash")
                crash.append(result)
                log(f"real systemd crash {i + 1}/{args.runs}: handover {format_ms(result.handover_ms)}, "
                    f"leading {format_ms(result.leaderless_ms)}")
            for i in range(args.hang_runs):
                result = fault_run(signal.SIGSTOP, "hang")
                hang.append(result)
                log(f"real systemd hang {i + 1}/{args.hang_runs}: handover {format_ms(result.handover_ms)}")
            settled()
            journals = "".join(workers.journal(n) for n in names)
            released = journals.count("protection-worker release: released lease")
            watchdog = journals.count("Watchdog timeout")
            aborted = journals.count("code=killed, status=6/ABRT")
            sigkill_after_abort = sum("SIGKILL" in part.split("Main process exited")[0]
                                      for part in journals.split("Watchdog timeout")[1:])
            workers.stop_all()
        finally:
            if client is not None:
                client.close()
            etcd.close()
    hand = [f.handover_ms / 1000 for f in crash if f.handover_ms is not None]
    lead = [f.leaderless_ms / 1000 for f in crash if f.leaderless_ms is not None]
    hung = [f.handover_ms / 1000 for f in hang if f.handover_ms is not None]
    print(f"\n=== REAL SYSTEMD ({systemd_version()}, PID 1 of a namespace): protection-worker@.service x2, "
          f"{args.clusters} clusters, election TTL {args.ttl} s, {args.runs} crash runs, {os.cpu_count()} CPUs")
    print("all times in ms from the fault (the SIGKILL, or the SIGSTOP for a hang)\n")
    print("1. SIGKILL to the leader's main process")
    print(HEAD)
    print(row("with release (ExecStopPost=): handover_ms", hand))
    print(row("    leaderless_ms (/leader 200)", lead))
    print(f"  systemd's journal: the release revoked a dead leader's lease {released} times "
          f"(runs: {len(crash)} crashes + {len(hang)} hangs)")
    print("\n2. hang: SIGSTOP to the leader (WatchdogSec=6s; systemd's own log below)")
    print(HEAD)
    print(row("handover_ms", hung))
    print(f"  journal: 'Watchdog timeout' {watchdog}x, 'code=killed, status=6/ABRT' {aborted}x, "
          f"SIGKILL between the watchdog and the exit {sigkill_after_abort}x (SIGCONT follows the SIGABRT)")
    print(f"(real systemd total {time.monotonic() - started:.0f} s)")
    return {"crash": hand, "hang": hung}


def systemd_version() -> str:
    import subprocess
    from tests.system.real_systemd import SYSTEMD
    out = subprocess.run([str(SYSTEMD), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return out.split("(")[0].strip() or "systemd"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="crash runs with the release, each way (default 20)")
    parser.add_argument("--ttl-only-runs", type=int, default=3, help="stand-in crash runs without the release (default 3)")
    parser.add_argument("--hang-runs", type=int, default=3, help="SIGSTOP runs (default 3)")
    parser.add_argument("--ttl", type=int, default=10, help="election TTL (default 10, the shipped default)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--worker-nice", type=int, default=0)
    parser.add_argument("--only", choices=("systemd", "standin"), help="measure only one of the two")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"etcd {binary_version()}; host load average at start {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    real = real_systemd(args) if args.only != "standin" else None
    stand = standin(args) if args.only != "systemd" else None
    print("\n=== SIDE BY SIDE (same run, same etcd release; ms from the fault)")
    print(f"  {'':<34}{'crash median':>14}{'crash max':>12}{'crash n':>9}{'hang median':>13}{'hang max':>10}")
    for label, fig in (("real systemd (systemd 252)", real), ("stand-in (worker.demo.supervisor)", stand)):
        if not fig:
            print(f"  {label:<34}{'not measured':>14}")
            continue
        c, h = fig["crash"], fig["hang"]
        print(f"  {label:<34}{statistics.median(c) * 1000:>14.0f}{max(c) * 1000:>12.0f}{len(c):>9}"
              + (f"{statistics.median(h) * 1000:>13.0f}{max(h) * 1000:>10.0f}" if h else f"{'-':>13}{'-':>10}"))
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
