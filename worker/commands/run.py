"""``protection-worker run``: the daemon."""

from __future__ import annotations

import argparse
from typing import Callable

from worker import config
from worker.cli import EXIT_USAGE, command
from worker.commands.common import fail, load_config_or_exit
from worker.errors import ConfigError


@command("run", "the daemon: campaign, lead or observe, until SIGTERM/SIGINT")
def setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser, session=True, daemon=True)

    def handler(args: argparse.Namespace) -> int:
        cfg = load_config_or_exit(args)
        try:  # a missing or unreadable credential is a config error at start (exit 2), not a retry loop
            config.read_password(cfg.etcd)
        except ConfigError as err:
            return fail(f"config error: {err}", EXIT_USAGE)
        from worker.daemon import logs, runner
        logs.configure_logging(cfg.log.level, cfg.log.format, cfg.instance_id)
        return runner.run(cfg, args)

    return handler
