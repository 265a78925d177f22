"""Every instance follows ``{ns}/control/`` (pause, switchover) on one watch stream, re-reading the
controls after each change and reporting them to the main loop."""

from __future__ import annotations

import queue
import threading

from worker.control import read_controls
from worker.daemon.candidate import Report
from worker.etcd import kv
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdClosedError, EtcdError, PermissionDeniedError
from worker.etcd.watch import Watch
from worker.protection.keys import Keys


class ControlWatcher:
    """``denied_wait``: seconds between attempts while etcd refuses us permission (the daemon
    reports that once and is unhealthy meanwhile; asking again and again would only hammer etcd)."""

    def __init__(self, client: EtcdClient, keys: Keys, reports: queue.Queue[Report],
                 denied_wait: float = 10.0) -> None:
        self._denied_wait = denied_wait
        self._client = client
        self._keys = keys
        self._reports = reports
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._run, name="control-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            denied = False
            try:
                controls = read_controls(self._client, self._keys)
                self._reports.put(Report("control", -1, controls))
                self._watch = Watch(self._client, self._keys.control, range_end=kv.prefix_end(self._keys.control),
                                    start_revision=controls.revision + 1)
                for _response in self._watch:
                    self._reports.put(Report("control", -1, read_controls(self._client, self._keys)))
                    backoff = 0.1
            except EtcdClosedError:
                return
            except PermissionDeniedError:
                denied = True
            except EtcdError:
                pass  # compacted, unavailable: read again after a pause
            finally:
                if self._watch is not None:
                    self._watch.close()
            self._stop.wait(self._denied_wait if denied else backoff)
            backoff = min(backoff * 2, 2.0)

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        self._thread.join(timeout=1.0)
