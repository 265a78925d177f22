"""Prometheus metrics of the daemon, named exactly as in the interface contract.

Why an own ``CollectorRegistry``: tests and the demo run several instances in one process, and the
global default registry would refuse the second set of names. Every labelled metric has its known
label values created up front so dashboards see zeros instead of missing series. prometheus-client
keeps one ``_total`` on a counter's name, so counters are declared with their exposed names.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker import __version__
from worker.etcd.errors import ETCD_ERROR_KINDS, EtcdError
from worker.protection.records import STATES

PREFIX = "protection_worker_"
MODES = ("full", "incremental")
#: ``stopped``: a pass ended on purpose (SIGTERM, a switchover, the lease guard, the pause key);
#: ``fenced``: its fence failed (only that)
RESULTS = ("ok", "error", "fenced", "stopped")
OPS = ("create", "update", "delete")
#: etcd error kinds pre-created at zero (``etcd_error`` accepts others too)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label for an exception: ``EtcdError.kind`` (the one definition), else "other"."""
    return exc.kind if isinstance(exc, EtcdError) else "other"


def _check(value: str, allowed: Iterable[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r}: expected one of {', '.join(allowed)}")
    return value


class Metrics:
    """Every metric of the contract, plus the few calls the daemon makes to keep them current."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = __version__) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, p = self.registry, PREFIX
        self.is_leader = Gauge(p + "is_leader", "1 while this instance leads", registry=r)
        self.follow_leading(lambda: False)
        self.leader_changes = Counter(p + "leader_changes_total", "New leadership terms seen by this instance",
                                      registry=r)
        self.term = Gauge(p + "term", "Create revision of the current leader's election key", registry=r)
        self.reconcile_duration = Histogram(p + "reconcile_duration_seconds", "Duration of reconcile passes",
                                            ["mode"], buckets=DURATION_BUCKETS, registry=r)
        self.reconcile_runs = Counter(p + "reconcile_runs_total", "Reconcile passes by result", ["result"], registry=r)
        self.writes = Counter(p + "writes_total", "Protection writes by operation", ["op"], registry=r)
        self.fenced_writes = Counter(p + "fenced_writes_total", "Writes refused because the fence no longer held",
                                     registry=r)
        self.clusters = Gauge(p + "clusters", "Clusters by protection state", ["state"], registry=r)
        self.invalid_inputs = Gauge(p + "invalid_inputs", "Input keys that fail validation", registry=r)
        self.lease_ttl = Gauge(p + "lease_ttl_seconds", "Remaining TTL of this instance's session lease",
                               registry=r)
        self.etcd_errors = Counter(p + "etcd_errors_total", "etcd errors by kind", ["kind"], registry=r)
        self.last_etcd_contact = Gauge(p + "last_etcd_contact_timestamp_seconds",
                                       "Unix time of the last successful etcd response", registry=r)
        self.is_elected = Gauge(p + "is_elected", "1 while this instance's election key is the leader's, "
                                "whether or not it holds the Mutex yet (is_leader: holds it, lease certainly alive)",
                                registry=r)
        self.last_pass = Gauge(p + "last_pass_timestamp_seconds", "Unix time this instance last completed a "
                               "reconcile pass, by mode (0: none since it started)", ["mode"], registry=r)
        self.is_paused = Gauge(p + "is_paused", "1 in maintenance mode (leading but not writing)", registry=r)
        self.build_info = Gauge(p + "build_info", "Build information (always 1)", ["version"], registry=r)
        self.build_info.labels(version=version).set(1)
        for mode in MODES:
            self.reconcile_duration.labels(mode=mode)
            self.last_pass.labels(mode=mode)
        for result in RESULTS:
            self.reconcile_runs.labels(result=result)
        for op in OPS:
            self.writes.labels(op=op)
        for state in STATES:
            self.clusters.labels(state=state)
        for kind in ETCD_ERROR_KINDS:
            self.etcd_errors.labels(kind=kind)
        self._lock = threading.Lock()
        self._last_term: int | None = None
        self._states_seen: set[str] = set(STATES)
        self.etcd_server_info = Gauge(p + "etcd_server_info", "etcd server version seen at connect (always 1); "
                                      "known_bad=\"true\" for a known-bad release (3.5.0-3.5.2)",
                                      ["version", "known_bad"], registry=r)

    def follow_leading(self, leading: Callable[[], bool]) -> None:
        """``is_leader`` is ``leading()`` evaluated at each scrape (the daemon gives the lease-clock
        rule, ``DaemonState.leading``): the one way it is set."""
        self.is_leader.set_function(lambda: 1.0 if leading() else 0.0)

    def set_leader(self, leading: bool, term: int | None) -> None:
        """This instance's role (``leading``: elected) and the current leader's term (None: no leader known).
        ``is_elected`` follows the role; the daemon binds ``is_leader`` to its lease-clock rule instead.

        ``leader_changes_total`` counts each new term once (every leader has a new term); the first
        term an instance sees at start is not a change unless this instance itself won it.
        """
        with self._lock:
            self.is_elected.set(1 if leading else 0)
            if term is None:
                return
            if term != self._last_term and (self._last_term is not None or leading):
                self.leader_changes.inc()
            self._last_term = term
            self.term.set(term)

    def observe_pass(self, mode: str, result: str, duration: float,
                     writes_by_op: Mapping[str, int] | None = None) -> None:
        """One finished reconcile pass: its duration, result and the writes it made."""
        self.reconcile_duration.labels(mode=_check(mode, MODES, "mode")).observe(max(0.0, duration))
        self.reconcile_runs.labels(result=_check(result, RESULTS, "result")).inc()
        for op, count in (writes_by_op or {}).items():
            if count:
                self.writes.labels(op=_check(op, OPS, "op")).inc(count)

    def pass_completed(self, mode: str, when: float | None = None) -> None:
        """A pass ran to its end (``last_pass_timestamp_seconds{mode}``: now, unless ``when`` is given)."""
        self.last_pass.labels(mode=_check(mode, MODES, "mode")).set(time.time() if when is None else when)

    def fenced_write(self, count: int = 1) -> None:
        self.fenced_writes.inc(count)

    def set_states(self, counts: Mapping[str, int]) -> None:
        """Clusters by state; a state missing from ``counts`` drops to 0 instead of keeping a stale value."""
        with self._lock:
            self._states_seen.update(counts)
            for state in self._states_seen:
                self.clusters.labels(state=state).set(counts.get(state, 0))

    def set_invalid(self, count: int) -> None:
        self.invalid_inputs.set(count)

    def set_lease_ttl(self, seconds: float) -> None:
        self.lease_ttl.set(max(0.0, seconds))

    def set_paused(self, paused: bool) -> None:
        self.is_paused.set(1 if paused else 0)

    def etcd_error(self, kind: str | BaseException) -> None:
        """Count one etcd error; an exception is mapped to its kind (see ``error_kind``)."""
        self.etcd_errors.labels(kind=kind if isinstance(kind, str) else error_kind(kind)).inc()

    def etcd_contact(self, when: float | None = None) -> None:
        """Record a successful etcd response (now, unless ``when`` is given as Unix time)."""
        self.last_etcd_contact.set(time.time() if when is None else when)

    def set_etcd_version(self, version: str, known_bad: bool) -> None:
        """The etcd server's version (one series: a reconnect to another version replaces it)."""
        self.etcd_server_info.clear()
        self.etcd_server_info.labels(version=version, known_bad="true" if known_bad else "false").set(1)
