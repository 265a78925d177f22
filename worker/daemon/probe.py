"""The daemon as the HTTP endpoint sees it (``worker.daemon.http.Probe``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.daemon.runner import Daemon


class DaemonProbe:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        ok, detail = self._daemon.state.healthy()
        return ok, {**detail, "etcd_requests": self.etcd_requests()}

    def etcd_requests(self) -> dict[str, int]:
        """Requests this process sent to etcd so far, by method (``EtcdClient.stats``; keepalive
        messages on the lease stream count one each, watch streams are not requests)."""
        client = self._daemon.client
        for _ in range(3):  # another thread may add a method while we copy
            try:
                return dict(client.stats) if client is not None else {}
            except RuntimeError:
                continue
        return {}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        return self._daemon.state.ready()

    def is_leader(self) -> bool:
        return self._daemon.state.leading()

    def status(self) -> dict[str, Any]:
        """``status --json`` as this instance sees it, plus its own ``role``, ``term``, ``paused``."""
        daemon, state = self._daemon, self._daemon.state
        own = {"instance_id": state.instance_id, "role": state.shown_role(), "term": state.term,
               "paused": state.paused, "last_pass": state.last_pass,
               "lock_wait": ({"holder": state.lock_wait.holder, "since_seconds": round(time.monotonic() - state.lock_wait.since, 1)}
                             if state.lock_wait is not None else None),
               "etcd_requests": self.etcd_requests()}  # before this answer's own reads
        client = daemon.client
        if client is None:
            return {**own, "leader": state.leader, "error": state.last_error}
        from worker.protection.status import read_status
        return {**read_status(client, daemon.keys), **own}
