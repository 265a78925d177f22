"""Operator commands for live deployments: ``drill``, ``audit``, ``pause``/``resume``, ``switchover``."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from typing import Any, Callable

from worker import config
from worker.cli import EXIT_FAILED, EXIT_OK, command
from worker.etcd.client import EtcdClient
from worker.commands.common import UsageError, fail, run_with_client
from worker.errors import WorkerError
from worker.keys import Keys


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, sort_keys=True))
    else:
        human()


@command("drill", "failover drill against running instances: fault, measure, audit")
def drill_setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser)
    parser.add_argument("--mode", choices=("resign", "kill", "stop"), required=True)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    parser.add_argument("--revoke", action="store_true",
                        help="kill/stop by revoking the leader's lease even when it runs on this host")

    def handler(args: argparse.Namespace) -> int:
        return run_with_client(args, lambda _cfg, client, keys: _drill(args, client, keys))

    return handler


def _drill(args: argparse.Namespace, client: EtcdClient, keys: Keys) -> int:
    from worker.ops.drill import run_drill
    from worker.ops.measure import format_ms
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        result = run_drill(client, keys, args.mode, timeout=args.timeout, use_signals=not args.revoke, say=say)
    except (WorkerError, TimeoutError) as err:
        return fail(f"drill: {err}", EXIT_FAILED)

    def human() -> None:
        others = ", ".join(f"{kind} {n}" for kind, n in result["audit_violations"].items()
                           if n and kind != "stale_term")
        src = result["sources"]
        print(f"{result['mode']}: {result['old_leader']} -> {result['new_leader']}: handover "
              f"{format_ms(result['handover_ms'])} ({src.get('handover_ms', '-')}), leading "
              f"{format_ms(result['leaderless_ms'])} ({src.get('leaderless_ms', '-')}), first reconcile "
              f"{format_ms(result['first_reconcile_ms'])} ({src.get('first_reconcile_ms', '-')}), first write "
              + (f"{format_ms(result['first_write_ms'])} (etcd)" if result["first_write_ms"] is not None
                 else "none (the new term wrote nothing)")
              + f" (from the fault); stale writes: {result['stale_writes']}"
              + (f"; other audit findings: {others}" if others else "")
              + f"; {'OK' if result['ok'] else 'FAILED'}")
        for v in result.get("violations", []):
            print(f"  {v['kind']}: {v['op']} {v['key']} at revision {v['revision']}")

    _emit(args, result, human)
    if result["problem"]:
        return fail(f"drill: {result['problem']}", EXIT_FAILED)
    return EXIT_OK if result["ok"] else EXIT_FAILED



@command("audit", "check etcd's history: every protection write was made by the leader of its revision")
def audit_setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser)
    parser.add_argument("--since-rev", type=int, default=None, metavar="N",
                        help="first revision to check (default: the oldest etcd still retains)")
    parser.add_argument("--to-rev", type=int, default=None, metavar="N",
                        help="last revision to check (default: the current one)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handler(args: argparse.Namespace) -> int:
        def check() -> None:
            for flag, value in (("--since-rev", args.since_rev), ("--to-rev", args.to_rev)):
                if value is not None and value < 1:
                    raise UsageError(f"audit: {flag} must be a revision >= 1, got {value}")

        return run_with_client(args, lambda _cfg, client, keys: _audit(args, client, keys), check=check)

    return handler


def _audit(args: argparse.Namespace, client: EtcdClient, keys: Keys) -> int:
    from worker.ops.audit import AuditCompactedError, audit, oldest_auditable_revision
    try:
        since = args.since_rev if args.since_rev is not None else oldest_auditable_revision(client, keys)
        report = audit(client, keys, since, args.to_rev)
    except AuditCompactedError as err:
        return fail(f"audit: {err} (etcd no longer retains that history)", EXIT_FAILED)

    def human() -> None:
        print(f"revisions {report.from_revision}..{report.to_revision}: {report.checked} protection writes "
              f"(puts and deletes) checked, {len(report.violations)} violations")
        for v in report.violations:
            print(f"  {v.describe()}")

    _emit(args, report.to_json(), human)
    return EXIT_FAILED if report.violations else EXIT_OK


def _by() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - no user name in a container is fine
        return socket.gethostname()


def _leader_text(client: EtcdClient, keys: Keys) -> str:
    """Who leads now, for the pause/resume message (the pause binds any leader, present or next)."""
    from worker.concurrency import leader
    now = leader(client, keys.election)
    return "the leader" if now is None else f"the leader ({now.instance_id}, term {now.term})"


def _pause_command(name: str, help_text: str, paused: bool, said: str) -> None:
    """Register ``pause`` or ``resume``: set or delete the pause key, and say what the leader does now."""

    @command(name, help_text)
    def setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
        config.add_arguments(parser)

        def handler(args: argparse.Namespace) -> int:
            from worker.control import set_paused

            def body(_cfg: Any, client: EtcdClient, keys: Keys) -> int:
                set_paused(client, keys, paused, _by())
                print(f"{name}d: {_leader_text(client, keys)} {said}")
                return EXIT_OK

            return run_with_client(args, body)

        return handler


_pause_command("pause", "maintenance mode: the leader keeps leading but writes nothing until resumed", True,
               "writes nothing until 'protection-worker resume'")
_pause_command("resume", "leave maintenance mode", False, "reconciles again")


@command("switchover", "planned handover: to the next in line, or to a named candidate")
def switchover_setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser)
    parser.add_argument("--to", metavar="INSTANCE_ID", help="the candidate that should lead next")
    parser.add_argument("--timeout", type=float, default=30.0)

    def handler(args: argparse.Namespace) -> int:
        return run_with_client(args, lambda _cfg, client, keys: _switchover(args, client, keys))

    return handler


def _switchover(args: argparse.Namespace, client: EtcdClient, keys: Keys) -> int:
    from worker.concurrency import leader
    from worker.control import clear_switchover, request_switchover
    from worker.daemon.candidate import find_candidate
    now = leader(client, keys.election)
    if now is None:
        return fail("switchover: no leader", EXIT_FAILED)
    old_id, term = now.instance_id, now.term
    if args.to is not None:
        if args.to == old_id:
            return fail(f"switchover: {args.to} already leads", 2)
        if find_candidate(client, keys, args.to) is None:
            return fail(f"switchover: {args.to} is not a candidate (see 'protection-worker status')", 2)
    request_switchover(client, keys, to=args.to, from_term=term, expires_in=args.timeout)
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            now = leader(client, keys.election)
            if now is not None and now.term != term and (args.to is None or now.instance_id == args.to):
                print(f"switchover: {old_id} -> {now.instance_id} (term {now.term})")
                return EXIT_OK
            time.sleep(0.05)
    finally:
        clear_switchover(client, keys)
    return fail(f"switchover: not done within {args.timeout:g} s", EXIT_FAILED)
