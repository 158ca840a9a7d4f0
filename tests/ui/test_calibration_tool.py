"""The calibration tool in the viewport (pytest-qt, real mouse events): on a DX radiograph without a magnification
factor, a distance over the rod reads "at detector"; drawing the calibrate line over the same rod and answering
100 mm relabels it "100.0 mm (calibrated)" at once, the overlay says "Calibrated", and clearing goes back."""

from __future__ import annotations

import pydicom
import pytest

from tests.dicom.generated import MAGNIFICATION, OBJECT_MM, dx_dataset, object_ends
from tests.ui.mouse import at, drag
from tests.ui.screenshots import save_screenshots, screenshot_dir
from viewer.dicom.series import SeriesImages, order_frames
from viewer.ui.viewport import CALIBRATE_TOOL, Viewport

pytestmark = pytest.mark.gui


@pytest.fixture
def dx_view(qtbot, tmp_path, library):
    path = tmp_path / "dx.dcm"
    ds = dx_dataset(magnification=None)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    library.store_file(path)
    view = Viewport()
    qtbot.addWidget(view)
    view.resize(640, 640)  # the 640x640 image at scale 1: the mouse lands on whole pixels
    view.show()
    qtbot.waitExposed(view)
    view.set_series(SeriesImages(order_frames(library.instances(ds.SeriesInstanceUID))))
    qtbot.waitUntil(lambda: view.displayed_array() is not None, timeout=3000)
    yield view
    view.shutdown()




def test_calibrating_on_the_rod_relabels_measurements(qtbot, dx_view: Viewport, tmp_path) -> None:
    (r0, c0), (r1, c1) = object_ends()
    a, b = at(dx_view, r0, c0), at(dx_view, r1, c1)
    dx_view.set_tool("distance")
    with qtbot.waitSignal(dx_view.measured):
        drag(qtbot, dx_view, a, b)
    (_, text), = dx_view.measurements()
    assert text == f"{OBJECT_MM * MAGNIFICATION:.1f} mm at detector"  # 115.0: the shadow, not the rod
    assert "Scale: at detector" in dx_view.overlay_lines()["bottom_right"]

    asked = []
    dx_view.ask_length = lambda view, current: asked.append(current) or OBJECT_MM  # the reader types 100 mm
    dx_view.set_tool(CALIBRATE_TOOL)
    with qtbot.waitSignal(dx_view.calibration_changed):
        drag(qtbot, dx_view, a, b)
    assert asked == [pytest.approx(OBJECT_MM * MAGNIFICATION, abs=0.05)]  # the dialog offers the current length
    (_, text), = dx_view.measurements()
    assert text == f"{OBJECT_MM:.1f} mm (calibrated)"
    assert "Calibrated" in dx_view.overlay_lines()["bottom_right"]
    sop = dx_view.current_frame_key()[0]
    assert dx_view.annotations.calibration(sop) == pytest.approx((0.2 / MAGNIFICATION,) * 2, rel=2e-3)
    save_screenshots({"calibrated.png": dx_view.grab()}, screenshot_dir(tmp_path))

    dx_view.clear_calibration()
    (_, text), = dx_view.measurements()
    assert text.endswith("mm at detector") and dx_view.annotations.calibration(sop) is None


def test_a_cancelled_dialog_changes_nothing(qtbot, dx_view: Viewport) -> None:
    dx_view.ask_length = lambda view, current: None
    dx_view.set_tool(CALIBRATE_TOOL)
    drag(qtbot, dx_view, at(dx_view, 100, 100), at(dx_view, 100, 300))
    assert dx_view.annotations.calibrations() == {} and dx_view.measurements() == []
    assert "Scale: at detector" in dx_view.overlay_lines()["bottom_right"]


def test_the_window_offers_the_tool(qtbot, make_window, library, dx_view: Viewport) -> None:
    window = make_window(library)
    window.tool_actions[CALIBRATE_TOOL].trigger()
    assert all(v.tool == CALIBRATE_TOOL for v in window.grid.viewports)
    assert window.clear_calibration_action.text() == "Clear calibration"
