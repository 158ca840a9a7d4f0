"""The blackout editor: the first image of a series that may carry burned-in identity, on which the user drags
rectangles to black out before a de-identified export (PS3.15 E.3.1's "clean pixel data" done by hand).

:class:`BlackoutCanvas` draws the image at a zoom (fit to the widget by default) and turns a left-button drag into a
:class:`viewer.share.deidentify.Rect` in image pixel coordinates (column, row): the pixels under the press and the
release points and all between, clipped to the image.  A right click on a rectangle removes it.
:class:`BlackoutEditor` is the dialog around it: it decodes the first frame in a worker (windowed as the export
windows it, :func:`viewer.share.pictures.series_frames`), and :meth:`BlackoutEditor.rects` is the answer.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from viewer.ui.workers import TaskRunner, describe_error

DRAG_MIN_PX = 3  # a press and release closer than this (widget pixels) is a click, not a rectangle
RECT_COLOR = QColor(255, 60, 60)


def _rect_type():
    from viewer.share.deidentify import Rect

    return Rect


class BlackoutCanvas(QWidget):
    """An image with rectangles; see the module docstring.  ``zoom`` None fits the image to the widget."""

    rects_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 320)
        self.setMouseTracking(False)
        self._image: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._zoom: float | None = None
        self._rects: list = []
        self._press: QPointF | None = None
        self._now: QPointF | None = None

    # -- image and mapping ---------------------------------------------------------------------------------

    def set_image(self, frame: np.ndarray) -> None:
        """An 8-bit frame (rows x cols grey, or rows x cols x 3 colour)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        self._image = frame
        rows, cols = frame.shape[:2]
        if frame.ndim == 3:
            self._qimage = QImage(frame.data, cols, rows, cols * 3, QImage.Format.Format_RGB888)
        else:
            self._qimage = QImage(frame.data, cols, rows, cols, QImage.Format.Format_Grayscale8)
        self.update()

    @property
    def image_size(self) -> tuple[int, int]:
        """(columns, rows); (0, 0) before an image is set."""
        if self._image is None:
            return 0, 0
        return int(self._image.shape[1]), int(self._image.shape[0])

    def set_zoom(self, zoom: float | None) -> None:
        """Widget pixels per image pixel; None fits the image to the widget."""
        self._zoom = zoom
        self.update()

    def scale(self) -> float:
        cols, rows = self.image_size
        if not cols or not rows:
            return 1.0
        if self._zoom is not None:
            return float(self._zoom)
        return min(self.width() / cols, self.height() / rows)

    def _origin(self) -> QPointF:
        cols, rows = self.image_size
        s = self.scale()
        return QPointF((self.width() - cols * s) / 2, (self.height() - rows * s) / 2)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        """Image point (column x, row y; pixel k spans k..k+1) -> widget point."""
        o, s = self._origin(), self.scale()
        return QPointF(o.x() + x * s, o.y() + y * s)

    def widget_to_image(self, point: QPointF) -> tuple[float, float]:
        o, s = self._origin(), self.scale()
        return (point.x() - o.x()) / s, (point.y() - o.y()) / s

    def rect_for(self, a: QPointF, b: QPointF):
        """The Rect of the image pixels under `a`, under `b` and between, clipped to the image; None when it
        misses the image."""
        cols, rows = self.image_size
        (ax, ay), (bx, by) = self.widget_to_image(a), self.widget_to_image(b)
        x0 = max(0, math.floor(min(ax, bx)))
        y0 = max(0, math.floor(min(ay, by)))
        x1 = min(cols - 1, math.floor(max(ax, bx)))
        y1 = min(rows - 1, math.floor(max(ay, by)))
        if x1 < x0 or y1 < y0:
            return None
        return _rect_type()(x0, y0, x1 - x0 + 1, y1 - y0 + 1)

    # -- rectangles ----------------------------------------------------------------------------------------

    def rects(self) -> list:
        return list(self._rects)

    def set_rects(self, rects) -> None:
        self._rects = list(rects)
        self.update()
        self.rects_changed.emit()

    def remove_at(self, point: QPointF) -> bool:
        """Remove the last-drawn rectangle under widget `point`; True when one was."""
        x, y = self.widget_to_image(point)
        for k in range(len(self._rects) - 1, -1, -1):
            r = self._rects[k]
            if r.x <= x < r.x + r.width and r.y <= y < r.y + r.height:
                del self._rects[k]
                self.update()
                self.rects_changed.emit()
                return True
        return False

    # -- events --------------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image is None:
            return
        if event.button() == Qt.MouseButton.RightButton:
            self.remove_at(event.position())
        elif event.button() == Qt.MouseButton.LeftButton:
            self._press = self._now = event.position()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is not None:
            self._now = event.position()
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._press is None or event.button() != Qt.MouseButton.LeftButton:
            return
        a, b = self._press, event.position()
        self._press = self._now = None
        if (b - a).manhattanLength() >= DRAG_MIN_PX:
            rect = self.rect_for(a, b)
            if rect is not None:
                self._rects.append(rect)
                self.rects_changed.emit()
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), QColor(0, 0, 0))
            if self._qimage is None:
                return
            cols, rows = self.image_size
            p.drawImage(QRectF(self.image_to_widget(0, 0), self.image_to_widget(cols, rows)), self._qimage)
            p.setPen(QPen(RECT_COLOR, 2.0))
            p.setBrush(QColor(0, 0, 0, 200))  # what will be black, with a hint of what is under it
            for r in self._rects:
                p.drawRect(QRectF(self.image_to_widget(r.x, r.y), self.image_to_widget(r.x + r.width,
                                                                                       r.y + r.height)))
            if self._press is not None and self._now is not None:
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRect(QRectF(self._press, self._now).normalized())
        finally:
            p.end()


class BlackoutEditor(QDialog):
    """Drag rectangles over the series' first image; OK keeps them (:meth:`rects`)."""

    loaded = Signal()  # the first image is shown (or could not be read: the label says why)

    def __init__(self, library, series_uid: str, title: str, rects=(), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Black out regions — {title}")
        self.canvas = BlackoutCanvas(self)
        self.canvas.set_rects(rects)
        self.hint = QLabel("Loading the first image…", self)
        self.hint.setWordWrap(True)
        self.clear_button = QPushButton("Remove all", self)
        self.clear_button.clicked.connect(lambda: self.canvas.set_rects(()))
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.clear_button)
        row.addStretch(1)
        row.addWidget(self.buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(self.hint)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(row)
        self.resize(640, 700)
        self._runner = TaskRunner(self, max_threads=1, name="blackout image")
        library_ref = library

        def first_frame(progress, cancel):
            from viewer.share.pictures import series_frames

            return next(iter(series_frames(library_ref, series_uid)))

        def shown(frame) -> None:
            self.canvas.set_image(frame)
            self.hint.setText("Drag over the burned-in text to black it out on every image of the series; right-click "
                              "a rectangle to remove it.")
            self.loaded.emit()

        def failed(exc: BaseException) -> None:
            self.hint.setText(f"The image could not be shown: {describe_error(exc)}")
            self.loaded.emit()

        self._runner.submit(first_frame, on_done=shown, on_error=failed)

    def rects(self) -> list:
        return self.canvas.rects()

    def done(self, result: int) -> None:
        self._runner.cancel_all()
        super().done(result)
