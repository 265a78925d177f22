"""Every instance follows ``{ns}/control/`` (pause, switchover) on one watch stream, re-reading the
controls after each change (and after every reconnect of the stream) and posting them to the main loop."""

from __future__ import annotations

import queue
import threading

from worker.control import read_controls
from worker.daemon.events import ControlsChanged, Event
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdClosedError, EtcdError
from worker.etcd.retry import DEFAULT, Retry
from worker.etcd.watch import Watch
from worker.keys import Keys


class ControlWatcher:
    """``denied_wait``: seconds between attempts while etcd refuses us permission (the daemon
    reports that once and is unhealthy meanwhile; asking again and again would only hammer etcd)."""

    def __init__(self, client: EtcdClient, keys: Keys, events: queue.Queue[Event],
                 denied_wait: float = 10.0, retry: Retry = DEFAULT) -> None:
        self._client = client
        self._keys = keys
        self._events = events
        self._stop = threading.Event()
        self._retry = retry.copy(refused=denied_wait, stop=self._stop)
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._run, name="control-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                controls = read_controls(self._client, self._keys)
                self._events.put(ControlsChanged(controls))
                self._watch = self._client.watch(self._keys.control, prefix=True,
                                                 start_revision=controls.revision + 1)
                for _response in self._watch:
                    self._events.put(ControlsChanged(read_controls(self._client, self._keys)))
                    self._retry.reset()
            except EtcdClosedError:
                return
            except EtcdError as err:  # compacted, unavailable, refused: read again after a pause
                self._retry.pause(err)
            finally:
                if self._watch is not None:
                    self._watch.close()

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        self._thread.join(timeout=1.0)
