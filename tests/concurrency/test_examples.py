"""The seed article's three Go examples (example_{election,mutex,stm}_test.go), printing what Go prints."""

import queue
import random
import threading

from worker.concurrency import Election, Mutex, Session, new_stm

from .conftest import join, wait_until


def test_example_election(client, prefix, capsys):
    pfx = prefix + "/my-election/"
    s1, s2 = Session(client), Session(client)
    try:
        e1, e2 = Election(s1, pfx), Election(s2, pfx)
        electc: queue.Queue = queue.Queue()

        def run(e, value):
            e.campaign(value, timeout=20)
            electc.put(e)

        # e2 campaigns first and wins; e1 joins (queues) while e2 leads
        t2 = threading.Thread(target=run, args=(e2, "e2"))
        t2.start()
        e = electc.get(timeout=10)
        t1 = threading.Thread(target=run, args=(e1, "e1"))
        t1.start()
        wait_until(client, pfx, lambda kvs: len(kvs) == 2)
        with e.observe() as obs:
            print("completed first election with", obs.get(5).value.decode())
        e.resign()  # so the next candidate can be elected
        e = electc.get(timeout=10)
        with e.observe() as obs:
            print("completed second election with", obs.get(5).value.decode())
        join(t1)
        join(t2)
    finally:
        s1.close()
        s2.close()
    assert capsys.readouterr().out.splitlines() == [
        "completed first election with e2",
        "completed second election with e1",
    ]


def test_example_mutex(client, prefix, capsys):
    with Session(client) as s1, Session(client) as s2:
        m1, m2 = Mutex(s1, prefix + "/my-lock/"), Mutex(s2, prefix + "/my-lock/")
        m1.lock()
        print("acquired lock for s1")
        m2_locked = threading.Event()
        t = threading.Thread(target=lambda: (m2.lock(timeout=10), m2_locked.set()))
        t.start()
        wait_until(client, prefix + "/my-lock/", lambda kvs: len(kvs) == 2)
        assert not m2_locked.is_set()
        m1.unlock()
        print("released lock for s1")
        assert m2_locked.wait(5)
        print("acquired lock for s2")
        join(t)
    assert capsys.readouterr().out.splitlines() == [
        "acquired lock for s1", "released lock for s1", "acquired lock for s2"]


def test_example_stm(client, prefix, capsys):
    total_accounts = 5
    for i in range(total_accounts):
        client.put(f"{prefix}/accts/{i}", "100")

    def exchange(stm):
        frm, to = random.randrange(total_accounts), random.randrange(total_accounts)
        if frm == to:
            return
        from_k, to_k = f"{prefix}/accts/{frm}", f"{prefix}/accts/{to}"
        from_v, to_v = int(stm.get(from_k) or 0), int(stm.get(to_k) or 0)
        xfer = from_v // 2
        stm.put(from_k, str(from_v - xfer))
        stm.put(to_k, str(to_v + xfer))

    errors: list = []

    def run():
        try:
            new_stm(client, exchange)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        join(t, 20)
    assert not errors
    accts = client.get_prefix(f"{prefix}/accts/")
    print("account sum is", sum(int(v) for v, _ in accts))
    assert capsys.readouterr().out.splitlines() == ["account sum is 500"]
