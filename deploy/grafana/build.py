"""Generates ``deploy/grafana/protection-worker.json``, the protection-worker dashboard.

Built with grafana-foundation-sdk for Grafana 11.6 (the ``dashboard`` extra pins the build:
pip's "latest" of that package is an older Grafana line because of version epochs):

    .venv/bin/pip install -e '.[dashboard]'
    .venv/bin/python deploy/grafana/build.py            # rewrites protection-worker.json
    .venv/bin/python deploy/grafana/build.py --check    # exit 1 if the checked-in JSON is not what this builds

Every query uses the metric names of ``shared/spec/interfaces.md`` (prefix ``protection_worker_``);
``tests/system/test_dashboard.py`` runs each one against a real Prometheus that scraped three real
instances through a failover and a pause, and fails on an empty answer. Panels that describe the
deployment as a whole (clusters by state, invalid inputs) read the instance that leads now
(``is_leader == 1``): a former leader keeps the gauges of its last term.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as md
from grafana_foundation_sdk.models.common import BigValueColorMode

OUT = Path(__file__).with_name("protection-worker.json")
UID = "protection-worker"
DS = md.DataSourceRef(type_val="prometheus", uid="${datasource}")
P = "protection_worker_"
#: the instance that leads now, as a right-hand side of ``* on(job, instance) group_left()``
LEADER = f"({P}is_leader == 1)"


def q(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        target = target.legend_format(legend)
    return target.instant() if instant else target.range()


def thresholds(*steps: tuple[float | None, str]) -> gd.ThresholdsConfig:
    return gd.ThresholdsConfig().mode(md.ThresholdsMode.ABSOLUTE).steps(
        [md.Threshold(value=v, color=c) for v, c in steps])


def mapping(**texts: tuple[str, str]) -> list[md.ValueMapping]:
    return [md.ValueMap(options={value: md.ValueMappingResult(text=text, color=color, index=i)
                                 for i, (value, (text, color)) in enumerate(texts.items())})]


class Grid:
    """Places panels left to right in Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def place(self, panel, w: int, h: int):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = panel.grid_pos(md.GridPos(x=self.x, y=self.y, w=w, h=h))
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def panels() -> list:
    grid = Grid()
    out = []

    def add(panel, w: int = 12, h: int = 8, desc: str = "") -> None:
        panel = panel.datasource(DS).id(len(out) + 1)
        if desc:
            panel = panel.description(desc)
        out.append(grid.place(panel, w, h))

    add(statetimeline.Panel().title("Who leads, per instance")
        .with_target(q(f"max by (instance) ({P}is_leader)", "{{instance}} leads"))
        .with_target(q(f"max by (instance) ({P}is_elected)", "{{instance}} elected", "B"))
        .mappings(mapping(**{"0": ("no", "transparent"), "1": ("yes", "green")}))
        .show_value("never").merge_values(True),
        w=16, desc="leads: holds the reconcile Mutex with its lease certainly alive (/leader 200). "
                   "elected: holds the election, Mutex or not: elected without leading for long is a stalled "
                   "term (alert ProtectionWorkerLeaderStalled). Leader changes are the dashboard's annotations.")
    add(stat.Panel().title("Term (create revision of the leader's election key)")
        .with_target(q(f"max({P}term)", "term"))
        .color_mode(BigValueColorMode.NONE).decimals(0), w=8)
    add(timeseries.Panel().title("Reconcile pass duration p50 / p99 by mode").unit("s")
        .with_target(q(f"histogram_quantile(0.5, sum by (mode, le) (rate({P}reconcile_duration_seconds_bucket"
                       f"[$__rate_interval])))", "p50 {{mode}}"))
        .with_target(q(f"histogram_quantile(0.99, sum by (mode, le) (rate({P}reconcile_duration_seconds_bucket"
                       f"[$__rate_interval])))", "p99 {{mode}}", "B")))
    add(timeseries.Panel().title("Passes by result").unit("short")
        .with_target(q(f"sum by (result) (increase({P}reconcile_runs_total[$__rate_interval]))", "{{result}}")),
        desc="ok: completed; error: an etcd error, retried; fenced: the fence failed (the term ended); "
             "stopped: ended on purpose (SIGTERM, a switchover, the lease guard, the pause key).")
    add(timeseries.Panel().title("Protection writes by op").unit("ops")
        .with_target(q(f"sum by (op) (rate({P}writes_total[$__rate_interval]))", "{{op}}")))
    add(timeseries.Panel().title("Fenced writes (refused: the fence no longer held)").unit("short")
        .with_target(q(f"sum by (instance) (increase({P}fenced_writes_total[$__rate_interval]))", "{{instance}}")))
    add(timeseries.Panel().title("Clusters by protection state (as the leader counts them)").unit("short")
        .with_target(q(f"max by (state) ({P}clusters * on(job, instance) group_left() {LEADER})", "{{state}}")))
    add(stat.Panel().title("Invalid inputs (reported, records left untouched)")
        .with_target(q(f"max({P}invalid_inputs * on(job, instance) group_left() {LEADER})", "invalid"))
        .thresholds(thresholds((None, "green"), (1, "orange"))), w=6,
        desc="`protection-worker status` lists each with its reason.")
    add(stat.Panel().title("Paused (maintenance mode)")
        .with_target(q(f"max({P}is_paused)", "paused"))
        .mappings(mapping(**{"0": ("no", "green"), "1": ("paused", "orange")})), w=6,
        desc="The leader keeps leading and writes nothing until `protection-worker resume`.")
    add(timeseries.Panel().title("Remaining session lease TTL, per instance").unit("s").min(0)
        .with_target(q(f"{P}lease_ttl_seconds", "{{instance}}")))
    add(timeseries.Panel().title("etcd errors by kind").unit("short")
        .with_target(q(f"sum by (kind) (increase({P}etcd_errors_total[$__rate_interval]))", "{{kind}}")))
    add(timeseries.Panel().title("Age of the last etcd contact, per instance").unit("s").min(0)
        .with_target(q(f"time() - {P}last_etcd_contact_timestamp_seconds", "{{instance}}"))
        .thresholds(thresholds((None, "green"), (30, "red"))))
    add(table.Panel().title("etcd server version (known_bad: a release with a known data-loss or consistency bug)")
        .with_target(q(f"max by (instance, version, known_bad) ({P}etcd_server_info)", ref="A", instant=True)
                     .format("table"))
        .override_by_name("known_bad", [
            md.DynamicConfigValue(id_val="mappings", value=mapping(**{"true": ("KNOWN BAD: upgrade etcd", "red"),
                                                                    "false": ("no", "green")})),
            md.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})])
        .override_by_name("Value", [md.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .with_transformation(md.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True}, "indexByName": {"instance": 0, "version": 1, "known_bad": 2}})),
        desc="known_bad true: etcd 3.5.0-3.5.2 (data inconsistency after a crash, fixed in 3.5.3): upgrade etcd.")
    add(stat.Panel().title("Time since the elected instance's last completed pass").unit("s")
        .with_target(q(f"time() - max(max by (job, instance) ({P}last_pass_timestamp_seconds) "
                       f"* on(job, instance) group_left() ({P}is_elected == 1))", "since the last pass"))
        .thresholds(thresholds((None, "green"), (90, "red"))), w=12,
        desc="A healthy leader completes a full pass every [reconcile] interval (default 30 s). A huge value: "
             "the elected instance has completed no pass since it started. Alert: ProtectionWorkerLeaderStalled.")
    return out


def build() -> dict:
    board = (gd.Dashboard("protection-worker").uid(UID).tags(["protection-worker", "etcd"])
             .description("Leader-elected protection-worker on etcd: leadership, passes, writes, states, "
                          "leases, etcd. Generated by deploy/grafana/build.py (grafana-foundation-sdk, Grafana 11.6).")
             .time("now-1h", "now").refresh("30s").editable()
             .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
             .annotation(gd.AnnotationQuery().name("Leader changes").datasource(DS).enable(True)
                         .icon_color("orange")
                         .expr(f"max({P}term) > max({P}term offset $__interval)")))
    for panel in panels():
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT} is not what build.py generates: run deploy/grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
