"""Measurements in the 2D viewport (pytest-qt): drawn with the mouse on a CT of known spacing and known HU, the
distance is in true mm, ROI statistics equal numpy's on the same pixels in HU, the probe reads HU, the drawing
shows on screen in real pixels, measurements stay on their slice, and the view exports to a PNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from tests.ui.conftest import RESCALE_INTERCEPT, ct_pixels
from tests.ui.mouse import at, drag
from viewer.dicom.measure import rectangle_mask
from viewer.dicom.series import SeriesImages, order_frames
from viewer.ui.viewport import MEASURE_COLOR, Viewport

pytestmark = pytest.mark.gui


@pytest.fixture
def viewport(qtbot, ct_series):
    view = Viewport()
    qtbot.addWidget(view)
    view.resize(640, 640)
    view.show()
    qtbot.waitExposed(view)
    series = SeriesImages(order_frames(ct_series.library.instances(ct_series.series_uid)))
    view.set_series(series)
    qtbot.waitUntil(lambda: view.displayed_array() is not None, timeout=3000)
    yield view
    view.shutdown()




def test_distance_in_mm(qtbot, viewport: Viewport) -> None:
    viewport.set_tool("distance")
    with qtbot.waitSignal(viewport.measured) as got:
        drag(qtbot, viewport, at(viewport, 10, 8), at(viewport, 40, 48))
    annotation = got.args[0]
    spacing = viewport.model.series.info(0).pixel_spacing  # (0.7, 0.7) in the fixture
    (r0, c0), (r1, c1) = annotation.points
    assert (r0, c0) == pytest.approx((10, 8), abs=0.1) and (r1, c1) == pytest.approx((40, 48), abs=0.1)
    (_, text), = viewport.measurements()
    assert text == f"{math.hypot(30 * spacing[0], 40 * spacing[1]):.1f} mm"  # 35.0 mm


def test_roi_statistics_are_numpy_on_the_same_pixels_in_hu(qtbot, viewport: Viewport) -> None:
    viewport.set_tool("rectangle")
    with qtbot.waitSignal(viewport.measured) as got:
        drag(qtbot, viewport, at(viewport, 12, 5), at(viewport, 30, 41))
    annotation = got.args[0]
    hu = ct_pixels(0, 64, 64).astype(np.float64) + RESCALE_INTERCEPT  # the fixture's slice 0, in HU
    mask = rectangle_mask(hu.shape, *annotation.points)
    picked = hu[mask]
    (_, text), = viewport.measurements()
    assert text.startswith(f"mean {picked.mean():.1f} HU, SD {picked.std():.1f}, min {picked.min():.6g}, "
                           f"max {picked.max():.6g}")
    assert f"{picked.size * 0.49:.1f} mm²" in text


def test_probe_reads_hu(qtbot, viewport: Viewport) -> None:
    viewport.set_tool("probe")
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=at(viewport, 20, 33))
    (_, text), = viewport.measurements()
    assert text == f"{ct_pixels(0, 64, 64)[20, 33] + RESCALE_INTERCEPT:.6g} HU"


def test_an_angle_is_a_drag_and_a_click(qtbot, viewport: Viewport) -> None:
    viewport.set_tool("angle")
    drag(qtbot, viewport, at(viewport, 32, 32), at(viewport, 32, 52))  # vertex -> first arm (to the right)
    with qtbot.waitSignal(viewport.measured):
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=at(viewport, 12, 32))  # second arm: up
    (_, text), = viewport.measurements()
    assert text == "90.0°"


def test_the_drawing_is_on_screen_and_stays_on_its_slice(qtbot, viewport: Viewport, tmp_path) -> None:
    viewport.set_overlays_visible(False)
    viewport.set_tool("distance")
    drag(qtbot, viewport, at(viewport, 32, 5), at(viewport, 32, 58))
    image = viewport.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    mid = at(viewport, 32, 30)
    colour = image.pixelColor(mid.x(), mid.y())
    assert (colour.red(), colour.green(), colour.blue()) == pytest.approx(
        (MEASURE_COLOR.red(), MEASURE_COLOR.green(), MEASURE_COLOR.blue()), abs=40)
    viewport.model.scroll(1)
    assert viewport.measurements() == []  # another slice: nothing drawn there
    viewport.model.scroll(-1)
    assert len(viewport.measurements()) == 1
    path = tmp_path / "view.png"
    assert viewport.export_png(path)
    exported = QImage(str(path))
    assert (exported.width(), exported.height()) == (viewport.width(), viewport.height())
    viewport.clear_measurements()
    assert viewport.measurements() == []
    qtbot.keyClick(viewport, Qt.Key.Key_Escape)
    assert viewport.tool is None
