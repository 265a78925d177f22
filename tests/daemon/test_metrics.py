"""worker.daemon.metrics: exact exposed names and types, pre-created label values, helper semantics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker import __version__
from worker.daemon.metrics import Metrics, error_kind
from worker.etcd import errors as etcd_errors

# name -> type, as in interfaces.md (prometheus-client calls counter families without "_total")
CONTRACT = {
    "is_leader": "gauge", "leader_changes": "counter", "term": "gauge",
    "reconcile_duration_seconds": "histogram", "reconcile_runs": "counter", "writes": "counter",
    "fenced_writes": "counter", "clusters": "gauge", "invalid_inputs": "gauge", "lease_ttl_seconds": "gauge",
    "etcd_errors": "counter", "last_etcd_contact_timestamp_seconds": "gauge", "is_paused": "gauge",
    "build_info": "gauge",
}
#: added to the contract (interfaces.md: "add to them freely"): the etcd server's version (issue 13)
ADDED = {"etcd_server_info": "gauge",
         # issue 19: when each mode's last pass completed, and "elected" apart from "leads" (is_leader)
         "last_pass_timestamp_seconds": "gauge", "is_elected": "gauge"}


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(m.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m)[("protection_worker_" + name, tuple(sorted(labels.items())))]


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    text = generate_latest(Metrics().registry).decode()
    # prometheus-client also exposes a "<name>_created" gauge per counter/histogram: extra, allowed
    families = {f.name: f.type for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    assert families == {"protection_worker_" + k: v for k, v in (CONTRACT | ADDED).items()}
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    for counter in ("leader_changes", "reconcile_runs", "writes", "fenced_writes", "etcd_errors"):
        assert f"protection_worker_{counter}_total" in exposed
    assert not any(name.endswith("_total_total") for name in exposed)


def test_known_label_values_exist_at_zero() -> None:
    s = samples(Metrics())
    for mode in ("full", "incremental"):
        assert s[("protection_worker_reconcile_duration_seconds_count", (("mode", mode),))] == 0
    for result in ("ok", "error", "fenced", "stopped"):
        assert s[("protection_worker_reconcile_runs_total", (("result", result),))] == 0
    for op in ("create", "update", "delete"):
        assert s[("protection_worker_writes_total", (("op", op),))] == 0
    for state in ("unprotected", "protecting", "protected", "degraded", "deleted"):
        assert s[("protection_worker_clusters", (("state", state),))] == 0


def test_build_info_carries_the_package_version() -> None:
    assert value(Metrics(), "build_info", version=__version__) == 1


def test_two_instances_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.set_invalid(3)
    assert value(a, "invalid_inputs") == 3 and value(b, "invalid_inputs") == 0


def test_observe_pass_counts_result_duration_and_writes() -> None:
    m = Metrics()
    m.observe_pass("full", "ok", 0.2, {"create": 2, "update": 1, "delete": 0})
    m.observe_pass("incremental", "fenced", 0.01, {})
    assert value(m, "reconcile_runs_total", result="ok") == 1
    assert value(m, "reconcile_runs_total", result="fenced") == 1
    assert value(m, "reconcile_duration_seconds_count", mode="full") == 1
    assert value(m, "reconcile_duration_seconds_sum", mode="full") == pytest.approx(0.2)
    assert value(m, "writes_total", op="create") == 2 and value(m, "writes_total", op="update") == 1
    with pytest.raises(ValueError):
        m.observe_pass("partial", "ok", 0.1)
    with pytest.raises(ValueError):
        m.observe_pass("full", "ok", 0.1, {"upsert": 1})


def test_leader_changes_count_new_terms_not_repeats() -> None:
    m = Metrics()
    m.set_leader(False, 5)     # first leader seen at start: not a change
    m.set_leader(False, 5)
    assert value(m, "leader_changes_total") == 0 and value(m, "term") == 5
    m.set_leader(True, 9)      # we took over
    assert value(m, "leader_changes_total") == 1 and value(m, "term") == 9
    m.set_leader(False, None)  # lost it, no new leader known yet
    assert value(m, "leader_changes_total") == 1
    m.set_leader(False, 12)
    assert value(m, "leader_changes_total") == 2 and value(m, "term") == 12


def test_is_leader_is_computed_one_way_at_each_scrape() -> None:
    m = Metrics()
    assert value(m, "is_leader") == 0
    leading = [True]
    m.follow_leading(lambda: leading[0])
    assert value(m, "is_leader") == 1
    m.set_leader(False, 4)     # the term bookkeeping does not write is_leader
    assert value(m, "is_leader") == 1
    leading[0] = False
    assert value(m, "is_leader") == 0


def test_winning_the_first_election_is_a_change() -> None:
    m = Metrics()
    m.set_leader(True, 3)
    assert value(m, "leader_changes_total") == 1


def test_states_missing_from_a_later_count_drop_to_zero() -> None:
    m = Metrics()
    m.set_states({"protected": 4, "degraded": 1})
    m.set_states({"protected": 5})
    assert value(m, "clusters", state="protected") == 5
    assert value(m, "clusters", state="degraded") == 0


def test_etcd_errors_by_kind_and_contact_time() -> None:
    m = Metrics()
    m.etcd_error("timeout")
    m.etcd_error(etcd_errors.InvalidTokenError("x"))
    m.etcd_error(ValueError("not etcd"))
    assert value(m, "etcd_errors_total", kind="timeout") == 1
    assert value(m, "etcd_errors_total", kind="auth") == 1
    assert value(m, "etcd_errors_total", kind="other") == 1
    m.etcd_contact(1_700_000_000.5)
    assert value(m, "last_etcd_contact_timestamp_seconds") == 1_700_000_000.5


def test_error_kind_follows_the_etcd_error_hierarchy() -> None:
    assert error_kind(etcd_errors.EtcdUnavailableError("x")) == "unavailable"
    assert error_kind(etcd_errors.PermissionDeniedError("x")) == "auth"
    assert error_kind(etcd_errors.EtcdError("x")) == "other"


def test_simple_gauges() -> None:
    m = Metrics()
    m.set_paused(True)
    m.set_lease_ttl(7.5)
    m.fenced_write()
    assert value(m, "is_paused") == 1 and value(m, "lease_ttl_seconds") == 7.5
    assert value(m, "fenced_writes_total") == 1


def test_error_kinds_have_one_definition() -> None:
    """EtcdError.kind is the metric label: no second table that can disagree (it did: auth_token,
    permission and closed in the errors against auth, auth and other in the metrics)."""
    import inspect

    from worker.etcd.errors import ETCD_ERROR_KINDS
    classes = [c for _, c in inspect.getmembers(etcd_errors, inspect.isclass) if issubclass(c, etcd_errors.EtcdError)]
    assert len(classes) >= 10
    for cls in classes:
        err = cls("x")
        assert err.kind in ETCD_ERROR_KINDS, cls
        assert error_kind(err) == err.kind, cls
