"""The 3D view (viewer.ui.volume_view) in a real QVTK widget under Xvfb: it draws the sphere, the preset chooser
changes the picture, Ctrl+drag shifts the transfer function, a plain drag rotates, the snapshot is a real PNG."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.dicom.test_volume import build, stack
from viewer.ui.volume_view import VolumeView

pytestmark = pytest.mark.gui


@pytest.fixture
def view(qtbot):
    geoms, pixels = stack(rows=64, cols=64, count=48, row_spacing=0.9, col_spacing=0.9, slice_gaps=[1.0] * 47,
                          origin=(-15.0, -35.0, 8.0))
    _, volume = build(geoms, pixels)
    widget = VolumeView(volume)  # not qtbot.addWidget: the teardown below destroys it itself
    widget.resize(320, 360)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_preset("MIP")
    widget.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    yield widget
    widget.close()  # as the user does: closeEvent releases the OpenGL window
    assert widget._shut
    # The VTK window holds its own X connection until it is destroyed: destroy it now, while the test's X server
    # still runs (Xlib ends the process if that connection is used after the server is gone).
    del widget
    qtbot.wait(50)
    gc.collect()


def lit(frame: np.ndarray) -> float:
    return float((frame.max(axis=2) > 40).mean())


def test_it_draws_and_the_presets_differ(view: VolumeView) -> None:
    mip = view.scene.frame()
    assert lit(mip) > 0.02
    view.presets.setCurrentText("CT bone")  # through the combo box, as the user does
    assert view.scene.preset_name == "CT bone"
    bone = view.scene.frame()
    assert lit(bone) > 0.02
    assert np.abs(mip.astype(int) - bone.astype(int)).mean() > 1.0


def test_ctrl_drag_shifts_the_transfer_function_and_a_drag_rotates(view: VolumeView) -> None:
    interactor = view.vtk_widget.GetRenderWindow().GetInteractor()
    view.set_preset("CT bone")
    before = view.scene.frame()

    def drag(ctrl: int, dx: int, dy: int) -> None:
        interactor.SetEventInformation(150, 150, ctrl, 0)
        interactor.InvokeEvent("LeftButtonPressEvent")
        for step in range(1, 11):
            interactor.SetEventInformation(150 + dx * step // 10, 150 + dy * step // 10, ctrl, 0)
            interactor.InvokeEvent("MouseMoveEvent")
        interactor.InvokeEvent("LeftButtonReleaseEvent")

    camera = view.scene.renderer.GetActiveCamera()
    position = camera.GetPosition()
    drag(1, 0, -300)  # Ctrl: drag 300 px down (VTK's y grows upwards) -> 600 HU higher
    assert view.scene.shift[0] == pytest.approx(600)
    drag(1, 0, -300)  # 1200 HU higher: the 1000 HU sphere is below the bone window now
    assert camera.GetPosition() == pytest.approx(position)  # the camera did not move
    assert lit(view.scene.frame()) < lit(before) / 2
    view.reset()
    assert view.scene.shift == (0.0, 1.0)
    drag(0, 80, 0)  # plain drag: the trackball rotates
    assert camera.GetPosition() != pytest.approx(position)


def test_snapshot(view: VolumeView, tmp_path, qtbot) -> None:
    with qtbot.waitSignal(view.snapshot_saved) as saved:
        view.save_snapshot(tmp_path / "v.png")
    data = (tmp_path / "v.png").read_bytes()
    assert saved.args == [str(tmp_path / "v.png")] and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500
