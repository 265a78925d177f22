"""worker.daemon.http: the paths of the contract over a real socket on 127.0.0.1."""

from __future__ import annotations

import http.client
import inspect
import json
import threading
from typing import Any, Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from worker.daemon.http import HealthServer, Probe
from worker.daemon.metrics import Metrics


class FakeProbe:
    """A settable probe; ``fail`` makes every call raise (a bug in the daemon's probe)."""

    def __init__(self) -> None:
        self.healthy = self.ready = self.leading = True
        self.fail = False
        self.extra: dict[str, Any] = {}

    def _maybe_fail(self) -> None:
        if self.fail:
            raise RuntimeError("probe bug")

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        self._maybe_fail()
        return self.healthy, {"session": "alive" if self.healthy else "lost"}

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        self._maybe_fail()
        return self.ready, {"campaigning": self.ready}

    def is_leader(self) -> bool:
        self._maybe_fail()
        return self.leading

    def status(self) -> dict[str, Any]:
        self._maybe_fail()
        return {"role": "leader" if self.leading else "follower", "term": 7, "paused": False, **self.extra}


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(probe: FakeProbe, metrics: Metrics) -> Iterator[HealthServer]:
    s = HealthServer("127.0.0.1:0", metrics, probe)
    s.start()
    yield s
    s.stop()


def request(server: HealthServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")}


def test_the_daemons_probe_and_the_fake_both_implement_the_protocol() -> None:
    """The daemon's real probe (what the server calls in production) answers every call of the
    protocol with its signature, and so does the fake these tests serve (so the fake stands for it)."""
    from worker.daemon.probe import DaemonProbe
    wanted = _methods(Probe)
    assert set(wanted) == {"healthz", "readyz", "is_leader", "status"}
    for cls in (DaemonProbe, FakeProbe):
        have = _methods(cls)
        for name, signature in wanted.items():
            assert name in have, f"{cls.__name__} lacks {name}"
            assert have[name] == signature, (cls.__name__, name, have[name], signature)


def test_metrics_is_prometheus_text(server: HealthServer, metrics: Metrics) -> None:
    metrics.set_leader(True, 11)
    metrics.follow_leading(lambda: True)
    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    assert b"protection_worker_is_leader 1.0" in body
    assert b"protection_worker_term 11.0" in body


@pytest.mark.parametrize("path,attr", [("/healthz", "healthy"), ("/readyz", "ready")])
def test_checks_answer_200_or_503_with_json(server: HealthServer, probe: FakeProbe, path: str, attr: str) -> None:
    status, headers, body = request(server, path)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["ok"] is True
    setattr(probe, attr, False)
    status, _, body = request(server, path)
    assert status == 503 and json.loads(body)["ok"] is False


def test_leader_is_200_only_on_the_leader(server: HealthServer, probe: FakeProbe) -> None:
    status, _, body = request(server, "/leader")
    assert status == 200 and json.loads(body) == {"leader": True}
    probe.leading = False
    status, _, body = request(server, "/leader")
    assert status == 503 and json.loads(body) == {"leader": False}


def test_status_is_the_probe_object_without_secrets(server: HealthServer, probe: FakeProbe) -> None:
    probe.extra = {"etcd": {"username": "u", "password": "hunter2"}}
    status, _, body = request(server, "/status")
    got = json.loads(body)
    assert status == 200 and got["role"] == "leader" and got["term"] == 7
    assert b"hunter2" not in body and got["etcd"]["username"] == "u"


def test_head_answers_like_get_without_a_body(server: HealthServer, probe: FakeProbe) -> None:
    probe.healthy = False
    for path in ("/healthz", "/metrics", "/nope"):
        g_status, g_headers, g_body = request(server, path)
        h_status, h_headers, h_body = request(server, path, "HEAD")
        assert (h_status, h_body) == (g_status, b"")
        assert h_headers["content-type"] == g_headers["content-type"]
    assert request(server, "/healthz", "HEAD")[0] == 503


def test_unknown_path_is_404_json(server: HealthServer) -> None:
    status, headers, body = request(server, "/admin")
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "not found"


def test_other_methods_are_405(server: HealthServer) -> None:
    status, headers, body = request(server, "/healthz", "POST")
    assert status == 405 and "GET" in headers["allow"] and json.loads(body)["error"]


def test_a_failing_probe_gives_500_and_the_server_survives(server: HealthServer, probe: FakeProbe) -> None:
    probe.fail = True
    for path in ("/healthz", "/readyz", "/leader", "/status"):
        status, headers, body = request(server, path)
        assert status == 500 and json.loads(body)["error"] == "internal error"
    assert request(server, "/metrics")[0] == 200
    probe.fail = False
    assert request(server, "/healthz")[0] == 200


def test_query_strings_are_ignored(server: HealthServer) -> None:
    assert request(server, "/readyz?verbose=1")[0] == 200


def test_concurrent_requests_are_served(server: HealthServer) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def hit() -> None:
        status = request(server, "/metrics")[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 16


def test_stop_frees_the_port(probe: FakeProbe, metrics: Metrics) -> None:
    s = HealthServer("127.0.0.1:0", metrics, probe)
    s.start()
    port = s.port
    s.stop()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/healthz")
    again = HealthServer(f"127.0.0.1:{port}", metrics, probe)  # rebinding the same port works
    again.start()
    try:
        assert request(again, "/healthz")[0] == 200
    finally:
        again.stop()


def test_port_in_use_is_an_oserror_at_start(server: HealthServer, probe: FakeProbe, metrics: Metrics) -> None:
    with pytest.raises(OSError):
        HealthServer(f"127.0.0.1:{server.port}", metrics, probe).start()


def test_access_log_goes_to_structlog_at_debug_only(server: HealthServer, capfd: pytest.CaptureFixture) -> None:
    import io

    import structlog

    from worker.daemon import logs

    stream = io.StringIO()
    try:
        logs.configure_logging("info", "json", "h", stream=stream)
        request(server, "/healthz")
        assert stream.getvalue() == ""
        logs.set_level("debug")
        request(server, "/healthz")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["http request"]
    assert "/healthz" in lines[0]["line"] and lines[0]["level"] == "debug"
    assert "/healthz" not in capfd.readouterr().err  # http.server's own stderr access log is gone
