"""Group commit for a stream of received instances: one writer thread, bounded batches, a short timer.

A retrieval hands each instance to :meth:`GroupWriter.submit` and goes on receiving; the writer thread reads
the header and writes the temp file at once (:meth:`Library.stage`), and closes a batch when it holds
:data:`BATCH_INSTANCES_MAX` instances or :data:`BATCH_BYTES_MAX` bytes, or when its oldest instance has
waited :data:`BATCH_LINGER_S` (so progress keeps moving), or when :meth:`GroupWriter.flush` asks.  A second
thread publishes closed batches (at most :data:`BATCHES_WAITING_MAX` wait), so that waiting for the disk
overlaps with staging the next batch: making 100 MB durable takes about as long as receiving it.
Publishing (:meth:`Library.publish`) shares the durability calls and the index transaction of the batch; every
guarantee of :mod:`viewer.library.store` holds (atomic, idempotent, nothing partial visible, a full disk
damages nothing).

An instance counts as stored only once its batch is committed: the ``done`` callback says so (or why not),
and :meth:`GroupWriter.flush` returns only when everything submitted is committed or refused.  A caller that
must know what is held after an interruption (the resume engine asks ``Library.has_instance``) flushes first.

Durability before acknowledging: a C-GET retrieval may acknowledge an instance to the PACS before its batch
is committed, because the PACS keeps its copy; a crash then loses at most the uncommitted batch, which the
next retrieval asks for again.  A Storage SCP that receives instances nobody else keeps (a modality pushing
to us) must not; calling the writer (``writer(data)``) waits for the commit, as ``Library.store_bytes`` does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from viewer.errors import LibraryError, StorageFullError
from viewer.library.store import Library, Staged, StoreResult

log = logging.getLogger(__name__)

BATCH_INSTANCES_MAX = 32  # instances per group commit
BATCH_BYTES_MAX = 64 << 20  # bytes per group commit
BATCH_LINGER_S = 0.05  # the oldest instance of a batch waits at most this long for company
QUEUE_BYTES_MAX = 128 << 20  # submitted, not yet staged; submit() blocks beyond this (back-pressure)
BATCHES_WAITING_MAX = 2  # closed batches waiting for the publisher; staging waits beyond this
# While held (hold()), staging goes on without publication: staged files are on disk, not in memory, and the plan
# that releases them comes within a fraction of a second; this bounds what may wait for it all the same.
HELD_UNFINISHED_MAX = 2048
# Submitted and not yet committed: how far the network may run ahead of the disk.  It bounds what a crash or a
# failover finds received-but-not-committed (the PACS was told "success"; a resume fetches them again).
UNFINISHED_MAX = 96

Done = Callable[[StoreResult | None, BaseException | None], None]


class _Pending:
    """One submitted instance: its bytes until staged, then its staged file; its callback."""

    __slots__ = ("data", "done", "row", "staged", "check")

    def __init__(self, data: bytes, done: Done | None, row: object = None,
                 check: Callable[[], bool] | None = None) -> None:
        self.data: bytes | None = data
        self.done = done
        self.row = row  # the index row when the caller already read it (viewer.library.header.index_row)
        self.staged: Staged | None = None
        self.check = check  # asked just before publication: False withdraws the instance


class Withdrawn(LibraryError):
    """The ``done`` error of an instance whose ``check`` said no at publication: it was never stored."""


WITHDRAWN = Withdrawn("The instance was withdrawn before it was stored.")


class GroupWriter:
    """Stores instances into `library` in group commits on one writer thread.  Thread-safe.

    ``submit(data, done)`` queues an instance and returns; ``done(result, None)`` or ``done(None, error)``
    runs on the writer thread once it is committed or refused (NotDicomError / MalformedDicomError for that
    instance; StorageFullError / LibraryError for a batch that could not be written, after which every later
    submit raises that error: the disk or index will not recover by itself).  ``writer(data)`` is the plain
    Sink interface: it waits for the commit and returns the StoreResult, like ``Library.store_bytes``.
    """

    def __init__(self, library: Library, *, batch_instances_max: int = BATCH_INSTANCES_MAX,
                 batch_bytes_max: int = BATCH_BYTES_MAX, linger_s: float = BATCH_LINGER_S,
                 queue_bytes_max: int = QUEUE_BYTES_MAX, unfinished_max: int = UNFINISHED_MAX) -> None:
        self.library = library
        self.batch_instances_max = max(1, batch_instances_max)
        self.batch_bytes_max = batch_bytes_max
        self.linger_s = linger_s
        self.queue_bytes_max = queue_bytes_max
        self.unfinished_max = max(1, unfinished_max)
        # One lock, three conditions, so that each change wakes only the threads it concerns (a notify_all on one
        # shared condition woke every thread for every instance: about 20 futex calls and GIL hand-offs each).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # submitters, flushers, a stager waiting for batch room
        self._to_stage = threading.Condition(self._lock)  # the stager waits here for instances or a flush
        self._to_publish = threading.Condition(self._lock)  # the publisher waits here for closed batches
        self._queue: deque[_Pending] = deque()
        self._queued_bytes = 0
        self._unfinished = 0  # submitted and not yet committed or refused
        self._flushing = 0  # flush() calls waiting: publish without lingering
        self._closed = False
        self._held = False  # hold(): publish nothing until release()
        self.error: BaseException | None = None  # the batch failure that stopped the writer
        self._batches: deque[list[_Pending] | None] = deque()  # closed batches; None: the stager has ended
        self._threads: list[threading.Thread] = []

    # -- the caller's side --------------------------------------------------------------------------------

    def hold(self) -> None:
        """Stage what is submitted, but publish nothing until :meth:`release` (a first pass that runs before the
        study is listed: its instances go to disk at once, and into the library only once the plan says they
        belong, see ``check``).  Staging goes on meanwhile, up to HELD_UNFINISHED_MAX instances."""
        with self._cond:
            self._held = True
            self._cond.notify_all()  # a stager waiting for batch room may go on

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._to_publish.notify_all()
            self._cond.notify_all()

    def submit(self, data: bytes, done: Done | None = None, row: object = None,
               check: Callable[[], bool] | None = None) -> None:
        """Queue one Part 10 instance for the next group commit; blocks while the queue is full.  `row`: its
        :func:`~viewer.library.header.index_row`, when the caller has read it already.  `check()`, asked on
        the publisher thread just before the instance's batch is published: False withdraws it (its staged
        file is discarded, ``done`` gets :data:`WITHDRAWN`)."""
        with self._cond:
            if self.error is not None:
                raise self.error
            if self._closed:
                raise LibraryError("The library writer is closed.")
            while (self._queued_bytes and self._queued_bytes + len(data) > self.queue_bytes_max) or \
                    self._unfinished >= (HELD_UNFINISHED_MAX if self._held else self.unfinished_max):
                self._cond.wait()
                if self.error is not None:
                    raise self.error
            self._queue.append(_Pending(data, done, row, check))
            self._queued_bytes += len(data)
            self._unfinished += 1
            if not self._threads:
                self._threads = [threading.Thread(target=self._run, name="viewer.library.writer", daemon=True),
                                 threading.Thread(target=self._run_publisher, name="viewer.library.publisher",
                                                  daemon=True)]
                for thread in self._threads:
                    thread.start()
            self._to_stage.notify()

    def __call__(self, data: bytes) -> StoreResult:
        """Store one instance and wait until it is committed (the Sink interface)."""
        finished = threading.Event()
        outcome: list[StoreResult | BaseException | None] = [None]

        def done(result: StoreResult | None, error: BaseException | None) -> None:
            outcome[0] = error if error is not None else result
            finished.set()

        self.submit(data, done)
        with self._cond:
            self._flushing += 1  # the caller waits: do not linger for company
            self._to_stage.notify()
        try:
            finished.wait()
        finally:
            with self._cond:
                self._flushing -= 1
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        assert outcome[0] is not None
        return outcome[0]

    def flush(self) -> None:
        """Wait until everything submitted is committed or refused; raise the writer's error, if any."""
        with self._cond:
            self._flushing += 1
            self._to_stage.notify()
            try:
                while self._unfinished:
                    self._cond.wait()
            finally:
                self._flushing -= 1
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        """Flush, then end the writer thread (the library stays open)."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._notify_everyone()
            for thread in self._threads:
                thread.join()

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer's threads ------------------------------------------------------------------------------

    def _run(self) -> None:
        """The stager: header and temp file of each instance as it comes, batches closed by size or timer."""
        batch: list[_Pending] = []
        batch_bytes = 0
        oldest = 0.0
        while True:
            item = self._next(batch, oldest)
            if item is None:
                if batch:
                    self._hand_over(batch)
                    batch, batch_bytes = [], 0
                    continue
                self._hand_over(None)
                return
            if self._stage(item):
                if not batch:
                    oldest = time.monotonic()
                batch.append(item)
                batch_bytes += item.staged.size if item.staged is not None else 0
            if len(batch) >= self.batch_instances_max or batch_bytes >= self.batch_bytes_max:
                self._hand_over(batch)
                batch, batch_bytes = [], 0

    def _hand_over(self, batch: list[_Pending] | None) -> None:
        """Queue a closed batch for the publisher (None: no more), waiting while too many are queued."""
        with self._cond:
            while batch is not None and len(self._batches) >= BATCHES_WAITING_MAX and not self._held:
                self._cond.wait()
            self._batches.append(batch)
            self._to_publish.notify()

    def _run_publisher(self) -> None:
        """The publisher: durability, renames and the index transaction of each closed batch, in order."""
        while True:
            with self._cond:
                while not self._batches or (self._held and self._batches[0] is not None and self.error is None):
                    self._to_publish.wait()
                batch = self._batches.popleft()
                self._cond.notify_all()  # a stager waiting for batch room
            if batch is None:
                return
            self._publish(batch)

    def _next(self, batch: list[_Pending], oldest: float) -> _Pending | None:
        """The next instance to stage, or None when the batch is due (or the writer is done)."""
        with self._cond:
            while not self._queue:
                if batch and (self._flushing or self._closed or self.error is not None):
                    return None
                if not batch and self._closed:
                    return None
                if batch:
                    left = oldest + self.linger_s - time.monotonic()
                    if left <= 0:
                        return None
                    self._to_stage.wait(left)
                else:
                    self._to_stage.wait()
            item = self._queue.popleft()
            self._queued_bytes -= len(item.data or b"")
            self._cond.notify_all()  # a submitter waiting for queue room (rare; free when nobody waits)
            return item

    def _stage(self, item: _Pending) -> bool:
        """Write the item's temp file; False when it was refused (and reported)."""
        data, item.data = item.data, None
        assert data is not None
        if self.error is not None:
            self._finish([item], None, self.error)
            return False
        try:
            item.staged = self.library.stage(data, item.row)  # type: ignore[arg-type]
        except (StorageFullError, LibraryError) as exc:
            self._fail(exc)
            self._finish([item], None, exc)
            return False
        except Exception as exc:  # this instance is unusable (NotDicomError, MalformedDicomError, ...)
            self._finish([item], None, exc)
            return False
        return True

    def _publish(self, batch: list[_Pending]) -> None:
        gone = [item for item in batch if item.check is not None and not _checked(item.check)]
        if gone:
            self.library.discard([item.staged for item in gone if item.staged is not None])
            for item in gone:
                self._call_back(item, None, WITHDRAWN)
            self._finished(len(gone))
            batch = [item for item in batch if item not in gone]
        staged = [item.staged for item in batch if item.staged is not None]
        if self.error is not None:
            self.library.discard(staged)
            self._finish(batch, None, self.error)
            return
        try:
            results = self.library.publish(staged)
        except Exception as exc:  # StorageFullError, LibraryError: nothing of the batch is visible
            log.warning("a batch of %d instances was not stored: %s", len(batch), exc)
            self._fail(exc)
            self._finish(batch, None, exc)
            return
        for item, result in zip(batch, results, strict=True):
            self._call_back(item, result, None)
        self._finished(len(batch))

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
            self._notify_everyone()

    def _notify_everyone(self) -> None:
        """Wake every waiting thread (caller holds the lock): the writer failed or closed."""
        self._cond.notify_all()
        self._to_stage.notify_all()
        self._to_publish.notify_all()

    def _finish(self, items: list[_Pending], result: StoreResult | None, error: BaseException | None) -> None:
        for item in items:
            self._call_back(item, result, error)
        self._finished(len(items))

    @staticmethod
    def _call_back(item: _Pending, result: StoreResult | None, error: BaseException | None) -> None:
        if item.done is not None:
            try:
                item.done(result, error)
            except Exception:  # a bug in the caller's callback must not stop the writer
                log.exception("a store callback failed")

    def _finished(self, count: int) -> None:
        """`count` instances are committed or refused: wake who waits for room or for a flush (one wake-up per
        batch, not per instance)."""
        with self._cond:
            self._unfinished -= count
            self._cond.notify_all()


def _checked(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a bug in the caller's check: keep nothing it could not vouch for
        log.exception("a publication check failed")
        return False
