"""Revision-consistent reads of the three prefixes, in pages, merge-joined by id.

``read_all`` reads ``clusters/``, ``dr/`` and ``protection/`` at ONE revision: the first page of
``clusters/`` fixes revision R (its response header), and every later page of every prefix asks
for ``revision=R``. Each prefix is a stream sorted by key (etcd's order); with the namespace the
same for all three, key order is id order (compared as bytes), so the streams are joined like a
merge join and only one page per prefix is held at a time: memory is bounded by ``page_size``,
not by the number of clusters. No range is unbounded (every one has ``limit=page_size``).

``read_ids`` reads a given set of ids (an incremental pass: ids that changed, from a watch) at one
revision too: one transaction of range ops per 42 ids (3 ops each, within etcd's 128-op limit);
the first transaction fixes R, the others read at R.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from worker.etcd import kv
from worker.protection.keys import Keys
from worker.protection.rules import Observed

DEFAULT_PAGE_SIZE = 1000
#: etcd's default --max-txn-ops
MAX_TXN_OPS = 128


#: called after each page (or transaction of reads) arrives: proof of progress for the watchdog, and
#: the daemon's chance to reconcile input changes between the pages of a long full pass
Progress = Callable[[], None]


def _pages(client: Any, prefix: bytes, revision: int, page_size: int,
           first: Any = None, progress: Progress | None = None) -> Iterator[Any]:
    """The key-values under ``prefix`` at ``revision``, page by page (``first``: a page already read)."""
    end = kv.prefix_end(prefix)
    start = prefix
    response = first
    while True:
        if response is None:
            response = client.range(kv.range_request(start, range_end=end, limit=page_size, revision=revision))
            if progress is not None:
                progress()
        yield from response.kvs
        if not response.more or not response.kvs:
            return
        start = response.kvs[-1].key + b"\0"
        response = None


def _with_ids(stream: Iterator[Any], prefix: bytes) -> Iterator[tuple[bytes, Any]]:
    n = len(prefix)
    for item in stream:
        yield item.key[n:], item


def _decode(raw_id: bytes) -> str:
    return raw_id.decode("utf-8", "replace")


def merge_join(clusters: Iterator[tuple[bytes, Any]], dr: Iterator[tuple[bytes, Any]],
               protection: Iterator[tuple[bytes, Any]]) -> Iterator[Observed]:
    """Join three id-sorted streams: one ``Observed`` per id that has a cluster or a protection key
    (a DR key alone is never consulted, so it yields nothing)."""
    sentinel = (None, None)
    c = next(clusters, sentinel)
    d = next(dr, sentinel)
    p = next(protection, sentinel)
    while c[0] is not None or p[0] is not None:
        ids = [x[0] for x in (c, p) if x[0] is not None]
        current = min(ids)
        while d[0] is not None and d[0] < current:
            d = next(dr, sentinel)
        cluster = dr_kv = prot = None
        if c[0] == current:
            cluster = c[1]
            c = next(clusters, sentinel)
        if d[0] == current:
            dr_kv = d[1]
            d = next(dr, sentinel)
        if p[0] == current:
            prot = p[1]
            p = next(protection, sentinel)
        yield Observed(_decode(current), cluster, dr_kv, prot)


class Snapshot:
    """``read_all``'s result: the pinned ``revision`` and an iterator of ``Observed`` (read lazily)."""

    def __init__(self, revision: int, observed: Iterator[Observed]) -> None:
        self.revision = revision
        self._observed = observed

    def __iter__(self) -> Iterator[Observed]:
        return self._observed


def read_all(client: Any, keys: Keys, *, page_size: int = DEFAULT_PAGE_SIZE,
             progress: Progress | None = None) -> Snapshot:
    """Every id under the namespace, at one revision (pages read while iterating)."""
    if page_size < 1:
        raise ValueError("page_size must be >= 1")
    c_prefix, d_prefix, p_prefix = (kv.to_bytes(p) for p in (keys.clusters, keys.dr, keys.protection))
    first = client.range(kv.range_request(c_prefix, range_end=kv.prefix_end(c_prefix), limit=page_size))
    revision = first.header.revision
    if progress is not None:
        progress()
    clusters = _with_ids(_pages(client, c_prefix, revision, page_size, first, progress), c_prefix)
    dr = _with_ids(_pages(client, d_prefix, revision, page_size, progress=progress), d_prefix)
    protection = _with_ids(_pages(client, p_prefix, revision, page_size, progress=progress), p_prefix)
    return Snapshot(revision, merge_join(clusters, dr, protection))


def scan_prefix(client: Any, prefix: str, *, revision: int = 0, page_size: int = DEFAULT_PAGE_SIZE,
                ) -> tuple[int, Iterator[Any]]:
    """All key-values under one prefix at one revision (0: now), paged: ``(revision, iterator)``."""
    p = kv.to_bytes(prefix)
    first = client.range(kv.range_request(p, range_end=kv.prefix_end(p), limit=page_size, revision=revision))
    rev = revision or first.header.revision
    return rev, _pages(client, p, rev, page_size, first)


def read_ids(client: Any, keys: Keys, ids: Iterable[str], *, revision: int = 0) -> tuple[int, list[Observed]]:
    """The given ids (sorted, deduplicated) at one revision: ``(revision, [Observed...])``."""
    wanted = sorted(set(ids))
    per_txn = MAX_TXN_OPS // 3
    observed: list[Observed] = []
    if not wanted:
        if not revision:  # a count-only range under {ns}/: every request stays under the namespace
            revision = client.range(kv.range_request(keys.root, prefix=True, count_only=True)).header.revision
        return revision, observed
    for start in range(0, len(wanted), per_txn):
        chunk = wanted[start:start + per_txn]
        ops = []
        for cid in chunk:
            for key in (keys.cluster(cid), keys.dr_key(cid), keys.protection_key(cid)):
                ops.append(kv.op_get(key, revision=revision))
        response = client.txn(kv.txn_request([], ops))
        if not revision:
            revision = response.header.revision
        for i, cid in enumerate(chunk):
            got = [kv.response_kvs(response, 3 * i + j) for j in range(3)]
            observed.append(Observed(cid, *(g[0] if g else None for g in got)))
    return revision, observed
