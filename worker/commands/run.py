"""``protection-worker run``: the daemon."""

from __future__ import annotations

import argparse
from typing import Callable

from worker import config
from worker.cli import command
from worker.commands.common import load_config_or_exit


@command("run", "the daemon: campaign, lead or observe, until SIGTERM/SIGINT")
def setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser)

    def handler(args: argparse.Namespace) -> int:
        cfg = load_config_or_exit(args)
        from worker.daemon import logs, runner
        logs.configure_logging(cfg.log.level, cfg.log.format, cfg.instance_id)
        return runner.run(cfg, args)

    return handler
