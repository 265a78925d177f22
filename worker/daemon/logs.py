"""Logging, configured in one place: one JSON object a line on stderr (or a console rendering).

Why a pipeline of small processors: each field of the log contract (``event``, ``level``,
``timestamp`` in UTC ISO-8601, ``instance_id``, ``term`` while leading) is added by one function
that tests can check alone, and the redaction of secrets runs last before rendering, so nothing
added earlier can leak a password. The current term lives in a lock-protected module-level
holder rather than a contextvar: the daemon runs several threads (keepalive, watch, HTTP) and a
contextvar set in the main thread would be invisible to them. Standard-library records (grpc,
pyetcd) pass through the same processors at warning and above, and share structlog's per-stream
lock so lines from both never interleave.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REDACTED = "[redacted]"
#: key fragments that mark a value as secret wherever it appears (nested dicts included)
_SECRET_MARKS = ("password", "passwd", "token", "secret", "authorization", "credential")


class _TermHolder:
    """The term this instance leads under, visible to every thread (None: not leading)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._term: int | None = None

    def set(self, term: int | None) -> None:
        with self._lock:
            self._term = term

    def get(self) -> int | None:
        with self._lock:
            return self._term


_term = _TermHolder()
_state: dict[str, Any] = {}


def set_term(term: int) -> None:
    """Stamp every following line, from any thread, with ``term`` (call on becoming leader)."""
    _term.set(int(term))


def clear_term() -> None:
    """Stop stamping ``term`` (call on losing or giving up leadership)."""
    _term.set(None)


def add_instance_id(instance_id: str) -> Processor:
    def processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("instance_id", instance_id)
        return event_dict

    return processor


def add_term(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    term = _term.get()
    if term is not None:
        event_dict.setdefault("term", term)
    return event_dict


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and any(mark in key.lower() for mark in _SECRET_MARKS)


def redact(value: Any) -> Any:
    """``value`` with every secret-looking key's value replaced, recursively (a copy; input untouched)."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return redact(event_dict)


def _name_logger(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    name = event_dict.pop("logger_name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _shared(instance_id: str) -> list[Processor]:
    """The processors both structlog and stdlib records go through, before rendering."""
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_instance_id(instance_id),
        add_term,
    ]


def _renderer(fmt: str) -> Processor:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(sort_keys=False, default=str)


class _StructlogHandler(logging.Handler):
    """Routes stdlib records through the same processors and writes via structlog's locked writer."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter, level: int) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self._out = structlog.WriteLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


def configure_logging(level: str = "info", fmt: str | None = None, instance_id: str = "",
                      stream: TextIO | None = None) -> None:
    """(Re)configure all logging. ``fmt`` None: console on a TTY, else JSON. Safe to call again (SIGHUP)."""
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    if level not in LEVELS or fmt not in ("json", "console"):
        raise ValueError(f"log level {level!r} / format {fmt!r}")
    _state.update(level=level, fmt=fmt, instance_id=instance_id, stream=stream)
    shared = _shared(instance_id)
    renderer = _renderer(fmt)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _name_logger, *shared,
                    structlog.processors.format_exc_info,
                    redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,  # SIGHUP may change the level: loggers must see it
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, structlog.processors.format_exc_info],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact_secrets, renderer],
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(handler)
    stdlib_level = max(logging.WARNING, LEVELS[level])
    root.addHandler(_StructlogHandler(out, formatter, stdlib_level))
    root.setLevel(stdlib_level)


def set_level(level: str) -> None:
    """Change the level only (SIGHUP), keeping format, instance id and stream."""
    configure_logging(level, _state.get("fmt"), _state.get("instance_id", ""), _state.get("stream"))


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger; ``name`` becomes the ``logger`` field."""
    # a lazy proxy (no .bind() here): a module-level logger must follow later (re)configuration.
    # structlog reserves the keyword ``logger``, hence ``logger_name``, renamed by ``_name_logger``.
    return structlog.get_logger(**({"logger_name": name} if name else {}), **initial)
