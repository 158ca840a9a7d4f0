"""Decoding the slices of the series a viewport shows, off the GUI thread except for the first one.

:meth:`SliceLoader.start` decodes the slice to show at once (one slice is fast, and the user sees an image at
once), then the rest of the series in a background :meth:`SeriesImages.preload` in priority order.  A slice the
user scrolls to before the preload reaches it is decoded by a one-slot "on demand" worker that always takes the
latest wanted slice (:meth:`SliceLoader.request`).  What the viewport needs to render a slice: whether it failed
(:meth:`error`) and, for a slice decoded on demand but already evicted from a full cache, the array itself
(:meth:`held`).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from PySide6.QtCore import QObject, Signal

from viewer.dicom.series import SeriesImages, priority_order
from viewer.errors import MifasError
from viewer.ui.workers import TaskRunner, describe_error

log = logging.getLogger(__name__)


class _LatestRequest:
    """The one slice the on-demand worker should decode next: only the latest request counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: tuple[SeriesImages, int] | None = None

    def put(self, series: SeriesImages, index: int) -> None:
        with self._lock:
            self._target = (series, index)

    def take(self) -> tuple[SeriesImages, int] | None:
        with self._lock:
            target, self._target = self._target, None
            return target

    def clear(self) -> None:
        self.take()


class SliceLoader(QObject):
    """The decoding of one viewport's series.  Signals arrive on the GUI thread."""

    decoded = Signal(int)  # a slice asked for on demand was decoded (or failed) for the current series
    idle = Signal()  # the on-demand worker has nothing left to do
    progress = Signal(int, int)  # slices decoded in the background, total

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._preloader = TaskRunner(self, max_threads=1, name="series preload")
        self._on_demand = TaskRunner(self, max_threads=1, name="slice decode")
        self._preload_task = None
        self._wanted = _LatestRequest()
        self._demand_running = False
        self._series: SeriesImages | None = None
        self._held: tuple[int, np.ndarray] | None = None  # the last slice decoded on demand
        self._errors: dict[int, str] = {}  # unexpected (non-DICOM) failures per slice; DICOM ones: series.error()

    def start(self, series: SeriesImages | None, index: int) -> None:
        """Load `series` (None: nothing): slice `index` now, the rest in the background (first, middle, last,
        then outward from `index`)."""
        self.stop()
        self._series = series
        self._errors.clear()
        if series is None or not len(series):
            return
        self._decode_now(series, index)
        if len(series) > 1:
            order = priority_order(len(series), index)

            def preload(progress, cancel):
                return series.preload(order, cancel, progress)

            self._preload_task = self._preloader.submit(preload, on_progress=self.progress.emit,
                                                        name="series preload")

    def stop(self) -> None:
        if self._preload_task is not None:
            self._preload_task.cancel()
            self._preload_task = None
        self._wanted.clear()
        self._on_demand.cancel_all()
        self._held = None

    def shutdown(self) -> None:
        """Stop every background decode (bounded wait)."""
        self.stop()
        self._preloader.shutdown()
        self._on_demand.shutdown()

    def error(self, index: int) -> BaseException | str | None:
        """Why slice `index` of the current series cannot be shown (the series' DICOM error, or a sentence for an
        unexpected failure), or None."""
        if self._series is None:
            return None
        return self._errors.get(index) or self._series.error(index)

    def held(self, index: int) -> np.ndarray | None:
        """Slice `index` when it was the last one decoded on demand (kept even if the series' cache let it go)."""
        held = self._held
        return held[1] if held is not None and held[0] == index else None

    def request(self, index: int) -> None:
        """Decode slice `index` of the current series now, in the on-demand worker; :attr:`decoded` says when."""
        if self._series is None:
            return
        self._wanted.put(self._series, index)
        if self._demand_running:
            return  # the running worker takes the latest request when it is done
        self._demand_running = True
        wanted = self._wanted

        def decode(progress, cancel):
            target = wanted.take()
            if target is None or cancel.is_set():
                return None
            target_series, i = target
            try:
                return target_series, i, target_series.stored(i), None
            except MifasError:
                return target_series, i, None, None  # remembered by the series: series.error(i)
            except Exception as exc:
                log.exception("decoding slice %d failed", i)
                return target_series, i, None, describe_error(exc)

        self._on_demand.submit(decode, on_done=self._on_decoded, on_finished=self._on_finished,
                               name="slice decode")

    def _decode_now(self, series: SeriesImages, i: int) -> None:
        """The one synchronous decode: the first slice shown of a new series."""
        try:
            series.stored(i)
        except MifasError:
            pass  # remembered by the series; the viewport shows its message
        except Exception as exc:
            log.exception("decoding the first slice of a series failed")
            self._errors[i] = describe_error(exc)

    def _on_decoded(self, result) -> None:
        if result is None:
            return
        series, index, stored, error = result
        if series is not self._series:
            return  # a series no longer shown
        if error:
            self._errors[index] = error
        if stored is not None:
            self._held = (index, stored)
        self.decoded.emit(index)

    def _on_finished(self) -> None:
        self._demand_running = False
        self.idle.emit()
