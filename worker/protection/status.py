"""``status``: who leads, who waits, who holds the Mutex, counts by state, bad inputs — from the store alone.

Everything is read at one revision (the one ``revision`` reports). Candidates are the keys under
``{ns}/election/`` in create-revision order (the lowest leads, Go's election); the lock holder is
the lowest key under ``{ns}/reconcile-lock/``. ``states`` counts the stored protection records;
``invalid`` lists each bad input as the rules see it now (a dry evaluation, nothing written).
"""

from __future__ import annotations

import collections
import json
from typing import Any

from worker.protection.keys import Keys
from worker.protection.reader import DEFAULT_PAGE_SIZE, read_all, scan_prefix
from worker.protection.rules import InvalidInput, checked_inputs, stored_state


def _candidates(client: Any, prefix: str, revision: int) -> list[Any]:
    _, kvs = scan_prefix(client, prefix, revision=revision)
    return sorted(kvs, key=lambda item: item.create_revision)


def _instance_id(value: bytes) -> str | None:
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return value.decode("utf-8", "replace") or None
    if isinstance(data, dict):
        got = data.get("instance_id")
        return str(got) if got is not None else None
    return str(data)


def read_status(client: Any, keys: Keys, *, page_size: int = DEFAULT_PAGE_SIZE) -> dict[str, Any]:
    snapshot = read_all(client, keys, page_size=page_size)
    states: collections.Counter[str] = collections.Counter()
    invalid = []
    for row in snapshot.rows():
        if row[3] is not None:
            states[stored_state(row[3].value)] += 1
        if row[1] is not None:
            bad = checked_inputs(row[0].decode("utf-8", "replace"), row[1], row[2])
            if isinstance(bad, InvalidInput):
                invalid.append({"key": bad.key, "mod_revision": bad.mod_revision, "error": bad.error})
    revision = snapshot.revision
    candidates = _candidates(client, keys.election + "/", revision)
    locks = _candidates(client, keys.lock + "/", revision)
    leader = None
    if candidates:
        first = candidates[0]
        leader = {"instance_id": _instance_id(first.value), "key": first.key.decode("utf-8", "replace"),
                  "term": first.create_revision}
    return {
        "leader": leader,
        "candidates": [{"instance_id": _instance_id(c.value), "key": c.key.decode("utf-8", "replace"),
                        "create_revision": c.create_revision} for c in candidates],
        "lock_holder": locks[0].key.decode("utf-8", "replace") if locks else None,
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
