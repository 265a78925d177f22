"""The demo environment, apart from the product: an embedded etcd (``embedded_etcd``), a systemd
stand-in (``supervisor``), instances run under it (``instances``), a sample inventory
(``inventory``) and the ``protection-worker demo`` program (``run``). Tests and benches use it as
their harness too. Operator features live in ``worker.ops``; fault injectors live under tests/.
"""
