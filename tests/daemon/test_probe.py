"""DaemonProbe: /status comes from the StatusBoard snapshot, not a full store read per GET."""

from __future__ import annotations

from typing import Any

from worker.daemon.probe import DaemonProbe
from worker.daemon.state import FOLLOWER, DaemonState
from worker.daemon.status_board import StatusBoard
from worker.keys import Keys


class _Client:
    stats: dict[str, int] = {}


def _probe() -> tuple[DaemonProbe, StatusBoard, list[int]]:
    reads: list[int] = []

    def read_status(client: Any, keys: Keys) -> dict[str, Any]:
        reads.append(1)
        return {"leader": None, "candidates": [], "states": {"protected": len(reads)}, "revision": 10 + len(reads)}

    state = DaemonState("i-1", ttl=5.0, role=FOLLOWER)
    board = StatusBoard()
    client = _Client()
    probe = DaemonProbe(state, lambda: client, lambda: Keys("/t"), board, read_status=read_status)  # type: ignore[arg-type, return-value]
    return probe, board, reads


def test_gets_share_one_read_while_the_snapshot_is_fresh() -> None:
    probe, _, reads = _probe()
    first = probe.status()
    for _ in range(20):
        assert probe.status()["revision"] == first["revision"]
    assert len(reads) == 1
    assert first["role"] == FOLLOWER and first["instance_id"] == "i-1"


def test_a_published_snapshot_is_served_until_expired() -> None:
    probe, board, reads = _probe()
    board.publish({"leader": None, "candidates": [], "states": {"protected": 99}, "revision": 500})
    for _ in range(5):
        got = probe.status()
        assert got["revision"] == 500 and got["states"] == {"protected": 99}
    assert reads == []
    board.expire()  # the term ended: the next GET reads afresh
    assert probe.status()["revision"] == 11 and len(reads) == 1


def test_no_client_answers_from_the_state() -> None:
    state = DaemonState("i-2", ttl=5.0)
    probe = DaemonProbe(state, lambda: None, lambda: Keys("/t"), StatusBoard())
    got = probe.status()
    assert got["instance_id"] == "i-2" and got["leader"] is None and "error" in got
