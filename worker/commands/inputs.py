"""``clusters put|rm|ls`` and ``dr set|rm``: write and read the inputs, for operators and drills.

Every value written is validated first with the reconciler's own parser (bad id, bad status ->
exit 2, nothing written), so the CLI can never produce input the leader would reject.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli import EXIT_FAILED, EXIT_OK, command
from worker.commands.common import UsageError, fail, run_with_client
from worker.config import Config, add_arguments
from worker.etcd.client import EtcdClient
from worker.protection.inputs import REPLICATIONS, InputError, check_id, cluster_value, dr_value, parse_cluster
from worker.keys import Keys
from worker.protection.reader import read_all
from worker.protection.rules import stored_record


def _check_id(cluster_id: str) -> None:
    try:
        check_id(cluster_id)
    except InputError as exc:
        raise UsageError(f"invalid cluster {exc}") from None


@command("clusters", "write and list cluster inventory records (clusters/{id})")
def clusters_command(parser: argparse.ArgumentParser) -> Any:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = sub.add_parser("put", help="create or replace clusters/ID")
    put.add_argument("id")
    group = put.add_mutually_exclusive_group()
    group.add_argument("--allocated", dest="allocated", action="store_true", default=True,
                       help="the cluster is allocated (default)")
    group.add_argument("--reclaimed", dest="allocated", action="store_false", help="the cluster is reclaimed")
    put.add_argument("--dr-site", default=None, metavar="SITE", help="its DR site (default: none)")
    rm = sub.add_parser("rm", help="delete clusters/ID (its protection record is then deleted)")
    rm.add_argument("id")
    ls = sub.add_parser("ls", help="list clusters with their protection state")
    ls.add_argument("--json", action="store_true", help="one JSON object on stdout")
    for p in (put, rm, ls):
        add_arguments(p)
    return lambda args: {"put": _put, "rm": _rm, "ls": _ls}[args.action](args)


def _put(args: argparse.Namespace) -> int:
    value_box: list[str] = []

    def check() -> None:
        _check_id(args.id)
        if args.dr_site is not None and not args.dr_site:
            raise UsageError("--dr-site must not be empty (leave it out for no DR site)")
        try:
            value_box.append(cluster_value(args.allocated, args.dr_site))
        except InputError as exc:
            raise UsageError(str(exc)) from None

    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        resp = client.put(keys.cluster(args.id), value_box[0])
        print(f"{keys.cluster(args.id)} = {value_box[0]} (revision {resp.revision})")
        return EXIT_OK

    return run_with_client(args, body, check=check)


def _rm(args: argparse.Namespace) -> int:
    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        resp = client.delete(keys.cluster(args.id))
        if resp.deleted == 0:
            return fail(f"{keys.cluster(args.id)} does not exist", EXIT_FAILED)
        print(f"deleted {keys.cluster(args.id)} (revision {resp.revision})")
        return EXIT_OK

    return run_with_client(args, body, check=lambda: _check_id(args.id))


def _ls(args: argparse.Namespace) -> int:
    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        snapshot = read_all(client, keys)
        rows = []
        for obs in snapshot:
            if obs.cluster is None:
                continue
            try:
                spec = parse_cluster(obs.cluster.value)
                allocated, dr_site, error = spec.allocated, spec.dr_site, None
            except InputError as exc:
                allocated, dr_site, error = None, None, str(exc)
            rows.append({"id": obs.id, "allocated": allocated, "dr_site": dr_site,
                         "state": stored_record(obs.protection)[1], "cluster_revision": obs.cluster.mod_revision,
                         **({"error": error} if error else {})})
        if args.json:
            print(json.dumps({"revision": snapshot.revision, "clusters": rows}))
            return EXIT_OK
        print(f"{'ID':<32} {'ALLOCATED':<9} {'DR SITE':<16} STATE")
        for r in rows:
            alloc = "invalid" if r["allocated"] is None else ("yes" if r["allocated"] else "no")
            print(f"{r['id']:<32} {alloc:<9} {r['dr_site'] or '-':<16} {r['state']}"
                  + (f"  ({r['error']})" if "error" in r else ""))
        print(f"{len(rows)} clusters at revision {snapshot.revision}")
        return EXIT_OK

    return run_with_client(args, body)


@command("dr", "write DR-side replication status (dr/{id})")
def dr_command(parser: argparse.ArgumentParser) -> Any:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = sub.add_parser("set", help="set dr/ID to a replication status")
    set_.add_argument("id")
    set_.add_argument("status", metavar="STATUS", help=" | ".join(REPLICATIONS))
    rm = sub.add_parser("rm", help="delete dr/ID")
    rm.add_argument("id")
    for p in (set_, rm):
        add_arguments(p)
    return lambda args: {"set": _dr_set, "rm": _dr_rm}[args.action](args)


def _dr_set(args: argparse.Namespace) -> int:
    def check() -> None:
        _check_id(args.id)
        if args.status not in REPLICATIONS:
            raise UsageError(f"invalid DR status {args.status!r}: one of {', '.join(REPLICATIONS)}")

    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        value = dr_value(args.status)
        resp = client.put(keys.dr_key(args.id), value)
        print(f"{keys.dr_key(args.id)} = {value} (revision {resp.revision})")
        return EXIT_OK

    return run_with_client(args, body, check=check)


def _dr_rm(args: argparse.Namespace) -> int:
    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        resp = client.delete(keys.dr_key(args.id))
        if resp.deleted == 0:
            return fail(f"{keys.dr_key(args.id)} does not exist", EXIT_FAILED)
        print(f"deleted {keys.dr_key(args.id)} (revision {resp.revision})")
        return EXIT_OK

    return run_with_client(args, body, check=lambda: _check_id(args.id))
