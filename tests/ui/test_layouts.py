"""Layouts, drag-and-drop of series, linked scrolling and reference lines in the main window (pytest-qt).

The series are generated with known geometry: two axial series of one frame of reference with different slice
spacings, an axial series of another frame of reference, and a coronal series of the first frame.  Pixels come
from grabs of the real widgets; the expected slice and reference-line row come from the positions written into
the files, not from the code under test."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from tests.ui.conftest import ct_dataset
from viewer.ui.series_source import SERIES_MIME_TYPE
from viewer.ui.viewport import REFERENCE_COLOR

pytestmark = pytest.mark.gui

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # rows run from head to feet
PIXEL_MM = 1.0
TOP_Z = 60.0  # the coronal images' first row


def store_series(library, *, frame_uid, positions, orientation=AXIAL, description="Axial", number=1,
                 study_uid=None):
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for i, position in enumerate(positions):
        ds = ct_dataset(i, len(positions), study_uid=study_uid, series_uid=series_uid,
                        pixel_spacing=(PIXEL_MM, PIXEL_MM))
        ds.FrameOfReferenceUID = frame_uid
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        del ds.SliceLocation
        library.store_dataset(ds)
    return study_uid, series_uid


@pytest.fixture
def linked_study(library):
    """{name: series UID}: 'fine' (20 axial slices every 2.5 mm), 'coarse' (10 every 5 mm) and 'coronal' (16
    coronal slices every 4 mm) share a frame of reference; 'other' (10 axial every 5 mm) has its own."""
    frame, other_frame = generate_uid(), generate_uid()
    study, fine = store_series(library, frame_uid=frame, positions=[(0.0, 0.0, 2.5 * k) for k in range(20)],
                               description="Fine", number=1)
    _, coarse = store_series(library, frame_uid=frame, positions=[(0.0, 0.0, 5.0 * k) for k in range(10)],
                             description="Coarse", number=2, study_uid=study)
    _, coronal = store_series(library, frame_uid=frame, positions=[(0.0, 4.0 * k, TOP_Z) for k in range(16)],
                              orientation=CORONAL, description="Coronal", number=3, study_uid=study)
    _, other = store_series(library, frame_uid=other_frame, positions=[(0.0, 0.0, 5.0 * k) for k in range(10)],
                            description="Other frame", number=4, study_uid=study)
    return {"fine": fine, "coarse": coarse, "coronal": coronal, "other": other, "study": study}


def drop(qtbot, window, index: int, mime: QMimeData) -> bool:
    """Deliver a drag-enter and a drop of `mime` to viewport `index`'s frame, as Qt's drag manager would."""
    frame = window.grid.frames[index]
    centre = frame.rect().center()
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(frame, enter)
    if not enter.isAccepted():
        return False
    event = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(frame, event)
    return event.isAccepted()


def series_mime(window, series_uid: str) -> QMimeData:
    """The MIME data the browser's own series list gives when one of its rows is dragged."""
    model = window.browser.local.series
    row = next(r for r, rec in enumerate(model.records()) if rec.series_uid == series_uid)
    index = model.index(row)
    assert model.flags(index) & Qt.ItemFlag.ItemIsDragEnabled
    return model.mimeData([index])


def open_in(qtbot, window, index: int, series_uid: str) -> None:
    assert drop(qtbot, window, index, series_mime(window, series_uid))
    viewport = window.grid.viewports[index]
    qtbot.waitUntil(lambda: viewport.painted_index >= 0 and viewport.displayed_array() is not None, timeout=5000)


def z_of(viewport, i: int) -> float:
    return viewport.model.series.frame_ref(i).position[2]


def show_study(qtbot, window, study_uid: str) -> None:
    window.browser.refresh(study_uid)
    qtbot.waitUntil(lambda: len(window.browser.local.series.records()) == 4, timeout=3000)


def reading(qtbot, make_window, library, study, layout: str, names: tuple[str, ...]):
    """A main window with `layout`, the study in the browser, and series `names` dropped on viewports 0, 1..."""
    window = make_window(library, resume_jobs=False)
    show_study(qtbot, window, study["study"])
    window.set_layout(layout)
    for i, name in enumerate(names):
        open_in(qtbot, window, i, study[name])
    return window


def test_layouts_show_one_two_or_four_viewports_and_release_hidden_series(qtbot, make_window, linked_study,
                                                                         library) -> None:
    window = make_window(library, resume_jobs=False)
    show_study(qtbot, window, linked_study["study"])
    window.layout_actions["2x2"].trigger()
    assert window.grid.layout_name == "2x2"
    frames = window.grid.frames
    width, height = window.grid.width(), window.grid.height()

    def sized(shown, w, h):
        return all(f.isVisible() == (i < shown) for i, f in enumerate(frames)) and all(
            abs(f.width() - w) <= 2 and abs(f.height() - h) <= 2 for f in frames[:shown])

    qtbot.waitUntil(lambda: sized(4, width / 2, height / 2), timeout=2000)  # four quarters of the centre
    for i, name in enumerate(("fine", "coarse", "coronal", "other")):
        open_in(qtbot, window, i, linked_study[name])
    window.layout_actions["1x2"].trigger()
    qtbot.waitUntil(lambda: sized(2, width / 2, height), timeout=2000)  # two halves side by side
    assert window.grid.viewports[2].model.series is None and window.grid.viewports[3].model.series is None
    assert window.grid.viewports[1].model.series is not None  # still shown: kept
    window.grid.set_active(window.grid.viewports[1])
    window.grid.set_layout("1x1")  # from the grid itself: the window's menu and its record of open series follow
    assert window.layout_actions["1x1"].isChecked()
    assert window.viewport is window.grid.viewports[0]  # the active one was hidden: the first takes over
    assert window.current_series_uid == linked_study["fine"]
    assert window.grid.viewports[1].model.series is None


def test_a_dropped_series_opens_in_that_viewport_and_makes_it_active(qtbot, make_window, linked_study,
                                                                    library) -> None:
    window = make_window(library, resume_jobs=False)
    show_study(qtbot, window, linked_study["study"])
    view = window.browser.local.series_view
    assert view.dragEnabled()
    window.set_layout("1x2")
    open_in(qtbot, window, 0, linked_study["fine"])
    first = window.grid.viewports[0].displayed_array().copy()
    open_in(qtbot, window, 1, linked_study["coronal"])
    left, right = window.grid.viewports[:2]
    assert window.viewport is right and window.current_series_uid == linked_study["coronal"]
    assert right.model.count == 16 and left.model.count == 20
    assert right.overlay_lines()["top_right"][-1].endswith("Coronal")
    assert np.array_equal(left.displayed_array(), first)  # the other viewport is untouched
    # a drop that carries no series (plain text) is refused and changes nothing
    junk = QMimeData()
    junk.setText("not a series")
    assert not drop(qtbot, window, 0, junk)
    bad = QMimeData()
    bad.setData(SERIES_MIME_TYPE, b"../../etc/passwd")
    assert not drop(qtbot, window, 0, bad)
    assert window.viewport is right and left.model.count == 20


def test_toolbar_actions_follow_the_active_viewport(qtbot, make_window, linked_study, library) -> None:
    window = reading(qtbot, make_window, library, linked_study, "1x2", ("fine", "coarse"))
    left, right = window.grid.viewports[:2]
    qtbot.mouseClick(left, Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    assert window.viewport is left
    before_left, before_right = left.displayed_array().copy(), right.displayed_array().copy()
    window.invert_action.trigger()
    assert left.model.invert and not right.model.invert
    assert np.array_equal(left.displayed_array(), 255 - before_left)
    assert np.array_equal(right.displayed_array(), before_right)
    qtbot.mouseClick(right, Qt.MouseButton.LeftButton, pos=QPoint(20, 20))
    assert window.viewport is right and not window.invert_action.isChecked()  # the action shows the active one
    window.invert_action.trigger()
    assert right.model.invert and left.model.invert


def test_linked_scrolling_follows_the_same_frame_of_reference_only(qtbot, make_window, linked_study,
                                                                  library) -> None:
    window = reading(qtbot, make_window, library, linked_study, "2x2", ("fine", "coarse", "other", "coronal"))
    fine, coarse, other, coronal = window.grid.viewports
    other_index, coronal_index = other.model.index, coronal.model.index
    window.grid.set_active(fine)
    for target_z in (25.0, 40.0, 7.5):
        k = next(i for i in range(fine.model.count) if z_of(fine, i) == target_z)
        fine.model.set_index(k)
        expected = min(range(coarse.model.count), key=lambda i: abs(z_of(coarse, i) - target_z))
        assert coarse.model.index == expected and abs(z_of(coarse, expected) - target_z) <= 2.5
        assert other.model.index == other_index  # another frame of reference: not linked
        assert coronal.model.index == coronal_index  # not parallel: reference lines only
    qtbot.waitUntil(lambda: coarse.painted_index == coarse.model.index, timeout=3000)
    # the other way round: the coarse series leads
    window.grid.set_active(coarse)
    k = next(i for i in range(coarse.model.count) if z_of(coarse, i) == 45.0)
    coarse.model.set_index(k)
    assert z_of(fine, fine.model.index) == 45.0
    # unlinked: each scrolls alone
    window.link_action.trigger()
    assert not window.grid.link_scrolling
    k = next(i for i in range(coarse.model.count) if z_of(coarse, i) == 10.0)
    coarse.model.set_index(k)
    assert z_of(fine, fine.model.index) == 45.0


def cyan_rows(viewport) -> np.ndarray:
    """Widget rows where the grabbed viewport shows the reference-line colour."""
    image = viewport.grab().toImage().convertToFormat(viewport.grab().toImage().Format.Format_RGB888)
    width, height = image.width(), image.height()
    pixels = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(height, image.bytesPerLine())[:, :width * 3]
    rgb = pixels.reshape(height, width, 3).astype(int)
    target = np.array([REFERENCE_COLOR.red(), REFERENCE_COLOR.green(), REFERENCE_COLOR.blue()])
    mask = np.abs(rgb - target).sum(axis=2) <= 30
    rows = np.nonzero(mask.sum(axis=1) >= width // 4)[0]  # a line across a good part of the view
    return rows


def test_reference_line_shows_the_axial_slice_on_the_coronal_view(qtbot, make_window, linked_study,
                                                                  library) -> None:
    window = reading(qtbot, make_window, library, linked_study, "1x2", ("fine", "coronal"))
    axial, coronal = window.grid.viewports[:2]
    window.grid.set_active(axial)
    assert not cyan_rows(axial).size  # the active viewport draws no line of its own
    for target_z in (10.0, 30.0, 45.0):
        k = next(i for i in range(axial.model.count) if z_of(axial, i) == target_z)
        axial.model.set_index(k)
        image_row = (TOP_Z - target_z) / PIXEL_MM  # the coronal row at that height, from the file geometry
        expected_y = coronal.image_to_widget(image_row, 0).y()
        qtbot.waitUntil(lambda: cyan_rows(coronal).size > 0, timeout=3000)
        rows = cyan_rows(coronal)
        assert abs(float(rows.mean()) - expected_y) <= 1.5, (target_z, rows, expected_y)
    # parallel series show no line; switching it off removes it
    window.reference_lines_action.trigger()
    qtbot.waitUntil(lambda: cyan_rows(coronal).size == 0, timeout=3000)


def test_the_position_overlay_names_the_axis_across_the_slices(qtbot, make_window, linked_study, library) -> None:
    window = reading(qtbot, make_window, library, linked_study, "1x2", ("fine", "coronal"))
    axial, coronal = window.grid.viewports[:2]
    axial.model.set_index(next(i for i in range(axial.model.count) if z_of(axial, i) == 20.0))
    coronal.model.set_index(next(i for i in range(coronal.model.count)
                                 if coronal.model.series.frame_ref(i).position[1] == 8.0))
    qtbot.waitUntil(lambda: coronal.painted_index == coronal.model.index, timeout=3000)
    assert axial.overlay_lines()["bottom_left"][-1] == "Pos: S 20.00 mm"  # along z for axial slices
    assert coronal.overlay_lines()["bottom_left"][-1] == "Pos: P 8.00 mm"  # along y for coronal ones


def test_measurements_follow_the_image_into_any_viewport(qtbot, make_window, linked_study, library) -> None:
    from viewer.ui.viewport import MEASURE_COLOR

    def yellow(viewport) -> int:
        image = viewport.grab().toImage().convertToFormat(viewport.grab().toImage().Format.Format_RGB888)
        width, height = image.width(), image.height()
        rows = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(height, image.bytesPerLine())
        rgb = rows[:, :width * 3].reshape(height, width, 3).astype(int)
        target = np.array([MEASURE_COLOR.red(), MEASURE_COLOR.green(), MEASURE_COLOR.blue()])
        return int((np.abs(rgb - target).sum(axis=2) <= 40).sum())

    window = reading(qtbot, make_window, library, linked_study, "1x2", ("fine", "fine"))
    window.link_action.trigger()  # the same series twice would scroll together: not now
    left, right = window.grid.viewports[:2]
    left.model.set_index(5)
    right.model.set_index(6)
    qtbot.waitUntil(lambda: left.painted_index == 5 and right.painted_index == 6, timeout=3000)
    before = yellow(right)
    assert left.add_measurement("distance", [(10.0, 10.0), (40.0, 50.0)]) is not None
    assert [a.kind for a, _ in left.measurements()] == ["distance"] and right.measurements() == []
    right.model.set_index(5)  # the same image in the other viewport: its measurement is there
    qtbot.waitUntil(lambda: right.painted_index == 5, timeout=3000)
    assert [text for _, text in right.measurements()] == [text for _, text in left.measurements()]
    assert "50.0 mm" in right.measurements()[0][1]  # 30 x 40 pixels of 1 mm
    qtbot.waitUntil(lambda: yellow(right) > before + 30, timeout=3000)
    # the layout hides it and brings it back: the session keeps the measurement
    window.set_layout("1x1")
    window.set_layout("1x2")
    open_in(qtbot, window, 1, linked_study["fine"])
    right.model.set_index(5)
    assert len(right.measurements()) == 1
    right.clear_measurements()
    assert left.measurements() == []
