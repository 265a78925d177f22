"""``reconcile --once [--dry-run]``: one full pass under the election and the Mutex, then resign.

A real run campaigns (``Session``, ``Election(session, keys.election)``), takes the reconcile
Mutex, builds the ``Fence`` from the election key's create revision and ``mutex.is_owner()``,
runs one full pass, prints a summary, then unlocks, resigns and closes the session (revoking the
lease): nothing of it is left in etcd when it exits. In maintenance mode (``pause``) it only plans,
like the daemon's leader. ``--dry-run`` neither campaigns nor writes:
it reads at one revision and prints one line per planned change.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from worker.cli import EXIT_FAILED, EXIT_OK, command
from worker.commands.common import fail, run_with_client
from worker.etcd.client import EtcdClient
from worker.config import Config, add_arguments
from worker.identity import Identity
from worker.keys import Keys
from worker.protection.reader import DEFAULT_PAGE_SIZE
from worker.protection.reconcile import PassResult, full_pass
from worker.protection.writer import FenceLostError, PausedError, leader_fence


@command("reconcile", "one full reconcile pass under the election and the Mutex (--once), or a dry run")
def reconcile_command(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument("--once", action="store_true", required=True,
                        help="run one full pass and exit (the only mode; the daemon is `run`)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned changes; campaign and write nothing")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait to lead and to take the Mutex (default 30)")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE, help=argparse.SUPPRESS)
    add_arguments(parser, session=True)
    return _reconcile


def _result_json(result: PassResult) -> str:
    data = asdict(result)
    data["invalid"] = [item._asdict() for item in result.invalid]
    return json.dumps(data)


def _print(result: PassResult, args: argparse.Namespace) -> None:
    if args.json:
        print(_result_json(result))
        return
    if args.dry_run:
        for line in result.changes:
            print(line)
    for item in result.invalid:
        print(f"invalid {item.key} @ {item.mod_revision}: {item.error}")
    print(result.summary())


def _reconcile(args: argparse.Namespace) -> int:
    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        if args.dry_run:
            _print(full_pass(client, keys, None, dry_run=True, page_size=args.page_size), args)
            return EXIT_OK
        from worker.concurrency import Election, Mutex, Session, WaitTimeoutError
        value = Identity.mine(cfg.instance_id).dump()
        session = Session(client, ttl=cfg.election.ttl)
        election = mutex = None
        try:
            election = Election(session, keys.election)
            try:
                election.campaign(value, timeout=args.wait)
            except WaitTimeoutError:
                election = None
                return fail(f"did not become leader within {args.wait:g} s (another instance leads)", EXIT_FAILED)
            mutex = Mutex(session, keys.lock)
            try:
                mutex.lock(timeout=args.wait)
            except WaitTimeoutError:
                mutex = None
                return fail(f"did not get the reconcile Mutex within {args.wait:g} s", EXIT_FAILED)
            fence = leader_fence(keys, term=election.rev, election_key=election.key, owner=mutex.is_owner(),
                                 lease=session.lease, instance_id=cfg.instance_id)
            if _paused(client, keys):   # maintenance mode binds every leader, this one too: plan only
                print("maintenance mode (paused): nothing written; planned changes:", file=sys.stderr)
                args.dry_run = True
                _print(full_pass(client, keys, fence, dry_run=True, page_size=args.page_size), args)
                return EXIT_OK
            try:
                result = full_pass(client, keys, fence, page_size=args.page_size)
            except PausedError as exc:
                return fail(f"paused while the pass ran (maintenance mode), pass stopped: {exc}", EXIT_FAILED)
            except FenceLostError as exc:
                return fail(f"fence lost, pass stopped: {exc}", EXIT_FAILED)
            _print(result, args)
            return EXIT_OK
        finally:
            _release(mutex, election, session)

    return run_with_client(args, body)


def _paused(client: EtcdClient, keys: Keys) -> bool:
    try:
        from worker.control import read_controls
    except ImportError:
        return False
    return read_controls(client, keys).paused


def _release(mutex: Any, election: Any, session: Any) -> None:
    """Unlock, resign, revoke: best effort each (the lease revoke removes whatever is left)."""
    from worker.etcd.errors import EtcdError
    for step in ((mutex.unlock if mutex is not None else None), (election.resign if election is not None else None)):
        if step is None:
            continue
        try:
            step()
        except (EtcdError, Exception):  # noqa: BLE001 - the revoke below cleans up
            pass
    session.close(timeout=2.0)
