"""The ``protection-worker`` command line: one sub-command per operator task.

Exit status: 0 success, 1 the operation failed (etcd unreachable, drill or audit found a fault),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

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


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """Run one sub-command. A bare command prints the usage and exits 2; an error the handler did
    not report itself is still one line (``ConfigError`` exit 2, any other ``WorkerError`` or an
    OS error such as a port in use exit 1), never a traceback."""
    _load_commands()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:   # named by the sub-command they were given to, whose --help lists what it takes
        subparsers = parser._subparsers
        choices: Any = subparsers._group_actions[0].choices if subparsers is not None else None
        sub = choices.get(args.command) if args.command and choices else None
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from worker.errors import ConfigError, WorkerError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        return fail(f"config error: {exc}", EXIT_USAGE)
    except WorkerError as exc:
        return fail(f"{args.command}: {_one_line(exc)}", EXIT_FAILED)
    except OSError as exc:
        return fail(f"{args.command}: {type(exc).__name__}: {_one_line(exc)}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - a bug is one line too, never a traceback
        return fail(f"{args.command}: internal error: {type(exc).__name__}: {_one_line(exc)[:300]}",
                    EXIT_FAILED)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def fail(message: str, code: int) -> int:
    """fail prints ``protection-worker: message`` on stderr (one line) and returns ``code``."""
    print(f"protection-worker: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
