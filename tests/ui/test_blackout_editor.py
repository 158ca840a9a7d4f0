"""The blackout editor (pytest-qt, real mouse events on a real series' first image): a drag from image point A to
image point B gives the Rect of the pixels from A to B in image coordinates, whatever the zoom; a right click on a
rectangle removes it; the image shown is the series' first frame as the export windows it."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from viewer.share.deidentify import Rect
from viewer.share.pictures import series_frames
from viewer.ui.blackout_editor import BlackoutEditor

pytestmark = [pytest.mark.gui]


def point(canvas, col: float, row: float) -> QPoint:
    q = canvas.image_to_widget(col, row)
    return QPoint(round(q.x()), round(q.y()))


def drag(qtbot, canvas, a: QPoint, b: QPoint) -> None:
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(canvas, b)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b)


@pytest.fixture
def editor(qtbot, ct_series):
    dialog = BlackoutEditor(ct_series.library, ct_series.series_uid, "Axial")
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.loaded, timeout=10000):
        dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.canvas.image_size == (ct_series.cols, ct_series.rows)
    return dialog


@pytest.mark.parametrize("zoom", [3.0, 4.5])
def test_a_drag_gives_the_rect_in_image_pixels(qtbot, editor, zoom) -> None:
    canvas = editor.canvas
    canvas.set_zoom(zoom)
    # from the middle of pixel (col 10, row 5) to the middle of pixel (col 30, row 20)
    drag(qtbot, canvas, point(canvas, 10.5, 5.5), point(canvas, 30.5, 20.5))
    assert editor.rects() == [Rect(10, 5, 21, 16)]
    # dragged the other way (bottom right to top left), and past the image's edge: clipped to the image
    drag(qtbot, canvas, point(canvas, 70.0, 70.0), point(canvas, 50.5, 40.5))
    assert editor.rects() == [Rect(10, 5, 21, 16), Rect(50, 40, 14, 24)]
    # a right click inside the first one removes it, and only it
    qtbot.mouseClick(canvas, Qt.MouseButton.RightButton, pos=point(canvas, 20.5, 10.5))
    assert editor.rects() == [Rect(50, 40, 14, 24)]


def test_the_image_shown_is_the_first_frame_as_exported(qtbot, editor, ct_series) -> None:
    canvas = editor.canvas
    canvas.set_zoom(3.0)
    frame = next(iter(series_frames(ct_series.library, ct_series.series_uid)))
    shot = canvas.grab().toImage()
    for row, col in ((2, 60), (40, 5), (32, 32), (60, 2)):
        q = point(canvas, col + 0.5, row + 0.5)
        assert shot.pixelColor(q).red() == int(frame[row, col]), (row, col)
    assert np.ptp(frame) > 0  # the check above saw different greys, not one colour


def test_a_click_is_not_a_rectangle(qtbot, editor) -> None:
    canvas = editor.canvas
    canvas.set_zoom(2.0)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=point(canvas, 20.5, 20.5))
    assert editor.rects() == []
