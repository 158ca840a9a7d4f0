"""Co-allocated retrieval: one study fetched from several sources that hold it, at once.

The seed paper's retrieval idea, after the schemes it builds on: Vazhkudai's *dynamic co-allocation* (2003:
split a transfer into blocks, give the next block to whichever server finishes first) and Yang et al.'s
*recursively-adjusting co-allocation* (2005-2006: size each server's next share by the throughput it showed in
the last one, so all finish together).  Here a "block" is a list of SOP Instance UIDs of one series, fetched with
the source's own transport (C-GET, C-MOVE or WADO-RS); the sources are a profile's active/active members and its
``replicas``, any mix of DIMSE and DICOMweb.

1. **One queue** of the missing instances, in the viewer's order (first, middle and last of each series, then
   the rest).  Each source has a worker that takes its next block from the head of the queue.
2. **Shares by throughput, re-adjusted after every block.**  A block holds ``rate x BLOCK_TARGET_S`` instances,
   where ``rate`` is the source's instances per second (an exponentially weighted average over its blocks,
   :data:`RATE_WEIGHT`), between :data:`BLOCK_MIN` and :data:`BLOCK_MAX`; a source's first block is
   :data:`BLOCK_INITIAL`.  Every block takes about the same time on every source, so a source twice as fast
   serves about twice as much, and a source that slows down is given less from its next block on.
3. **A source that runs dry helps the slowest** (work stealing with redundancy, for the tail): when the queue is
   empty, an idle source takes the undelivered end of the block of the source expected to finish last, if its
   own rate says it will deliver them sooner, and fetches them too.  The first copy to arrive is kept; the
   other is acknowledged and dropped by the retrieval's :class:`~viewer.pacs.sink.InstanceSink`, so the
   library never holds a duplicate.  An instance is fetched by at most :data:`COPIES_MAX` sources.
4. When everything is here, blocks still running are cancelled.
5. **A source that fails is dropped** for this retrieval (any error: it died, it refuses, it broke off): what
   it had in flight and not delivered goes back to the head of the queue for the others, with a
   :class:`~viewer.pacs.retry.SourceDropped` event.  When every source is dropped with work left, the engine
   goes on with its ordinary retry loop over the profile's candidates (:mod:`viewer.pacs.retrieve`).

What each source delivered is reported (:class:`SourceShare`), for the event log and the GUI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from viewer.errors import MifasError, OperationCancelled
from viewer.pacs.node import Node
from viewer.pacs.retry import OnEvent, SourceDropped
from viewer.pacs.sink import InstanceSink

log = logging.getLogger(__name__)

BLOCK_INITIAL = 8  # instances in a source's first block, before it has shown a rate
BLOCK_MIN = 4  # below this a request's fixed costs (an association, a C-GET round) dominate
BLOCK_MAX = 256  # one C-GET identifier lists at most this many UIDs (viewer.pacs.query.SOP_UIDS_PER_REQUEST_MAX)
BLOCK_TARGET_S = 0.5  # every block should take about this long on its source: shares follow the rates
RATE_WEIGHT = 0.5  # weight of the newest block in a source's rate (exponentially weighted average)
COPIES_MAX = 2  # sources fetching the same instance at once (the tail's redundancy), at most
SOURCES_MAX = 8
IDLE_POLL_S = 0.05  # an idle worker re-checks the queue this often while others still have blocks in flight


@dataclass(frozen=True)
class Source:
    """One place that holds the study: a node, reached with one method ("get", "move" or "wado")."""

    name: str
    node: Node
    method: str


@dataclass(frozen=True)
class SourceShare:
    """What one source delivered in a co-allocated retrieval."""

    name: str
    method: str
    instances: int
    bytes: int
    seconds: float
    dropped: str = ""  # why it was dropped, "" when it served to the end


@dataclass
class _Block:
    source: str
    series_uid: str
    uids: list[str]
    cancel: threading.Event
    stolen: bool = False


class _Worker:
    def __init__(self, source: Source, sink: InstanceSink) -> None:
        self.source = source
        self.sink = sink  # this source's view of the retrieval's sink
        self.rate: float | None = None  # instances per second
        self.block: _Block | None = None
        self.dropped = ""
        self.busy_s = 0.0


class CoAllocation:
    """Fetch `queue` (``(series_uid, sop_instance_uid)`` in priority order) from `sources` into `sink`.

    `open_transport(source)` gives a client with ``retrieve(...)`` and ``close()``; `sop_classes(series_uid)`
    the SOP classes a series holds (for C-GET's presentation contexts).  :meth:`run` returns each source's
    share; what it could not fetch is simply still missing (``sink.held`` says what is here)."""

    def __init__(self, study_uid: str, queue: Iterable[tuple[str, str]], sources: list[Source], sink: InstanceSink,
                 open_transport: Callable[[Source], object], sop_classes: Callable[[str], frozenset[str]],
                 *, on_event: OnEvent | None = None, cancel: threading.Event | None = None) -> None:
        if not 1 <= len(sources) <= SOURCES_MAX:
            raise ValueError(f"co-allocation needs 1-{SOURCES_MAX} sources")
        self.study_uid = study_uid
        self.queue: deque[tuple[str, str]] = deque(queue)
        self.queued = {uid for _, uid in self.queue}  # what the queue holds, for membership in O(1)
        self.wanted = set(self.queued)
        self.sink = sink
        self.open_transport = open_transport
        self.sop_classes = sop_classes
        self.on_event = on_event
        self.cancel = cancel
        self.workers = [_Worker(s, sink.view(s.name)) for s in sources]
        self.copies: dict[str, int] = {}  # UID -> sources fetching it now
        self.cond = threading.Condition()

    # -- the whole transfer -----------------------------------------------------------------------------------

    def run(self) -> list[SourceShare]:
        threads = [threading.Thread(target=self._serve, args=(w,), name=f"viewer.pacs.coalloc-{i}", daemon=True)
                   for i, w in enumerate(self.workers)]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(IDLE_POLL_S)
                if self._stopping():
                    self._cancel_blocks()
                else:
                    self._cancel_delivered()
        finally:
            self._cancel_blocks()
            for thread in threads:
                thread.join()
        if self.cancel is not None and self.cancel.is_set():
            raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
        return [SourceShare(w.source.name, w.source.method, w.sink.stored_count(), w.sink.stored_bytes(),
                            w.busy_s, w.dropped) for w in self.workers]

    def _done(self) -> bool:
        return all(self.sink.held(uid) for uid in self.wanted)

    def _stopping(self) -> bool:
        return (self.sink.fatal is not None or (self.cancel is not None and self.cancel.is_set())
                or self._done())

    def _cancel_blocks(self) -> None:
        with self.cond:
            for worker in self.workers:
                if worker.block is not None:
                    worker.block.cancel.set()
            self.cond.notify_all()

    def _cancel_delivered(self) -> None:
        """A block whose instances all arrived (from a faster source) need not go on."""
        with self.cond:
            for worker in self.workers:
                block = worker.block
                if block is not None and not block.cancel.is_set() and all(self.sink.held(u) for u in block.uids):
                    block.cancel.set()

    # -- one source ---------------------------------------------------------------------------------------------

    def _serve(self, worker: _Worker) -> None:
        try:
            client = self.open_transport(worker.source)
        except MifasError as exc:
            self._drop(worker, exc)
            return
        try:
            while not self._stopping():
                block = self._take(worker)
                if block is None:
                    with self.cond:
                        if not self.queue and not any(w.block for w in self.workers if w is not worker):
                            return  # nothing left anywhere
                        self.cond.wait(IDLE_POLL_S)
                    continue
                if not self._fetch(worker, client, block):
                    return
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()

    def _fetch(self, worker: _Worker, client: object, block: _Block) -> bool:
        """One block; False when the source failed and was dropped."""
        before = worker.sink.stored_count()
        started = time.monotonic()
        try:
            client.retrieve(self.study_uid, block.series_uid, block.uids, sink=worker.sink,  # type: ignore[attr-defined]
                            cancel=block.cancel, sop_class_uids=self.sop_classes(block.series_uid) or None)
        except OperationCancelled:
            if self.cancel is not None and self.cancel.is_set():
                self._finish(worker, block)
                return False
            # cancelled by us: everything is here, or the block was only a redundant copy
        except MifasError as exc:
            self._finish(worker, block)
            if self.sink.fatal is not None or self._stopping():
                return False
            self._drop(worker, exc)
            return False
        finally:
            elapsed = time.monotonic() - started
            worker.busy_s += elapsed
        delivered = worker.sink.stored_count() - before
        if delivered and elapsed > 0:
            newest = delivered / elapsed
            worker.rate = newest if worker.rate is None else RATE_WEIGHT * newest + (1 - RATE_WEIGHT) * worker.rate
        self._finish(worker, block)
        return True

    def _finish(self, worker: _Worker, block: _Block) -> None:
        """The block ended (whatever way): release its copies; what it did not deliver and nobody else has in
        flight goes back to the head of the queue."""
        with self.cond:
            worker.block = None
            back = []
            for uid in block.uids:
                self.copies[uid] = max(0, self.copies.get(uid, 1) - 1)
                if not self.sink.held(uid) and not self.copies[uid] and uid not in self.queued:
                    back.append((block.series_uid, uid))
            self._requeue(back)
            self.cond.notify_all()

    def _drop(self, worker: _Worker, exc: BaseException) -> None:
        worker.dropped = str(exc)
        log.info("co-allocation: source %s dropped (%s)", worker.source.name, type(exc).__name__)
        with self.cond:
            left = len(self.queue)
        if self.on_event is not None:
            try:
                self.on_event(SourceDropped("co-allocated retrieval", worker.source.name, time.time(), str(exc),
                                            left))
            except Exception:  # an observer's bug must not break the transfer
                log.exception("co-allocation event observer failed")

    # -- shares -------------------------------------------------------------------------------------------------

    def _block_size(self, worker: _Worker) -> int:
        if worker.rate is None:
            return BLOCK_INITIAL
        return max(BLOCK_MIN, min(BLOCK_MAX, round(worker.rate * BLOCK_TARGET_S)))

    def _take(self, worker: _Worker) -> _Block | None:
        """The source's next block: from the head of the queue (one series, in queue order), or, when the queue
        is empty, the undelivered end of the block expected to finish last, if this source would be faster."""
        size = self._block_size(worker)
        with self.cond:
            while self.queue and self.sink.held(self.queue[0][1]):
                self.queued.discard(self.queue.popleft()[1])
            if self.queue:
                series_uid = self.queue[0][0]
                uids, keep = [], []
                while self.queue and len(uids) < size:
                    item = self.queue.popleft()
                    self.queued.discard(item[1])
                    if self.sink.held(item[1]):
                        continue
                    if item[0] == series_uid:
                        uids.append(item[1])
                    else:
                        keep.append(item)
                self._requeue(keep)
                return self._start(worker, series_uid, uids, stolen=False)
            return self._steal(worker, size)

    def _requeue(self, items: list[tuple[str, str]]) -> None:
        """(holding the lock) Put `items` back at the head of the queue, in their order."""
        self.queue.extendleft(reversed(items))
        self.queued.update(uid for _, uid in items)

    def _steal(self, worker: _Worker, size: int) -> _Block | None:
        """(holding the lock) The tail of the slowest source's block, fetched redundantly."""
        best: tuple[float, _Worker, list[str]] | None = None
        for other in self.workers:
            block = other.block
            if other is worker or block is None:
                continue
            left = [u for u in block.uids if not self.sink.held(u) and self.copies.get(u, 0) < COPIES_MAX]
            if not left:
                continue
            other_rate = other.rate or 1.0
            finish_s = len(left) / other_rate
            if best is None or finish_s > best[0]:
                best = (finish_s, other, left)
        if best is None:
            return None
        finish_s, other, left = best
        tail = left[-size:]  # what the slow source would send last
        mine_s = len(tail) / worker.rate if worker.rate else float("inf")
        if worker.rate is not None and other.rate is not None and mine_s >= finish_s:
            return None  # it will be done before we would: no point
        assert other.block is not None
        return self._start(worker, other.block.series_uid, tail, stolen=True)

    def _start(self, worker: _Worker, series_uid: str, uids: list[str], *, stolen: bool) -> _Block | None:
        if not uids:
            return None
        for uid in uids:
            self.copies[uid] = self.copies.get(uid, 0) + 1
        worker.block = _Block(worker.source.name, series_uid, uids, threading.Event(), stolen)
        return worker.block
