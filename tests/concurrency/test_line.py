"""``candidates()`` / ``leader()``: the line as Go's election defines it (lowest create revision leads)."""

from worker.concurrency import Election, Session, candidates, leader


def test_line_order_follows_create_revision_not_key_order(client):
    # campaign in the reverse of the keys' byte order, so key order and line order always differ
    sessions = sorted((Session(client, ttl=10) for _ in range(3)), key=lambda s: f"{s.lease:x}", reverse=True)
    try:
        elections = []
        for i, s in enumerate(sessions):
            e = Election(s, "/line-test")
            if i == 0:
                e.campaign(f'{{"instance_id": "w{i}"}}')
            else:  # a waiting candidate: its key put the way campaign puts it, without blocking
                client.put(f"/line-test/{s.lease:x}", f'{{"instance_id": "w{i}"}}', lease=s.lease)
            elections.append(e)
        rev, line = candidates(client, "/line-test")
        assert rev > 0
        assert [c.key for c in line] == sorted((c.key for c in line), reverse=True)  # not key order
        assert [c.instance_id for c in line] == ["w0", "w1", "w2"]
        assert [c.create_revision for c in line] == sorted(c.create_revision for c in line)
        assert line[0].lease == sessions[0].lease
        assert leader(client, "/line-test") == line[0]
        # the leader resigns: the next in line leads
        elections[0].resign()
        assert leader(client, "/line-test").instance_id == "w1"
        # at an older revision the line is what it was then
        _, then = candidates(client, "/line-test", revision=rev)
        assert [c.instance_id for c in then] == ["w0", "w1", "w2"]
    finally:
        for s in sessions:
            s.close()
    assert leader(client, "/line-test") is None
