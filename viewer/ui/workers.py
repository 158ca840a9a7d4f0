"""Background work for the UI: a bounded thread pool whose tasks report back on the GUI thread.

A task is a plain function ``fn(progress, cancel) -> result`` that runs in a worker thread: ``progress(done,
total)`` may be called as often as it likes (reports are throttled here), ``cancel`` is a
:class:`threading.Event` the function must poll.  The callbacks given to :meth:`TaskRunner.submit` run on the
GUI thread, because the signals are delivered to the runner, a QObject living there.

Every task can be cancelled; :meth:`TaskRunner.shutdown` cancels all and waits a bounded time, and runs when the
application quits, so no worker outlives the window that started it by more than its current step.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal, Slot

from viewer.errors import MifasError, OperationCancelled

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]  # (done, total); total None when not known
TaskFn = Callable[[Progress, threading.Event], Any]

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress reports a second reach the GUI
SHUTDOWN_WAIT_MS = 5000


class _TaskSignals(QObject):
    progress = Signal(int, int, int)  # task id, done, total
    succeeded = Signal(int, object)  # task id, result
    failed = Signal(int, object)  # task id, exception
    finished = Signal(int)  # task id; always last


class _Task(QRunnable):
    def __init__(self, task_id: int, fn: TaskFn, signals: _TaskSignals, cancel: threading.Event, name: str) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the runner holds the Python reference until `finished` arrives
        self._id = task_id
        self._fn = fn
        self._signals = signals
        self._cancel = cancel
        self._name = name
        self._last_report = 0.0

    def _progress(self, done: int, total: int | None) -> None:
        """Throttled report; ``total`` None (not known yet, e.g. a PACS that does not say) is sent as -1."""
        total = -1 if total is None else int(total)
        now = time.monotonic()
        if (0 <= total <= done) or now - self._last_report >= PROGRESS_INTERVAL_S:
            self._last_report = now
            self._signals.progress.emit(self._id, int(done), total)

    def run(self) -> None:
        try:
            if self._cancel.is_set():
                raise OperationCancelled("The operation was cancelled.")
            result = self._fn(self._progress, self._cancel)
        except MifasError as exc:
            self._signals.failed.emit(self._id, exc)
        except Exception as exc:  # a bug in a task must reach the user as a message, not kill the thread silently
            log.exception("background task %s failed", self._name)
            self._signals.failed.emit(self._id, exc)
        else:
            self._signals.succeeded.emit(self._id, result)
        finally:
            self._signals.finished.emit(self._id)


@dataclass
class TaskHandle:
    """What :meth:`TaskRunner.submit` returns: cancel the task, or ask whether it still runs."""

    task_id: int
    cancel_event: threading.Event
    name: str
    running: bool = True

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


@dataclass
class _Entry:
    handle: TaskHandle
    task: _Task
    on_done: Callable[[Any], None] | None
    on_error: Callable[[BaseException], None] | None
    on_progress: Callable[[int, int], None] | None
    on_finished: Callable[[], None] | None


class TaskRunner(QObject):
    """A bounded pool of worker threads (``max_threads``) with GUI-thread callbacks."""

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 2, name: str = "tasks") -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, max_threads))
        self._name = name
        self._ids = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._signals = _TaskSignals(self)
        self._signals.progress.connect(self._on_progress)
        self._signals.succeeded.connect(self._on_succeeded)
        self._signals.failed.connect(self._on_failed)
        self._signals.finished.connect(self._on_finished)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    def submit(
        self,
        fn: TaskFn,
        *,
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        name: str = "",
    ) -> TaskHandle:
        task_id = next(self._ids)
        cancel = threading.Event()
        handle = TaskHandle(task_id, cancel, name or self._name)
        task = _Task(task_id, fn, self._signals, cancel, handle.name)
        self._entries[task_id] = _Entry(handle, task, on_done, on_error, on_progress, on_finished)
        self._pool.start(task)
        return handle

    @property
    def active_count(self) -> int:
        return len(self._entries)

    def cancel_all(self) -> None:
        for entry in self._entries.values():
            entry.handle.cancel()

    @Slot()
    def shutdown(self, timeout_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Cancel every task and wait for the workers (bounded).  True when all have stopped."""
        self.cancel_all()
        self._pool.clear()  # tasks not yet started never start
        stopped = self._pool.waitForDone(timeout_ms)
        if not stopped:
            log.warning("%s: %d background task(s) still running after %d ms", self._name,
                        self._pool.activeThreadCount(), timeout_ms)
        return stopped

    def wait(self, timeout_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Wait for the running tasks without cancelling them (tests, shutdown paths)."""
        return self._pool.waitForDone(timeout_ms)

    # -- delivery on the GUI thread ------------------------------------------------------------------------

    @Slot(int, int, int)
    def _on_progress(self, task_id: int, done: int, total: int) -> None:
        entry = self._entries.get(task_id)
        if entry and entry.on_progress and not entry.handle.cancelled:
            entry.on_progress(done, total)

    @Slot(int, object)
    def _on_succeeded(self, task_id: int, result: object) -> None:
        entry = self._entries.get(task_id)
        if entry and entry.on_done:
            entry.on_done(result)

    @Slot(int, object)
    def _on_failed(self, task_id: int, exc: object) -> None:
        entry = self._entries.get(task_id)
        if entry is None:
            return
        if entry.on_error:
            entry.on_error(exc)  # type: ignore[arg-type]
        elif not isinstance(exc, OperationCancelled):
            log.warning("%s: unhandled %s", entry.handle.name, type(exc).__name__)

    @Slot(int)
    def _on_finished(self, task_id: int) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return
        entry.handle.running = False
        if entry.on_finished:
            entry.on_finished()


def describe_error(exc: BaseException) -> str:
    """A sentence for the user: our own errors carry one; anything else is a bug, said plainly."""
    if isinstance(exc, MifasError):
        return str(exc)
    return f"An unexpected error occurred ({type(exc).__name__}). Details are in the log."
