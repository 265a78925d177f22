"""A DR link outage at N clusters (issue 16): every DR key goes to ``broken`` at once, then back.

In-process daemon against an embedded etcd, WATCHDOG=1 pings received on a real NOTIFY_SOCKET
under the unit's ``WatchdogSec=6s``. For each direction it prints the largest ping gap (goal:
< WatchdogSec/2 + 1 s) and the time from the last DR write until every record is right, beside
a bare read of the same keys (clusters/, dr/, protection/ at one revision) in the same run (goal:
within 3x). "Right" is watched from a child process (a watch of protection/ from before the first
write), so the check takes no CPU from the daemon's interpreter. Then, the daemon stopped, one full
pass alone over every DR input changed: the floor of reconciling the outage by a full pass.

    python bench/dr_outage.py --clusters 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon.inprocess import config, converged, populate, start, wait_for  # noqa: E402
from tests.daemon.test_liveness import WATCHDOG_SEC, Pings  # noqa: E402
from worker.etcd import connect, kv  # noqa: E402
from worker.demo.embedded_etcd import EtcdCluster  # noqa: E402
from worker.demo.inventory import put_batched  # noqa: E402
from tests.protection.helpers import make_fence  # noqa: E402
from worker.keys import Keys  # noqa: E402
from worker.protection.memo import PassMemo  # noqa: E402
from worker.protection.reader import read_all  # noqa: E402
from worker.protection.reconcile import full_pass  # noqa: E402

STATE = {"broken": "degraded", "in_sync": "protected"}


def dr_ids(client, keys: Keys) -> list[str]:
    ids, start = [], kv.to_bytes(keys.dr)
    end = kv.prefix_end(start)
    while True:
        resp = client.range(kv.range_request(start, range_end=end, limit=10_000, keys_only=True))
        ids += [item.key.decode()[len(keys.dr):] for item in resp.kvs]
        if not resp.more:
            return ids
        start = resp.kvs[-1].key + b"\0"


def bare_read(client, keys: Keys) -> float:
    t = time.monotonic()
    for _ in read_all(client, keys).rows():
        pass
    return time.monotonic() - t


def check(endpoints: list[str], namespace: str, ids: list[str], state: str, conn) -> None:
    """In a child process (its own interpreter: it takes no CPU from the daemon's GIL): read the
    records at revision R0, say R0, then follow a watch of ``protection/`` from R0 + 1 and send the
    monotonic time at which every record of ``ids`` is in ``state`` (CLOCK_MONOTONIC is one clock
    for every process of the host)."""
    client = connect(endpoints)
    keys = Keys(namespace)
    prefix = kv.to_bytes(keys.protection)
    snapshot = read_all(client, keys)
    wrong = set()
    idset = set(ids)
    for cid, _cluster, _dr, prot in snapshot.rows():
        if cid.decode() in idset and (prot is None or json.loads(prot.value)["state"] != state):
            wrong.add(cid.decode())
    watch = client.watch(prefix, prefix=True, start_revision=snapshot.revision + 1)
    conn.send(snapshot.revision)
    for response in watch:
        for event in response.events:
            cid = event.kv.key[len(prefix):].decode()
            if cid not in idset:
                continue
            if event.kind == "put" and json.loads(event.kv.value)["state"] == state:
                wrong.discard(cid)
            else:
                wrong.add(cid)
        if not wrong:
            conn.send(time.monotonic())
            watch.close()
            client.close()
            return


def outage(endpoints: list[str], client, keys: Keys, ids: list[str], replication: str, pings: Pings,
           bare: float) -> None:
    value = json.dumps({"replication": replication})
    want = STATE[replication]
    parent, child = multiprocessing.get_context("spawn").Pipe()
    checker = multiprocessing.get_context("spawn").Process(
        target=check, args=(endpoints, keys.namespace, ids, want, child), daemon=True)
    checker.start()
    if not parent.poll(120):
        raise SystemExit("the checker did not start")
    parent.recv()  # it follows the records from before the first write
    load = os.getloadavg()[0]
    begun = time.monotonic()
    put_batched(client, [(keys.dr_key(cid), value) for cid in ids])
    last_write = time.monotonic()
    if not parent.poll(600):
        raise SystemExit(f"{replication}: records not right after 600 s")
    right = parent.recv()
    checker.join(10)
    gaps = pings.gaps(begun, max(right, last_write))
    print(f"{replication:>8}: {len(ids)} DR keys written in {last_write - begun:.2f} s; every record right "
          f"{right - last_write:.2f} s after the last write = {(right - last_write) / bare:.1f}x the bare read "
          f"({bare:.2f} s; goal <= 3x); largest WATCHDOG gap {max(gaps):.2f} s (goal < {WATCHDOG_SEC / 2 + 1:.1f} s); "
          f"load {load:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)


def reference_pass(client, keys: Keys, ids: list[str], bare: float) -> None:
    """The daemon stopped: what one full pass costs on its own when every DR input changed (memo
    warm for the rest, as a term's second pass has it): the floor of a full-pass strategy."""
    memo, fence = PassMemo(), make_fence(client, keys)
    full_pass(client, keys, fence, memo=memo)  # every record right already: writes nothing, warms the memo
    put_batched(client, [(keys.dr_key(cid), json.dumps({"replication": "broken"})) for cid in ids])
    load = os.getloadavg()[0]
    t = time.monotonic()
    result = full_pass(client, keys, fence, memo=memo)
    took = time.monotonic() - t
    print(f"reference: one full pass alone over {result.updated} changed DR inputs ({result.memo_hits} memo hits) "
          f"{took:.2f} s = {took / bare:.1f}x the bare read; load {load:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=100_000)
    args = parser.parse_args()
    with EtcdCluster(1, extra_args=["--quota-backend-bytes", str(8 * 1024 ** 3)]) as etcd:
        client = connect(etcd.endpoints)
        keys = Keys(f"/bench/outage-{uuid.uuid4().hex[:6]}")
        populate(client, keys, args.clusters)
        pings = Pings()
        one = start(config(etcd.endpoints, keys.namespace, ttl=10, request_timeout=3.0), notifier=pings.notifier())
        try:
            wait_for(lambda: converged(client, keys, args.clusters), timeout=600, every=0.5, what="first pass")
            ids = dr_ids(client, keys)
            bare = min(bare_read(client, keys) for _ in range(3))
            print(f"{args.clusters} clusters, {len(ids)} with a DR key; bare read of the same keys {bare:.2f} s")
            outage(etcd.endpoints, client, keys, ids, "broken", pings, bare)
            outage(etcd.endpoints, client, keys, ids, "in_sync", pings, bare)
            one.stop()
            reference_pass(client, keys, ids, bare)
        finally:
            if one.thread.is_alive():
                one.stop()
            pings.close()
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
