"""``status``: who leads, who waits, who holds the Mutex, counts by state, bad inputs — from the store alone.

Everything is read at one revision (the one ``revision`` reports). Candidates are the keys under
``{ns}/election/`` in create-revision order (the lowest leads, Go's election); the lock holder is
the lowest key under ``{ns}/reconcile-lock/``. ``states`` counts the stored protection records;
``invalid`` lists each bad input as the rules see it now (a dry evaluation, nothing written).
"""

from __future__ import annotations

import collections
from typing import Any

from worker.concurrency.line import candidates
from worker.etcd import EtcdClient
from worker.keys import Keys
from worker.protection.reader import DEFAULT_PAGE_SIZE, read_all
from worker.protection.rules import InvalidInput, checked_inputs, failed, stored_state


def read_status(client: EtcdClient, keys: Keys, *, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
    snapshot = read_all(client, keys, page_size=page_size)
    states: collections.Counter[str] = collections.Counter()
    invalid = []
    for row in snapshot.rows():
        if row[3] is not None:
            states[stored_state(row[3].value)] += 1
        if row[1] is not None:
            try:
                bad = checked_inputs(row[0].decode("utf-8", "replace"), row[1], row[2])
            except Exception as exc:  # noqa: BLE001 - one cluster's bug is listed, never fatal
                bad = failed(row[0].decode("utf-8", "replace"), row[1], exc)
            if isinstance(bad, InvalidInput):
                invalid.append({"key": bad.key, "mod_revision": bad.mod_revision, "error": bad.error})
    revision = snapshot.revision
    # who is in line: the one shared answer (worker.concurrency), at the same revision
    _, line = candidates(client, keys.election, revision=revision)
    _, locks = candidates(client, keys.lock, revision=revision)
    leader = None
    if line:
        leader = {"instance_id": line[0].instance_id, "key": line[0].key, "term": line[0].term}
    return {
        "leader": leader,
        "candidates": [{"instance_id": c.instance_id, "key": c.key, "create_revision": c.create_revision}
                       for c in line],
        "lock_holder": locks[0].key if locks else None,
        "states": dict(sorted(states.items())),
        "invalid": invalid,
        "revision": revision,
    }


def format_status(status: dict[str, Any]) -> str:
    lines = [f"revision:    {status['revision']}"]
    leader = status["leader"]
    if leader:
        lines.append(f"leader:      {leader['instance_id']} (term {leader['term']}, {leader['key']})")
    else:
        lines.append("leader:      none")
    for i, c in enumerate(status["candidates"]):
        mark = "leader" if i == 0 else f"#{i} in line"
        lines.append(f"  {mark:<11} {c['instance_id']}  {c['key']}  (created at {c['create_revision']})")
    lines.append(f"lock holder: {status['lock_holder'] or 'none'}")
    states = status["states"]
    lines.append("states:      " + (", ".join(f"{k} {v}" for k, v in states.items()) if states else "no records"))
    lines.append(f"invalid:     {len(status['invalid'])}")
    for item in status["invalid"]:
        lines.append(f"  {item['key']} @ {item['mod_revision']}: {item['error']}")
    return "\n".join(lines)
