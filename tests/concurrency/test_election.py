"""Election: Go's v3_election_test.go and election_test.go, ported, plus timeouts and cancels."""

import queue
import threading
import time

import pytest

from worker.concurrency import (Election, NoLeaderError, NotLeaderError, Session,
                                SessionExpiredError, WaitCancelledError)
from worker.etcd import connect

from .conftest import join, keys_under, wait_until


def test_keys_are_gos(client, sessions, prefix):
    s = sessions()
    e = Election(s, prefix + "/el")
    e.campaign("v")
    assert e.key == f"{prefix}/el/{s.lease:x}"
    leader = e.leader()
    assert leader.key.decode() == e.key and leader.value == b"v" and leader.lease == s.lease
    assert e.rev == leader.create_revision
    assert e.header.revision >= e.rev


def test_election_wait(make_client, prefix):
    """Go: TestElectionWait: 3 leaders in turn, each seen by all 3 observers."""
    leaders, followers = 3, 3
    name = prefix + "/test-election"
    elected: queue.Queue = queue.Queue()
    rounds = [threading.Barrier(followers + 1) for _ in range(leaders)]
    errors: list = []

    def follower(i: int) -> None:
        try:
            for j in range(leaders):
                with Session(make_client(), ttl=10) as s:
                    with Election(s, name).observe() as obs:
                        kv = obs.get(timeout=10)
                        assert kv is not None, "could not observe election"
                        elected.put(kv.value.decode())
                rounds[j].wait(20)  # wait for the next election round
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    lead_lock = threading.Lock()
    order: list[str] = []

    def leader(i: int) -> None:
        try:
            with Session(make_client(), ttl=10) as s:
                e = Election(s, name)
                ev = f"electval-{i}-{time.monotonic_ns()}"
                e.campaign(ev, timeout=20)
                with lead_lock:
                    order.append(ev)
                    got = [elected.get(timeout=10) for _ in range(followers)]
                    assert got == [ev] * followers, f"wrong election value: {got} != {ev}"
                    e.resign()
                    rounds[len(order) - 1].wait(20)  # tell followers to observe the next leader
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=follower, args=(i,)) for i in range(followers)]
    threads += [threading.Thread(target=leader, args=(i,)) for i in range(leaders)]
    for t in threads:
        t.start()
    for t in threads:
        join(t, 30)
    assert not errors, errors
    assert len(order) == leaders


def test_election_failover(make_client, prefix):
    """Go: TestElectionFailover: the next candidate leads once the leader's session closes."""
    ss = [Session(make_client()) for _ in range(3)]
    try:
        e = Election(ss[0], prefix + "/test-election")
        e.campaign("foo")
        with e.observe() as obs:
            assert obs.get(5).value == b"foo"
        result: queue.Queue = queue.Queue()

        def next_leader() -> None:
            try:
                Election(ss[1], prefix + "/test-election").campaign("bar", timeout=10)
                result.put(None)
            except Exception as err:  # noqa: BLE001
                result.put(err)

        t = threading.Thread(target=next_leader)
        t.start()
        wait_until(ss[0].client, prefix + "/test-election/", lambda kvs: len(kvs) == 2)
        assert ss[0].close()  # leader failover
        with Election(ss[2], prefix + "/test-election").observe() as obs:
            assert obs.get(5).value == b"bar"
        assert result.get(timeout=5) is None
        join(t)
    finally:
        for s in ss:
            s.close()


def test_election_session_recampaign(client, sessions, prefix):
    """Go: TestElectionSessionRecampaign: a second campaign on the same lease proclaims."""
    s = sessions()
    e = Election(s, prefix + "/test-elect")
    e.campaign("abc")
    e2 = Election(s, prefix + "/test-elect")
    e2.campaign("def")
    assert e2.rev == e.rev
    with e.observe() as obs:
        assert obs.get(5).value == b"def"
    assert len(keys_under(client, prefix)) == 1


def test_election_on_prefix_of_existing_key(client, sessions, prefix):
    """Go: TestElectionOnPrefixOfExistingKey: "testa" must not block election "test"."""
    client.put(prefix + "/testa", "value")
    e = Election(sessions(), prefix + "/test")
    e.campaign("abc", timeout=5)
    assert e.leader().value == b"abc"


def test_election_on_session_restart(client, sessions, prefix):
    """Go: TestElectionOnSessionRestart: a restarted process adopting its lease keeps leading."""
    name = prefix + "/test-elect"
    session = sessions()
    Election(session, name).campaign("abc")
    wait_session = sessions()
    waiter_result: queue.Queue = queue.Queue()

    def wait_campaign() -> None:
        try:
            Election(wait_session, name).campaign("123", timeout=5)
            waiter_result.put("elected")
        except Exception as err:  # noqa: BLE001
            waiter_result.put(err)

    t = threading.Thread(target=wait_campaign)
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    session.orphan()  # simulate a restart: the old process stops, its lease lives on
    new_session = sessions(lease=session.lease)
    e = Election(new_session, name)
    e.campaign("def", timeout=5)
    with e.observe() as obs:
        assert obs.get(5).value == b"def"
    assert waiter_result.empty(), "the waiter must not win while the restarted leader holds the lease"
    e.resign()
    assert waiter_result.get(timeout=5) == "elected"
    join(t)


def test_election_observe_compacted(private_etcd):
    """Go: TestElectionObserveCompacted (own etcd: compaction would disturb other tests)."""
    c = connect(private_etcd.endpoints)
    try:
        with Session(c) as s:
            e = Election(s, "test-elect")
            e.campaign("abc")
            rev = c.put("foo", "bar").header.revision
            c.compact(rev)
            with e.observe() as obs:
                assert obs.get(5).value == b"abc"
                e.proclaim("def")  # and observation goes on past the compacted revision
                assert obs.get(5).value == b"def"
                # a watch resumed from a compacted revision (as after a long disconnect) makes
                # the observer re-read the leader instead of ending like Go's observe
                leader_key = e.key
                c.compact(c.put("foo", "baz").header.revision)
                obs._open(leader_key, 1)
                e.proclaim("ghi")
                assert obs.get(5).value == b"ghi"
            # and a wait for a delete whose history is compacted returns, so the caller re-reads
            from worker.concurrency.wait import WaitBound, wait_delete
            wait_delete(c, leader_key.encode(), 1, WaitBound(timeout=2))
    finally:
        c.close()


def test_observe_fresh_responses_on_proclaim(sessions, prefix):
    """Go: TestElectionObserveFreshResponsesOnProclaim."""
    e = Election(sessions(), prefix + "/test-elect")
    e.campaign("abc")
    with e.observe() as obs:
        seen = []
        for want, proclaim in (("abc", None), ("def", "def"), ("ghi", "ghi")):
            if proclaim:
                e.proclaim(proclaim)
            kv = obs.get(5)
            assert kv is not None and kv.value == want.encode()
            seen.append((kv, obs.header.revision))
    assert [kv.version for kv, _ in seen] == [1, 2, 3]
    assert seen[0][1] < seen[1][1] < seen[2][1]


def test_observe_waits_for_first_leader_then_follows_changes(client, sessions, prefix):
    name = prefix + "/e"
    with Election(sessions(), name).observe() as obs:
        assert obs.get(0.2) is None  # nobody campaigns yet
        e1, e2 = Election(sessions(), name), Election(sessions(), name)
        e1.campaign("one")
        assert obs.get(5).value == b"one"
        t = threading.Thread(target=e2.campaign, args=("two",), kwargs={"timeout": 10})
        t.start()
        wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
        e1.resign()
        assert obs.get(5).value == b"two"
        join(t)


def test_observe_close_from_another_thread_ends_iteration(sessions, prefix):
    e = Election(sessions(), prefix + "/e")
    e.campaign("x")
    obs = e.observe()
    seen = []
    t = threading.Thread(target=lambda: seen.extend(kv.value for kv in obs))
    t.start()
    wait_until(e.session.client, prefix, lambda kvs: len(kvs) == 1)
    threading.Timer(0.2, obs.close).start()
    join(t, 5)
    assert seen == [b"x"]


def test_resume_election(client, sessions, prefix):
    """Go: TestResumeElection (the resumed election uses the prefix as given, like Go)."""
    pfx = prefix + "/resume-election/"
    s = sessions()
    e = Election(s, pfx)
    e.campaign("candidate1", timeout=10)
    leader = e.leader()
    e = Election.resume(s, pfx, leader.key, leader.create_revision)
    with e.observe() as obs:
        assert obs.get(5).value == b"candidate1"
        client.put(prefix + "foo", "bar")  # not under the election prefix: ignored
        e.resign()
        e.campaign("candidate2", timeout=10)
        kv = obs.get(5)
        while kv is not None and kv.value == b"candidate1":
            kv = obs.get(5)
    assert kv is not None and kv.key.decode().startswith(pfx) and kv.value == b"candidate2"


def test_leader_proclaim_resign_errors(sessions, prefix):
    e = Election(sessions(), prefix + "/e")
    with pytest.raises(NoLeaderError, match="^election: no leader$"):
        e.leader()
    with pytest.raises(NotLeaderError, match="^election: not leader$"):
        e.proclaim("x")
    e.resign()  # not campaigning: a no-op
    e.campaign("a")
    e.session.client.delete(e.key)  # someone removed our key: we are not the leader any more
    with pytest.raises(NotLeaderError):
        e.proclaim("b")


def test_campaign_timeout_resigns(client, sessions, prefix):
    name = prefix + "/e"
    Election(sessions(), name).campaign("leader")
    e2 = Election(sessions(), name)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        e2.campaign("late", timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    assert [k.value for k in keys_under(client, name + "/")] == [b"leader"], "timed-out key left behind"
    assert e2.key == ""


def test_campaign_cancel_from_another_thread(client, sessions, prefix):
    name = prefix + "/e"
    Election(sessions(), name).campaign("leader")
    e2, cancel, result = Election(sessions(), name), threading.Event(), queue.Queue()

    def run() -> None:
        try:
            e2.campaign("late", cancel=cancel)
        except Exception as err:  # noqa: BLE001
            result.put(err)

    t = threading.Thread(target=run)
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    cancel.set()
    assert isinstance(result.get(timeout=5), WaitCancelledError)
    join(t)
    assert len(keys_under(client, name + "/")) == 1


def test_campaign_ends_when_session_expires(client, sessions, prefix):
    name = prefix + "/e"
    Election(sessions(), name).campaign("leader")
    s2 = sessions(ttl=3)
    result: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            Election(s2, name).campaign("late")
        except Exception as err:  # noqa: BLE001
            result.put(err)

    t = threading.Thread(target=run)
    t.start()
    wait_until(client, name + "/", lambda kvs: len(kvs) == 2)
    client.lease_revoke(s2.lease)
    assert isinstance(result.get(timeout=5), SessionExpiredError)
    join(t)
    with pytest.raises(SessionExpiredError):  # a campaign on a dead lease fails at once too
        Election(s2, name).campaign("again")
