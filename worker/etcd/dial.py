"""Dialling: wait (bounded) for one endpoint to be ready, and say *why* when none is.

``grpc.channel_ready_future`` only ever says "not ready yet": a TLS mistake (wrong CA, a client
certificate etcd refuses, plaintext to a TLS port) looks exactly like an etcd that is still
starting, and the caller would wait the whole dial timeout to get a vague message. Here every
endpoint whose channel reports ``TRANSIENT_FAILURE`` is probed with one fail-fast RPC, whose status
carries gRPC's last connection error; TLS failures cannot heal by waiting, so they end the dial at
once with a message naming the likely cause. An http:// endpoint whose peer closes the socket is
checked with a TLS handshake: if it speaks TLS, the operator is told to use https://.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

import grpc
from pyetcd import etcdrpc

from worker.etcd.errors import EtcdError, EtcdTLSError, EtcdUnavailableError

_POLL = 0.05
_PROBE_TIMEOUT = 0.3
_REPROBE = 0.25  # s between probes of one failing endpoint


def _url(endpoint: Any) -> str:
    return f"{endpoint.protocol}://{endpoint.netloc}"


def _handshake(endpoint: Any, context: ssl.SSLContext, timeout: float) -> ssl.SSLError | None:
    """A TLS handshake plus a short read (TLS 1.3 servers reject a client certificate *after*
    the handshake); the ``SSLError`` it met, or None when the peer accepted us or is unreachable."""
    host, _, port = endpoint.netloc.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(timeout)
                tls.recv(1)
    except ssl.SSLError as exc:
        return exc
    except OSError:
        pass
    return None


def _speaks_tls(endpoint: Any, timeout: float) -> bool:
    """True when the peer answers a TLS handshake (certificates not checked: we only ask *whether*)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, _, port = endpoint.netloc.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return True
    except ssl.SSLError as exc:  # an alert (e.g. "certificate required") is TLS speaking too
        return "ALERT" in str(exc).upper()
    except OSError:
        return False


_DEFINITE_TLS = ("SSL_ERROR_SSL", "TSI_PROTOCOL_FAILURE", "CERTIFICATE", "ALERT", "UNKNOWN_CA",
                 "VERIFICATION CHECK FAILED", "HOSTNAME")


def _tls_problem(endpoint: Any, details: str) -> EtcdError | None:
    """The error to stop dialling with, when ``details`` names a TLS failure."""
    upper = details.upper()
    if not any(marker in upper for marker in _DEFINITE_TLS):
        return None
    url = _url(endpoint)
    if "PEER NAME" in upper or "HOSTNAME" in upper:
        cause = f"etcd's server certificate does not name {endpoint.host} (add it as a SAN, or dial a name it has)"
    elif "CERTIFICATE_VERIFY_FAILED" in upper or "ISSUER" in upper:
        cause = "etcd's server certificate is not signed by etcd.ca_cert"
    elif "BAD_CERTIFICATE" in upper or "CERTIFICATE_REQUIRED" in upper or "UNKNOWN_CA" in upper:
        cause = ("etcd refused our client certificate: it requires mutual TLS with a certificate "
                 "signed by its trusted CA (etcd.cert/etcd.key)")
    else:
        cause = "the TLS handshake failed"
    return EtcdTLSError(f"cannot connect to etcd at {url}: {cause} [{details}]")


def _diagnose_tls(endpoint: Any, details: str, timeout: float) -> EtcdError | None:
    """gRPC sometimes only says "Handshake read failed (Endpoint closing)": redo the handshake
    with Python's ssl and the same files to learn whether (and why) etcd refuses us."""
    files = getattr(endpoint, "tls_files", None)
    if files is None:
        return None
    ca_cert, cert, key = files
    context = ssl.create_default_context(cafile=ca_cert)
    context.check_hostname = False  # gRPC checks the host; this probe only asks about certificates
    context.set_alpn_protocols(["h2"])
    if cert:
        context.load_cert_chain(cert, key)
    error = _handshake(endpoint, context, timeout)
    if error is None:
        return None
    return _tls_problem(endpoint, f"{details}; TLS probe: {error}")


def _probe(endpoint: Any, remaining: float) -> EtcdError | None:
    """One fail-fast RPC on a failing channel; the error that should end dialling, if any."""
    stub = etcdrpc.MaintenanceStub(endpoint.channel)
    try:
        stub.Status(etcdrpc.StatusRequest(), timeout=max(0.05, min(_PROBE_TIMEOUT, remaining)))
        return None
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            return None
        details = exc.details() or ""
    short = max(0.05, min(0.5, remaining))
    if endpoint.secure:
        problem = _tls_problem(endpoint, details)
        # Go 1.21+ servers (etcd 3.5.1x and later, TLS 1.3) refuse a client certificate only after
        # the handshake: gRPC then says "Unwrap failed (TSI_DATA_CORRUPTED)", not "handshake"
        if problem is None and ("handshake" in details.lower() or "TSI_DATA_CORRUPTED" in details):
            problem = _diagnose_tls(endpoint, details, short)
        return problem
    if "socket closed" in details.lower() and _speaks_tls(endpoint, short):
        return EtcdUnavailableError(f"cannot connect to etcd at {_url(endpoint)}: it serves TLS; "
                                    f"use https://{endpoint.netloc} (with etcd.ca_cert)")
    return None


def dial(endpoints: dict[str, Any], timeout: float) -> str:
    """Wait up to ``timeout`` s for any endpoint's channel to be ready; return its label.

    Raises ``EtcdTLSError``/``EtcdUnavailableError`` at once for a TLS mistake, and
    ``EtcdUnavailableError`` naming every endpoint when none is ready in time.
    """
    ready = threading.Event()
    winners: list[str] = []
    failing: dict[str, bool] = {}
    subscriptions = []
    futures = []
    for label, endpoint in endpoints.items():
        future = grpc.channel_ready_future(endpoint.channel)

        def done(f: Any, label: str = label) -> None:
            if not f.cancelled():
                winners.append(label)
                ready.set()

        def state(conn: grpc.ChannelConnectivity, label: str = label) -> None:
            failing[label] = conn == grpc.ChannelConnectivity.TRANSIENT_FAILURE

        endpoint.channel.subscribe(state)
        subscriptions.append((endpoint.channel, state))
        future.add_done_callback(done)
        futures.append(future)
    probed: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while not ready.wait(min(_POLL, max(0.0, deadline - time.monotonic()))):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for label, endpoint in endpoints.items():
                now = time.monotonic()
                if failing.get(label) and now - probed.get(label, 0.0) >= _REPROBE:
                    probed[label] = now
                    problem = _probe(endpoint, remaining)
                    if problem is not None and not ready.is_set():
                        raise problem
    finally:
        for future in futures:
            future.cancel()
        for channel, callback in subscriptions:
            channel.unsubscribe(callback)
    if winners:
        return winners[0]
    urls = ", ".join(_url(e) for e in endpoints.values())
    if not any(e.secure for e in endpoints.values()):
        hint = " (if etcd serves TLS, use https:// endpoints)"
    else:
        hint = " (check that etcd serves TLS there and that the CA and client certificate match)"
    raise EtcdUnavailableError(f"cannot reach etcd at {urls} within {timeout:g} s{hint}")
