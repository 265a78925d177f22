"""In-process daemons against a real etcd, and the history check "no protection write while paused".

A ``Daemon`` runs on its own thread (signals are the owner's business there: ``request_stop``),
with its HTTP endpoint on a free port; everything it does is observed through etcd, its state,
its metrics and its HTTP answers, never through mocks.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

from worker.config import Config, ElectionConfig, EtcdConfig, HttpConfig, LogConfig, ReconcileConfig
from worker.daemon.notify import Notifier
from worker.daemon.runner import Daemon
from worker.etcd import PutEvent, Watch, kv
from worker.demo import inventory
from worker.keys import Keys



def config(endpoints: list[str], namespace: str, *, ttl: int = 3, interval: float = 30.0,
           request_timeout: float = 1.0, instance_id: str | None = None) -> Config:
    return Config(etcd=EtcdConfig(endpoints=list(endpoints), namespace=namespace, dial_timeout=1.0,
                                  request_timeout=request_timeout),
                  election=ElectionConfig(ttl=ttl, instance_id=instance_id or f"w-{uuid.uuid4().hex[:6]}"),
                  reconcile=ReconcileConfig(interval=interval), http=HttpConfig(listen="127.0.0.1:0"),
                  log=LogConfig(level="warning"))


@dataclass
class Running:
    daemon: Daemon
    thread: threading.Thread
    exit_code: list[int] = field(default_factory=list)

    @property
    def instance_id(self) -> str:
        return self.daemon.instance_id

    def http(self, path: str) -> tuple[int, Any]:
        import urllib.error
        import urllib.request
        url = f"http://127.0.0.1:{self.daemon.http.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read()
                return r.status, body if path == "/metrics" else json.loads(body)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.http("/metrics")
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if sample.name == "protection_worker_" + name and all(sample.labels.get(k) == v
                                                                      for k, v in labels.items()):
                    return sample.value
        raise KeyError(name)

    def leads(self) -> bool:
        return self.daemon.state.leading()

    def stop(self, timeout: float = 10.0) -> None:
        self.daemon.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the daemon did not stop"


def start(cfg: Config, notifier: Notifier | None = None) -> Running:
    daemon = Daemon(cfg, notifier=notifier or Notifier(env={}))
    running = Running(daemon, threading.Thread(target=lambda: running.exit_code.append(daemon.run()),
                                               name=f"daemon-{cfg.instance_id}", daemon=True))
    running.thread.start()
    return running


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.02) -> Any:
    """Poll ``check`` until truthy (bounded); for state that has no event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def populate(client: Any, keys: Keys, n: int, seed: int = 1) -> list[str]:
    """``n`` clusters in txn batches (every one allocated; most with a DR site and a replication state)."""
    return inventory.populate(client, keys, n, seed)


def burst(client: Any, keys: Keys, ids: list[str], salt: int) -> None:
    """A change of every given cluster's replication state, in txn batches."""
    inventory.set_replications(client, keys, ids, salt)


def protection_count(client: Any, keys: Keys) -> int:
    return int(client.range(kv.range_request(keys.protection, prefix=True, count_only=True)).count)


def converged(client: Any, keys: Keys, n: int) -> bool:
    return protection_count(client, keys) == n


def writes_while_paused(client: Any, keys: Keys, from_revision: int) -> tuple[int, list[tuple[int, str]]]:
    """(protection writes checked, those at a revision at which the pause key existed), over the
    history from ``from_revision`` to now. Read as one event stream of the whole namespace, so the
    pause key's puts and deletes interleave with the writes in revision order; a sentinel put at
    the end tells when the stream has caught up. A write at revision r is also confirmed with a
    range of the pause key at revision r."""
    sentinel = f"{keys.namespace}/test-sentinel"
    paused = bool(client.range(kv.range_request(keys.paused, revision=from_revision - 1)).kvs)
    watch = Watch(client, keys.namespace + "/", range_end=kv.prefix_end(keys.namespace + "/"),
                  start_revision=from_revision)
    client.put(sentinel, "end")
    checked, bad = 0, []
    try:
        done = False
        while not done:
            response = watch.get(timeout=10)
            assert response is not None, "history stream stalled"
            for event in response.events:
                key = event.key.decode()
                if key == keys.paused:
                    paused = isinstance(event, PutEvent)
                elif key.startswith(keys.protection):
                    checked += 1
                    if paused:
                        at_r = client.range(kv.range_request(keys.paused, revision=event.mod_revision)).kvs
                        if at_r:
                            bad.append((event.mod_revision, key))
                elif key == sentinel and isinstance(event, PutEvent):
                    done = True
    finally:
        watch.close()
        client.delete(sentinel)
    return checked, bad



def on_first_write(client: Any, keys: Keys, from_revision: int, action: Callable[[], Any]) -> threading.Event:
    """Run ``action`` as soon as the first protection write at or after ``from_revision`` lands
    (from a watch thread, so it lands mid-pass); the returned event is set once it ran."""
    done = threading.Event()

    def run() -> None:
        w = Watch(client, keys.protection, range_end=kv.prefix_end(keys.protection), start_revision=from_revision)
        try:
            if w.get(timeout=30) is not None:
                action()
        finally:
            w.close()
            done.set()

    threading.Thread(target=run, name="on-first-write", daemon=True).start()
    return done
