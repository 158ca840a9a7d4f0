"""The MPR panel (viewer.ui.mpr_view) with pytest-qt, on the sphere phantom acquired with anisotropic voxels, axial
and oblique: in the grabbed pixels of each plane the sphere is a round disc of the right size centred on the
crosshair; a click moves the crosshair in all three planes; the wheel scrolls."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from tests.dicom.test_volume import CENTRE, RADIUS, build, phantom_volume, stack
from viewer.dicom.mpr import PLANES
from viewer.dicom.pixels import Window
from viewer.ui.mpr_view import MprPanel

pytestmark = pytest.mark.gui


def grabbed(view) -> np.ndarray:
    image = view.grab().toImage().convertToFormat(view.grab().toImage().Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    return data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def white_disc(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """Centre (x, y) and width, height in widget pixels of the grey (not coloured) bright pixels."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    mask = (r > 200) & (abs(r - g) < 8) & (abs(r - b) < 8)
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


@pytest.fixture(params=[0.0, 23.0], ids=["axial", "oblique"])
def panel(qtbot, request):
    geoms, pixels = stack(turn_degrees=request.param, rows=96, cols=96, count=64, row_spacing=0.8, col_spacing=0.6,
                          slice_gaps=[1.2] * 63, origin=(-20.0, -40.0, 2.0))
    _, volume = build(geoms, pixels)
    widget = MprPanel(volume, window=Window(0, 2000))
    qtbot.addWidget(widget)
    widget.resize(960, 340)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_crosshair(CENTRE)
    return widget


def test_the_sphere_is_round_the_right_size_and_on_the_crosshair_in_every_plane(panel: MprPanel) -> None:
    for name in PLANES:
        view = panel.views[name]
        x, y, width, height = white_disc(grabbed(view))
        rect = view.image_rect()
        rows, cols = view.image.data.shape
        px_per_mm = rect.width() / (cols * view.image.spacing[1])
        assert rect.height() / (rows * view.image.spacing[0]) == pytest.approx(px_per_mm, rel=1e-3)  # true aspect
        assert width == pytest.approx(2 * RADIUS * px_per_mm, rel=0.08), name
        assert height == pytest.approx(2 * RADIUS * px_per_mm, rel=0.08), name  # round, not stretched
        centre = view.plane_to_widget(*view.image.crosshair)
        assert abs(x - centre.x()) < 2.5 and abs(y - centre.y()) < 2.5, name


def test_a_click_moves_the_crosshair_in_all_planes(panel: MprPanel, qtbot) -> None:
    axial = panel.views["axial"]
    target_row, target_col = (v + 10 for v in axial.image.crosshair)
    expected = axial.image.to_patient(target_row, target_col)
    where = axial.plane_to_widget(target_row, target_col)
    with qtbot.waitSignal(panel.crosshair_changed):
        qtbot.mouseClick(axial, Qt.MouseButton.LeftButton, pos=QPoint(round(where.x()), round(where.y())))
    moved = panel.mpr.crosshair
    assert moved[:2] == pytest.approx(expected[:2], abs=1.0)  # in the axial plane: x and y follow the click
    assert moved[2] == pytest.approx(CENTRE[2], abs=1.5)  # ... z stays (within one voxel of the grid)
    coronal = panel.views["coronal"]
    point = coronal.image.to_patient(*coronal.image.crosshair)
    assert point == pytest.approx(moved, abs=1.0)  # the coronal view's crosshair is the same patient point


def test_the_wheel_scrolls_through_the_plane(panel: MprPanel, qtbot) -> None:
    from PySide6.QtGui import QWheelEvent

    axial = panel.views["axial"]
    before = panel.mpr.crosshair.copy()
    centre = QPointF(axial.width() / 2, axial.height() / 2)
    event = QWheelEvent(centre, axial.mapToGlobal(centre), QPoint(0, 0), QPoint(0, -240), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    axial.wheelEvent(event)
    step = panel.mpr.step_mm("axial")
    assert panel.mpr.crosshair[2] - before[2] == pytest.approx(2 * step, abs=1e-6)


def send_mouse(widget, kind, point: QPointF, buttons, modifiers=Qt.KeyboardModifier.ControlModifier) -> None:
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    button = Qt.MouseButton.LeftButton if kind != QMouseEvent.Type.MouseMove else Qt.MouseButton.NoButton
    event = QMouseEvent(kind, point, widget.mapToGlobal(point), button, buttons, modifiers)
    QApplication.sendEvent(widget, event)


def line_angle(pixels: np.ndarray, colour) -> float:
    """The direction (degrees, clockwise on screen, folded into -90..90) of the pixels of `colour`."""
    target = np.array([colour.red(), colour.green(), colour.blue()])
    ys, xs = np.nonzero(np.abs(pixels.astype(int) - target).sum(axis=2) <= 40)
    assert len(xs) > 50
    xy = np.stack([xs - xs.mean(), ys - ys.mean()])
    _, vectors = np.linalg.eigh(xy @ xy.T)
    dx, dy = vectors[:, -1]
    return (np.degrees(np.arctan2(dy, dx)) + 90.0) % 180.0 - 90.0


def test_ctrl_drag_turns_the_other_planes_and_their_lines(panel: MprPanel, qtbot) -> None:
    from PySide6.QtGui import QMouseEvent

    from viewer.ui.mpr_view import PLANE_COLORS

    axial = panel.views["axial"]
    coronal_colour = PLANE_COLORS["coronal"]
    start_angle = line_angle(grabbed(axial), coronal_colour)
    assert abs(start_angle) < 1.0  # the coronal plane is a horizontal line on the axial view
    centre = axial.plane_to_widget(*axial.image.crosshair)
    held = Qt.MouseButton.LeftButton
    send_mouse(axial, QMouseEvent.Type.MouseButtonPress, centre + QPointF(100, 0), held)
    for degrees in (10, 20, 30):  # around the crosshair, clockwise on screen
        a = np.radians(degrees)
        send_mouse(axial, QMouseEvent.Type.MouseMove, centre + QPointF(100 * np.cos(a), 100 * np.sin(a)), held)
    assert panel._interactive  # coarse planes while the button is down
    send_mouse(axial, QMouseEvent.Type.MouseButtonRelease, centre + QPointF(100 * np.cos(a), 100 * np.sin(a)),
               Qt.MouseButton.NoButton)
    assert not panel._interactive
    right, _ = panel.mpr.axes("coronal")
    turned = np.degrees(np.arctan2(right @ panel.mpr.axes("axial")[1], right @ panel.mpr.axes("axial")[0]))
    assert turned == pytest.approx(30.0, abs=0.5)
    assert not panel.mpr.is_rotated("axial")
    qtbot.waitUntil(lambda: abs(line_angle(grabbed(axial), coronal_colour) - 30.0) < 2.0, timeout=3000)
    # the turned coronal plane still cuts the sphere through its centre: a round disc on the crosshair
    view = panel.views["coronal"]
    x, y, width, height = white_disc(grabbed(view))
    px_per_mm = view.image_rect().width() / (view.image.data.shape[1] * view.image.spacing[1])
    assert width == pytest.approx(2 * RADIUS * px_per_mm, rel=0.1)
    assert height == pytest.approx(2 * RADIUS * px_per_mm, rel=0.1)
    panel.reset_rotation()
    qtbot.waitUntil(lambda: abs(line_angle(grabbed(axial), coronal_colour)) < 1.0, timeout=3000)


def test_turned_planes_show_coarse_at_once_then_full_from_the_worker(qtbot) -> None:
    volume = phantom_volume()
    panel = MprPanel(volume, window=Window(0, 2000), interactive_pixels=32)
    qtbot.addWidget(panel)
    panel.resize(960, 340)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_crosshair(CENTRE)
    assert panel.idle  # straight planes of an aligned volume: array slices, nothing in the background
    coronal = panel.views["coronal"]
    panel.rotate("axial", 10.0)
    panel.rotate("axial", 20.0)  # a second turn before the first plane is ready: only the latest is shown
    assert max(coronal.image.data.shape) <= 32  # at once, coarse
    qtbot.waitUntil(lambda: panel.idle and max(coronal.image.data.shape) > 32, timeout=10000)
    assert coronal.image.right == pytest.approx(panel.mpr.axes("coronal")[0])
    assert coronal.image.data.shape == panel.mpr.plane("coronal").data.shape
    x, y, width, height = white_disc(grabbed(coronal))
    px_per_mm = coronal.image_rect().width() / (coronal.image.data.shape[1] * coronal.image.spacing[1])
    assert width == pytest.approx(2 * RADIUS * px_per_mm, rel=0.08)
    assert height == pytest.approx(2 * RADIUS * px_per_mm, rel=0.08)
    panel.shutdown()
