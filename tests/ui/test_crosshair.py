"""The 2D crosshair across linked viewports (pytest-qt, real mouse clicks): a click picks a patient point, the
other viewports of the same frame (or of a frame registered by Link here) go to the slice nearest it and draw a
cross where it projects.

The series are generated with known geometry (64 x 64 pixels of 1 mm); the expected slices and pixels come from
the positions written into the files, not from the code under test, and the crosses are looked for in grabs of
the real widgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt

from tests.ui.mouse import at
from tests.ui.test_layouts import CORONAL, PIXEL_MM, store_series, z_of
from viewer.ui.viewport import CROSSHAIR_COLOR

pytestmark = pytest.mark.gui

SHIFT_X, SHIFT_Y = -10.0, 5.0  # the second axial series' first pixel lies here (the first one's at 0, 0)
TOP_Z = 60.0  # the coronal images' first row
OFFSET_Z = 200.0  # the prior's frame: the same anatomy lies 200 mm higher
PRIOR_TOP_Z = 260.0


@pytest.fixture
def window(qtbot, make_window, library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("MIFAS_CONFIG_DIR", str(tmp_path / "home"))
    return make_window(library, resume_jobs=False)


def open_all(qtbot, window, uids) -> list:
    window.set_layout("2x2" if len(uids) > 2 else "1x2")
    for i, uid in enumerate(uids):
        assert window.open_series(uid, window.grid.viewports[i])
    views = window.grid.viewports[:len(uids)]
    qtbot.waitUntil(lambda: all(v.painted_index >= 0 and v.displayed_array() is not None for v in views),
                    timeout=5000)
    return views


def index_at(viewport, z: float) -> int:
    return next(i for i in range(viewport.model.count) if abs(z_of(viewport, i) - z) < 1e-6)


def cross_pixels(viewport) -> np.ndarray:
    """(y, x) of the widget pixels that show the crosshair colour, from a grab of the real widget."""
    image = viewport.grab().toImage().convertToFormat(viewport.grab().toImage().Format.Format_RGB888)
    width, height = image.width(), image.height()
    rows = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(height, image.bytesPerLine())
    rgb = rows[:, :width * 3].reshape(height, width, 3).astype(int)
    target = np.array([CROSSHAIR_COLOR.red(), CROSSHAIR_COLOR.green(), CROSSHAIR_COLOR.blue()])
    return np.argwhere(np.abs(rgb - target).sum(axis=2) <= 40)


def assert_cross_at(qtbot, viewport, row: float, col: float) -> None:
    """The viewport's crosshair state is image (row, col) and a cross of its colour is drawn there, nowhere else."""
    assert viewport.crosshair is not None
    assert viewport.crosshair == pytest.approx((row, col), abs=0.5)
    qtbot.waitUntil(lambda: len(cross_pixels(viewport)) >= 20, timeout=3000)
    q = viewport.image_to_widget(row, col)
    pixels = cross_pixels(viewport)
    assert np.abs(pixels - [q.y(), q.x()]).max() <= 14, "cross pixels away from the expected place"
    centre = pixels.mean(axis=0)
    assert abs(centre[0] - q.y()) <= 2.0 and abs(centre[1] - q.x()) <= 2.0, (centre, q)


def click(qtbot, viewport, row: float, col: float) -> None:
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=at(viewport, row, col))


def test_a_click_moves_and_marks_the_series_of_the_same_frame(qtbot, window, library) -> None:
    frame = generate_uid()
    study, fine = store_series(library, frame_uid=frame, positions=[(0.0, 0.0, 2.5 * k) for k in range(20)])
    _, shifted = store_series(library, frame_uid=frame, study_uid=study, number=2,
                              positions=[(SHIFT_X, SHIFT_Y, 1.0 + 4.0 * k) for k in range(12)])  # z 1 .. 45
    _, coronal = store_series(library, frame_uid=frame, study_uid=study, number=3, orientation=CORONAL,
                              positions=[(0.0, 4.0 * k, TOP_Z) for k in range(16)])  # y 0 .. 60
    a, b, c = open_all(qtbot, window, (fine, shifted, coronal))
    window.link_action.trigger()  # no linked scrolling: only the crosshair moves the others
    assert window.crosshair_action in window.view_menu.actions()
    a.model.set_index(index_at(a, 25.0))
    b.model.set_index(index_at(b, 9.0))
    qtbot.waitUntil(lambda: a.painted_index == a.model.index, timeout=3000)
    click(qtbot, a, 13.0, 40.0)  # crosshair off: a click is the window, nothing is picked
    assert window.grid.crosshair_point is None and b.crosshair is None and z_of(b, b.model.index) == 9.0
    window.crosshair_action.trigger()
    assert window.grid.crosshair_enabled
    click(qtbot, a, 13.0, 40.0)  # the patient point (40, 13, 25)
    assert window.viewport is a
    point, _ = window.grid.crosshair_point
    assert point == pytest.approx([40.0, 13.0, 25.0], abs=0.2)
    assert z_of(b, b.model.index) == 25.0  # the slice at the same z
    assert_cross_at(qtbot, b, 13.0 - SHIFT_Y, 40.0 - SHIFT_X)  # its own pixels: (y - 5, x + 10)
    assert_cross_at(qtbot, a, 13.0, 40.0)  # the source marks its point too
    # the coronal series, not parallel: its slice nearest y 13 (y 12), the point's height on its rows
    assert c.model.series.frame_ref(c.model.index).position[1] == 12.0
    assert_cross_at(qtbot, c, (TOP_Z - 25.0) / PIXEL_MM, 40.0)
    # dragging moves the point; the crosshair off clears every cross
    qtbot.mousePress(a, Qt.MouseButton.LeftButton, pos=at(a, 13.0, 40.0))
    qtbot.mouseMove(a, at(a, 30.0, 20.0))
    qtbot.mouseRelease(a, Qt.MouseButton.LeftButton, pos=at(a, 30.0, 20.0))
    assert b.crosshair == pytest.approx((30.0 - SHIFT_Y, 20.0 - SHIFT_X), abs=0.5)
    assert c.model.series.frame_ref(c.model.index).position[1] == 28.0  # y 30: nearest 28 (32 is farther)
    window.crosshair_action.trigger()
    assert all(v.crosshair is None for v in (a, b, c)) and window.grid.crosshair_point is None
    qtbot.waitUntil(lambda: all(len(cross_pixels(v)) == 0 for v in (a, b, c)), timeout=3000)


def test_a_prior_of_another_frame_follows_the_crosshair_only_after_link_here(qtbot, window, library) -> None:
    current_frame, prior_frame = generate_uid(), generate_uid()
    _, current = store_series(library, frame_uid=current_frame, positions=[(0.0, 0.0, 2.5 * k) for k in range(20)])
    prior_study, prior = store_series(library, frame_uid=prior_frame,
                                      positions=[(0.0, 0.0, OFFSET_Z + 5.0 * k) for k in range(10)])
    _, prior_coronal = store_series(library, frame_uid=prior_frame, orientation=CORONAL, number=2,
                                    study_uid=prior_study, positions=[(0.0, 4.0 * k, PRIOR_TOP_Z) for k in range(16)])
    cur, pri, cor = open_all(qtbot, window, (current, prior, prior_coronal))
    window.grid.set_active(cur)
    window.crosshair_action.trigger()
    cur.model.set_index(index_at(cur, 10.0))
    pri.model.set_index(index_at(pri, 230.0))
    qtbot.waitUntil(lambda: cur.painted_index == cur.model.index, timeout=3000)
    coronal_index = cor.model.index
    click(qtbot, cur, 29.0, 12.0)
    assert cur.crosshair is not None  # its own cross
    assert pri.crosshair is None and cor.crosshair is None  # another frame, not linked: no cross, no move
    assert z_of(pri, pri.model.index) == 230.0 and cor.model.index == coronal_index
    assert len(cross_pixels(pri)) == 0
    # the reader aligns current z 10 with prior z 210 and links there
    pri.model.set_index(index_at(pri, 210.0))
    window.grid.set_active(cur)
    assert window.grid.link_here() == 1
    window.link_action.trigger()  # no linked scrolling: only the crosshair moves the prior
    cur.model.set_index(index_at(cur, 25.0))
    qtbot.waitUntil(lambda: cur.painted_index == cur.model.index, timeout=3000)
    click(qtbot, cur, 29.0, 12.0)  # current (12, 29, 25) = prior (12, 29, 225)
    assert z_of(pri, pri.model.index) == OFFSET_Z + 25.0
    assert_cross_at(qtbot, pri, 29.0, 12.0)
    assert cor.model.series.frame_ref(cor.model.index).position[1] == 28.0  # the prior coronal nearest y 29
    assert_cross_at(qtbot, cor, (PRIOR_TOP_Z - (OFFSET_Z + 25.0)) / PIXEL_MM, 12.0)
    # Unlink: the crosses that depended on the offset go; the source keeps its own
    window.hanging.unlink_action.trigger()
    assert pri.crosshair is None and cor.crosshair is None and cur.crosshair is not None
    qtbot.waitUntil(lambda: len(cross_pixels(pri)) == 0 and len(cross_pixels(cor)) == 0, timeout=3000)
    # a new series where the point was picked clears it
    assert window.open_series(prior, cur)
    assert window.grid.crosshair_point is None and cur.crosshair is None
