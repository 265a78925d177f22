"""``protection-worker demo``: embedded etcd, three instances, a drill — no set-up."""

from __future__ import annotations

import argparse
from typing import Callable

from worker.cli import command


@command("demo", "start an embedded etcd, three instances and a sample inventory, run failover drills, "
                 "print what happened, clean up")
def setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--clusters", type=int, default=200, help="sample inventory size (default 200)")
    parser.add_argument("--ttl", type=int, default=3, help="election TTL of the demo instances (default 3 s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (etcd data, logs)")

    def handler(args: argparse.Namespace) -> int:
        from worker.demo.run import run_demo
        return run_demo(clusters=args.clusters, ttl=args.ttl, keep=args.keep)

    return handler
