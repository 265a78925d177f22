"""Operations around the worker: an embedded etcd for the demo and the tests, drills, audits."""
