"""The generative harness of issue 16: hostile values under every prefix the worker reads.

Part 1 (pure): every parser of an etcd value is total and bounded, for any value.
Part 2 (real etcd, an in-process daemon, the CLI on the same store): each hostile value is written
under ``clusters/``, ``dr/``, ``protection/``, ``control/``, an election key and ``write-stamp``;
then no instance exits, exactly one leads, every valid cluster converges, each bad key is reported
once, ``/status`` and log lines stay bounded, every command exits 0 or 1 with one line.

CI runs a fixed seed (``derandomize``) and a bounded number of examples; the bench's longer mode:
``PW_HARNESS_EXAMPLES=500 PW_HARNESS_DAEMON_EXAMPLES=100 pytest tests/hostile/test_harness.py``
(``PW_HARNESS_SEED`` picks another seed instead of the derandomized one).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import contextlib
import uuid

import pytest
from hypothesis import HealthCheck, given, seed, settings

from tests.daemon.inprocess import config, start, wait_for
from tests.hostile.strategies import hostile
from worker import cli
from worker.concurrency.line import Candidate
from worker.control import parse_switchover
from worker.identity import Identity
from worker.protection.inputs import InputError, parse_cluster, parse_dr
from worker.keys import Keys
from worker.protection.records import Record
from worker.protection.rules import KV, Observed, decide_isolated, stored_state
from worker.protection.stamp import WriteStamp
from worker.untrusted import UntrustedValueError, loads, quote

EXAMPLES = int(os.environ.get("PW_HARNESS_EXAMPLES", "300"))
DAEMON_EXAMPLES = int(os.environ.get("PW_HARNESS_DAEMON_EXAMPLES", "12"))
SEED = os.environ.get("PW_HARNESS_SEED")
#: the longest error text, log line or /status entry a value may produce
BOUND = 2000


def _settings(n: int):
    def wrap(f):
        f = settings(max_examples=n, derandomize=SEED is None, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(f)
        return seed(int(SEED))(f) if SEED is not None else f
    return wrap


@_settings(EXAMPLES)
@given(raw=hostile)
def test_every_parser_is_total_and_bounded(raw: bytes) -> None:
    for parse in (parse_cluster, parse_dr, loads):
        try:
            parse(raw)
        except (InputError, UntrustedValueError) as exc:
            assert len(str(exc)) < BOUND, str(exc)[:200]
    assert stored_state(raw) in ("unprotected", "protecting", "protected", "degraded", "deleted", "unknown")
    try:
        Record.from_json(raw)
    except ValueError as exc:
        assert len(str(exc)) < BOUND
    WriteStamp.parse(raw)
    parse_switchover(raw)
    ident = dataclasses.asdict(Identity.parse(raw))
    assert len(json.dumps(ident)) < BOUND
    name = Candidate("k", 1, 1, raw).instance_id
    assert name is None or len(name) < BOUND
    assert len(quote(raw)) < 200
    obs = Observed("c1", KV(b"/ns/clusters/c1", raw, 5), KV(b"/ns/dr/c1", raw, 6), KV(b"/ns/protection/c1", raw, 7))
    d = decide_isolated(obs)
    assert d.action in ("invalid", "create", "update", "recreate", "unchanged", "none", "delete")
    if d.invalid is not None:
        assert len(d.invalid.error) < BOUND and "unexpected error" not in d.invalid.error, d.invalid.error


# -- part 2: a real etcd, an in-process daemon, the CLI on the same store ------------------------

GOOD = [f"good{i}" for i in range(5)]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def store(etcd_endpoints):
    from worker.etcd import connect
    client = connect(etcd_endpoints)
    keys = Keys(f"/hostile/{uuid.uuid4().hex[:8]}")
    for i, cid in enumerate(GOOD):
        client.put(keys.cluster(cid), json.dumps({"allocated": True, "dr_site": "dc-2" if i % 2 else None}))
        client.put(keys.dr_key(cid), json.dumps({"replication": "in_sync"}))
    daemon = start(config(etcd_endpoints, keys.namespace, ttl=3, interval=2.0))
    wait_for(lambda: daemon.leads(), timeout=15, what="a leader")
    try:
        yield client, keys, daemon, etcd_endpoints
    finally:
        if daemon.thread.is_alive():
            daemon.stop()
        client.close()


_round = [0]


@_settings(DAEMON_EXAMPLES)
@given(raw=hostile)
def test_hostile_values_under_every_prefix_leave_the_service_up(store, raw: bytes) -> None:
    client, keys, daemon, endpoints = store
    _round[0] += 1
    n = _round[0]
    bad = f"bad{n}"
    # the value under every prefix the worker reads (etcd refuses what is over its request limit)
    writes = [(keys.cluster(bad), raw), (keys.dr_key(GOOD[1]), raw), (keys.protection_key(f"p{n}"), raw),
              (keys.control + "switchover", raw), (keys.control + f"note{n}", raw),
              (keys.election + "/00000000deadbeef", raw), (keys.stamp, raw)]
    for key, value in writes:
        client.put(key, value)
    try:
        # a change of a good cluster: once its record follows, the daemon has read everything above
        marker = f"dc-{n}"
        client.put(keys.cluster(GOOD[0]), json.dumps({"allocated": True, "dr_site": marker}))
        client.put(keys.dr_key(GOOD[1]), json.dumps({"replication": "in_sync"}))  # back to valid
        wait_for(lambda: marker.encode() in (client.get(keys.protection_key(GOOD[0]))[0] or b""),
                 timeout=15, what="the good cluster reconciled")
        assert daemon.thread.is_alive() and daemon.exit_code == [], "the daemon exited"
        assert daemon.leads(), "the only instance must lead"
        code, body = daemon.http("/status")
        assert code == 200
        assert len(json.dumps(body)) < 50_000, "/status unbounded"
        listed = [item["key"] for item in body["invalid"]]
        assert len(listed) == len(set(listed)), "a bad key listed twice"
        for item in body["invalid"]:
            assert len(item["error"]) < BOUND and "unexpected error" not in item["error"], item
        ns = ["--endpoints", ",".join(endpoints), "--namespace", keys.namespace]
        for argv in (["status"], ["status", "--json"], ["clusters", "ls"], ["reconcile", "--once", "--dry-run"],
                     ["audit", "--since-rev", str(max(1, client.current_revision() - 40)),
                      "--to-rev", str(client.current_revision())]):
            code, out, err = _cli(*argv, *ns)
            assert code in (0, 1), (argv, code, err[-300:])
            assert "Traceback" not in err and "internal error" not in err, (argv, err[-500:])
            if code == 1 and not (argv[0] == "audit" and "violations" in out):  # the test's own puts
                lines = [line for line in err.splitlines() if line.startswith("protection-worker:")]
                assert len(lines) == 1, (argv, err[-500:])
            assert max((len(line) for line in out.splitlines()), default=0) < 5 * BOUND, argv
    finally:
        for key, _ in writes:
            client.delete(key)
