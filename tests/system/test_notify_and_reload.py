"""systemd integration of a real daemon process: sd_notify over a real datagram socket, SIGHUP."""

from __future__ import annotations

import json
import signal
import socket
import time

from tests.system.conftest import put_inventory
from tests.system.helpers import await_records, leader_of, states
from worker.demo.instances import WorkerProcess


def _receive_until(sock: socket.socket, predicate, timeout: float) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except socket.timeout:
            break
        messages += [line for line in data.splitlines() if line]
        if predicate(messages):
            break
    return messages


def test_sd_notify_ready_status_watchdog_stopping_in_order(client, keys, etcd_endpoints, tmp_path):
    put_inventory(client, keys)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    worker = WorkerProcess("notified", etcd_endpoints, keys.namespace, tmp_path, ttl=3,
                           env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    try:
        worker.start()
        got = _receive_until(sock, lambda m: "READY=1" in m and any(x.startswith("STATUS=leader") for x in m)
                             and m.count("WATCHDOG=1") >= 2, timeout=15)
        assert "READY=1" in got, got
        ready = got.index("READY=1")
        assert any(m.startswith("STATUS=follower") for m in got[:ready + 2]), got
        assert got.count("WATCHDOG=1") >= 2, got  # half of WATCHDOG_USEC: every 0.5 s
        worker.signal(signal.SIGTERM)
        rest = _receive_until(sock, lambda m: "STOPPING=1" in m, timeout=10)
        assert "STOPPING=1" in rest, rest
        assert worker.proc.wait(timeout=10) == 0
    finally:
        worker.kill()
        sock.close()


def test_sighup_reloads_interval_and_log_level(client, keys, etcd_endpoints, tmp_path):
    expected = put_inventory(client, keys)
    worker = WorkerProcess("reloaded", etcd_endpoints, keys.namespace, tmp_path, ttl=3, interval=30.0)
    try:
        worker.start()
        assert worker.wait_http("/leader", 200, timeout=15)
        await_records(client, keys, lambda cur: states(cur) == expected)
        # edit the file as an operator would, then SIGHUP: the leader keeps leading (same term)
        term = leader_of(client, keys)[1]
        text = worker._config_path.read_text().replace("interval = 30.0", "interval = 0.5")
        worker._config_path.write_text(text.replace('level = "info"', 'level = "debug"'))
        worker.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.get("event") == "config_reloaded"
                                                      for e in worker.log_events()):
            time.sleep(0.05)  # another process's log file: nothing to await but the file
        reloaded = [e for e in worker.log_events() if e.get("event") == "config_reloaded"]
        assert reloaded and reloaded[-1]["interval"] == 0.5 and reloaded[-1]["reconnect"] is False
        # full passes now come every 0.5 s: a record edited behind the leader's back is repaired
        record = json.loads(client.get(keys.protection_key("c-0"))[0])
        client.put(keys.protection_key("c-0"), json.dumps({**record, "state": "degraded"}))
        await_records(client, keys, lambda cur: cur["c-0"]["state"] == "unprotected", timeout=5)
        assert leader_of(client, keys)[1] == term
        # the new level applies too: HTTP access lines are logged at debug
        worker.get("/readyz")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.get("level") == "debug" for e in worker.log_events()):
            time.sleep(0.05)
        assert any(e.get("level") == "debug" for e in worker.log_events())
    finally:
        worker.terminate()
