"""Hold a lock or lead an election from a separate process, for fault tests.

    python holder.py ENDPOINTS lock|elect NAME TTL [VALUE]

Prints ``HOLDING <key>`` once it holds, then waits until stdin closes (or it is killed).
Tests SIGSTOP it past its TTL to see a waiter take over, then SIGKILL it.
"""

import sys

from worker.concurrency import Election, Mutex, Session
from worker.etcd import connect


def main() -> None:
    endpoints, kind, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    value = sys.argv[5] if len(sys.argv) > 5 else "held"
    client = connect(endpoints)
    session = Session(client, ttl=ttl)
    if kind == "lock":
        held = Mutex(session, name)
        held.lock()
    else:
        held = Election(session, name)
        held.campaign(value)
    print("HOLDING", held.key, flush=True)
    sys.stdin.read()
    session.close()


if __name__ == "__main__":
    main()
