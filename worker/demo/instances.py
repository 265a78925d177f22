"""Worker instances as real processes: the demo, the drills' tests and the benchmarks run these.

Each instance is ``python -m worker run`` with its own instance id and HTTP port, logging JSON to
a file, in its own process group so signals reach it alone. Nothing here mocks anything: what is
measured is what an operator would see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from worker.demo.embedded_etcd import free_port
from worker.demo.supervisor import Command, Service, ServiceSpec


class WorkerProcess:
    """One ``protection-worker run`` process."""

    def __init__(self, instance_id: str, endpoints: list[str], namespace: str, log_dir: Path, *,
                 ttl: int = 3, interval: float = 30.0, request_timeout: float = 0.5,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 etcd_settings: dict[str, str] | None = None) -> None:
        self.instance_id = instance_id
        #: more ``[etcd]`` keys for the config file: ca_cert, cert, key, username, password_file
        self.etcd_settings = dict(etcd_settings or {})
        #: extra environment for the process (e.g. LD_PRELOAD/FAKETIME for a skewed clock)
        self.env = dict(env or {})
        self.endpoints = endpoints
        self.namespace = namespace
        self.ttl = ttl
        self.interval = interval
        self.request_timeout = request_timeout
        self.port = free_port()
        self.log_path = log_dir / f"{instance_id}.log"
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self._config_path = log_dir / f"{instance_id}.toml"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "worker", "run", "--config", str(self._config_path),
                "--instance-id", self.instance_id, "--listen", f"127.0.0.1:{self.port}", *self.extra_args]

    def write_config(self) -> None:
        eps = ", ".join(json.dumps(e) for e in self.endpoints)
        self._config_path.write_text(
            f"[etcd]\nendpoints = [{eps}]\nnamespace = {json.dumps(self.namespace)}\n"
            f"dial_timeout = {self.request_timeout}\nrequest_timeout = {self.request_timeout}\n"
            + "".join(f"{name} = {json.dumps(value)}\n" for name, value in self.etcd_settings.items()) +
            f"[election]\nttl = {self.ttl}\ninstance_id = {json.dumps(self.instance_id)}\n"
            f"[reconcile]\ninterval = {self.interval}\n[http]\nlisten = \"127.0.0.1:{self.port}\"\n"
            f"[log]\nlevel = \"info\"\nformat = \"json\"\n")

    def start(self) -> WorkerProcess:
        self.write_config()
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, Any]:
        """GET ``path`` on the instance's HTTP port: (status, parsed JSON or text); (0, None) when down."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        except (OSError, urllib.error.URLError):
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def wait_http(self, path: str = "/readyz", status: int = 200, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(path)[0] == status:
                return True
            if not self.running():
                return False
            time.sleep(0.05)
        return False

    def log_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return events
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                events.append(item)
        return events


class SupervisedWorker(WorkerProcess):
    """A worker run by a ``Service``: systemd's part too — after the process dies it runs
    ``protection-worker release`` (``ExecStopPost=``) unless ``release`` is off, then restarts it
    after ``restart_sec`` (``Restart=on-failure``). ``unit`` (a unit file's text) replaces these
    settings with the unit's own, its binary and config paths pointed at this venv and this
    instance's config. ``signal()`` goes to the current main process; ``terminate()`` is
    ``systemctl stop``."""

    BINARY = "/usr/bin/protection-worker"
    CONFIG = "/etc/protection-worker/config.toml"

    def __init__(self, *args: Any, unit: str | None = None, release: bool = True, restart_sec: float = 1.0,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.unit = unit
        self.release = release
        self.restart_sec = restart_sec
        self.service: Service | None = None

    def script(self) -> str:
        """This venv's console script (what the unit's ``/usr/bin/protection-worker`` is here)."""
        return str(Path(sys.executable).parent / "protection-worker")

    def release_command(self) -> list[str]:
        return [self.script(), "release", "--config", str(self._config_path)]

    def spec(self) -> ServiceSpec:
        if self.unit is not None:
            spec = ServiceSpec.from_unit(self.unit, {self.BINARY: self.script(), self.CONFIG: str(self._config_path)})
        else:
            spec = ServiceSpec(self.command(), [Command(self.release_command(), ignore_failure=True)],
                               environment={"PYTHONUNBUFFERED": "1"}, runtime_directory="protection-worker",
                               preserve_runtime_directory_on_restart=True, restart="on-failure",
                               restart_sec=self.restart_sec, restart_prevent_exit_status={2},
                               timeout_stop_sec=10.0)
        spec.environment.update(self.env)
        if not self.release:
            spec.exec_stop_post = []
        return spec

    def set_release(self, on: bool) -> None:
        """Run the release after the next death, or not (what etcd's TTL alone gives)."""
        self.release = on
        if self.service is not None:
            self.service.spec.exec_stop_post = self.spec().exec_stop_post

    def start(self) -> "SupervisedWorker":
        self.write_config()
        base = self.log_path.with_name(f"{self.instance_id}.sd")
        base.mkdir(parents=True, exist_ok=True)
        self.service = Service(self.instance_id, self.spec(), base_dir=base, output=self.log_path).start()
        return self

    @property
    def pid(self) -> int:
        assert self.service is not None and self.service.pid is not None
        return self.service.pid

    def running(self) -> bool:
        """Active: running, or dead and about to be restarted (not stopped for good)."""
        return self.service is not None and self.service.active

    def signal(self, sig: int) -> None:
        if self.service is not None:
            self.service.signal(sig)

    def terminate(self, timeout: float = 10.0) -> int | None:
        service, self.service = self.service, None
        if service is None:
            return None
        service.stop(timeout)
        reaped = [e for e in service.events if e.kind == "reaped"]
        return int(reaped[-1].data["EXIT_STATUS"]) if reaped and reaped[-1].data["EXIT_CODE"] == "exited" else None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def start_group(count: int, endpoints: list[str], namespace: str, log_dir: Path, *,
                kind: type[WorkerProcess] = WorkerProcess, **kw: Any) -> list[WorkerProcess]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return [kind(f"worker-{i + 1}", endpoints, namespace, log_dir, **kw).start() for i in range(count)]


def wait_ready(workers: list[WorkerProcess], timeout: float = 20.0) -> None:
    """Every instance answers ``/readyz`` 200 (connected and campaigning), else the log's tail."""
    for worker in workers:
        if not worker.wait_http("/readyz", timeout=timeout):
            tail = worker.log_path.read_text(errors="replace")[-2000:] if worker.log_path.exists() else ""
            raise RuntimeError(f"{worker.instance_id} never became ready: {tail}")


def stop_group(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.signal(signal.SIGCONT)
    for worker in workers:
        worker.terminate(timeout=5)
