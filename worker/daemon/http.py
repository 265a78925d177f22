"""The HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``, ``/leader``, ``/status`` on one port.

Why the standard library's ``ThreadingHTTPServer`` in a daemon thread: five tiny read-only paths
need no framework, and a slow scraper must never block the main loop or another scraper. The
answers come from a ``Probe`` the daemon implements; an exception in it becomes a 500 JSON answer
(and a log line), never a dead server. ``/metrics`` is prometheus-client's own exposition.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.config import parse_listen
from worker.daemon.logs import get_logger, redact
from worker.daemon.metrics import Metrics

log = get_logger("worker.daemon.http")
JSON_TYPE = "application/json"


class Probe(Protocol):
    """What the daemon exposes to the HTTP endpoint; each call must be quick and thread-safe."""

    def healthz(self) -> tuple[bool, dict[str, Any]]: ...

    def readyz(self) -> tuple[bool, dict[str, Any]]: ...

    def is_leader(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    # redact again here: /status must never show a secret even if a probe put one in by mistake
    return status, JSON_TYPE, (json.dumps(redact(body), default=str, sort_keys=True) + "\n").encode()


def _check(result: tuple[bool, dict[str, Any]]) -> tuple[int, str, bytes]:
    ok, detail = result
    return _json(200 if ok else 503, {**detail, "ok": bool(ok)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the process alive at exit
    allow_reuse_address = True
    request_queue_size = 64  # the default backlog of 5 drops SYNs when several scrapers arrive at once


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves the paths of the contract for ``probe`` and ``metrics`` on ``listen`` (``HOST:PORT``)."""

    def __init__(self, listen: str, metrics: Metrics, probe: Probe) -> None:
        self.host, self._requested_port = parse_listen(listen)
        self.metrics, self.probe = metrics, probe
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": self._metrics,
            "/healthz": lambda: _check(self.probe.healthz()),
            "/readyz": lambda: _check(self.probe.readyz()),
            "/leader": self._leader,
            "/status": lambda: _json(200, self.probe.status()),
        }

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("HealthServer not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind (an ``OSError`` here means the port is taken) and serve in a daemon thread.

        The short poll interval only bounds how long ``stop()`` waits (SIGTERM must be quick).
        """
        cls = _Server6 if ":" in self.host else _Server
        self._server = cls((self.host, self._requested_port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http", daemon=True)
        self._thread.start()
        log.info("http listening", host=self.host, port=self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``; never raises."""
        route = self._routes.get(path.split("?", 1)[0])
        if route is None:
            return _json(404, {"error": "not found", "path": path,
                               "paths": sorted(self._routes)})
        try:
            return route()
        except Exception as exc:  # noqa: BLE001 - a broken probe must not kill the server
            log.error("http handler failed", path=path, error=repr(exc))
            return _json(500, {"error": "internal error", "detail": type(exc).__name__})

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)

    def _leader(self) -> tuple[int, str, bytes]:
        leading = bool(self.probe.is_leader())
        return _json(200 if leading else 503, {"leader": leading})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "protection-worker"
            protocol_version = "HTTP/1.1"  # keep-alive for scrapers; Content-Length is always set

            def _reply(self, with_body: bool) -> None:
                status, ctype, body = server.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._reply(False)

            def _not_allowed(self) -> None:
                status, ctype, body = _json(405, {"error": "method not allowed"})
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Allow", "GET, HEAD")
                self.send_header("Connection", "close")  # its body is not read: do not reuse the stream
                self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("http request", client=self.client_address[0], line=format % args)

        return Handler
