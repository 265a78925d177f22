"""Every failure leaves as one of our error types, and pyetcd's mis-wired filters are not ours."""

from __future__ import annotations

import grpc
import pytest

from worker.etcd import EtcdClosedError, EtcdError, EtcdRequestError, LeaseNotFoundError, connect
from worker.etcd import kv


def _no_grpc_cause(exc: BaseException) -> None:
    """Our error may *chain* the gRPC one (for debugging) but must not be one."""
    assert not isinstance(exc, grpc.RpcError)
    assert isinstance(exc, EtcdError)


def test_revoking_an_unknown_lease_is_lease_not_found(client):
    lease = client.lease_grant(30)
    client.lease_revoke(lease.ID)
    with pytest.raises(LeaseNotFoundError) as info:
        client.revoke_lease(lease.ID)  # pyetcd's method, funnelled
    _no_grpc_cause(info.value)
    with pytest.raises(LeaseNotFoundError):
        client.lease_revoke(lease.ID)  # ours


def test_keepalive_round_trip_on_a_revoked_lease_reports_ttl_zero(client):
    lease = client.lease_grant(30)
    client.lease_revoke(lease.ID)
    assert [r.TTL for r in client.refresh_lease(lease.ID)] == [0]
    assert client.lease_time_to_live(lease.ID).TTL == -1


def test_txn_with_too_many_ops_is_a_request_error(client, prefix):
    ops = [kv.op_put(f"{prefix}/{i}", "v") for i in range(129)]  # etcd's default --max-txn-ops is 128
    with pytest.raises(EtcdRequestError, match="too many operations") as info:
        client.txn(kv.txn_request([], ops))
    _no_grpc_cause(info.value)
    assert client.get(f"{prefix}/0") == (None, None)  # nothing of it was applied


def test_pyetcd_transaction_errors_are_funnelled_too(client, prefix):
    ops = [client.transactions.put(f"{prefix}/{i}", "v") for i in range(129)]
    with pytest.raises(EtcdRequestError):
        client.transaction(compare=[], success=ops, failure=[])


def test_duplicate_key_in_txn_is_a_request_error(client, prefix):
    with pytest.raises(EtcdRequestError, match="duplicate key"):
        client.txn(kv.txn_request([], [kv.op_put(f"{prefix}/k", "1"), kv.op_put(f"{prefix}/k", "2")]))


def test_reading_a_compacted_revision_is_compacted_error(client, prefix):
    from worker.etcd import CompactedError
    first = client.put(f"{prefix}/k", "1").header.revision
    latest = client.put(f"{prefix}/k", "2").header.revision
    client.compact(latest)
    with pytest.raises(CompactedError):
        client.range(kv.range_request(f"{prefix}/k", revision=first))


def test_requests_on_a_closed_client_are_closed_errors(etcd_endpoints):
    c = connect(etcd_endpoints)
    c.close()
    with pytest.raises(EtcdClosedError):
        c.get("/x")
    with pytest.raises(EtcdClosedError):
        c.range(kv.range_request("/x"))


def test_error_callbacks_see_the_kind(client):
    kinds: list[str] = []
    client.on_error = lambda err: kinds.append(err.kind)
    with pytest.raises(LeaseNotFoundError):
        client.lease_revoke(0x7FFF_FFFF_FFFF)
    assert kinds == ["lease_not_found"]


def test_max_create_revision_filters_by_create_revision(client, prefix):
    """Regression: pyetcd sets ``min_mod_revision`` for ``max_create_revision``."""
    old = client.put(f"{prefix}/old", "1").header.revision
    new = client.put(f"{prefix}/new", "1").header.revision
    client.put(f"{prefix}/old", "2")  # mod revision of "old" is now newest of all
    got = client.range(kv.range_request(f"{prefix}/", prefix=True, max_create_revision=old))
    assert [k.key for k in got.kvs] == [f"{prefix}/old".encode()]
    got = client.range(kv.range_request(f"{prefix}/", prefix=True, min_create_revision=new))
    assert [k.key for k in got.kvs] == [f"{prefix}/new".encode()]
    # and pyetcd's own request builder really is wrong (if it gets fixed, this test says so)
    from pyetcd import MultiEndpointEtcd3Client
    wrong = MultiEndpointEtcd3Client._build_get_range_request(None, f"{prefix}/", max_create_revision=old)
    assert wrong.max_create_revision == 0 and wrong.min_mod_revision == old
