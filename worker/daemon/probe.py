"""DaemonProbe is the daemon as the HTTP endpoint sees it (``worker.daemon.http.Probe``): it gets
the state, a ``current_client()`` and the status board, never the daemon itself."""

from __future__ import annotations

import time
from typing import Any, Callable

from worker.daemon.state import DaemonState
from worker.daemon.status_board import PROBE_MAX_AGE, StatusBoard
from worker.etcd.client import EtcdClient
from worker.keys import Keys


class DaemonProbe:
    def __init__(self, state: DaemonState, current_client: Callable[[], EtcdClient | None],
                 keys: Callable[[], Keys], board: StatusBoard,
                 read_status: Callable[[EtcdClient, Keys], dict[str, Any]] | None = None) -> None:
        self._state = state
        self.current_client = current_client
        self._keys = keys
        self.board = board
        self._read_status = read_status

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        ok, detail = self._state.healthy()
        return ok, {**detail, "etcd_requests": self.etcd_requests()}

    def etcd_requests(self) -> dict[str, int]:
        """Requests this process sent to etcd so far, by method (``EtcdClient.stats``; keepalive
        messages on the lease stream count one each, watch streams are not requests)."""
        client = self.current_client()
        for _ in range(3):  # another thread may add a method while we copy
            try:
                return dict(client.stats) if client is not None else {}
            except RuntimeError:
                continue
        return {}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        return self._state.ready()

    def is_leader(self) -> bool:
        return self._state.leading()

    def status(self) -> dict[str, Any]:
        """``status --json`` as this instance sees it, plus its own ``role``, ``term``, ``paused``:
        the store's side from the board (a full read only when no fresh snapshot is there)."""
        state = self._state
        own = {"instance_id": state.instance_id, "role": state.shown_role(), "term": state.term,
               "paused": state.paused, "last_pass": state.last_pass,
               "lock_wait": ({"holder": state.lock_wait.holder,
                              "since_seconds": round(time.monotonic() - state.lock_wait.since, 1)}
                             if state.lock_wait is not None else None),
               "etcd_requests": self.etcd_requests()}  # before this answer's own reads
        snapshot = self.board.current()
        if snapshot is None:
            client = self.current_client()
            if client is None:
                return {**own, "leader": state.leader, "error": state.last_error}
            if self._read_status is not None:
                snapshot = self._read_status(client, self._keys())
            else:
                from worker.protection.status import read_status
                snapshot = read_status(client, self._keys())
            self.board.publish(snapshot, max_age=PROBE_MAX_AGE)
        return {**snapshot, **own}
