"""The daemon's main loop: connect, campaign, lead or follow, and step down — one state machine.

One thread owns every decision (Patroni's idea: an HA loop over an abstract store): background
threads (keepalive, campaign, observer, watches, the lease-deadline timer, signals) only post
typed events (``events.py``) into one queue, and this loop dispatches them with ``match``. Role,
term, paused and blocked change only through ``StateRecorder.transition`` (``core.py``), every
other field of ``DaemonState`` through the recorder too. The link to etcd (connect, outages,
stale leases, reconnect) is ``connection.py``'s. A term of leadership is a
sub-state (``LeaderTerm.run``) that takes events from the same queue and returns why it ended.

Liveness is progress (``liveness.py``): the loop's ticks, each page read, each write
transaction and each retry attempt beat; ``/healthz`` and WATCHDOG=1 follow the beats. etcd being
unreachable never ends the process: the leader steps down and the loop keeps campaigning.

Signals only post events: SIGTERM/SIGINT stop (unlock, resign, revoke, exit 0: a follower leads
moments later), SIGHUP reloads the config file.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time

import structlog

from worker import config as config_mod
from worker.config import Config
from worker.control import Controls
from worker.daemon import lease_file, logs
from worker.daemon.candidate import Candidacy, find_candidate
from worker.daemon.connection import Connection
from worker.daemon.control_watch import ControlWatcher
from worker.daemon.core import StateRecorder
from worker.daemon.events import (CampaignFailed, ControlsChanged, Elected, Event, LeaderSeen, LeaseLost, Queued,
                                  Reload, Shutdown, Wedge)
from worker.daemon.http import HealthServer
from worker.identity import Identity, http_address
from worker.daemon.leader import LeaderTerm, TermContext
from worker.daemon.liveness import Liveness
from worker.daemon.metrics import Metrics
from worker.daemon.notify import Notifier
from worker.daemon.probe import DaemonProbe
from worker.daemon.status_board import StatusBoard
from worker.daemon.state import FOLLOWER, LEADER, STOPPING, DaemonState
from worker.etcd.client import EtcdClient
from worker.etcd.types import KV
from worker.etcd.errors import EtcdAuthError, EtcdError, PermissionDeniedError
from worker.etcd.retry import Retry
from worker.errors import ConfigError, WorkerError
from worker.keys import Keys

log = structlog.get_logger("worker.daemon")

TICK = 0.5
SWITCH_INTERVAL = 0.0005


class Daemon:
    """``protection-worker run``: build it from a validated ``Config`` and call ``run()``."""

    def __init__(self, cfg: Config, args: argparse.Namespace | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.args = args
        self.keys = Keys(cfg.etcd.namespace)
        self.instance_id = cfg.instance_id
        self.state = DaemonState(self.instance_id, ttl=float(cfg.election.ttl))
        self.metrics = Metrics()
        self.notifier = notifier if notifier is not None else Notifier()
        self.recorder = StateRecorder(self.state, self.metrics, self.notifier)
        self.liveness = Liveness(self.state, self.notifier)
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self._reload = threading.Event()
        self.connection = Connection(lambda: self.cfg, self.metrics, self.recorder)
        self.candidacy: Candidacy | None = None
        self.term: LeaderTerm | None = None
        #: the permission error that ended the last term, if one did
        self.term_denied: PermissionDeniedError | None = None
        self._generation = 0
        self._controls_watch: ControlWatcher | None = None
        self._reconnect_pending = False
        self._ready_sent = False
        #: the store's side of /status; a leading term publishes into it after each pass (MIGRATION.md)
        self.status_board = StatusBoard()
        self.http: HealthServer | None = None
        if cfg.http.listen:
            probe = DaemonProbe(self.state, self.connection.current, lambda: self.keys, self.status_board)
            self.http = HealthServer(cfg.http.listen, self.metrics, probe)

    @property
    def client(self) -> EtcdClient | None:
        """The current etcd client (None while not connected)."""
        return self.connection.current()

    @property
    def retry(self) -> Retry:
        """The retry policy, waiting one TTL after a refusal (credentials, permission)."""
        return Retry(refused=float(self.cfg.election.ttl))

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> int:
        # a handover is a relay of a few threads (watch -> campaign -> main); CPython's default
        # 5 ms GIL switch interval would add up to 5 ms per hop, so hand over the GIL sooner
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._install_signals()
        if self.http is not None:
            self.http.start()
        log.info("starting", namespace=self.keys.namespace, endpoints=self.cfg.etcd.endpoints,
                 ttl=self.cfg.election.ttl)
        try:
            while not self.stop.is_set():
                self.tick()
                if self._reload.is_set():
                    self._reload_config()
                if self._reconnect_pending:
                    self._reconnect()
                if self.candidacy is None:
                    if not self._start_candidacy():
                        break
                    continue
                try:
                    event = self.events.get(timeout=TICK)
                except queue.Empty:
                    continue
                self._dispatch(event)
        finally:
            self._shutdown()
        return 0

    def post(self, event: Event) -> None:
        """Hand an event to the main loop (any thread)."""
        self.events.put(event)

    def request_reload(self) -> None:
        self._reload.set()
        self.post(Reload())

    def request_stop(self) -> None:
        self.stop.set()
        self.post(Shutdown())

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner calls request_stop()
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def tick(self) -> None:
        """Progress (for /healthz and the systemd watchdog), and the lease gauge."""
        self.liveness.beat()
        candidacy = self.candidacy
        alive = candidacy is not None and not candidacy.session.done.is_set()
        self.recorder.connection(session_alive=alive)
        self.metrics.set_lease_ttl(candidacy.session.remaining() if alive and candidacy else 0.0)

    def _sleep(self, seconds: float) -> None:
        """Wait, beating, cut short by a stop request."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self.tick()
            self.stop.wait(min(TICK, max(0.0, end - time.monotonic())))

    # -- events -------------------------------------------------------------------------------
    def _dispatch(self, event: Event) -> None:
        candidacy = self.candidacy
        current = candidacy is not None and getattr(event, "generation", None) == candidacy.generation
        match event:
            case Shutdown():
                pass
            case Reload():
                if self._reload.is_set():
                    self._reload_config()
            case ControlsChanged(controls):
                self._on_controls(controls)
            case Wedge(release):
                release.wait()
            case Queued() if current:
                self._unblock()
            case Elected() if current and candidacy is not None:
                self._unblock()
                self._lead(candidacy)
            case LeaderSeen(_, leader) if current:
                self._on_leader(leader)
            case LeaseLost(_, reason) if current:
                log.warning("lease_lost", reason=reason)
                self._drop_candidacy(resign=False)
            case CampaignFailed(_, err) if current:
                self.recorder.connection(last_error=str(err))
                self._drop_candidacy(resign=True)
                if isinstance(err, EtcdAuthError):
                    self._block(err)
                else:
                    log.error("campaign_failed", error=str(err), kind=getattr(err, "kind", "other"))
                    self._sleep(self.retry.wait(1, err))
            case _:
                pass  # of an earlier generation, or a term's event after the term ended

    # -- connecting and campaigning -----------------------------------------------------------
    def _start_candidacy(self) -> bool:
        """Connect (if needed) and open a session that campaigns; retried by the retry policy
        until it works or a stop is requested. Returns False when stopping."""
        try:
            self.retry.copy(stop=self.stop, sleep=self._sleep, on_retry=self.connection.outage)(self._open_candidacy)
        except EtcdError:
            return False  # stopping while etcd was away
        return not self.stop.is_set()

    def _open_candidacy(self) -> None:
        self.tick()  # each attempt is progress
        if self.stop.is_set():
            return
        client = self.connection.connect()
        self._generation += 1
        if self._controls_watch is None:
            self._controls_watch = ControlWatcher(client, self.keys, self.events,
                                                  denied_wait=float(self.cfg.election.ttl))
        self.candidacy = Candidacy(client, self.keys.election, self.cfg.election.ttl,
                                   Identity.mine(self.instance_id, self.http_address()).dump(), self.events,
                                   self._generation)
        lease_file.record(self.candidacy.session.lease, self.instance_id)
        self.recorder.connection(campaigning=True, session_alive=True)
        self.connection.reachable()
        # while blocked (a refused permission, said once) each slow retry is not news
        (log.debug if self.state.blocked else log.info)("campaigning", key=self.candidacy.key or None,
                                                        lease=f"{self.candidacy.session.lease:x}")
        if not self._ready_sent:
            self.notifier.ready()
            self._ready_sent = True
        self.recorder.transition(role=FOLLOWER)

    def _block(self, err: EtcdError) -> None:
        """etcd refuses us (permission, auth): retrying at once cannot help and would hammer etcd.
        Said once (one log line until it works again), unhealthy meanwhile, and retried once per
        TTL without leading or writing anything."""
        self.recorder.transition(blocked=err)
        self._sleep(self.retry.wait(1, err))

    def _unblock(self) -> None:
        if self.state.blocked is not None:
            self.recorder.transition(blocked=None)

    def _on_controls(self, controls: Controls) -> None:
        """A follower's part of a switchover: step to the back of the line when ahead of its target."""
        self.recorder.transition(paused=controls.paused)
        sw, candidacy = controls.switchover, self.candidacy
        if sw is None or sw.to in (None, self.instance_id) or candidacy is None or not candidacy.key:
            return
        target = find_candidate(candidacy.session.client, self.keys, sw.to)
        if target is not None and candidacy.term < target.create_revision:
            log.info("switchover_requeue", to=sw.to)
            self._drop_candidacy(resign=True)

    def _on_leader(self, leader: KV) -> None:
        info = Identity.parse(leader.value)
        term = int(leader.create_revision)
        previous = self.state.leader
        self.recorder.saw_leader({"instance_id": info.instance_id, "key": leader.key.decode("utf-8", "replace"),
                                  "term": term})
        self.metrics.set_leader(self.state.role == LEADER, term)
        if previous is None or previous.get("term") != term:
            log.info("leader_changed", leader=info.instance_id, leader_term=term)

    def _lead(self, candidacy: Candidacy) -> None:
        term = candidacy.term
        self.recorder.saw_leader({"instance_id": self.instance_id, "key": candidacy.key, "term": term})
        self.recorder.transition(role=LEADER, term=term, key=candidacy.key)
        ctx = TermContext(client=candidacy.session.client, keys=self.keys, core=self.recorder, events=self.events,
                          stop=self.stop, interval=lambda: self.cfg.reconcile.interval,
                          margin=self.cfg.etcd.request_timeout, beat=self.tick, on_leader=self._on_leader,
                          reload=self._reload_config, retry=self.retry, denied=self._term_denied)
        self.term = LeaderTerm(ctx, candidacy)
        reason = "error"
        try:
            reason = self.term.run()
        finally:
            self.term = None
            self.status_board.expire()
            self.recorder.transition(role=STOPPING if self.stop.is_set() else FOLLOWER, term=None, holds_lock=False,
                                 why=reason)
        if self.stop.is_set():
            return
        # campaign again from the back of the line with a fresh session (the old key may be gone)
        self._drop_candidacy(resign=not candidacy.session.lost)
        denied = self.term_denied
        if denied is not None:  # lost a permission while leading: do not come back in a loop
            self.term_denied = None
            self._block(denied)

    def _term_denied(self, err: PermissionDeniedError) -> None:
        self.term_denied = err

    def http_address(self) -> str | None:
        """Where this instance's HTTP endpoint answers (proclaimed, so drills can find it)."""
        return None if self.http is None else http_address(self.cfg.http.listen, self.http.port)

    def _drop_candidacy(self, resign: bool) -> None:
        candidacy, self.candidacy = self.candidacy, None
        self.recorder.connection(campaigning=False, session_alive=False)
        if candidacy is not None:
            candidacy.close(resign=resign)
            if candidacy.session.lost:
                self.connection.stale_leases.remember(candidacy.session.lease)

    # -- reload and shutdown ------------------------------------------------------------------
    def _reload_config(self) -> bool:
        """Re-read the config file (SIGHUP). Log level and interval apply at once; a change of
        endpoints, namespace, TLS, auth or TTL needs a new connection and session, which the main
        loop makes once any term has ended. Returns True when that reconnect is pending."""
        self._reload.clear()
        try:
            new = config_mod.load(self.args) if self.args is not None else self.cfg
        except ConfigError as err:
            log.error("reload_failed", error=str(err))
            return False
        reconnect = (new.etcd != self.cfg.etcd) or (new.election != self.cfg.election)
        self.notifier.reloading()
        self.cfg = new
        logs.set_level(new.log.level)
        log.info("config_reloaded", reconnect=reconnect, interval=new.reconcile.interval, level=new.log.level)
        self._reconnect_pending = self._reconnect_pending or reconnect
        self.notifier.ready()
        return reconnect

    def _reconnect(self) -> None:
        self._reconnect_pending = False
        self.keys = Keys(self.cfg.etcd.namespace)
        self.recorder.connection(ttl=float(self.cfg.election.ttl))
        self._drop_candidacy(resign=True)
        self._close_controls()
        self.connection.close()

    def _close_controls(self) -> None:
        if self._controls_watch is not None:
            self._controls_watch.close()
            self._controls_watch = None

    def _shutdown(self) -> None:
        self.recorder.transition(role=STOPPING)
        self.notifier.stopping()
        log.info("stopping")
        self._drop_candidacy(resign=True)
        lease_file.clear()
        self._close_controls()
        self.connection.close()
        if self.http is not None:
            self.http.stop()
        log.info("stopped")


def run(cfg: Config, args: argparse.Namespace | None = None) -> int:
    try:
        return Daemon(cfg, args).run()
    except ConfigError as err:  # e.g. a credential file that became unreadable: restarting cannot help
        print(f"protection-worker: config error: {err}", file=sys.stderr)
        return 2
    except WorkerError as err:
        log.error("fatal", error=str(err))
        return 1
