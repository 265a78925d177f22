"""The ``protection-worker`` command line: one sub-command per operator task.

Exit status: 0 success, 1 the operation failed (etcd unreachable, drill or audit found a fault),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

# gRPC's C core logs every failed TLS handshake to stderr at INFO ("I1125 ... Handshake failed"),
# several per second while dialling: a TLS mistake would bury the one line that explains it, and
# the daemon's JSON log would get raw lines. Errors still show; GRPC_VERBOSITY set by the operator wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from worker import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: sub-command name -> (help, function that adds its arguments and returns its handler)
Command = Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int]]
_COMMANDS: dict[str, tuple[str, Command]] = {}


def command(name: str, help_text: str) -> Callable[[Command], Command]:
    """Register a sub-command; modules under ``worker`` add theirs with this decorator."""

    def register(setup: Command) -> Command:
        _COMMANDS[name] = (help_text, setup)
        return setup

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protection-worker",
        description="Leader-elected worker on etcd that keeps every cluster's disaster-recovery "
                    "protection state correct.",
    )
    parser.add_argument("--version", action="version", version=f"protection-worker {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, setup) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=setup(sub))
    return parser


def _load_commands() -> None:
    """Import the modules that register sub-commands (kept lazy so ``--help`` stays fast)."""
    import importlib

    for module in ("worker.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: Sequence[str] | None = None) -> int:
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE if argv else EXIT_OK
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
