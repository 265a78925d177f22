"""What systemd does with one service: a stand-in for the demo only (which must run anywhere).

The tests and the README's figures use a real systemd where one can run
(``tests/system/test_real_systemd.py``, ``bench/failover_release.py``); this stand-in models what
they showed systemd 252 doing, and says where it stops short.

A ``Service`` runs a ``ServiceSpec`` the way systemd runs a unit's ``[Service]`` section:

* ``Environment=`` on top of this process's environment; ``RuntimeDirectory=`` as a private
  directory exported as ``$RUNTIME_DIRECTORY`` (kept across a restart with
  ``RuntimeDirectoryPreserve=restart``, removed at the final stop otherwise);
* ``ExecStart=`` as the main process (its own process group), with ``NOTIFY_SOCKET`` (a datagram
  socket it reads ``READY=1``/``WATCHDOG=1`` from) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``
  and ``WATCHDOG_PID``; when the pings stop for ``WatchdogSec`` it sends ``WatchdogSignal=``, then
  SIGKILL after ``TimeoutAbortSec=`` if the process is still there (a SIGSTOPped one is);
* once the main process is reaped: every ``ExecStopPost=`` with ``$SERVICE_RESULT``,
  ``$EXIT_CODE`` and ``$EXIT_STATUS`` (a leading ``-`` ignores its failure), then ``Restart=``
  (``no``, ``on-failure``, ``always``; ``RestartPreventExitStatus=``) after ``RestartSec=``;
* ``stop()`` is ``systemctl stop``: SIGTERM, SIGKILL after ``TimeoutStopSec=``, ``ExecStopPost=``,
  no restart.

``ServiceSpec.from_unit`` reads a unit file; its command lines are used as written, except for
path rewrites the caller names (the binary and the config file). Everything that happens is kept
in ``events`` (with ``time.monotonic()`` stamps) so callers can await and time it.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: signals whose termination systemd counts as a clean exit (``SuccessExitStatus=`` defaults)
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
#: ``ExecStart=``/``ExecStopPost=`` prefixes; ``-`` ignores a failure, the others do not apply here
EXEC_PREFIXES = "-@:+!"


def parse_seconds(value: str) -> float:
    """A systemd time span: ``6s``, ``500ms``, ``1min 30s``, ``2.5`` (plain: seconds)."""
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "": 1.0, "s": 1.0, "sec": 1.0,
             "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    if not parts:
        raise ValueError(f"not a time span: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def read_unit(text: str, section: str = "Service") -> dict[str, list[str]]:
    """``Key`` -> every value given in ``[section]`` (systemd allows repeats; ``\\`` continues a line)."""
    out: dict[str, list[str]] = {}
    current, pending = None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@dataclass
class Command:
    """One command line: its argv and whether a failure is ignored (a leading ``-``)."""

    argv: list[str]
    ignore_failure: bool = False

    @classmethod
    def parse(cls, line: str, rewrite: Mapping[str, str] | None = None) -> "Command":
        prefix = ""
        while line and line[0] in EXEC_PREFIXES:
            prefix, line = prefix + line[0], line[1:]
        argv = shlex.split(line)
        argv = [(rewrite or {}).get(arg, arg) for arg in argv]
        return cls(argv, "-" in prefix)


@dataclass
class ServiceSpec:
    """The ``[Service]`` settings a ``Service`` honours."""

    exec_start: list[str]
    exec_stop_post: list[Command] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    runtime_directory: str | None = None
    preserve_runtime_directory_on_restart: bool = False
    restart: str = "no"
    restart_sec: float = 0.1
    restart_prevent_exit_status: set[int] = field(default_factory=set)
    watchdog_sec: float | None = None
    watchdog_signal: int = signal.SIGABRT
    timeout_abort_sec: float | None = None
    timeout_stop_sec: float = 90.0

    @classmethod
    def from_unit(cls, text: str, rewrite: Mapping[str, str] | None = None) -> "ServiceSpec":
        """The spec of a unit file's text; ``rewrite`` maps a command-line word (the binary's path,
        the config file's) to what to run instead. Nothing else of the command lines changes."""
        d = read_unit(text)

        def last(key: str, default: str | None = None) -> str | None:
            return d[key][-1] if d.get(key) else default

        env: dict[str, str] = {}
        for line in d.get("Environment", []):
            for item in shlex.split(line):
                name, _, value = item.partition("=")
                env[name] = value
        stop = parse_seconds(last("TimeoutStopSec", "90s") or "90s")
        abort = last("TimeoutAbortSec")
        watchdog = last("WatchdogSec")
        return cls(
            exec_start=Command.parse(last("ExecStart") or "", rewrite).argv,
            exec_stop_post=[Command.parse(line, rewrite) for line in d.get("ExecStopPost", []) if line],
            environment=env,
            runtime_directory=last("RuntimeDirectory"),
            preserve_runtime_directory_on_restart=last("RuntimeDirectoryPreserve", "no") in ("restart", "yes"),
            restart=last("Restart", "no") or "no",
            restart_sec=parse_seconds(last("RestartSec", "100ms") or "100ms"),
            restart_prevent_exit_status={int(s) for line in d.get("RestartPreventExitStatus", [])
                                         for s in line.split() if s.isdigit()},
            watchdog_sec=parse_seconds(watchdog) if watchdog else None,
            watchdog_signal=signal.Signals[(last("WatchdogSignal", "SIGABRT") or "SIGABRT")],
            timeout_abort_sec=parse_seconds(abort) if abort else stop,
            timeout_stop_sec=stop,
        )


@dataclass
class Event:
    """Something the service manager did or saw: ``kind`` and details, at ``at`` (monotonic)."""

    kind: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class StopPostRun:
    """One ``ExecStopPost=`` run: its variables, exit status, output, and when it ran."""

    argv: list[str]
    variables: dict[str, str]
    returncode: int
    output: str
    started: float
    ended: float


def exit_variables(status: int, watchdog: bool) -> dict[str, str]:
    """``$SERVICE_RESULT``, ``$EXIT_CODE``, ``$EXIT_STATUS`` for a wait status, as systemd sets them."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        result = "success" if code == 0 else "exit-code"
        out = {"EXIT_CODE": "exited", "EXIT_STATUS": str(code)}
    else:
        sig = signal.Signals(os.WTERMSIG(status))
        dumped = os.WCOREDUMP(status)
        result = "success" if sig in CLEAN_SIGNALS else ("core-dump" if dumped else "signal")
        out = {"EXIT_CODE": "dumped" if dumped else "killed", "EXIT_STATUS": sig.name[3:]}
    return {"SERVICE_RESULT": "watchdog" if watchdog else result, **out}


class Service:
    """One supervised service (see the module doc). ``start()`` it; ``stop()`` it at the end."""

    def __init__(self, name: str, spec: ServiceSpec, *, base_dir: Path | None = None,
                 output: Path | None = None) -> None:
        self.name, self.spec = name, spec
        self._own_base = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="pw-sd-")) if base_dir is None else base_dir
        self.output = output
        self.events: list[Event] = []
        self.stop_posts: list[StopPostRun] = []
        self.pid: int | None = None
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: ``$NOTIFY_SOCKET``: an abstract datagram socket (``@`` prefix, as systemd allows)
        self.notify_socket = f"@pw-sd-{os.getpid()}-{uuid.uuid4().hex[:12]}"

    # -- what callers see ---------------------------------------------------------------------
    @property
    def runtime_dir(self) -> Path | None:
        return None if self.spec.runtime_directory is None else self.base_dir / "run" / self.spec.runtime_directory

    def _event(self, kind: str, **data: Any) -> Event:
        event = Event(kind, time.monotonic(), data)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
        return event

    def wait_event(self, kind: str, *, after: float = 0.0, timeout: float = 30.0) -> Event:
        """The first event of ``kind`` stamped at or after ``after`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.kind == kind and event.at >= after:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no {kind!r} event within {timeout} s: "
                                       f"{[(e.kind, e.data) for e in self.events[-8:]]}")
                self._cond.wait(left)

    @property
    def active(self) -> bool:
        """Started and not stopped for good (a restart pending counts as active)."""
        return self._thread is not None and self._thread.is_alive()

    def signal(self, sig: int) -> None:
        """``systemctl kill --kill-whom=main -s SIG``: to the main process, if it runs."""
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Service":
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.notify_socket[1:])  # abstract: no path length limit, nothing to clean
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, **self.spec.environment)
        env["NOTIFY_SOCKET"] = self.notify_socket
        if self.runtime_dir is not None:
            env["RUNTIME_DIRECTORY"] = str(self.runtime_dir)
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS"):
            env.pop(name, None)
        if self.spec.watchdog_sec:
            env["WATCHDOG_USEC"] = str(int(self.spec.watchdog_sec * 1e6))
        return env

    def _spawn(self) -> None:
        if self.runtime_dir is not None:
            self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = open(self.output, "ab") if self.output is not None else subprocess.DEVNULL
        # WATCHDOG_PID is the main pid, known only after the fork: the shell sets it and execs
        # (same pid), as systemd sets it between fork and exec
        argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *self.spec.exec_start]
        try:
            self._proc = subprocess.Popen(argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if not isinstance(out, int):    # not subprocess.DEVNULL
                out.close()
        self.pid = self._proc.pid
        self._event("started", pid=self.pid)

    def _supervise(self) -> None:
        while True:
            status, watchdog = self._run_main()
            variables = exit_variables(status, watchdog)
            self._event("reaped", pid=self.pid, **variables)
            self.pid = None
            for command in self.spec.exec_stop_post:
                self._stop_post(command, variables)
            self._event("stop_post_done", **variables)
            if self._stopping.is_set() or not self._restart_wanted(status, variables):
                self._event("dead", **variables)
                return
            if self._stopping.wait(self.spec.restart_sec):
                self._event("dead", **variables)
                return
            if self.runtime_dir is not None and not self.spec.preserve_runtime_directory_on_restart:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self._spawn()

    def _run_main(self) -> tuple[int, bool]:
        """Read notifications and keep the watchdog until the main process is reaped: (wait status,
        whether the watchdog killed it). A pidfd wakes us the moment the process exits."""
        assert self._proc is not None and self._sock is not None
        pid = self._proc.pid
        pidfd = os.pidfd_open(pid)
        last_ping = time.monotonic()
        fired_at: float | None = None
        killed = False
        try:
            while True:
                watched: list[Any] = [self._sock, pidfd]
                readable, _, _ = select.select(watched, [], [], 0.1)
                if pidfd in readable:
                    _, status = os.waitpid(pid, 0)
                    self._proc.returncode = status  # reaped here: keep Popen from waiting again
                    return status, fired_at is not None
                now = time.monotonic()
                if self._sock in readable:
                    lines = self._sock.recv(4096).decode(errors="replace").split("\n")
                    if "WATCHDOG=1" in lines:
                        last_ping = now
                    if "READY=1" in lines:
                        self._event("ready", pid=pid)
                wd = self.spec.watchdog_sec
                if wd and fired_at is None and not self._stopping.is_set() and now - last_ping > wd:
                    fired_at = now
                    self._event("watchdog", pid=pid, signal=signal.Signals(self.spec.watchdog_signal).name)
                    os.kill(pid, self.spec.watchdog_signal)
                    os.kill(pid, signal.SIGCONT)  # systemd's kill sequence: the signal, then SIGCONT
                if fired_at is not None and not killed and now - fired_at > (self.spec.timeout_abort_sec or 0):
                    killed = True
                    self._event("abort_timeout", pid=pid)
                    os.kill(pid, signal.SIGKILL)
        finally:
            os.close(pidfd)

    def _stop_post(self, command: Command, variables: dict[str, str]) -> None:
        env = dict(self._env(), **variables)
        env.pop("NOTIFY_SOCKET", None)
        started = time.monotonic()
        try:
            proc = subprocess.run(command.argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.spec.timeout_stop_sec)
            code, output = proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            code, output = -9, f"timed out after {exc.timeout} s"
        run = StopPostRun(command.argv, variables, code, output, started, time.monotonic())
        self.stop_posts.append(run)
        if self.output is not None:
            with open(self.output, "a") as log:
                log.write(f"# ExecStopPost {' '.join(command.argv)} -> {code}: {output}")
        self._event("stop_post", returncode=code, ignored=command.ignore_failure, output=output)

    def _restart_wanted(self, status: int, variables: dict[str, str]) -> bool:
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) in self.spec.restart_prevent_exit_status:
            return False
        if self.spec.restart == "always":
            return True
        if self.spec.restart == "on-failure":
            return variables["SERVICE_RESULT"] != "success"
        return False

    def stop(self, timeout: float | None = None) -> None:
        """``systemctl stop``: SIGTERM (and SIGCONT), SIGKILL after ``TimeoutStopSec`` (or
        ``timeout``), ``ExecStopPost=``, no restart; then the runtime directory goes."""
        self._stopping.set()
        limit = self.spec.timeout_stop_sec if timeout is None else timeout
        pid = self.pid
        if pid is not None:
            self.signal(signal.SIGTERM)
            self.signal(signal.SIGCONT)
        if self._thread is not None:
            self._thread.join(limit)
            if self._thread.is_alive():
                self.signal(signal.SIGKILL)
                self._thread.join(limit + 5)
        if self._sock is not None:
            self._sock.close()
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
