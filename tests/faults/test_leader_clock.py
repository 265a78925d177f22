"""Leadership ends on the lease's clock: a leader cut off from etcd by a partition (a proxy that
stops passing bytes and closes nothing) stops answering ``/leader`` 200 before its successor can
start, whether its loop is idle or busy (odd runs wedge its main loop over the cut, as a long
pass would: ``/leader`` must not wait for the loop). Both instances' ``/leader`` are polled every
20 ms, over several runs."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.daemon.inprocess import config, start, wait_for
from tests.daemon.test_liveness import Pings
from worker.daemon.events import Wedge
from tests.harness.faultproxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RUNS = 5
TTL = 3


def _poll(running, name: str, answers: list, stop: threading.Event) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        status = running.http("/leader")[0]
        answers.append((name, sent, time.monotonic(), status))
        stop.wait(0.02)


@pytest.mark.parametrize("run", range(RUNS))
def test_no_two_instances_answer_leader_200_at_once_across_a_partition(run, etcd_endpoints):
    namespace = f"/t/leader-clock-{uuid.uuid4().hex[:8]}"
    with FaultProxy.to(etcd_endpoints[0]) as proxy:
        notify = Pings()
        old = start(config([proxy.endpoint], namespace, ttl=TTL, request_timeout=1.0), notifier=notify.notifier())
        new = None
        try:
            wait_for(old.leads, what="the proxied instance leads")
            new = start(config(etcd_endpoints, namespace, ttl=TTL, request_timeout=1.0))
            wait_for(lambda: new.daemon.state.campaigning, what="the other in line")
            answers: list = []
            stop = threading.Event()
            pollers = [threading.Thread(target=_poll, args=(r, n, answers, stop), daemon=True)
                       for r, n in ((old, "old"), (new, "new"))]
            for p in pollers:
                p.start()
            time.sleep(0.2 + 0.3 * run)  # vary where in the keepalive cycle the cut falls
            release = threading.Event()
            if run % 2:
                old.daemon.post(Wedge(release))  # the old leader's loop is busy over the cut
            proxy.stall()
            cut = time.monotonic()
            wait_for(new.leads, timeout=TTL + 8, what="takeover")
            time.sleep(0.5)  # keep polling both after the takeover
            release.set()
            stop.set()
            for p in pollers:
                p.join(2)
            old_200 = [a for a in answers if a[0] == "old" and a[3] == 200]
            new_200 = [a for a in answers if a[0] == "new" and a[3] == 200]
            assert new_200, "the new leader never answered 200"
            first_new = min(a[2] for a in new_200)  # answered 200 by then, for sure
            late = [a for a in old_200 if a[1] > first_new]  # asked after that, still 200
            last_old = max((a[2] for a in old_200 if a[1] >= cut), default=cut)
            print(f"run {run}: old's last 200 {last_old - cut:.2f} s after the cut, new's first 200 "
                  f"{first_new - cut:.2f} s; {len(answers)} answers")
            assert late == [], f"two instances answered /leader 200 at once: {late[:3]}"
            # systemd's STATUS of the old leader stopped saying "leader" before the new one led
            statuses = [(t, m) for t, m in notify.messages if m.startswith("STATUS=")]
            gave_up = [t for t, m in statuses if t >= cut and not m.startswith("STATUS=leader")]
            assert gave_up and gave_up[0] < first_new, statuses[-3:]
            proxy.heal()
        finally:
            if run % 2:
                release.set()
            old.stop()
            if new is not None:
                new.stop()
            notify.close()
