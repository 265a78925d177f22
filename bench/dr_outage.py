"""A DR link outage at N clusters (issue 16): every DR key goes to ``broken`` at once, then back.

In-process daemon against an embedded etcd, WATCHDOG=1 pings received on a real NOTIFY_SOCKET
under the unit's ``WatchdogSec=6s``. For each direction it prints the largest ping gap (goal:
< WatchdogSec/2 + 1 s) and the time from the last DR write until every record is right, beside
a bare read of the same keys (clusters/, dr/, protection/ at one revision) in the same run (goal:
within 3x).

    python bench/dr_outage.py --clusters 100000
"""

from __future__ import annotations

import argparse
import json
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
from worker.keys import Keys  # noqa: E402
from worker.protection.reader import read_all  # noqa: E402

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


def wrong(client, keys: Keys, ids: set[str], state: str) -> int:
    """Records of ``ids`` not (yet) in ``state``."""
    n = 0
    for cid, _cluster, _dr, prot in read_all(client, keys).rows():
        if cid.decode() in ids and (prot is None or json.loads(prot.value)["state"] != state):
            n += 1
    return n


def outage(client, keys: Keys, ids: list[str], replication: str, pings: Pings, bare: float) -> None:
    value = json.dumps({"replication": replication})
    begun = time.monotonic()
    put_batched(client, [(keys.dr_key(cid), value) for cid in ids])
    last_write = time.monotonic()
    want, idset = STATE[replication], set(ids)
    wait_for(lambda: wrong(client, keys, idset, want) == 0, timeout=600, every=0.5, what="every record right")
    right = time.monotonic()
    gaps = pings.gaps(begun, right)
    print(f"{replication:>8}: {len(ids)} DR keys written in {last_write - begun:.2f} s; every record right "
          f"{right - last_write:.2f} s after the last write = {(right - last_write) / bare:.1f}x the bare read "
          f"({bare:.2f} s; goal <= 3x); largest WATCHDOG gap {max(gaps):.2f} s (goal < {WATCHDOG_SEC / 2 + 1:.1f} s)")


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
            outage(client, keys, ids, "broken", pings, bare)
            outage(client, keys, ids, "in_sync", pings, bare)
        finally:
            one.stop()
            pings.close()
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
