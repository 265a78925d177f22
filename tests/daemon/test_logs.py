"""worker.daemon.logs: the log contract (fields, term from any thread, redaction, stdlib routing, levels)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from typing import Iterator

import pytest
import structlog

from worker.daemon import logs

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure_logging("info", "json", "host-1", stream=stream)
    yield stream
    logs.clear_term()
    structlog.reset_defaults()
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, logs._StructlogHandler)]:
        root.removeHandler(h)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_the_contract_fields(out: io.StringIO) -> None:
    log = logs.get_logger("t")
    log.info("started", clusters=3)
    log.warning("etcd slow")
    got = lines(out)
    assert [g["event"] for g in got] == ["started", "etcd slow"]
    assert [g["level"] for g in got] == ["info", "warning"]
    for g in got:
        assert ISO_UTC.match(g["timestamp"]), g["timestamp"]
        assert g["instance_id"] == "host-1"
        assert "term" not in g  # not leading
    assert got[0]["clusters"] == 3


def test_term_set_in_one_thread_appears_in_lines_from_others(out: io.StringIO) -> None:
    logs.set_term(42)
    t = threading.Thread(target=lambda: logs.get_logger().info("from thread"))
    t.start()
    t.join()
    logs.get_logger().info("from main")
    logs.clear_term()
    logs.get_logger().info("follower again")
    got = lines(out)
    assert [g.get("term") for g in got] == [42, 42, None]


def test_secrets_are_redacted_even_nested(out: io.StringIO) -> None:
    logs.get_logger().info("connect", password="hunter2", auth_token="abc", config={"etcd": {"Password": "p2"}},
                           username="bob")
    text = out.getvalue()
    assert "hunter2" not in text and "abc" not in text and "p2" not in text
    got = lines(out)[0]
    assert got["password"] == got["auth_token"] == logs.REDACTED
    assert got["config"]["etcd"]["Password"] == logs.REDACTED
    assert got["username"] == "bob"


def test_stdlib_logging_goes_to_the_same_output_at_warning_and_above(out: io.StringIO) -> None:
    lib = logging.getLogger("grpc._channel")
    lib.info("noise")
    lib.warning("channel %s failed", "a:1")
    got = lines(out)
    assert len(got) == 1
    assert got[0]["event"] == "channel a:1 failed"
    assert got[0]["level"] == "warning"
    assert got[0]["logger"] == "grpc._channel"
    assert got[0]["instance_id"] == "host-1"
    assert ISO_UTC.match(got[0]["timestamp"])


def test_level_filters_and_can_be_changed_at_runtime(out: io.StringIO) -> None:
    log = logs.get_logger()  # obtained before the change: must still follow it
    log.debug("hidden")
    logs.set_level("debug")
    log.debug("shown")
    logs.set_level("error")
    log.warning("hidden too")
    log.error("bad")
    assert [g["event"] for g in lines(out)] == ["shown", "bad"]


def test_exceptions_are_rendered_into_the_json_line(out: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.get_logger().exception("failed")
    got = lines(out)
    assert len(got) == 1 and "RuntimeError: boom" in got[0]["exception"]


def test_console_format_is_not_json_and_still_redacts() -> None:
    stream = io.StringIO()
    try:
        logs.configure_logging("info", "console", "host-2", stream=stream)
        logs.get_logger().info("hello", token="sekret")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "hello" in text and "host-2" in text and "sekret" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_format_defaults_to_console_on_a_tty_and_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    try:
        logs.configure_logging("info", None, "x", stream=tty)
        logs.get_logger().info("a")
        logs.configure_logging("info", None, "x", stream=pipe)
        logs.get_logger().info("a")
    finally:
        structlog.reset_defaults()
    assert not tty.getvalue().startswith("{")
    assert json.loads(pipe.getvalue())["event"] == "a"


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError):
        logs.configure_logging("verbose", "json", "x", stream=io.StringIO())
    with pytest.raises(ValueError):
        logs.configure_logging("info", "xml", "x", stream=io.StringIO())


def test_a_logger_made_before_configuration_follows_it() -> None:
    early = logs.get_logger("worker.early")  # like a module-level logger created at import
    stream = io.StringIO()
    try:
        logs.configure_logging("info", "json", "host-3", stream=stream)
        early.info("late")
    finally:
        structlog.reset_defaults()
    got = json.loads(stream.getvalue())
    assert got["logger"] == "worker.early" and got["instance_id"] == "host-3"
