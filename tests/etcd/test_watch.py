"""Watch against a real etcd: resumption after restarts and member loss, compaction, close()."""

from __future__ import annotations

import threading
import time

import pytest

from worker.etcd import CompactedError, Watch, connect
from worker.etcd import kv

from .conftest import create_retrying, wait_until


def _collect(watch: Watch, count: int, timeout: float) -> list[tuple[str, bytes, bytes]]:
    """The next ``count`` events (type, key, value), waiting at most ``timeout`` seconds in all."""
    seen: list[tuple[str, bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        response = watch.get(timeout=remaining)
        if response is not None:
            seen += [(type(e).__name__, e.key, e.value) for e in response.events]
    return seen


@pytest.mark.faults
def test_watch_resumes_after_restart_without_loss_or_repeat(private_etcd):
    member = private_etcd.members[0]
    client = connect(private_etcd.endpoints)
    writer = connect(private_etcd.endpoints)
    try:
        with Watch(client, "/w/", range_end=kv.prefix_end("/w/")) as watch:
            assert watch.started.wait(5)
            writer.put("/w/k1", "a")
            assert _collect(watch, 1, 5) == [("PutEvent", b"/w/k1", b"a")]
            member.kill()
            member.start(wait=False)  # the write below races the watch's reconnect
            create_retrying(writer, "/w/k2", "b")
            writer.put("/w/k3", "c")
            events = _collect(watch, 2, 10)
            assert events == [("PutEvent", b"/w/k2", b"b"), ("PutEvent", b"/w/k3", b"c")]
            assert watch.get(timeout=0.3) is None, "an event was repeated"
            assert watch.reconnects >= 1
    finally:
        client.close()
        writer.close()


def test_watch_from_a_compacted_revision_raises_compacted_error(client, prefix):
    first = client.put(f"{prefix}/k", "1").header.revision
    client.put(f"{prefix}/k", "2")
    latest = client.put(f"{prefix}/k", "3").header.revision
    client.compact(latest)
    with Watch(client, f"{prefix}/k", start_revision=first) as watch:
        with pytest.raises(CompactedError) as info:
            watch.get(timeout=5)
        assert info.value.compact_revision == latest
        with pytest.raises(CompactedError):  # stays failed: the consumer must re-read
            watch.get(timeout=1)


def test_watch_from_a_past_revision_replays_history(client, prefix):
    first = client.put(f"{prefix}/k", "1").header.revision
    client.put(f"{prefix}/k", "2")
    with Watch(client, f"{prefix}/k", start_revision=first) as watch:
        assert _collect(watch, 2, 5) == [("PutEvent", f"{prefix}/k".encode(), b"1"),
                                         ("PutEvent", f"{prefix}/k".encode(), b"2")]


@pytest.mark.faults
def test_watch_continues_on_another_member_after_a_kill(etcd3):
    client = connect(etcd3.endpoints)
    writer_endpoints = list(etcd3.endpoints)
    try:
        with Watch(client, "/w3/", range_end=kv.prefix_end("/w3/")) as watch:
            assert watch.started.wait(5)
            in_use = client.endpoint_in_use.netloc
            victim = next(m for m in etcd3.members if m.endpoint.endswith(in_use))
            writer = connect([e for e in writer_endpoints if e != victim.endpoint])
            try:
                writer.put("/w3/k1", "a")
                assert _collect(watch, 1, 5) == [("PutEvent", b"/w3/k1", b"a")]
                victim.kill()
                create_retrying(writer, "/w3/k2", "b")
                assert _collect(watch, 1, 10) == [("PutEvent", b"/w3/k2", b"b")]
                assert watch.get(timeout=0.3) is None, "an event was repeated"
                assert client.endpoint_in_use.netloc != in_use
            finally:
                writer.close()
    finally:
        client.close()


def test_close_from_another_thread_ends_iteration_promptly(client, prefix):
    watch = Watch(client, f"{prefix}/", range_end=kv.prefix_end(f"{prefix}/"))
    assert watch.started.wait(5)
    ended = threading.Event()
    received: list[object] = []

    def consume() -> None:
        for response in watch:
            received.append(response)
        ended.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    client.put(f"{prefix}/a", "1")
    assert wait_until(lambda: len(received) == 1, timeout=5)
    closer = threading.Thread(target=watch.close)
    closed_at = time.monotonic()
    closer.start()
    assert ended.wait(2), "iteration did not end after close()"
    assert time.monotonic() - closed_at < 1.0
    assert watch.closed
    assert wait_until(lambda: not watch._thread.is_alive(), timeout=2), "stream thread still running"
