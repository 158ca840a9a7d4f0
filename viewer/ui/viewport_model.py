"""The state of one 2D viewport, as a pure-Python model (no Qt).

The model holds *what* is shown (series, slice index, window, invert) and *how* (zoom, pan, rotation, flips, cine)
and emits :class:`Changed` events through ``model.changed``; :class:`viewer.ui.viewport.Viewport` observes it,
paints, and forwards mouse and key input to the methods here.  Tests drive it without Qt.

Geometry conventions (the view transform the viewport builds from this state):

* ``zoom`` is relative to "fit": 1.0 shows the whole (rotated) image as large as the view allows.
* ``pan`` is the offset of the image centre from the view centre, in view pixels.
* ``rotation`` is clockwise on screen, in degrees (0/90/180/270); flips mirror on screen axes, after rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from viewer.dicom.cine import FrameTiming, uniform_timing
from viewer.dicom.pixels import PRESETS, Window, default_window
from viewer.errors import MifasError
from viewer.limits import FRAME_INTERVAL_MS_RANGE
from viewer.ui.events import EventEmitter

# Aspects of the state named in Changed events; a viewport re-renders pixels only for SERIES/INDEX/WINDOW/INVERT.
SERIES = "series"
INDEX = "index"
WINDOW = "window"
INVERT = "invert"
VIEW = "view"  # zoom, pan, rotation, flips
CINE = "cine"
PIXEL_ASPECTS = frozenset({SERIES, INDEX, WINDOW, INVERT})

ZOOM_MIN = 0.05
ZOOM_MAX = 64.0
CINE_FPS_MIN = 1.0
CINE_FPS_MAX = 1000.0 / FRAME_INTERVAL_MS_RANGE[0]  # faster than the screen is fine: cine drops frames
CINE_FPS_DEFAULT = 10.0
WIDTH_MIN = 1e-3  # a window narrower than this is a threshold anyway (PS3.3 C.11.2.1.2: width >= 1 for LINEAR)
# Window drag: one view pixel of motion changes width (horizontal) or centre (vertical) by this share of the
# current width, so narrow windows can be fine-tuned and wide ones move quickly.
DRAG_WINDOW_PER_PIXEL = 1.0 / 256.0
# Identity window for 8-bit colour samples (maps 0..255 onto itself under the linear formula).
COLOR_IDENTITY_WINDOW = Window(128.0, 256.0)


class SeriesLike(Protocol):
    """What the model needs of :class:`viewer.dicom.series.SeriesImages`."""

    def __len__(self) -> int: ...
    def info(self, i: int): ...
    def stored(self, i: int) -> np.ndarray: ...
    def is_loaded(self, i: int) -> bool: ...


@dataclass(frozen=True)
class Changed:
    """The model changed; ``aspects`` names what (SERIES, INDEX, WINDOW, INVERT, VIEW, CINE)."""

    aspects: frozenset[str]


class ViewportModel:
    def __init__(self) -> None:
        self.changed: EventEmitter[Changed] = EventEmitter()
        self._series: SeriesLike | None = None
        self._index = 0
        self._window: Window | None = None
        self._invert = False
        self._zoom = 1.0
        self._pan = (0.0, 0.0)
        self._rotation = 0
        self._flip_h = False
        self._flip_v = False
        self._cine_fps = CINE_FPS_DEFAULT
        self._playing = False
        self._acquisition: FrameTiming | None = None  # the series' own frame timing (viewer.dicom.cine)
        self._fps_override = False

    # -- read-only state ---------------------------------------------------------------------------------

    series = property(lambda self: self._series)
    index = property(lambda self: self._index)
    window = property(lambda self: self._window, doc="Window in modality units; None = the file's default.")
    invert = property(lambda self: self._invert)
    zoom = property(lambda self: self._zoom)
    pan = property(lambda self: self._pan)
    rotation = property(lambda self: self._rotation)
    flip_h = property(lambda self: self._flip_h)
    flip_v = property(lambda self: self._flip_v)
    cine_fps = property(lambda self: self._cine_fps)
    playing = property(lambda self: self._playing)

    @property
    def count(self) -> int:
        return len(self._series) if self._series is not None else 0

    # -- series and slice --------------------------------------------------------------------------------

    def set_series(self, series: SeriesLike | None, index: int = 0) -> None:
        """Show another series; the view state goes back to its defaults and cine stops."""
        self._series = series
        self._index = self._clamp_index(index)
        self._window = None
        self._invert = False
        self._reset_view()
        self._playing = False
        self._acquisition, self._fps_override = None, False
        self._emit(SERIES, INDEX, WINDOW, INVERT, VIEW, CINE)

    def set_index(self, index: int) -> None:
        index = self._clamp_index(index)
        if index != self._index:
            self._index = index
            self._emit(INDEX)

    def scroll(self, delta: int) -> None:
        """Move ``delta`` slices (clamped at both ends)."""
        self.set_index(self._index + int(delta))

    def advance_cine(self) -> None:
        """One cine step: the next slice, wrapping around at the end."""
        if self.count > 1:
            self._index = (self._index + 1) % self.count
            self._emit(INDEX)

    def _clamp_index(self, index: int) -> int:
        return min(max(int(index), 0), max(self.count - 1, 0))

    # -- window / level ----------------------------------------------------------------------------------

    def set_window(self, window: Window | None) -> None:
        if window is not None:
            if not (math.isfinite(window.center) and math.isfinite(window.width)):
                raise ValueError(f"window must be finite: {window}")
            window = Window(float(window.center), max(float(window.width), WIDTH_MIN))
        if window != self._window:
            self._window = window
            self._emit(WINDOW)

    def apply_preset(self, name: str) -> None:
        """Apply one of :data:`viewer.dicom.pixels.PRESETS` ("CT lung", "CT bone", "CT brain", "CT abdomen")."""
        try:
            preset = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown window preset {name!r}; known: {', '.join(PRESETS)}") from None
        self.set_window(preset)

    def effective_window(self) -> Window | None:
        """The window in force on the current slice, in modality units: the user's, else the file's first
        window, else the min/max window of the slice (only once it is decoded; never decodes), else None."""
        if self._window is not None:
            return self._window
        if self._series is None or self.count == 0:
            return None
        try:
            info = self._series.info(self._index)
            if info.is_color or getattr(info, "is_palette", False):
                return COLOR_IDENTITY_WINDOW
            if info.windows:
                return info.windows[0]
            if self._series.is_loaded(self._index):
                stored = self._series.stored(self._index)
                if stored.ndim == 3:
                    return COLOR_IDENTITY_WINDOW
                return default_window(info, stored)
        except MifasError:
            return None
        return None

    def drag_window(self, dx: float, dy: float) -> None:
        """Window drag by (dx, dy) view pixels: right widens, left narrows; down raises the centre (darker),
        up lowers it; both scaled by the current width."""
        start = self.effective_window()
        if start is None or (dx == 0 and dy == 0):
            return
        step = max(start.width, WIDTH_MIN) * DRAG_WINDOW_PER_PIXEL
        self.set_window(Window(start.center + dy * step, max(start.width + dx * step, WIDTH_MIN)))

    def set_invert(self, invert: bool) -> None:
        if bool(invert) != self._invert:
            self._invert = bool(invert)
            self._emit(INVERT)

    def toggle_invert(self) -> None:
        self.set_invert(not self._invert)

    # -- view geometry -----------------------------------------------------------------------------------

    def zoom_by(self, factor: float, anchor: tuple[float, float] | None = None) -> None:
        """Multiply the zoom by ``factor`` (clamped), keeping the point ``anchor`` (view pixels relative to the
        view centre) fixed on screen; without an anchor the view centre stays fixed."""
        if not (math.isfinite(factor) and factor > 0):
            return
        zoom = min(max(self._zoom * factor, ZOOM_MIN), ZOOM_MAX)
        if zoom == self._zoom:
            return
        ratio = zoom / self._zoom
        ax, ay = anchor if anchor is not None else (0.0, 0.0)
        px, py = self._pan
        self._pan = (ax - (ax - px) * ratio, ay - (ay - py) * ratio)
        self._zoom = zoom
        self._emit(VIEW)

    def set_zoom(self, zoom: float) -> None:
        self.zoom_by(zoom / self._zoom)

    def pan_by(self, dx: float, dy: float) -> None:
        if dx or dy:
            self._pan = (self._pan[0] + dx, self._pan[1] + dy)
            self._emit(VIEW)

    def rotate(self, degrees: int = 90) -> None:
        """Rotate clockwise by a multiple of 90 degrees (negative = counter-clockwise)."""
        if degrees % 90:
            raise ValueError("rotation must be a multiple of 90 degrees")
        rotation = (self._rotation + degrees) % 360
        if rotation != self._rotation:
            self._rotation = rotation
            self._emit(VIEW)

    def flip(self, horizontal: bool = True) -> None:
        """Mirror left-right (``horizontal``) or top-bottom, on screen."""
        if horizontal:
            self._flip_h = not self._flip_h
        else:
            self._flip_v = not self._flip_v
        self._emit(VIEW)

    def fit(self) -> None:
        """Zoom to fit and centre, keeping rotation and flips."""
        if self._zoom != 1.0 or self._pan != (0.0, 0.0):
            self._zoom, self._pan = 1.0, (0.0, 0.0)
            self._emit(VIEW)

    def reset(self) -> None:
        """Back to the file's window, no invert, fit, no rotation or flips (slice and cine are kept)."""
        self._window = None
        self._invert = False
        self._reset_view()
        self._emit(WINDOW, INVERT, VIEW)

    def _reset_view(self) -> None:
        self._zoom, self._pan, self._rotation, self._flip_h, self._flip_v = 1.0, (0.0, 0.0), 0, False, False

    # -- cine --------------------------------------------------------------------------------------------

    @property
    def acquisition_timing(self) -> FrameTiming | None:
        """The series' own frame timing (Frame Time, Frame Time Vector, ...), or None."""
        return self._acquisition

    @property
    def plays_acquisition_rate(self) -> bool:
        """True while cine follows the series' own timing (not a rate the user chose)."""
        return self._acquisition is not None and not self._fps_override

    def set_acquisition_timing(self, timing: FrameTiming | None) -> None:
        """The open series' own timing: cine plays on it (and ``cine_fps`` shows its mean rate) until the user
        chooses another rate; None keeps the user's rate."""
        if timing is not None and timing.frames != self.count:
            timing = None  # timing for other frames than those shown: not this series
        self._acquisition, self._fps_override = timing, False
        if timing is not None:
            self._cine_fps = min(max(timing.rate_fps, CINE_FPS_MIN), CINE_FPS_MAX)
        self._emit(CINE)

    def cine_timing(self) -> FrameTiming | None:
        """The timing cine plays on: the acquisition's, or every frame evenly at ``cine_fps``."""
        if self.plays_acquisition_rate:
            return self._acquisition
        return uniform_timing(self.count, self._cine_fps)

    def set_cine_fps(self, fps: float) -> None:
        """The user's rate: every frame evenly at ``fps``.  Choosing the acquisition's own (rounded) rate again
        goes back to the acquisition's timing."""
        fps = min(max(float(fps), CINE_FPS_MIN), CINE_FPS_MAX)
        acquisition = self._acquisition
        if acquisition is not None and round(fps) == round(acquisition.rate_fps):
            if self._fps_override:
                self._fps_override = False
                self._cine_fps = min(max(acquisition.rate_fps, CINE_FPS_MIN), CINE_FPS_MAX)
                self._emit(CINE)
            return
        if fps != self._cine_fps or (acquisition is not None and not self._fps_override):
            self._cine_fps = fps
            self._fps_override = acquisition is not None
            self._emit(CINE)

    def set_playing(self, playing: bool) -> None:
        playing = bool(playing) and self.count > 1
        if playing != self._playing:
            self._playing = playing
            self._emit(CINE)

    def toggle_playing(self) -> None:
        self.set_playing(not self._playing)

    # -- events ------------------------------------------------------------------------------------------

    def _emit(self, *aspects: str) -> None:
        self.changed.emit(Changed(frozenset(aspects)))
