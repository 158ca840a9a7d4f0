"""What a 2D viewport draws over its image, and the words of its corner overlay.

Pure drawing: each function takes a QPainter, the data to draw and, for image points, the image (row, col) ->
widget mapping of the viewport (:meth:`viewer.ui.viewport.Viewport.image_to_widget`); none keeps state.  The
text helpers (:func:`series_overlay`, :func:`position_text`, :func:`format_value`) make the overlay's lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen

from viewer.dicom.series import slice_normal
from viewer.ui.formatting import format_date, format_name

OVERLAY_TEXT_COLOR = QColor(230, 230, 230)
OVERLAY_SHADOW_COLOR = QColor(0, 0, 0)
OVERLAY_MARGIN_PX = 6
MEASURE_COLOR = QColor(255, 220, 0)
REFERENCE_COLOR = QColor(0, 200, 255)  # reference lines: where another view's slice cuts this one
CROSSHAIR_COLOR = QColor(60, 255, 60)  # the crosshair: the patient point picked in a linked viewport
CROSSHAIR_ARM_PX = 12  # each arm from the centre gap to its end
CROSSHAIR_GAP_PX = 3  # the point itself stays visible
KEY_MARK_TEXT = "KEY"  # drawn on a key image
KEY_MARK_COLOR = QColor(255, 120, 0)
PROBE_ARM_PX = 6

ToWidget = Callable[[float, float], QPointF]
Shape = tuple[str, Sequence[tuple[float, float]], str]  # (kind, image points, words)


# -- overlay text ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesOverlay:
    """Series-level overlay text (top corners): patient and study, read once from the first header."""

    top_left: tuple[str, ...] = ()
    top_right: tuple[str, ...] = ()
    top_right_without_identity: tuple[str, ...] = ()  # the series number only (a view exported anonymously)

    def without_identity(self) -> SeriesOverlay:
        """The overlay of a view exported without identity: no patient name, ID or study date, and no study or
        series description (free text, which the Basic Profile removes too); the series number stays."""
        return SeriesOverlay((), self.top_right_without_identity, self.top_right_without_identity)


def series_overlay(header) -> SeriesOverlay:
    """Overlay lines from a header: patient name and ID top left; study date, description, series top right."""

    def get(keyword: str) -> str:
        try:
            return str(header.get(keyword, "") or "").strip()
        except Exception:  # a malformed value must not stop the overlay
            return ""

    name = format_name(get("PatientName"))
    left = tuple(t for t in (name, f"ID: {get('PatientID')}" if get("PatientID") else "") if t)
    series = " ".join(t for t in (f"Se: {get('SeriesNumber')}" if get("SeriesNumber") else "",
                                  get("SeriesDescription")) if t)
    right = tuple(t for t in (format_date(get("StudyDate")), get("StudyDescription"), series) if t)
    number = f"Se: {get('SeriesNumber')}" if get("SeriesNumber") else ""
    return SeriesOverlay(left, right, (number,) if number else ())


def format_value(value: float) -> str:
    """A window value as the overlay shows it: whole numbers from 100 up, else four significant digits."""
    return f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.4g}"


def position_text(position, orientation) -> str:
    """The slice position along the patient axis nearest its normal, with the side it lies on (LPS: x+ = L,
    y+ = P, z+ = S): "Pos: S 20.00 mm" for an axial slice, "Pos: P 4.00 mm" for a coronal one."""
    axis = 2
    if orientation is not None and len(orientation) == 6:
        normal = slice_normal(orientation)
        if np.all(np.isfinite(normal)) and np.any(normal):
            axis = int(np.argmax(np.abs(normal)))
    value = float(position[axis])
    side = (("R", "L"), ("A", "P"), ("I", "S"))[axis][value >= 0]
    return f"Pos: {side} {abs(value):.2f} mm"


# -- drawing ---------------------------------------------------------------------------------------------------


def reference_lines(p: QPainter, lines: Iterable[tuple[tuple[float, float], tuple[float, float]]],
                    to_widget: ToWidget) -> None:
    p.setPen(QPen(REFERENCE_COLOR, 1.0))
    for (r0, c0), (r1, c1) in lines:
        p.drawLine(to_widget(r0, c0), to_widget(r1, c1))


def crosshair(p: QPainter, point: tuple[float, float] | None, to_widget: ToWidget) -> None:
    """A small cross (four arms around a gap) at image (row, col); nothing when `point` is None."""
    if point is None:
        return
    q = to_widget(*point)
    p.setPen(QPen(CROSSHAIR_COLOR, 1.0))
    a, g = CROSSHAIR_ARM_PX, CROSSHAIR_GAP_PX
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        p.drawLine(QPointF(q.x() + dx * g, q.y() + dy * g), QPointF(q.x() + dx * a, q.y() + dy * a))


def measurements(p: QPainter, font: QFont, shapes: Iterable[Shape], to_widget: ToWidget) -> None:
    """Each measurement's outline and its words beside its rightmost point (a shadow under the text).  Kinds:
    distance and calibrate (a segment), angle (arm - vertex - arm), rectangle, ellipse, probe (a cross)."""
    p.setFont(font)
    for kind, points, text in shapes:
        widget = [to_widget(r, c) for r, c in points]
        p.setPen(QPen(MEASURE_COLOR, 1.5))
        p.setBrush(Qt.BrushStyle.NoBrush)
        if kind in ("distance", "angle", "calibrate"):
            p.drawPolyline(widget if kind != "angle" else [widget[1], widget[0], *widget[2:]])
        elif kind == "rectangle" and len(widget) >= 2:
            p.drawRect(QRectF(widget[0], widget[1]).normalized())
        elif kind == "ellipse" and len(widget) >= 2:
            p.drawEllipse(QRectF(widget[0], widget[1]).normalized())
        elif kind == "probe":
            q = widget[0]
            p.drawLine(QPointF(q.x() - PROBE_ARM_PX, q.y()), QPointF(q.x() + PROBE_ARM_PX, q.y()))
            p.drawLine(QPointF(q.x(), q.y() - PROBE_ARM_PX), QPointF(q.x(), q.y() + PROBE_ARM_PX))
        if text:
            anchor = max(widget, key=lambda q: q.x())
            p.setPen(OVERLAY_SHADOW_COLOR)
            p.drawText(QPointF(anchor.x() + 7, anchor.y() + 1), text)
            p.setPen(MEASURE_COLOR)
            p.drawText(QPointF(anchor.x() + 6, anchor.y()), text)


def key_mark(p: QPainter, font: QFont, metrics: QFontMetrics, width: int) -> None:
    """"KEY" in a box at the top centre: the frame on screen is a key image."""
    p.setFont(font)
    text_w = metrics.horizontalAdvance(KEY_MARK_TEXT)
    box = QRectF(width / 2 - text_w / 2 - 6, OVERLAY_MARGIN_PX, text_w + 12, metrics.height() + 6)
    p.setPen(QPen(KEY_MARK_COLOR, 2.0))
    p.setBrush(QColor(0, 0, 0, 160))
    p.drawRect(box)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawText(box, int(Qt.AlignmentFlag.AlignCenter), KEY_MARK_TEXT)


def corner_text(p: QPainter, font: QFont, metrics: QFontMetrics, lines: Mapping[str, Sequence[str]], width: int,
                height: int) -> None:
    """The overlay's lines in their corners ("top_left", "top_right", "bottom_left", "bottom_right")."""
    p.setFont(font)
    step = metrics.lineSpacing()
    ascent = metrics.ascent()
    m = OVERLAY_MARGIN_PX
    for corner, texts in lines.items():
        right = corner.endswith("right")
        top = corner.startswith("top")
        y0 = m + ascent if top else height - m - step * len(texts) + ascent
        for k, text in enumerate(texts):
            x = width - m - metrics.horizontalAdvance(text) if right else m
            y = y0 + k * step
            p.setPen(OVERLAY_SHADOW_COLOR)
            p.drawText(x + 1, y + 1, text)
            p.setPen(OVERLAY_TEXT_COLOR)
            p.drawText(x, y, text)
