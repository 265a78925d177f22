"""A real Prometheus (Debian's ``prometheus`` package, as CI installs it) on loopback, scraping
real worker instances: the dashboard's queries and the alert rules run against what it scraped.

Short scrape and evaluation intervals keep the tests fast. ``.ci/run`` sets
``PROTECTION_WORKER_REQUIRE_PROMTOOL=1`` after installing the package: the tests then must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.demo.embedded_etcd import free_port

PROMETHEUS = shutil.which("prometheus")
REQUIRED_BY_CI = os.environ.get("PROTECTION_WORKER_REQUIRE_PROMTOOL") == "1"
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None and not REQUIRED_BY_CI,
                                      reason="prometheus not installed (apt-get install prometheus)")
JOB = "protection-worker"
#: every scrape and rule evaluation
INTERVAL = 0.25


class Prometheus:
    """``prometheus`` scraping ``targets`` (host:port) every ``INTERVAL`` s, with optional rules."""

    def __init__(self, workdir: Path, targets: list[str], rules: dict[str, Any] | None = None) -> None:
        assert PROMETHEUS is not None, "prometheus is required here (PROTECTION_WORKER_REQUIRE_PROMTOOL=1)"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config: dict[str, Any] = {
            "global": {"scrape_interval": f"{int(INTERVAL * 1000)}ms",
                       "evaluation_interval": f"{int(INTERVAL * 1000)}ms",
                       "scrape_timeout": f"{int(INTERVAL * 1000)}ms"},
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": list(targets)}]}]}
        if rules is not None:
            (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
            config["rule_files"] = ["rules.yml"]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("prometheus did not start: " + self.log_tail())
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]

    def api(self, path: str, **params: Any) -> Any:
        """The ``data`` of an HTTP API answer (``/api/v1/...``); raises on an error answer."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{path} {params}: {err.code} {err.read().decode(errors='replace')}") from err
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")["result"]

    def await_query(self, expr: str, timeout: float = 20.0, what: str = "") -> list[dict[str, Any]]:
        """Poll an instant query until it returns a series (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or expr}: still empty after {timeout} s")
            time.sleep(INTERVAL)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.workdir / "data", ignore_errors=True)
