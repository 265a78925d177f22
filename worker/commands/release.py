"""``protection-worker release``: revoke the lease a dead instance held (systemd's ``ExecStopPost=``).

Reads the lease file in ``$RUNTIME_DIRECTORY`` (or ``--runtime-directory``) and revokes that
lease when the process that recorded it is dead (``worker.ops.release``). Exit 0 when released
and when there is nothing to release (no record, the lease already gone, the recording process
still running — then it refuses and says so, unless ``--force``); 1 when etcd could not be reached
within the configured timeouts (the lease then expires by its TTL); 2 on a config error.
systemd's ``$SERVICE_RESULT``, ``$EXIT_CODE`` and ``$EXIT_STATUS`` are logged with the outcome.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

from worker import config
from worker.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, command
from worker.commands.common import fail, setup_logging
from worker.errors import ConfigError
from worker.etcd.errors import EtcdError

SYSTEMD_VARIABLES = ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS")


@command("release", "revoke the lease of this unit's dead instance at once (run as systemd ExecStopPost=)")
def release_setup(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    config.add_arguments(parser)
    parser.add_argument("--runtime-directory", metavar="DIR",
                        help="where the instance recorded its lease (default: $RUNTIME_DIRECTORY)")
    parser.add_argument("--force", action="store_true",
                        help="revoke even while the recording process runs (it then hands over; "
                             "the fence keeps it from writing)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return _release


def _connect(cfg: config.Config) -> Any:
    """``config.connect`` without waiting for a ready channel: the revoke itself connects (saves
    up to 200 ms of the failover; still bounded by the request timeout)."""
    from worker.etcd import connect
    e = cfg.etcd
    return connect(e.endpoints, ca_cert=e.ca_cert, cert=e.cert, key=e.key, username=e.username,
                   password=config.read_password(e), dial_timeout=e.dial_timeout,
                   request_timeout=e.request_timeout, dial=False)


def _use_staged_credentials(args: argparse.Namespace, directory: Path) -> None:
    """systemd gives ``ExecStopPost=`` no ``LoadCredential=`` files: use the copy the daemon staged
    in the runtime directory (``lease_file.stage_credentials``), both as ``$CREDENTIALS_DIRECTORY``
    and for config paths that name the unit's credentials directory (``key = "/run/credentials/
    UNIT/etcd-key"``), through a copy of the config in the runtime directory."""
    from worker.daemon import lease_file
    staged = directory / lease_file.STAGED
    current = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not staged.is_dir() or (current and os.path.isdir(current)):
        return
    unit = lease_file.own_unit()
    originals = {p for p in (current, f"/run/credentials/{unit}" if unit else "") if p}
    os.environ["CREDENTIALS_DIRECTORY"] = str(staged)
    config_path = getattr(args, "config", None)
    if not config_path or not originals:
        return
    try:
        text = Path(config_path).read_text(encoding="utf-8")
        rewritten = text
        for original in originals:
            rewritten = rewritten.replace(original.rstrip("/") + "/", str(staged) + "/")
        if rewritten != text:
            copy = directory / ".release-config.toml"
            copy.write_text(rewritten, encoding="utf-8")
            copy.chmod(0o600)
            args.config = str(copy)
    except OSError:
        return  # config.load reports the config itself


def _release(args: argparse.Namespace) -> int:
    from worker.daemon import lease_file
    from worker.ops.release import release

    directory = Path(args.runtime_directory) if args.runtime_directory else lease_file.runtime_dir()
    if directory is None:
        return fail("release: no $RUNTIME_DIRECTORY and no --runtime-directory: nothing to release", EXIT_OK)
    _use_staged_credentials(args, directory)
    try:
        cfg = config.load(args)
    except ConfigError as exc:
        return fail(f"config error: {exc}", EXIT_USAGE)
    setup_logging(cfg)
    try:
        result = release(directory / lease_file.NAME, lambda: _connect(cfg), force=args.force,
                         timeout=cfg.etcd.request_timeout)
    except ConfigError as exc:
        return fail(f"config error: {exc}", EXIT_USAGE)
    except EtcdError as exc:
        return fail(f"release: etcd error ({type(exc).__name__}): {exc}; the lease expires by its TTL",
                    EXIT_FAILED)
    systemd = {name.lower(): os.environ[name] for name in SYSTEMD_VARIABLES if name in os.environ}
    if args.json:
        print(json.dumps({**result.to_json(), **systemd}, sort_keys=True))
    else:
        context = " ".join(f"{k}={v}" for k, v in systemd.items())
        print(f"protection-worker release: {result.detail}" + (f" [{context}]" if context else ""))
    return EXIT_OK
