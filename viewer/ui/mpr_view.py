"""MPR in the GUI: three linked plane views (axial, coronal, sagittal) of one volume with a shared crosshair.

Each :class:`PlaneView` paints one :class:`~viewer.dicom.mpr.PlaneImage` windowed to 8 bits, scaled to fit with
its physical aspect (pixel spacing per axis, so a sphere is round on screen whatever the voxel shape), and the
crosshair as two lines in the other planes' colours.  A left click or drag moves the crosshair (the other two
planes follow), the wheel scrolls through the plane, and a right drag changes the window like the 2D viewport.
Ctrl + left drag turns the other two planes about this plane's viewing direction (oblique MPR): their lines
turn with the mouse around the crosshair.  :class:`MprPanel` owns the :class:`~viewer.dicom.mpr.Mpr` model and
keeps the three views in step; slab thickness and mode apply to all three.  While a mouse button is down,
resampled (oblique) planes are computed coarse (``INTERACTIVE_PIXELS_MAX`` a side) so that the GUI keeps up.
Otherwise a resampled plane that is not at hand is shown coarse at once and computed in full in a worker
thread (one at a time, only the latest wanted for each plane); it replaces the coarse one when it is ready and
still wanted, so that wheel steps and clicks never wait for a full resampling.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QWheelEvent
from PySide6.QtWidgets import QHBoxLayout, QSizePolicy, QWidget

from viewer.dicom.mpr import (
    INTERACTIVE_PIXELS_MAX,
    OBLIQUE_PIXELS_MAX,
    PLANES,
    Mpr,
    PlaneImage,
    ResampleRequest,
)
from viewer.dicom.pixels import Window
from viewer.dicom.volume import Volume
from viewer.ui.workers import TaskRunner

PLANE_COLORS = {"axial": QColor(255, 80, 80), "coronal": QColor(80, 220, 80), "sagittal": QColor(90, 150, 255)}
WHEEL_STEP = 120
WINDOW_DRAG_PER_PIXEL = 1.0 / 256.0


def window_to_uint8(values: np.ndarray, window: Window) -> np.ndarray:
    """Linear window (PS3.3 C.11.2.1.2, the plain form) of modality values to 0..255."""
    lo = window.center - window.width / 2
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / max(window.width, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


class PlaneView(QWidget):
    """One plane.  ``clicked_at(plane, patient_point)`` when the user points somewhere; ``scroll_requested(plane,
    steps)`` for the wheel; ``window_dragged(dx, dy)`` for a right drag."""

    clicked_at = Signal(str, object)
    scroll_requested = Signal(str, int)
    window_dragged = Signal(float, float)
    rotate_requested = Signal(str, float)  # (this plane, degrees clockwise on this screen)
    drag_started = Signal()
    drag_finished = Signal()

    def __init__(self, plane: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plane_name = plane
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMouseTracking(False)
        self.image: PlaneImage | None = None
        self._pixels: np.ndarray | None = None  # kept alive: the QImage shares its buffer
        self._qimage: QImage | None = None
        self._drag: str | None = None
        self._last = QPointF()
        self._wheel_rest = 0
        self._angle = 0.0
        self.cuts: dict[str, np.ndarray] = {}  # other plane -> direction (patient) of its line in this plane

    def set_plane(self, image: PlaneImage, window: Window, cuts: dict[str, np.ndarray] | None = None) -> None:
        """Show `image`; `cuts` gives, for each other plane, the direction of the line where it cuts this one."""
        self.image = image
        if cuts is not None:
            self.cuts = cuts
        self._pixels = np.ascontiguousarray(window_to_uint8(image.data, window))
        rows, cols = self._pixels.shape
        self._qimage = QImage(self._pixels.data, cols, rows, cols, QImage.Format.Format_Grayscale8)
        self.update()

    # -- geometry: plane pixel <-> widget --------------------------------------------------------------------

    def image_rect(self) -> QRectF:
        """Where the plane is drawn: its physical size (mm) fitted into the widget, centred."""
        if self.image is None:
            return QRectF()
        rows, cols = self.image.data.shape
        height_mm, width_mm = rows * self.image.spacing[0], cols * self.image.spacing[1]
        scale = min(self.width() / width_mm, self.height() / height_mm)
        w, h = width_mm * scale, height_mm * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def plane_to_widget(self, row: float, col: float) -> QPointF:
        """The widget point of the centre of plane pixel (row, col)."""
        assert self.image is not None
        rect = self.image_rect()
        rows, cols = self.image.data.shape
        return QPointF(rect.left() + (col + 0.5) * rect.width() / cols, rect.top() + (row + 0.5) * rect.height() / rows)

    def widget_to_plane(self, point: QPointF) -> tuple[float, float]:
        assert self.image is not None
        rect = self.image_rect()
        rows, cols = self.image.data.shape
        return ((point.y() - rect.top()) * rows / rect.height() - 0.5, (point.x() - rect.left()) * cols / rect.width() - 0.5)

    # -- painting -------------------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), Qt.GlobalColor.black)
            if self._qimage is None or self.image is None:
                return
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(self.image_rect(), self._qimage)
            p.save()
            p.setClipRect(self.image_rect())
            for name, (a, b) in self.cut_lines().items():
                p.setPen(QPen(PLANE_COLORS[name], 1))
                p.drawLine(a, b)
            p.restore()
            p.setPen(QPen(PLANE_COLORS[self.plane_name], 2))
            p.drawRect(self.rect().adjusted(1, 1, -1, -1))
        finally:
            p.end()

    def cut_lines(self) -> dict[str, tuple[QPointF, QPointF]]:
        """For each other plane, two widget points of its line through the crosshair, beyond the image."""
        if self.image is None:
            return {}
        image = self.image
        row, col = image.crosshair
        reach = 2.0 * max(image.data.shape)
        out = {}
        for name, direction in self.cuts.items():
            d_row = float(np.dot(direction, image.down)) / image.spacing[0]
            d_col = float(np.dot(direction, image.right)) / image.spacing[1]
            norm = math.hypot(d_row, d_col)
            if norm < 1e-9:
                continue  # parallel to this plane: no line
            d_row, d_col = d_row / norm * reach, d_col / norm * reach
            out[name] = (self.plane_to_widget(row - d_row, col - d_col), self.plane_to_widget(row + d_row, col + d_col))
        return out

    # -- input ----------------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self.image is None:
            return
        ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
        if event.button() == Qt.MouseButton.LeftButton and ctrl:
            self._drag = "rotate"
            self._angle = self._angle_at(event.position())
        elif event.button() == Qt.MouseButton.LeftButton:
            self._drag = "point"
            self.drag_started.emit()
            self._point(event.position())
            return
        elif event.button() == Qt.MouseButton.RightButton:
            self._drag = "window"
            self._last = event.position()
        else:
            return
        self.drag_started.emit()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag == "point":
            self._point(event.position())
        elif self._drag == "rotate":
            angle = self._angle_at(event.position())
            delta = (angle - self._angle + 180.0) % 360.0 - 180.0
            self._angle = angle
            if delta:
                self.rotate_requested.emit(self.plane_name, delta)
        elif self._drag == "window":
            delta = event.position() - self._last
            self._last = event.position()
            self.window_dragged.emit(delta.x(), delta.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self._drag = None
            self.drag_finished.emit()

    def _angle_at(self, position: QPointF) -> float:
        """The angle (degrees, clockwise on screen) of `position` around the crosshair."""
        assert self.image is not None
        centre = self.plane_to_widget(*self.image.crosshair)
        return math.degrees(math.atan2(position.y() - centre.y(), position.x() - centre.x()))

    def _point(self, position: QPointF) -> None:
        assert self.image is not None
        row, col = self.widget_to_plane(position)
        self.clicked_at.emit(self.plane_name, self.image.to_patient(row, col))

    def wheelEvent(self, event: QWheelEvent) -> None:
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / WHEEL_STEP)
        if steps:
            self._wheel_rest -= steps * WHEEL_STEP
            self.scroll_requested.emit(self.plane_name, -steps)


class MprPanel(QWidget):
    """Three linked plane views of one volume (see the module docstring)."""

    crosshair_changed = Signal(object)  # patient point, after every move
    plane_ready = Signal(str)  # a plane resampled in the background is now shown in full

    def __init__(self, volume: Volume, parent: QWidget | None = None, *, window: Window | None = None,
                 background: bool = True, interactive_pixels: int = INTERACTIVE_PIXELS_MAX) -> None:
        """`background`: compute full resampled planes in a worker (False: on the spot, as a script would);
        `interactive_pixels`: the side of a coarse plane."""
        super().__init__(parent)
        self._coarse_pixels = interactive_pixels
        self.mpr = Mpr(volume)
        self._background = background
        self._runner = TaskRunner(self, max_threads=1, name="mpr resampling")
        self._wanted: dict[str, ResampleRequest] = {}  # the latest full plane wanted, per plane
        self._running = False
        self.views = {name: PlaneView(name, self) for name in PLANES}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        for view in self.views.values():
            layout.addWidget(view)
            view.clicked_at.connect(self._clicked)
            view.scroll_requested.connect(self._scroll)
            view.window_dragged.connect(self._drag_window)
            view.rotate_requested.connect(self.rotate)
            view.drag_started.connect(self._drag_started)
            view.drag_finished.connect(self._drag_finished)
        self._interactive = False  # a mouse button is down: resampled planes are computed coarse
        self.window = window or self._default_window(volume)
        self.slab_mm, self.slab_mode = 0.0, "mip"
        self.refresh()

    @staticmethod
    def _default_window(volume: Volume) -> Window:
        lo, hi = np.percentile(volume.data[:: max(1, volume.data.shape[0] // 16)], [1, 99])
        return Window(float(lo + hi) / 2, float(max(hi - lo, 1.0)))

    def refresh(self) -> None:
        normals = {name: self.mpr.normal(name) for name in PLANES}
        full = {"slab_mm": self.slab_mm, "mode": self.slab_mode, "pixels_max": OBLIQUE_PIXELS_MAX}
        coarse = dict(full, pixels_max=self._coarse_pixels)
        for name, view in self.views.items():
            cuts = {other: np.cross(normals[other], normals[name]) for other in PLANES if other != name}
            request = self.mpr.resample_request(name, **full)
            later = request is not None and (self._interactive or (self._background and not self.mpr.has(request)))
            if later and not self._interactive:
                self._wanted[name] = request
            else:
                self._wanted.pop(name, None)
            view.set_plane(self.mpr.plane(name, **(coarse if later else full)), self.window, cuts)
        self._next()

    @property
    def idle(self) -> bool:
        """No full plane is being or waiting to be resampled."""
        return not self._running and not self._wanted

    def _next(self) -> None:
        if self._running or not self._wanted:
            return
        name = next(iter(self._wanted))
        request = self._wanted.pop(name)
        self._running = True
        mpr = self.mpr

        def done(image: PlaneImage) -> None:
            mpr.adopt(request, image)
            current = mpr.resample_request(name, slab_mm=self.slab_mm, mode=self.slab_mode)
            if current is not None and current.key == request.key and not self._interactive:
                self.views[name].set_plane(mpr.plane(name, slab_mm=self.slab_mm, mode=self.slab_mode), self.window)
                self.plane_ready.emit(name)

        def finished() -> None:
            self._running = False
            self._next()

        self._runner.submit(lambda progress, cancel: mpr.resample(request), on_done=done, on_finished=finished,
                            name="mpr plane")

    def shutdown(self) -> None:
        self._wanted.clear()
        self._runner.shutdown()

    def rotate(self, plane: str, degrees: float) -> None:
        """Turn the other two planes about `plane`'s viewing direction (oblique MPR)."""
        self.mpr.rotate(plane, degrees)
        self.refresh()

    def reset_rotation(self) -> None:
        self.mpr.reset_rotation()
        self.refresh()

    def _drag_started(self) -> None:
        self._interactive = True

    def _drag_finished(self) -> None:
        self._interactive = False
        if self.mpr.rotated or not self.mpr.aligned:
            self.refresh()  # the full-resolution planes

    def set_crosshair(self, point) -> None:
        self.mpr.set_crosshair(point)
        self.refresh()
        self.crosshair_changed.emit(self.mpr.crosshair)

    def set_window(self, window: Window) -> None:
        self.window = window
        self.refresh()

    def set_slab(self, slab_mm: float, mode: str = "mip") -> None:
        self.slab_mm, self.slab_mode = float(slab_mm), mode
        self.refresh()

    def _clicked(self, plane: str, point) -> None:
        self.set_crosshair(point)

    def _scroll(self, plane: str, steps: int) -> None:
        self.mpr.scroll(plane, steps)
        self.refresh()
        self.crosshair_changed.emit(self.mpr.crosshair)

    def _drag_window(self, dx: float, dy: float) -> None:
        step = max(self.window.width, 1e-3) * WINDOW_DRAG_PER_PIXEL
        self.set_window(Window(self.window.center + dy * step, max(self.window.width + dx * step, 1e-3)))
