"""What the operator sub-commands share: config loading, logging to stderr, one-line errors.

``run_with_client`` loads the configuration (``ConfigError`` -> one line, exit 2), configures logs
on stderr (stdout is for the command's output, ``--json`` objects included), connects (etcd
unreachable -> one line naming the endpoint, exit 1; bounded by the dial timeout, so it never hangs),
runs the body and always closes the client.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from worker.cli import EXIT_FAILED, EXIT_USAGE, fail
from worker.config import Config, connect, load
from worker.errors import ConfigError, WorkerError
from worker.etcd.errors import EtcdError
from worker.keys import Keys


class UsageError(WorkerError):
    """Bad operator input (an id, a status): exit 2, nothing written."""


class _Stderr:
    """``sys.stderr`` looked up at each write: logs follow a redirected stderr (tests capture it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def setup_logging(cfg: Config) -> None:
    try:
        from worker.daemon.logs import configure_logging
    except ImportError:  # the daemon package is optional for the operator commands
        return
    configure_logging(cfg.log.level, cfg.log.format,
                      cfg.instance_id, stream=_Stderr())  # type: ignore[arg-type]


def run_with_client(args: argparse.Namespace, body: Callable[[Config, Any, Keys], int],
                    *, check: Callable[[], None] | None = None) -> int:
    try:
        cfg = load(args)
        if check is not None:
            check()
    except ConfigError as exc:
        return fail(f"config error: {exc}", EXIT_USAGE)
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    setup_logging(cfg)
    try:
        client = connect(cfg)
    except ConfigError as exc:
        return fail(f"config error: {exc}", EXIT_USAGE)
    except EtcdError as exc:
        return fail(f"etcd error: {exc}", EXIT_FAILED)
    try:
        return body(cfg, client, Keys(cfg.etcd.namespace))
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except EtcdError as exc:
        return fail(f"etcd error ({type(exc).__name__}): {exc}", EXIT_FAILED)
    finally:
        client.close()


def load_config_or_exit(args: argparse.Namespace) -> Config:
    """For commands that do not talk to etcd through ``run_with_client`` (``run``, ``etcd-role``)."""
    try:
        return load(args)
    except ConfigError as exc:
        raise SystemExit(fail(f"config error: {exc}", EXIT_USAGE)) from None
