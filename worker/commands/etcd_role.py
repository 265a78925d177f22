"""``protection-worker etcd-role``: the least-privilege etcd user and role, printed or applied."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable

from worker import config
from worker.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, command
from worker.commands.common import fail, load_config_or_exit
from worker.errors import ConfigError, WorkerError


@command("etcd-role", "print (or apply) the etcd user and role the worker needs: readwrite on its namespace only")
def setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser, logs=False)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--print", action="store_true", dest="print_", help="print the etcdctl commands")
    what.add_argument("--apply", action="store_true", help="apply them with admin credentials (idempotent)")
    parser.add_argument("--user", default="protection-worker", help="the worker's etcd user")
    parser.add_argument("--role", default="protection-worker", help="its role")
    parser.add_argument("--admin-user", default="root", help="with --apply: an etcd user allowed to manage auth")
    parser.add_argument("--admin-password-file", help="with --apply: that user's password (one line)")
    parser.add_argument("--password-file", help="with --apply: the password for a new worker user")

    def handler(args: argparse.Namespace) -> int:
        from worker.ops.etcd_role import RolePlan, apply, print_commands, release_notes
        cfg = load_config_or_exit(args)
        plan = RolePlan(cfg.etcd.namespace, args.user, args.role)
        for note in release_notes(plan):  # stderr: stdout stays the commands, runnable as they are
            print(f"# {note}", file=sys.stderr)
        if args.print_:
            flags = f"--endpoints={','.join(cfg.etcd.endpoints)}"
            for flag, value in (("--cacert", cfg.etcd.ca_cert), ("--cert", cfg.etcd.cert), ("--key", cfg.etcd.key)):
                if value:
                    flags += f" {flag}={shlex.quote(value)}"
            flags += f" --user={shlex.quote(args.admin_user)}"
            for line in print_commands(plan, flags):
                print(line)
            return EXIT_OK
        if not args.admin_password_file:
            return fail("etcd-role --apply: --admin-password-file is required", EXIT_USAGE)
        try:
            admin_password = _read(args.admin_password_file, "--admin-password-file")
            password = _read(args.password_file, "--password-file") if args.password_file else None
            from worker.etcd import connect
            e = cfg.etcd
            client = connect(e.endpoints, ca_cert=e.ca_cert, cert=e.cert, key=e.key, username=args.admin_user,
                             password=admin_password, dial_timeout=e.dial_timeout, request_timeout=e.request_timeout)
        except ConfigError as err:
            return fail(f"config error: {err}", EXIT_USAGE)
        except WorkerError as err:
            return fail(f"etcd error: {err}", EXIT_FAILED)
        try:
            apply(client, plan, password)
        except WorkerError as err:
            return fail(f"etcd-role: {err}", EXIT_FAILED)
        finally:
            client.close()
        return EXIT_OK

    return handler


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path!r}: {err.strerror}") from err
