"""Cine for a :class:`~viewer.ui.viewport.Viewport`: plays its model on a :class:`~viewer.dicom.cine.CineClock`
and measures the rate the screen really shows.

A single-shot precise timer fires at the next frame's due time (never a fixed-rate tick that falls behind); each
tick asks the clock which frame's time has come and shows that one, so frames whose time passed while painting
could not keep up are dropped and the motion keeps its real speed.  :meth:`CinePlayer.painted` is told of every
paint; :meth:`CinePlayer.measured_fps` is the number of distinct frames painted over the last
:data:`RATE_WINDOW_S`, for the overlay ("Cine 29.9 fps").
"""

from __future__ import annotations

import math
import time
from collections import deque

from PySide6.QtCore import QObject, Qt, QTimer

from viewer.dicom.cine import CineClock
from viewer.ui.viewport_model import ViewportModel

RATE_WINDOW_S = 1.0  # the real rate is measured over the paints of the last second
PAINTS_KEPT_MAX = 2048  # paint times remembered (a 1000 fps series cannot grow the list without bound)


class CinePlayer(QObject):
    def __init__(self, model: ViewportModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._clock: CineClock | None = None
        self._started = 0.0
        self._paints: deque[float] = deque(maxlen=PAINTS_KEPT_MAX)
        self._last_painted = -1

    @property
    def active(self) -> bool:
        return self._clock is not None

    def start(self) -> None:
        """(Re)start on the model's timing from the slice on screen."""
        timing = self.model.cine_timing()
        if timing is None:
            self.stop()
            return
        self._clock = CineClock(timing, self.model.index)
        self._started = time.monotonic()
        self._paints.clear()
        self._last_painted = -1
        self._schedule(0.0)

    def stop(self) -> None:
        self._timer.stop()
        self._clock = None
        self._paints.clear()

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - self._started) * 1000.0

    def _tick(self) -> None:
        clock = self._clock
        if clock is None:
            return
        elapsed = self._elapsed_ms()
        frame = clock.frame_at(elapsed)
        if frame != self.model.index and frame < self.model.count:
            self.model.set_index(frame)
        self._schedule(elapsed)

    def _schedule(self, elapsed: float) -> None:
        assert self._clock is not None
        wait = self._clock.next_change_ms(elapsed) - self._elapsed_ms()
        self._timer.start(max(1, math.ceil(wait)))

    # -- the rate on screen --------------------------------------------------------------------------------

    def painted(self, index: int) -> None:
        """A paint of slice ``index`` finished: counted when playing and the frame changed."""
        if self._clock is None or index == self._last_painted:
            return
        self._last_painted = index
        self._paints.append(time.monotonic())

    def measured_fps(self) -> float | None:
        """Distinct frames painted per second over the last :data:`RATE_WINDOW_S`; None before two paints."""
        if len(self._paints) < 2:
            return None
        last = self._paints[-1]
        recent = [t for t in self._paints if last - t <= RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def overlay_text(self) -> str:
        """"Cine 29.9 fps" (the rate measured on screen) while playing; "" when stopped."""
        if self._clock is None:
            return ""
        fps = self.measured_fps()
        return f"Cine {fps:.1f} fps" if fps is not None else "Cine …"
