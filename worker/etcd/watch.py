"""A watch that outlives its stream.

pyetcd's watches share one stream per client, never reconnect, and end silently when cancelled,
so "the iterator ended" cannot be told from "the key was deleted". Here every ``Watch`` owns a
stream (HTTP/2 multiplexes them on the client's channel); when the stream breaks it is re-opened
from the revision after the last one delivered, so no event is lost or repeated. If that revision
was compacted meanwhile, the consumer gets ``CompactedError`` (with the compact revision) and must
re-read the current state: an event history with a hole must never look complete.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import grpc
from pyetcd import etcdrpc

from worker.etcd.errors import (
    CompactedError,
    EtcdClosedError,
    EtcdError,
    InvalidTokenError,
    PermissionDeniedError,
    denied_on,
    from_grpc,
)
from worker.etcd.kv import prefix_end, to_bytes
from worker.etcd.retry import Retry
from worker.etcd.transport import HasTransport, Transport
from worker.etcd.types import DeleteEvent, Event, PutEvent, WatchResponse

__all__ = ["DeleteEvent", "Event", "PutEvent", "Watch", "WatchResponse"]

#: a broken watch stream is opened again soon, from the next revision it has not delivered
RETRY = Retry(initial=0.05, maximum=1.0)
_CLOSED = object()


class Watch:
    """Watch ``key`` (or ``[key, range_end)``) from ``start_revision`` (default: from now on).

    Iterate it for ``WatchResponse`` objects, or call ``get(timeout)``; ``close()`` ends the
    iteration from any thread. Errors that a reconnect cannot fix (compaction, permission
    denied) are raised to the consumer; transient ones are retried with capped backoff for as
    long as the watch is open. ``reconnects`` counts re-opened streams.
    """

    def __init__(self, transport: Transport | HasTransport, key: str | bytes, *,
                 range_end: str | bytes | None = None, prefix: bool = False, start_revision: int | None = None,
                 prev_kv: bool = False, progress_notify: bool = False) -> None:
        # COMPAT (issue 18): an EtcdClient is accepted for its transport (new code: client.watch(...))
        self._transport: Transport = transport if isinstance(transport, Transport) else transport.transport
        self._key = to_bytes(key)
        if prefix:
            range_end = prefix_end(self._key)
        self._range_end = to_bytes(range_end) if range_end is not None else b""
        self._prev_kv = prev_kv
        self._progress_notify = progress_notify
        self._next_revision = start_revision or 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._progress_requests: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._call: Any = None
        self._call_lock = threading.Lock()
        self.reconnects = 0
        self._stream_created = False
        #: set once the first stream is established (so "from now on" has a defined start)
        self.started = threading.Event()
        self._transport.register_stream(self)
        self._thread = threading.Thread(target=self._run, name=f"watch {self._key!r}", daemon=True)
        self._thread.start()

    # -- consumer side ------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> WatchResponse | None:
        """The next response, or ``None`` on timeout. Raises ``EtcdClosedError`` once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # keep later calls failing the same way
            raise EtcdClosedError("watch closed")
        if isinstance(item, BaseException):
            self._queue.put(item)
            raise item
        return item

    def __iter__(self) -> Iterator[WatchResponse]:
        while True:
            try:
                item = self.get()
            except EtcdClosedError:
                return
            if item is not None:
                yield item

    def events(self) -> Iterator[Event]:
        for response in self:
            yield from response.events

    def close(self) -> None:
        self._stop.set()
        with self._call_lock:
            if self._call is not None:
                self._call.cancel()
        self._queue.put(_CLOSED)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- stream side --------------------------------------------------------------------------
    def _create_request(self) -> Any:
        create = etcdrpc.WatchCreateRequest(key=self._key, range_end=self._range_end,
                                            start_revision=self._next_revision,
                                            progress_notify=self._progress_notify,
                                            prev_kv=self._prev_kv)
        return etcdrpc.WatchRequest(create_request=create)

    def request_progress(self) -> None:
        """Ask etcd for a progress notification: once every event up to the store's current
        revision has been delivered, the consumer gets an empty response at that revision."""
        self._progress_requests.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))

    def _requests(self, done: threading.Event) -> Iterator[Any]:
        yield self._create_request()
        while not done.is_set():  # keep the request side open until this stream ends
            try:
                yield self._progress_requests.get(timeout=0.1)
            except queue.Empty:
                continue

    def _run(self) -> None:
        retry = RETRY.copy(stop=self._stop)
        fresh_token = False  # re-authenticated since the last stream was refused for permission
        while not self._stop.is_set():
            if self._stream_created:  # a stream worked since: a later denial earns a re-login again
                fresh_token = False
                self._stream_created = False
            error: BaseException | None = None
            try:
                if self._stream_once():
                    retry.reset()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                err = from_grpc(exc, where=self._transport.endpoint_url)
                if isinstance(err, InvalidTokenError):
                    self._reauthenticate()
                elif isinstance(err, PermissionDeniedError):
                    self._fail(denied_on(err, self._key))
                    return
                else:
                    self._transport.mark_failed()
            except PermissionDeniedError as err:
                # etcd answers a watch opened with an expired or forgotten token (simple tokens
                # die with a restart) with "permission denied", like a real denial: re-authenticate
                # once and retry; denied again with a fresh token, it is real.
                if self._transport.uses_auth and not fresh_token:
                    fresh_token = True
                    if self._reauthenticate():
                        continue
                self._fail(err)
                return
            except CompactedError as err:
                self._fail(err)
                return
            except EtcdError:
                if self._stop.is_set():
                    break
            if not retry.pause(error):
                break
            self.reconnects += 1

    def _reauthenticate(self) -> bool:
        try:
            self._transport.authenticate()
            return True
        except EtcdError:
            return False

    def _fail(self, err: EtcdError) -> None:
        self._queue.put(err)
        self._stop.set()

    def _stream_once(self) -> bool:
        """Run one stream until it breaks; True when it delivered anything."""
        done = threading.Event()
        try:
            return self._consume(done)
        finally:
            done.set()

    def _consume(self, done: threading.Event) -> bool:
        stub = self._transport.stub(etcdrpc.WatchStub)
        call = stub.Watch(self._requests(done), metadata=self._transport.stream_metadata())
        with self._call_lock:
            if self._stop.is_set():
                call.cancel()
                return False
            self._call = call
        delivered = False
        for response in call:
            if response.compact_revision:
                raise CompactedError(f"watch on {self._key!r} from revision {self._next_revision}: "
                                     f"compacted up to {response.compact_revision}",
                                     compact_revision=response.compact_revision)
            # before ``created``: etcd refuses a watch with created *and* canceled both set
            if response.canceled:
                reason = response.cancel_reason or "canceled by the server"
                if "permission denied" in reason or "auth" in reason:
                    raise denied_on(PermissionDeniedError(f"watch: {reason}"), self._key)
                raise EtcdError(f"watch on {self._key!r}: {reason}")
            if response.created:
                if not self._next_revision:
                    # "from now on": pin the start so a reconnect resumes without a gap
                    self._next_revision = response.header.revision + 1
                self.started.set()
                self._stream_created = True
                self._transport.contact()
                continue
            if response.events:
                self._next_revision = response.events[-1].kv.mod_revision + 1
                self._queue.put(WatchResponse(response.header.revision,
                                              [Event.from_pb(e) for e in response.events]))
                delivered = True
            elif response.header.revision >= self._next_revision:
                # progress notification: nothing happened up to this revision
                self._next_revision = response.header.revision + 1
                self._queue.put(WatchResponse(response.header.revision, []))
            self._transport.contact()
        return delivered
