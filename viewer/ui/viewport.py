"""The 2D viewport: paints the current slice of a :class:`~viewer.ui.viewport_model.ViewportModel`.

The widget observes the model and forwards mouse and keys to it; it never decodes on the GUI thread except the
first slice of a newly set series (one slice is fast, and the user sees an image at once).  Its
:class:`~viewer.ui.slice_loader.SliceLoader` decodes the rest of the series in the background in priority order,
and a slice the user scrolls to before the preload reaches it in a one-slot "on demand" worker that always takes
the latest wanted slice.  What it draws over the image is :mod:`viewer.ui.viewport_paint`'s.

Painting: the stored frame goes through the pipeline's lookup table once per (slice, window, invert) into a uint8
array; a QImage wraps that array without a copy and is drawn through one QTransform (zoom, pan, rotation, flips and
the physical aspect from Pixel Spacing).  A pure view change (zoom, pan, overlays) repaints without re-rendering.

Mouse: left drag = window/level, right drag = zoom, middle drag or Shift+left drag = pan, wheel = slices
(Ctrl+wheel = zoom).  Keys: Up/Down, PageUp/PageDown, Home/End = slices; I = invert; R = reset; F = fit;
Space = cine; 1-4 = CT lung, bone, brain, abdomen presets; K = key image (drawn "KEY" at the top).

Measurements (:meth:`Viewport.set_tool`): with a tool chosen, left drag draws a distance, a rectangle or an
ellipse ROI; an angle is a drag (vertex to the first arm) and a click (the second arm); the probe is a click.
Each is kept for the session on its frame (:mod:`viewer.reading.annotations`) and labelled in mm, degrees or
modality units (HU for CT: mean, SD, min, max, area); the mm say where they are (:meth:`measurement_scale`,
:mod:`viewer.dicom.calibration`: "mm at detector" on an uncorrected radiograph).  The "calibrate" tool is a line
over an object of known length: :attr:`ask_length` asks its mm and the image becomes reader-calibrated.  Escape
goes back to navigating; Delete clears the measurements of the slice on screen.  :meth:`Viewport.export_png` saves
the view as seen.

Cine (:class:`~viewer.ui.cine_player.CinePlayer`) plays on the series' own timing when it has one, dropping frames
rather than slowing down; the overlay shows the rate painted over the last second.

Linked views (:mod:`viewer.ui.layout`): :meth:`Viewport.series_geometry` gives the planes of the open series and
its Frame of Reference; :meth:`Viewport.set_reference_lines` takes the segments the grid computed, drawn in cyan.
Crosshair (:meth:`Viewport.set_crosshair_mode`): with it on and no measurement tool chosen, a left click or drag
announces the image point under the mouse (``crosshair_picked``); :meth:`Viewport.set_crosshair` takes the point
the grid computed for this view, drawn as a small green cross.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QFont,
    QFontMetrics,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QInputDialog, QSizePolicy, QWidget

from viewer.dicom.calibration import Scale, calibrate, effective_scale
from viewer.dicom.cine import series_timing
from viewer.dicom.geometry import SeriesGeometry, series_geometry
from viewer.dicom.measure import distance as measure_distance
from viewer.dicom.pixels import PRESETS, Window, render_color
from viewer.dicom.series import SeriesImages
from viewer.errors import MifasError
from viewer.reading.annotations import POINTS_NEEDED, TOOLS, Annotation, AnnotationStore, measure_text
from viewer.ui import viewport_model as vm
from viewer.ui import viewport_paint as paint
from viewer.ui.cine_player import CinePlayer
from viewer.ui.slice_loader import SliceLoader
from viewer.ui.viewport_model import Changed, ViewportModel
from viewer.ui.viewport_paint import (  # noqa: F401  (re-exported: the colours tests look for)
    CROSSHAIR_COLOR,
    KEY_MARK_COLOR,
    MEASURE_COLOR,
    OVERLAY_TEXT_COLOR,
    REFERENCE_COLOR,
    SeriesOverlay,
    format_value,
    position_text,
    series_overlay,
)
from viewer.ui.workers import describe_error

log = logging.getLogger(__name__)

LOADING_TEXT = "Loading…"
NO_SERIES_TEXT = "No series open: double-click a series in the browser, or drag it here"
ASPECT_MAX = 20.0  # pixel aspect ratios beyond this are header errors; drawn square instead
WHEEL_STEP = 120  # QWheelEvent angle units per notch
ZOOM_DRAG_PER_PIXEL = 0.01  # right drag: zoom *= exp(-dy * this)
PRESET_KEYS = {Qt.Key.Key_1: "CT lung", Qt.Key.Key_2: "CT bone", Qt.Key.Key_3: "CT brain",
               Qt.Key.Key_4: "CT abdomen"}
REFERENCE_LINES_MAX = 8
CALIBRATE_TOOL = "calibrate"  # a line over an object of known length sets the image's scale


class Viewport(QWidget):
    """One 2D viewport.  ``model`` is its state; ``displayed_array()`` the uint8 image last rendered."""

    slice_painted = Signal(int)  # a decoded slice (this index) was drawn
    load_progress = Signal(int, int)  # slices decoded in the background, total
    message_changed = Signal(str)  # "" when the slice is shown, else "Loading…" or the error text
    measured = Signal(object)  # an Annotation was just added
    tool_changed = Signal(str)  # the measurement tool ("" = navigate)
    annotations_changed = Signal()  # a measurement was added or cleared (other views of the store repaint)
    key_image_requested = Signal()  # K: mark or unmark the frame on screen as a key image (the reading service)
    calibration_changed = Signal()  # the reader calibrated the image on screen, or cleared its calibration
    crosshair_picked = Signal(float, float)  # crosshair mode: image (row, col) clicked or dragged over

    def __init__(self, parent: QWidget | None = None, *, model: ViewportModel | None = None,
                 annotations: AnnotationStore | None = None) -> None:
        """`annotations`: the session's store, shared by the viewports of a layout (default: one of its own)."""
        super().__init__(parent)
        self.model = model or ViewportModel()
        self.model.changed.connect(self._on_model_changed)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 200)
        self._loader = SliceLoader(self)
        self._loader.decoded.connect(self._on_decoded)
        self._loader.idle.connect(self._on_decode_idle)
        self._loader.progress.connect(self._on_preload_progress)
        self._cine = CinePlayer(self.model, self)  # plays on the series' own timing (viewer.dicom.cine)
        # Asks the known length (mm) of a calibration line; (viewport, current length or 0) -> mm or None.  Tests
        # answer it by replacing this attribute.
        self.ask_length = _ask_length
        self._overlays_visible = True
        self._identity_hidden = False  # True while a view is exported without identity (export_png)
        self._font = QFont(self.font())
        self._font.setPixelSize(13)
        self._metrics = QFontMetrics(self._font)
        self._series_overlay = SeriesOverlay()
        # What was rendered: the uint8 array (kept alive: the QImage shares its buffer) and its facts.
        self._dirty = True
        self._rendered: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._aspect = (1.0, 1.0)
        self._slice_lines: tuple[str, ...] = ()
        self._window_line = ""
        self._message = NO_SERIES_TEXT
        self._painted_index = -1
        self._drag_mode: str | None = None
        self.tool: str | None = None  # a measurement tool (annotations.TOOLS) or None: navigate
        self.annotations = annotations if annotations is not None else AnnotationStore()
        self._drawing: list[tuple[float, float]] = []  # points of the measurement being drawn, image (row, col)
        self._hover: tuple[float, float] | None = None
        self._drag_last = QPointF()
        self._drag_anchor = (0.0, 0.0)
        self._wheel_rest = 0
        self._reference_lines: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = ()
        self.crosshair_mode = False  # a left click or drag picks the crosshair point (when no tool is chosen)
        self._crosshair: tuple[float, float] | None = None  # the cross drawn, image (row, col)
        self._geometry: tuple[SeriesImages | None, SeriesGeometry | None] = (None, None)

    # -- public API --------------------------------------------------------------------------------------

    def set_series(self, series: SeriesImages | None, index: int = 0) -> None:
        """Show ``series``: decode slice ``index`` now, the rest in the background (first, middle, last, then
        outward from ``index``)."""
        self._series_overlay = SeriesOverlay()
        if series is not None and len(series):
            index = min(max(index, 0), len(series) - 1)
        self._loader.start(series, index)
        if series is not None and len(series):
            try:
                self._series_overlay = series_overlay(series.header(index))
            except MifasError:
                pass
        self._painted_index = -1
        self.model.set_series(series, index)
        if series is not None and len(series) > 1:
            self.model.set_acquisition_timing(_timing(series))

    def shutdown(self) -> None:
        """Stop cine and every background decode (bounded wait).  Call before the widget goes away."""
        self.model.set_playing(False)
        self._loader.shutdown()

    def displayed_array(self) -> np.ndarray | None:
        """The uint8 image (rows, cols) or (rows, cols, 3) last rendered for display, before the view
        transform; None when the current slice is not shown (loading, error, no series)."""
        self._ensure_rendered()
        return self._rendered

    @property
    def message(self) -> str:
        """What the viewport says instead of an image: "", "Loading…", an error sentence, "No series open"."""
        self._ensure_rendered()
        return self._message

    @property
    def painted_index(self) -> int:
        """The slice index drawn by the last paint (-1 when no slice has been drawn)."""
        return self._painted_index

    @property
    def overlays_visible(self) -> bool:
        return self._overlays_visible

    def set_overlays_visible(self, visible: bool) -> None:
        self._overlays_visible = bool(visible)
        self.update()

    # -- linked views -------------------------------------------------------------------------------------

    def series_geometry(self) -> SeriesGeometry | None:
        """The planes of the open series and its Frame of Reference (None: no geometry to link by).  Read once
        per series: positions from the library index, the rest from the first header."""
        series = self.model.series
        if series is None:
            return None
        if self._geometry[0] is not series:
            try:
                geometry = series_geometry([f.position for f in series.frames], series.header(0))
            except (MifasError, ValueError, TypeError, AttributeError):
                geometry = None  # a header without usable geometry: the series is simply not linked
            self._geometry = (series, geometry)
        return self._geometry[1]

    def current_plane(self):
        geometry = self.series_geometry()
        return geometry.plane(self.model.index) if geometry is not None and self.model.count else None

    @property
    def crosshair(self) -> tuple[float, float] | None:
        """The image (row, col) where the crosshair's cross is drawn; None: no cross."""
        return self._crosshair

    def set_crosshair(self, point: tuple[float, float] | None) -> None:
        point = (float(point[0]), float(point[1])) if point is not None else None
        if point != self._crosshair:
            self._crosshair = point
            self.update()

    def set_crosshair_mode(self, enabled: bool) -> None:
        """On: a left click or drag announces ``crosshair_picked`` instead of changing the window."""
        self.crosshair_mode = bool(enabled)
        if not self.tool:
            self.setCursor(Qt.CursorShape.CrossCursor if enabled else Qt.CursorShape.ArrowCursor)

    def set_reference_lines(self, lines) -> None:
        """Segments to draw over the image, each ((row, col), (row, col)) in this image's pixels."""
        lines = tuple(lines)[:REFERENCE_LINES_MAX]
        if lines != self._reference_lines:
            self._reference_lines = lines
            self.update()

    # -- measurements -----------------------------------------------------------------------------------------

    def set_tool(self, tool: str | None) -> None:
        """Choose a measurement tool (distance, angle, rectangle, ellipse, probe) or None to navigate."""
        if tool is not None and tool not in TOOLS and tool != CALIBRATE_TOOL:
            raise ValueError(f"unknown tool {tool!r}; use one of {', '.join(TOOLS)} or {CALIBRATE_TOOL}")
        self.tool = tool
        self._drawing = []
        self.setCursor(Qt.CursorShape.CrossCursor if tool or self.crosshair_mode else Qt.CursorShape.ArrowCursor)
        self.update()
        self.tool_changed.emit(tool or "")

    def widget_to_image(self, point: QPointF) -> tuple[float, float] | None:
        """Widget point -> image (row, column), pixel centres at integers; None when nothing is drawn."""
        if self._rendered is None:
            return None
        inverse, ok = self.view_transform().inverted()
        if not ok:
            return None
        mapped = inverse.map(point)
        return (mapped.y() - 0.5, mapped.x() - 0.5)

    def image_to_widget(self, row: float, col: float) -> QPointF:
        return self.view_transform().map(QPointF(col + 0.5, row + 0.5))

    def current_frame_key(self) -> tuple[str, int] | None:
        series = self.model.series
        if series is None or self.model.count == 0:
            return None
        ref = series.frame_ref(self.model.index)
        return (ref.sop_instance_uid, ref.frame_index)

    def measurement_scale(self) -> Scale | None:
        """The scale measurements on the slice on screen use: the reader's calibration, else the header's
        (:mod:`viewer.dicom.calibration`); None when no slice is shown."""
        series, key = self.model.series, self.current_frame_key()
        if series is None or key is None:
            return None
        try:
            info = series.info(self.model.index)
        except MifasError:
            return None
        return effective_scale(info.scale, self.annotations.calibration(key[0]))

    def modality_values(self) -> tuple[np.ndarray | None, Scale | None, str]:
        """The current slice in modality units, its measurement scale, and the unit ('HU' for CT)."""
        series = self.model.series
        if series is None or self.model.count == 0 or not series.is_loaded(self.model.index):
            return None, None, ""
        info = series.info(self.model.index)
        stored = series.stored(self.model.index)
        scale = self.measurement_scale()
        if stored.ndim != 2:
            return None, scale, ""
        values = stored.astype(np.float64) * info.rescale_slope + info.rescale_intercept
        unit = "HU" if info.modality == "CT" and (info.rescale_type in ("", "HU")) else ""
        return values, scale, unit

    def calibrate_line(self, a: tuple[float, float], b: tuple[float, float],
                       length_mm: float | None = None) -> bool:
        """Calibrate the image on screen: the line a-b (image row, column) is ``length_mm`` long (asked through
        :attr:`ask_length` when None).  Measurements on the image relabel at once.  False when nothing was set
        (no image, cancelled, a line too short or a length that is not a positive number)."""
        series, key = self.model.series, self.current_frame_key()
        if series is None or key is None:
            return False
        try:
            aspect = series.info(self.model.index).pixel_spacing
        except MifasError:
            return False
        if length_mm is None:
            scale = self.measurement_scale()
            current = measure_distance(a, b, scale).value if scale is not None and scale.spacing else 0.0
            length_mm = self.ask_length(self, current)
            if length_mm is None:
                return False
        try:
            spacing = calibrate(a, b, float(length_mm), aspect)
        except (TypeError, ValueError):
            return False
        self.annotations.set_calibration(key[0], spacing)
        self._calibration_changed()
        return True

    def clear_calibration(self) -> None:
        """Forget the reader's calibration of the image on screen: back to the header's scale."""
        key = self.current_frame_key()
        if key is not None and self.annotations.calibration(key[0]) is not None:
            self.annotations.set_calibration(key[0], None)
            self._calibration_changed()

    def _calibration_changed(self) -> None:
        self.update()
        self.annotations_changed.emit()
        self.calibration_changed.emit()

    def measurements(self) -> list[tuple[Annotation, str]]:
        """The annotations of the slice on screen with their text."""
        key = self.current_frame_key()
        if key is None or not len(self.annotations):
            return []
        shown = self.annotations.on_frame(key)
        if not shown:
            return []  # no modality values to compute (a float copy of the slice) for a slice without any
        values, spacing, unit = self.modality_values()
        return [(a, measure_text(a, values, spacing, unit)) for _, a in shown]

    def add_measurement(self, kind: str, points: list[tuple[float, float]]) -> Annotation | None:
        key = self.current_frame_key()
        if key is None:
            return None
        annotation = Annotation(kind, key, tuple((float(r), float(c)) for r, c in points))
        self.annotations.add(annotation)
        self.update()
        self.measured.emit(annotation)
        self.annotations_changed.emit()
        return annotation

    def clear_measurements(self) -> None:
        key = self.current_frame_key()
        if key is not None:
            self.annotations.clear_frame(key)
            self.update()
            self.annotations_changed.emit()

    def export_png(self, path, *, identity: bool = True) -> bool:
        """The view as the user sees it (image, overlays, measurements) into a PNG; without `identity`, the
        overlay leaves out the patient's name and ID, the study date and the descriptions (the rest is painted as
        shown)."""
        self._identity_hidden = not identity
        try:
            return self.grab().save(str(path), "PNG")
        finally:
            self._identity_hidden = False

    def overlay_lines(self) -> dict[str, tuple[str, ...]]:
        """The overlay text by corner (for tests and accessibility)."""
        self._ensure_rendered()
        scale = self.measurement_scale() if self._rendered is not None else None
        bottom_right = tuple(t for t in (self._window_line, self._zoom_line(), scale.overlay_text if scale else "",
                                         self._cine.overlay_text()) if t)
        series = self._series_overlay.without_identity() if self._identity_hidden else self._series_overlay
        return {"top_left": series.top_left, "top_right": series.top_right,
                "bottom_left": self._slice_lines, "bottom_right": bottom_right}

    def view_transform(self) -> QTransform:
        """Image pixel coordinates (column, row) -> widget coordinates."""
        t = QTransform()
        if self._rendered is None:
            return t
        rows, cols = self._rendered.shape[:2]
        scale = self._display_scale()
        ax, ay = self._aspect
        m = self.model
        t.translate(self.width() / 2 + m.pan[0], self.height() / 2 + m.pan[1])
        t.scale(-1.0 if m.flip_h else 1.0, -1.0 if m.flip_v else 1.0)
        t.rotate(m.rotation)
        t.scale(scale * ax, scale * ay)
        t.translate(-cols / 2, -rows / 2)
        return t

    # -- model -> view -------------------------------------------------------------------------------------

    def _on_model_changed(self, event: Changed) -> None:
        if event.aspects & vm.PIXEL_ASPECTS:
            self._dirty = True
        if vm.CINE in event.aspects:
            if self.model.playing:
                self._cine.start()  # on the acquisition's clock, or evenly at the user's rate
            else:
                self._cine.stop()
        self.update()

    def _ensure_rendered(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        previous = self._message
        self._render_current()
        if self._message != previous:
            self.message_changed.emit(self._message)

    def _render_current(self) -> None:
        series, i = self.model.series, self.model.index
        self._rendered = None
        self._qimage = None
        self._window_line = ""
        self._slice_lines = self._position_lines(series, i, None)
        if series is None or len(series) == 0:
            self._message = NO_SERIES_TEXT
            return
        failure = self._loader.error(i)
        if failure is not None:
            self._message = describe_error(failure) if isinstance(failure, BaseException) else failure
            return
        if series.is_loaded(i):
            stored = None
        else:
            stored = self._loader.held(i)  # decoded on demand but already evicted from a full cache: keep showing it
            if stored is None:
                self._message = LOADING_TEXT
                self._loader.request(i)
                return
        try:
            if stored is None:
                stored = series.stored(i)  # a cache hit: is_loaded said so
            info = series.info(i)
            if stored.ndim == 3:
                out = render_color(stored, self.model.window, self.model.invert)
            else:
                out = series.pipeline(i).render(stored, self.model.window, self.model.invert)
        except Exception as exc:  # never let one bad slice take the viewer down
            if not isinstance(exc, MifasError):
                log.exception("rendering slice %d of a series failed", i)
            self._message = describe_error(exc)
            return
        out = np.ascontiguousarray(out, dtype=np.uint8)
        rows, cols = out.shape[:2]
        fmt = QImage.Format.Format_Grayscale8 if out.ndim == 2 else QImage.Format.Format_RGB888
        self._qimage = QImage(out.data, cols, rows, out.strides[0], fmt)  # shares out's buffer: no copy
        self._rendered = out
        self._aspect = _aspect(info.pixel_spacing)
        self._slice_lines = self._position_lines(series, i, info)
        self._window_line = self._describe_window(series, i, stored)
        self._message = ""

    def _position_lines(self, series: SeriesImages | None, i: int, info) -> tuple[str, ...]:
        if series is None or len(series) == 0:
            return ()
        lines = [f"Im: {i + 1}/{len(series)}"]
        location = getattr(info, "slice_location", None) if info is not None else None
        position = getattr(info, "image_position", None) if info is not None else series.frame_ref(i).position
        if location is not None:
            lines.append(f"Loc: {location:.2f} mm")
        elif position is not None:
            lines.append(position_text(position, getattr(info, "image_orientation", None) if info else None))
        return tuple(lines)

    def _describe_window(self, series: SeriesImages, i: int, stored: np.ndarray) -> str:
        if stored.ndim == 3 and self.model.window is None:
            return ""
        if self.model.window is None and series.pipeline(i).has_voi_lut:
            return "VOI LUT"
        window = self.model.effective_window()
        return f"W: {format_value(window.width)} L: {format_value(window.center)}" if window is not None else ""

    def _display_scale(self) -> float:
        """View pixels per image pixel along the finer axis: fit scale x zoom."""
        if self._rendered is None:
            return 1.0
        rows, cols = self._rendered.shape[:2]
        ax, ay = self._aspect
        w, h = cols * ax, rows * ay
        if self.model.rotation in (90, 270):
            w, h = h, w
        fit = min(self.width() / w, self.height() / h) if w > 0 and h > 0 else 1.0
        return fit * self.model.zoom

    def _zoom_line(self) -> str:
        if self._rendered is None:
            return ""
        return f"Zoom: {self._display_scale() * min(self._aspect) * 100:.0f}%"

    # -- decoding ------------------------------------------------------------------------------------------

    def _on_decoded(self, index: int) -> None:
        if index == self.model.index:
            self._dirty = True
            self.update()

    def _on_decode_idle(self) -> None:
        series = self.model.series
        if series is not None and self._message == LOADING_TEXT and not self._dirty:
            self._dirty = True  # the wanted slice changed while we decoded: render asks again
            self.update()

    def _on_preload_progress(self, done: int, total: int) -> None:
        self.load_progress.emit(done, total)
        series = self.model.series
        if series is not None and self._message == LOADING_TEXT and series.is_loaded(self.model.index):
            self._dirty = True
            self.update()

    # -- painting ------------------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        self._ensure_rendered()
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), Qt.GlobalColor.black)
            drawn = self._qimage is not None
            if drawn:
                transform = self.view_transform()
                p.setTransform(transform)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._display_scale() < 1.0)
                p.drawImage(0, 0, self._qimage)
                p.resetTransform()
            else:
                p.setPen(OVERLAY_TEXT_COLOR)
                p.setFont(self._font)
                p.drawText(QRectF(self.rect()).adjusted(20, 20, -20, -20),
                           int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self._message)
            if drawn:
                self._paint_marks(p)
            if self._overlays_visible:
                paint.corner_text(p, self._font, self._metrics, self.overlay_lines(), self.width(), self.height())
        finally:
            p.end()
        if drawn:
            self._painted_index = self.model.index
            self._cine.painted(self._painted_index)
            self.slice_painted.emit(self._painted_index)

    def _paint_marks(self, p: QPainter) -> None:
        """Reference lines, the measurements (and the one being drawn) with their words, the key image mark."""
        paint.reference_lines(p, self._reference_lines, self.image_to_widget)
        paint.crosshair(p, self._crosshair, self.image_to_widget)
        shapes = [(a.kind, a.points, text) for a, text in self.measurements()]
        if self.tool and self._drawing:
            partial = list(self._drawing) + ([self._hover] if self._hover is not None else [])
            if len(partial) >= 2 or self.tool == "probe":
                shapes.append((self.tool, tuple(partial), ""))
        paint.measurements(p, self._font, shapes, self.image_to_widget)
        key = self.current_frame_key()
        if key is not None and self.annotations.is_key_image(key):  # K (viewer.ui.reading_service)
            paint.key_mark(p, self._font, self._metrics, self.width())

    # -- input ---------------------------------------------------------------------------------------------

    def _measure_press(self, point: tuple[float, float]) -> None:
        if not self._drawing:
            self._drawing = [point]
            if self.tool == "probe":
                self._finish_measurement()
        elif self.tool == "angle" and len(self._drawing) == 2:
            self._drawing.append(point)
            self._finish_measurement()

    def _finish_measurement(self) -> None:
        assert self.tool is not None
        if self.tool == CALIBRATE_TOOL:
            drawn, self._drawing, self._hover = self._drawing, [], None
            if len(drawn) == 2:
                self.calibrate_line(drawn[0], drawn[1])
        elif len(self._drawing) == POINTS_NEEDED[self.tool]:
            self.add_measurement(self.tool, self._drawing)
        self._drawing, self._hover = [], None
        self.update()

    def _pick_crosshair(self, position: QPointF) -> None:
        point = self.widget_to_image(position)
        if point is not None:
            self.crosshair_picked.emit(point[0], point[1])

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if self.tool and button == Qt.MouseButton.LeftButton and not shift:
            point = self.widget_to_image(event.position())
            if point is not None:
                self._drag_mode = "measure"
                self._measure_press(point)
            event.accept()
            return
        if self.crosshair_mode and button == Qt.MouseButton.LeftButton and not shift:
            self._drag_mode = "crosshair"
            self._pick_crosshair(event.position())
            event.accept()
            return
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and shift):
            self._drag_mode = "pan"
        elif button == Qt.MouseButton.LeftButton:
            self._drag_mode = "window"
        elif button == Qt.MouseButton.RightButton:
            self._drag_mode = "zoom"
            pos = event.position()
            self._drag_anchor = (pos.x() - self.width() / 2, pos.y() - self.height() / 2)
        else:
            return super().mousePressEvent(event)
        self._drag_last = event.position()
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_mode is None:
            return super().mouseMoveEvent(event)
        pos = event.position()
        if self._drag_mode == "crosshair":
            self._pick_crosshair(pos)
            event.accept()
            return
        if self._drag_mode == "measure":
            self._hover = self.widget_to_image(pos)
            self.update()
            event.accept()
            return
        dx, dy = pos.x() - self._drag_last.x(), pos.y() - self._drag_last.y()
        self._drag_last = pos
        if self._drag_mode == "window":
            self.model.drag_window(dx, dy)
        elif self._drag_mode == "zoom":
            self.model.zoom_by(math.exp(-dy * ZOOM_DRAG_PER_PIXEL), anchor=self._drag_anchor)
        else:
            self.model.pan_by(dx, dy)
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag_mode == "measure" and self.tool and self._drawing:
            point = self.widget_to_image(event.position())
            if point is not None and len(self._drawing) == 1 and self.tool != "probe":
                self._drawing.append(point)  # the end of the drag: second point
                if self.tool != "angle":
                    self._finish_measurement()  # an angle waits for its third point (a click)
        self._drag_mode = None
        event.accept()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.model.fit()
        event.accept()

    def wheelEvent(self, event: QWheelEvent) -> None:
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_STEP)  # toward zero: keeps the sign of the remainder
        if steps:
            self._wheel_rest -= steps * WHEEL_STEP
            if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
                pos = event.position()
                self.model.zoom_by(1.25 ** steps, anchor=(pos.x() - self.width() / 2, pos.y() - self.height() / 2))
            else:
                self.model.scroll(-steps)  # wheel away from the user = previous slice
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        m = self.model
        page = max(1, m.count // 10)
        actions = {
            Qt.Key.Key_Up: lambda: m.scroll(-1),
            Qt.Key.Key_Down: lambda: m.scroll(1),
            Qt.Key.Key_PageUp: lambda: m.scroll(-page),
            Qt.Key.Key_PageDown: lambda: m.scroll(page),
            Qt.Key.Key_Home: lambda: m.set_index(0),
            Qt.Key.Key_End: lambda: m.set_index(m.count - 1),
            Qt.Key.Key_I: m.toggle_invert,
            Qt.Key.Key_R: m.reset,
            Qt.Key.Key_F: m.fit,
            Qt.Key.Key_Space: m.toggle_playing,
            Qt.Key.Key_Escape: lambda: self.set_tool(None),
            Qt.Key.Key_Delete: self.clear_measurements,
            Qt.Key.Key_K: self.key_image_requested.emit,
        }
        if key in PRESET_KEYS:
            m.apply_preset(PRESET_KEYS[key])
        elif key in actions:
            actions[key]()
        else:
            return super().keyPressEvent(event)
        event.accept()


def _timing(series: SeriesImages):
    """The series' own frame timing (viewer.dicom.cine), or None (a header that cannot be read: the user's rate)."""
    try:
        return series_timing(series.header(0), len(series))
    except MifasError:
        return None


def _ask_length(parent: QWidget, current: float) -> float | None:
    """The known length of the calibration line, in mm, from a small dialog; None when cancelled."""
    value, ok = QInputDialog.getDouble(parent, "Calibrate", "Known length of the line (mm):",
                                       round(current, 2) if current > 0 else 10.0, 0.01, 100_000.0, 2)
    return value if ok else None


def _aspect(pixel_spacing) -> tuple[float, float]:
    """(x, y) scale factors for square physical pixels: column spacing across, row spacing down, normalised so
    the finer axis is 1.  Missing or absurd spacing draws pixels square."""
    try:
        row_mm, col_mm = (float(v) for v in pixel_spacing)
    except (TypeError, ValueError):
        return (1.0, 1.0)
    if not (row_mm > 0 and col_mm > 0 and math.isfinite(row_mm) and math.isfinite(col_mm)):
        return (1.0, 1.0)
    if max(row_mm, col_mm) / min(row_mm, col_mm) > ASPECT_MAX:
        return (1.0, 1.0)
    finer = min(row_mm, col_mm)
    return (col_mm / finer, row_mm / finer)


__all__ = ["LOADING_TEXT", "NO_SERIES_TEXT", "PRESETS", "Viewport", "Window", "series_overlay"]
