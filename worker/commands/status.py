"""``status [--json]``: leader, candidates in line, lock holder, counts by state, invalid inputs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli import EXIT_OK, command
from worker.commands.common import run_with_client
from worker.etcd.client import EtcdClient
from worker.config import Config, add_arguments
from worker.keys import Keys
from worker.protection.status import format_status, read_status


@command("status", "leader, candidates in line, lock holder, counts by state, invalid inputs")
def status_command(parser: argparse.ArgumentParser) -> Any:
    parser.add_argument("--json", action="store_true", help="exactly one JSON object on stdout")
    add_arguments(parser)
    return _status


def _status(args: argparse.Namespace) -> int:
    def body(cfg: Config, client: EtcdClient, keys: Keys) -> int:
        status = read_status(client, keys)
        print(json.dumps(status) if args.json else format_status(status))
        return EXIT_OK

    return run_with_client(args, body)
