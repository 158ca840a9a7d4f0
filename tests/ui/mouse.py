"""Real mouse input on a viewport, at image positions: the point of the widget over an image pixel, and a left-button
drag (press, move, release) as the measurement and calibration tools take it."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt

from viewer.ui.viewport import Viewport


def at(view: Viewport, row: float, col: float) -> QPoint:
    """The widget point over image (row, col), rounded to whole widget pixels as a mouse gives."""
    q = view.image_to_widget(row, col)
    return QPoint(round(q.x()), round(q.y()))


def drag(qtbot, view: Viewport, a: QPoint, b: QPoint) -> None:
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(view, b)
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=b)
