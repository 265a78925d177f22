"""Username/password auth over TLS against a real etcd with auth enabled.

etcd's *simple* tokens live in the member's memory: they expire after ``--auth-token-ttl`` seconds
without use, and an etcd restart forgets all of them. pyetcd authenticates once and never again;
our client must re-authenticate (requests, watches and keepalive streams alike).
"""

from __future__ import annotations

import time

import grpc
import pytest
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2

from worker.etcd import EtcdAuthError, LeaseKeeper, PermissionDeniedError, Watch, connect
from worker.etcd import kv

from .conftest import create_retrying, wait_until


ROOT_PASSWORD = "root-pw"
TOKEN_TTL = 1  # seconds (the least etcd accepts)


def _enable_auth(endpoint: str, certs) -> None:
    """root (role root), and ``worker`` with readwrite on ``/pw/`` only; then auth enable.
    Sent with pyetcd's AuthStub over one TLS connection (etcdctl per step costs ~1 s in all)."""
    admin = connect([endpoint], ca_cert=certs.ca)
    try:
        stub = admin.authstub
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD), 5)
        stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), 5)
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), 5)
        stub.RoleAdd(etcdrpc.AuthRoleAddRequest(name="pw-rw"), 5)
        permission = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"/pw/",
                                          range_end=kv.prefix_end("/pw/"))
        stub.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="pw-rw", perm=permission), 5)
        stub.UserAdd(etcdrpc.AuthUserAddRequest(name="worker", password="worker-pw"), 5)
        stub.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="worker", role="pw-rw"), 5)
        stub.AuthEnable(etcdrpc.AuthEnableRequest(), 5)
    finally:
        admin.close()


AUTH_ARGS = ["--auth-token", "simple", "--auth-token-ttl", str(TOKEN_TTL)]


@pytest.fixture(scope="module")
def auth_etcd(tls_etcd, certs):
    """A server-auth TLS etcd (no client certificates: etcd would take the user from their CN)
    with auth enabled and simple tokens that expire after ``TOKEN_TTL`` idle seconds; shared
    by this module's tests, which only read it or write under ``/pw/``."""
    cluster = tls_etcd(mutual=False, extra_args=AUTH_ARGS)
    _enable_auth(cluster.endpoints[0], certs)
    return cluster


@pytest.fixture
def own_auth_etcd(tls_etcd, certs):
    """Like ``auth_etcd``, for a test that restarts it."""
    cluster = tls_etcd(mutual=False, extra_args=AUTH_ARGS, own_member=True)
    _enable_auth(cluster.endpoints[0], certs)
    return cluster


def _connect(cluster, certs, password="worker-pw", **kw):
    return connect(cluster.endpoints, ca_cert=certs.ca, username="worker", password=password, **kw)


def _idle_past_token_ttl() -> None:
    # No event announces a token's expiry: waiting by the clock is the only way. etcd checks
    # simple-token TTLs once a second, so TTL + 1 s of idleness plus a margin guarantees expiry.
    time.sleep(TOKEN_TTL + 1.5)


def test_password_auth_over_tls(auth_etcd, certs):
    client = _connect(auth_etcd, certs)
    try:
        client.put("/pw/k", "v")
        assert client.get("/pw/k")[0] == b"v"
        assert client.stats["authenticate"] == 1
    finally:
        client.close()


def test_wrong_password_is_an_auth_error(auth_etcd, certs):
    with pytest.raises(EtcdAuthError, match="authentication failed"):
        _connect(auth_etcd, certs, password="wrong")


def test_write_outside_the_granted_prefix_is_permission_denied(auth_etcd, certs):
    client = _connect(auth_etcd, certs)
    try:
        with pytest.raises(PermissionDeniedError):
            client.put("/elsewhere/k", "v")
        with pytest.raises(PermissionDeniedError):
            client.txn(kv.txn_request([], [kv.op_put("/elsewhere/k", "v")]))
    finally:
        client.close()


def test_requests_survive_token_expiry(auth_etcd, certs):
    client = _connect(auth_etcd, certs)
    try:
        client.put("/pw/k", "1")
        _idle_past_token_ttl()
        client.put("/pw/k", "2")  # a write is not retried, but a token refresh is not a retry
        assert client.get("/pw/k")[0] == b"2"
        assert client.stats["authenticate"] >= 2
    except grpc.RpcError as exc:  # pragma: no cover - what pyetcd alone would do
        pytest.fail(f"raw gRPC error leaked: {exc}")
    finally:
        client.close()


def test_watch_and_keeper_survive_token_expiry_and_a_restart(own_auth_etcd, certs):
    auth_etcd = own_auth_etcd
    client = _connect(auth_etcd, certs)
    writer = _connect(auth_etcd, certs)
    holder = _connect(auth_etcd, certs)  # its own client: its re-logins must not help the watch's
    try:
        lease = holder.lease_grant(6)
        keeper = LeaseKeeper(holder, lease.ID, lease.TTL, interval=0.5)
        watch = Watch(client, "/pw/w/", range_end=kv.prefix_end("/pw/w/"))
        assert watch.started.wait(5)
        _idle_past_token_ttl()
        writer.put("/pw/w/1", "a")
        # the restart forgets every simple token: streams re-open only after re-authenticating
        auth_etcd.members[0].restart()
        create_retrying(writer, "/pw/w/2", "b")
        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            response = watch.get(timeout=max(0.0, deadline - time.monotonic()))
            if response is not None:
                seen += [e.key for e in response.events]
        assert seen == [b"/pw/w/1", b"/pw/w/2"]
        # and once more: every lost token earns a re-login, not just the first
        auth_etcd.members[0].restart()
        create_retrying(writer, "/pw/w/3", "c")
        response = watch.get(timeout=10)
        assert response is not None and [e.key for e in response.events] == [b"/pw/w/3"]
        confirmed = keeper.keepalives
        assert wait_until(lambda: keeper.keepalives > confirmed, 5), "no keepalive answered after the restart"
        assert not keeper.lost.is_set(), keeper.lost_reason
        assert holder.lease_time_to_live(lease.ID).TTL > 0
        # (etcd 3.5 checks no token on LeaseKeepAlive, so the keeper itself needs no new login;
        # what it must survive is its stream breaking with every restart)
        assert client.stats["authenticate"] >= 2  # the watch logged in again (once per denial seen)
        watch.close()
        keeper.stop()
    finally:
        client.close()
        writer.close()
        holder.close()



def test_watch_outside_the_granted_prefix_is_permission_denied(auth_etcd, certs):
    client = _connect(auth_etcd, certs)
    try:
        with Watch(client, "/elsewhere/") as watch:
            with pytest.raises(PermissionDeniedError, match="permission denied"):
                watch.get(timeout=5)
        assert client.stats["authenticate"] == 2  # one re-authentication, then the denial is real
    finally:
        client.close()
