"""Awaiting what real worker processes do, through etcd watches (no sleeps as synchronisation)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, TypeVar

from worker.concurrency.observe import Observer
from worker.identity import Identity
from worker.etcd import Watch, kv
from worker.etcd.client import EtcdClient
from worker.keys import Keys

T = TypeVar("T")


def leader_of(client: EtcdClient, keys: Keys) -> tuple[str, int] | None:
    """(instance_id, term) of the current leader per etcd, or None."""
    resp = client.range(kv.first_create(keys.election + "/"))
    if not resp.kvs:
        return None
    return Identity.parse(resp.kvs[0].value).instance_id, resp.kvs[0].create_revision


def await_leader(client: EtcdClient, keys: Keys, *, other_than: str | None = None,
                 timeout: float = 15.0) -> tuple[str, int, float]:
    """Wait (on an election observer) for a leader that is not ``other_than``; returns
    (instance_id, term, monotonic time it was seen)."""
    deadline = time.monotonic() + timeout
    with Observer(client, keys.election + "/") as observer:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no new leader (other than {other_than}) within {timeout} s")
            leader = observer.get(timeout=left)
            if leader is None:
                continue
            who = Identity.parse(leader.value).instance_id
            if who != other_than:
                return who, leader.create_revision, time.monotonic()


def records(client: EtcdClient, keys: Keys) -> dict[str, dict[str, Any]]:
    return {Keys.id_of(meta.key, keys.protection): json.loads(value)
            for value, meta in client.get_prefix(keys.protection)}


def await_watched(client: EtcdClient, prefix: str, read: Callable[[], T], check: Callable[[T], bool],
                  timeout: float, what: str) -> T:
    """Call ``read()`` again after each watch event under ``prefix`` until ``check`` holds for its answer."""
    deadline = time.monotonic() + timeout
    with Watch(client, prefix, range_end=kv.prefix_end(prefix)) as watch:
        watch.started.wait(5)
        while True:
            current = read()
            if check(current):
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} never matched within {timeout} s: {current}")
            watch.get(timeout=left)


def await_records(client: EtcdClient, keys: Keys, check: Callable[[dict[str, dict[str, Any]]], bool],
                  timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """Re-read the protection records after each watch event until ``check`` holds."""
    return await_watched(client, keys.protection, lambda: records(client, keys), check, timeout,
                         "protection records")


def states(current: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {cid: rec["state"] for cid, rec in current.items()}


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``protection-worker ARGV`` in this process: (exit status, stdout, stderr)."""
    from worker.cli import main
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
