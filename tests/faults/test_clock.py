"""Nothing depends on wall clocks agreeing: instances whose clocks are an hour apart fail over and
fence exactly like instances that agree.

The skew is real: each daemon runs under libfaketime (the PyPI package ``libfaketime`` ships the
preload library; part of the ``test`` extra), one an hour ahead, one an hour behind, one on time.
Only the wall clock is moved (``FAKETIME_DONT_FAKE_MONOTONIC``, as NTP trouble would): the worker's
safety decisions use ``time.monotonic()`` (lease deadline, write guard) and etcd's server-side
leases and revisions (election order, fence), so the wall clock shows up only in ``updated_at``
and in log timestamps — which this test checks it does, to prove the skew was in effect.
"""

from __future__ import annotations

import os
import platform
import signal
import time
from datetime import datetime, timezone

import pytest

from tests.faults.helpers import TTL, Inputs, assert_clean, await_log, leader_of, one_leader, plans_nothing
from tests.system.helpers import await_leader, records

pytestmark = pytest.mark.faults

HOUR = 3600.0


def _preload() -> str:
    try:
        import libfaketime
    except ImportError:
        pytest.skip("libfaketime is not installed (pip install -e '.[test]')")
    path = os.path.join(os.path.dirname(libfaketime.__file__), "vendor", "libfaketime", "src", "libfaketime.so.1")
    if not os.path.exists(path) or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"no usable libfaketime preload library for {platform.machine()}")
    return path


def _skewed(offset: str) -> dict[str, str]:
    return {"LD_PRELOAD": _preload(), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def _skew_of(worker) -> float:
    """How far the worker's wall clock is from ours, read from its first log line's timestamp."""
    first = await_log(worker, "starting")
    return _epoch(first["timestamp"]) - time.time()


def test_failover_and_fencing_do_not_depend_on_wall_clocks(private_etcd, direct, fkeys, workers):
    eps = private_etcd.endpoints
    inputs = Inputs(direct, fkeys)
    inputs.populate(6)
    # line: an hour ahead (leads), an hour behind, on time
    (ahead,) = workers([eps], fkeys.namespace, envs=[_skewed("+1h")])
    assert ahead.wait_http("/leader", 200, timeout=10)
    behind, on_time = workers([eps, eps], fkeys.namespace, envs=[_skewed("-1h"), {}])
    everyone = [ahead, behind, on_time]
    assert abs(_skew_of(ahead) - HOUR) < 120 and abs(_skew_of(behind) + HOUR) < 120 and abs(_skew_of(on_time)) < 120
    inputs.await_converged()
    from_revision = direct.current_revision(fkeys.root) + 1
    # the records were written by the instance an hour ahead: its clock shows, and nothing else
    stamps = [_epoch(r["updated_at"]) - time.time() for r in records(direct, fkeys).values()]
    assert stamps and all(abs(s - HOUR) < 120 for s in stamps), stamps

    skew = {ahead.instance_id: HOUR, behind.instance_id: -HOUR, on_time.instance_id: 0.0}
    by_id = {w.instance_id: w for w in everyone}

    # crash the leader that lives an hour ahead: one of the others (whose clocks disagree by an
    # hour) takes over after the TTL
    ahead_id, ahead_term = leader_of(direct, fkeys)
    assert ahead_id == ahead.instance_id
    start = time.monotonic()
    ahead.signal(signal.SIGKILL)
    new_id, new_term, seen = await_leader(direct, fkeys, other_than=ahead_id, timeout=TTL + 8)
    assert new_id in (behind.instance_id, on_time.instance_id)
    assert seen - start <= TTL + 2.0, f"takeover took {seen - start:.2f} s with skewed clocks"
    inputs.churn(4)
    current = inputs.await_converged()
    newest = max(current.values(), key=lambda r: r["term"])
    assert newest["term"] == new_term and abs(_epoch(newest["updated_at"]) - time.time() - skew[new_id]) < 120

    # freeze that leader past its TTL: the last one takes over, and the frozen one, woken with
    # changes pending in its watches, writes nothing (its fence fails) and steps down
    frozen = by_id[new_id]
    last = on_time if frozen is behind else behind
    frozen.signal(signal.SIGSTOP)
    start = time.monotonic()
    try:
        third_id, third_term, seen = await_leader(direct, fkeys, other_than=new_id, timeout=TTL + 8)
        assert third_id == last.instance_id
        assert seen - start <= TTL + 2.0, f"takeover took {seen - start:.2f} s with skewed clocks"
        inputs.churn(4)
        current = inputs.await_converged()
        newest = max(current.values(), key=lambda r: r["term"])
        assert newest["term"] == third_term
        assert abs(_epoch(newest["updated_at"]) - time.time() - skew[third_id]) < 120
    finally:
        frozen.signal(signal.SIGCONT)
    await_log(frozen, "stepped_down", where=lambda e: e.get("term") == new_term)
    ahead.start()  # restarted like systemd would: back in line, an hour ahead still
    assert ahead.wait_http("/readyz", 200, timeout=15)
    inputs.churn(3)
    inputs.await_converged()
    assert plans_nothing(direct, fkeys) == []
    assert one_leader(everyone, direct, fkeys) == last.instance_id
    assert_clean(direct, fkeys, from_revision)


def test_switchover_does_not_depend_on_wall_clocks(private_etcd, direct, fkeys, workers, capsys):
    """A planned handover is requested by an operator whose clock may disagree with every
    instance's: the leader an hour ahead must still honour it, and so must a candidate an hour
    ahead that has to step aside for the named target."""
    from worker.cli import main

    eps = private_etcd.endpoints
    inputs = Inputs(direct, fkeys)
    inputs.populate(4)
    flags = ["--endpoints", ",".join(eps), "--namespace", fkeys.namespace, "--timeout", "8"]

    def switchover(*argv: str) -> tuple[int, str]:
        try:
            code = main(["switchover", *argv, *flags])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + out.err

    # line: on time (leads), an hour ahead, an hour behind; each started once the one before is in line
    (on_time,) = workers([eps], fkeys.namespace)
    assert on_time.wait_http("/leader", 200, timeout=10)
    (ahead,) = workers([eps], fkeys.namespace, envs=[_skewed("+1h")])
    (behind,) = workers([eps], fkeys.namespace, envs=[_skewed("-1h")])
    everyone = [on_time, ahead, behind]
    inputs.await_converged()
    from_revision = direct.current_revision(fkeys.root) + 1
    assert [c["instance_id"] for c in on_time.get("/status")[1]["candidates"]] == \
        [on_time.instance_id, ahead.instance_id, behind.instance_id]
    # to the last in line: the candidate an hour ahead must step aside
    code, out = switchover("--to", behind.instance_id)
    assert code == 0, out
    assert leader_of(direct, fkeys)[0] == behind.instance_id
    # line now: behind, then on time and ahead in some order; make the one an hour ahead lead...
    code, out = switchover("--to", ahead.instance_id)
    assert code == 0, out
    assert leader_of(direct, fkeys)[0] == ahead.instance_id
    # ...and hand over from it: the leader an hour ahead must honour the request
    code, out = switchover()
    assert code == 0, out
    assert leader_of(direct, fkeys)[0] != ahead.instance_id
    inputs.churn(3)
    inputs.await_converged()
    one_leader(everyone, direct, fkeys)
    assert_clean(direct, fkeys, from_revision)
