"""Connection is the daemon's link to etcd, apart from the main loop's decisions: connect (with
the metrics wired to the client), outages (said once per outage, not once per retry), the stale
leases of sessions lost while etcd was away (revoked as soon as it answers again), and reconnect
after a reload changed the etcd settings (close now, the next ``connect`` uses the new config).
"""

from __future__ import annotations

from typing import Callable

import structlog

from worker import config as config_mod
from worker.config import Config
from worker.daemon.core import StateRecorder
from worker.daemon.metrics import Metrics
from worker.daemon.state import CONNECTING
from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError, LeaseNotFoundError

log = structlog.get_logger("worker.daemon")


class StaleLeases:
    """Leases of sessions lost while etcd could not be reached (their revoke failed).

    etcd's next raft leader renews every lease, so such a lease's election key would hold the
    line for another TTL after etcd comes back: revoke them as soon as etcd answers again.
    """

    def __init__(self) -> None:
        self._leases: set[int] = set()

    def remember(self, lease: int) -> None:
        self._leases.add(lease)

    def __len__(self) -> int:
        return len(self._leases)

    def revoke(self, client: EtcdClient, timeout: float) -> None:
        for lease in sorted(self._leases):
            try:
                client.lease_revoke(lease, timeout=timeout)
                log.info("stale_lease_revoked", lease=f"{lease:x}")
            except LeaseNotFoundError:
                pass  # expired or revoked already
            except EtcdError:
                continue  # etcd still away: next time
            self._leases.discard(lease)


class Connection:
    """The daemon's one ``EtcdClient`` (``current()``; None until connected or after ``close``)."""

    def __init__(self, cfg: Callable[[], Config], metrics: Metrics, recorder: StateRecorder) -> None:
        self._cfg = cfg
        self._metrics = metrics
        self._recorder = recorder
        self._client: EtcdClient | None = None
        self._outage: str | None = None
        self.stale_leases = StaleLeases()

    def current(self) -> EtcdClient | None:
        return self._client

    def connect(self) -> EtcdClient:
        """The client, connecting first if there is none (``ConfigError``/``EtcdError`` as
        ``worker.etcd.connect`` raises them)."""
        if self._client is None:
            client = config_mod.connect(self._cfg())
            client.on_contact = self._metrics.etcd_contact
            client.on_error = self._metrics.etcd_error
            client.on_server_version = self._metrics.set_etcd_version
            self._client = client
        return self._client

    def reachable(self) -> None:
        """etcd answered (a session opened): end the outage, revoke the stale leases."""
        self._recorder.connection(connected=True, last_error=None)
        if self._client is not None and len(self.stale_leases):
            self.stale_leases.revoke(self._client, self._cfg().etcd.request_timeout)
        if self._outage is not None:
            log.info("etcd_reachable", after=self._outage)
            self._outage = None

    def outage(self, err: BaseException, attempt: int = 0) -> None:
        """etcd could not be reached (or refused): said once per outage; the role is connecting."""
        self._recorder.connection(connected=False, last_error=str(err))
        if self._outage is None:
            self._outage = type(err).__name__
            log.error("etcd_unreachable", error=str(err), kind=getattr(err, "kind", "other"))
        self._recorder.transition(role=CONNECTING)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
