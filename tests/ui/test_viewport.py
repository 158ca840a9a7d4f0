"""The Viewport widget with real files: pixels on screen against the DICOM formulas, computed here."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from tests.ui.conftest import ct_dataset, linear_window, write_ct_series
from viewer.dicom.image import DicomImage
from viewer.dicom.pixels import PRESETS
from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import MifasError
from viewer.ui.series_source import open_series
from viewer.ui.viewport import LOADING_TEXT, Viewport

pytestmark = pytest.mark.gui


@pytest.fixture
def viewport(qtbot):
    vp = Viewport()
    qtbot.addWidget(vp)
    vp.resize(400, 400)
    vp.show()
    qtbot.waitExposed(vp)
    yield vp
    vp.shutdown()


def hu_of(path: Path) -> np.ndarray:
    """Modality values straight from the file (pydicom), independent of viewer.dicom."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def widget_image(widget) -> QImage:
    """What the widget paints, at 8 bits per channel.  (``grab()`` returns a pixmap of the display's depth,
    and pytest-xvfb's default display has 16-bit colour, which would round the greys.)"""
    image = QImage(widget.size(), QImage.Format.Format_RGB32)
    widget.render(image)
    return image


def screen_grey(vp: Viewport, row: int, col: int) -> tuple[int, int, int]:
    """The colour the widget shows at the centre of image pixel (row, col)."""
    point = vp.view_transform().map(QPointF(col + 0.5, row + 0.5))
    image = widget_image(vp)
    colour = image.pixelColor(int(point.x()), int(point.y()))
    return colour.red(), colour.green(), colour.blue()


def wait_loaded(qtbot, vp: Viewport) -> None:
    series = vp.model.series
    qtbot.waitUntil(lambda: series.loaded_count() == len(series), timeout=10000)


def test_first_slice_shown_at_once_rest_loads_in_background(qtbot, viewport, ct_series):
    series = open_series(ct_series.library, ct_series.series_uid)
    viewport.set_series(series)
    # No event processed yet: the first slice was decoded synchronously, the others not necessarily.
    assert viewport.displayed_array() is not None
    assert viewport.message == ""
    with qtbot.waitSignal(viewport.slice_painted, timeout=5000):
        viewport.update()
    assert viewport.painted_index == 0
    wait_loaded(qtbot, viewport)


def test_bone_preset_matches_the_linear_window_formula_on_screen(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    viewport.model.apply_preset("CT bone")
    expected = linear_window(hu_of(ct_series.files[0]), 400, 1800)
    shown = viewport.displayed_array()
    assert shown.dtype == np.uint8 and shown.shape == (ct_series.rows, ct_series.cols)
    np.testing.assert_array_equal(shown, expected)
    assert len(np.unique(expected)) > 20  # the test image really spans the window
    r, c = ct_series.rows // 2, ct_series.cols // 2
    assert screen_grey(viewport, r, c) == (expected[r, c],) * 3
    assert screen_grey(viewport, 5, 60) == (expected[5, 60],) * 3
    assert "W: 1800 L: 400" in viewport.overlay_lines()["bottom_right"]


def test_preset_keys_and_file_default_window(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    hu = hu_of(ct_series.files[0])
    np.testing.assert_array_equal(viewport.displayed_array(), linear_window(hu, 40, 400))  # the file's window
    for key, name in ((Qt.Key.Key_1, "CT lung"), (Qt.Key.Key_3, "CT brain"), (Qt.Key.Key_4, "CT abdomen")):
        qtbot.keyClick(viewport, key)
        assert viewport.model.window == PRESETS[name]
        w = PRESETS[name]
        np.testing.assert_array_equal(viewport.displayed_array(), linear_window(hu, w.center, w.width))


def test_scroll_changes_slice_pixels_and_label(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    wait_loaded(qtbot, viewport)
    first = viewport.displayed_array().copy()
    assert viewport.overlay_lines()["bottom_left"][0] == "Im: 1/8"
    qtbot.keyClick(viewport, Qt.Key.Key_Down)
    assert viewport.model.index == 1
    second = viewport.displayed_array()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, linear_window(hu_of(ct_series.files[1]), 40, 400))
    assert viewport.overlay_lines()["bottom_left"] == ("Im: 2/8", "Loc: 2.50 mm")
    qtbot.keyClick(viewport, Qt.Key.Key_End)
    assert viewport.model.index == 7
    qtbot.keyClick(viewport, Qt.Key.Key_Home)
    assert viewport.model.index == 0
    # Wheel: one notch toward the user = next slice.
    wheel(viewport, -120)
    assert viewport.model.index == 1
    with qtbot.waitSignal(viewport.slice_painted, timeout=5000) as painted:
        viewport.update()
    assert painted.args == [1]


def test_invert_key(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    before = viewport.displayed_array().copy()
    qtbot.keyClick(viewport, Qt.Key.Key_I)
    assert viewport.model.invert
    np.testing.assert_array_equal(viewport.displayed_array(), 255 - before)
    r, c = 30, 31
    assert screen_grey(viewport, r, c) == (255 - before[r, c],) * 3
    qtbot.keyClick(viewport, Qt.Key.Key_R)
    np.testing.assert_array_equal(viewport.displayed_array(), before)


def test_monochrome1_file_is_shown_inverted(qtbot, viewport, library, pydicom_test_files):
    path = next(p for p in pydicom_test_files if p.parts[-3:] == ("77654033", "CR1", "6154"))
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    result = library.store_file(path)
    viewport.set_series(open_series(library, result.series_instance_uid))
    modality = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 255 - linear_window(modality, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_array_equal(viewport.displayed_array(), expected)
    r, c = np.unravel_index(np.argmax(expected), expected.shape)
    assert screen_grey(viewport, int(r), int(c)) == (expected[r, c],) * 3


def broken_jpeg_file(folder: Path) -> Path:
    ds = ct_dataset(0, 1, study_uid=pydicom.uid.generate_uid(), series_uid=pydicom.uid.generate_uid())
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8 this is not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = folder / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_undecodable_file_shows_its_message(qtbot, viewport, library, tmp_path):
    path = broken_jpeg_file(tmp_path)
    with pytest.raises(MifasError) as raised:
        DicomImage.open(path)
    message = str(raised.value)
    assert message
    result = library.store_file(path)
    viewport.set_series(open_series(library, result.series_instance_uid))
    assert viewport.displayed_array() is None
    assert viewport.message == message
    grabbed = viewport.grab().toImage()  # painting the message does not crash
    assert not grabbed.isNull()
    assert viewport.isVisible()
    # Input on a broken slice is harmless.
    qtbot.keyClick(viewport, Qt.Key.Key_2)
    viewport.model.drag_window(10, 10)
    assert viewport.message == message


class GatedSeries(SeriesImages):
    """Decodes slice 0 at once; every other slice waits for ``gate`` (a slow disk or network share)."""

    def __init__(self, frames, gate: threading.Event) -> None:
        super().__init__(frames)
        self.gate = gate

    def _load(self, i: int):
        if i != 0 and not self.gate.wait(timeout=10):
            raise TimeoutError("gate never opened")
        return super()._load(i)


def test_slice_not_yet_decoded_shows_loading_then_fills_in(qtbot, viewport, ct_series):
    gate = threading.Event()
    series = GatedSeries(order_frames(ct_series.library.instances(ct_series.series_uid)), gate)
    try:
        viewport.set_series(series)
        assert viewport.displayed_array() is not None
        viewport.model.set_index(5)
        assert viewport.message == LOADING_TEXT
        assert viewport.displayed_array() is None
        viewport.grab()  # paints the loading text
        gate.set()
        qtbot.waitUntil(lambda: viewport.message == "" and viewport.painted_index == 5, timeout=10000)
        np.testing.assert_array_equal(viewport.displayed_array(),
                                      linear_window(hu_of(ct_series.files[5]), 40, 400))
    finally:
        gate.set()


def send_mouse(widget, kind: QEvent.Type, pos: QPoint, button: Qt.MouseButton, buttons: Qt.MouseButton,
               modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    local = QPointF(pos)
    event = QMouseEvent(kind, local, QPointF(widget.mapToGlobal(pos)), button, buttons, modifiers)
    QApplication.sendEvent(widget, event)


def drag(widget, start: QPoint, end: QPoint, button: Qt.MouseButton, modifiers=Qt.KeyboardModifier.NoModifier):
    send_mouse(widget, QEvent.Type.MouseButtonPress, start, button, button, modifiers)
    send_mouse(widget, QEvent.Type.MouseMove, end, Qt.MouseButton.NoButton, button, modifiers)
    send_mouse(widget, QEvent.Type.MouseButtonRelease, end, button, Qt.MouseButton.NoButton, modifiers)


def wheel(widget, delta_y: int) -> None:
    from PySide6.QtGui import QWheelEvent

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, delta_y),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_mouse_drags_window_zoom_pan(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    centre = QPoint(200, 200)
    drag(viewport, centre, centre + QPoint(256, 0), Qt.MouseButton.LeftButton)
    assert viewport.model.window.width == pytest.approx(800)  # 400 widened by one width per 256 px
    np.testing.assert_array_equal(viewport.displayed_array(),
                                  linear_window(hu_of(ct_series.files[0]), 40, 800))
    drag(viewport, centre, centre + QPoint(0, -50), Qt.MouseButton.RightButton)
    assert viewport.model.zoom > 1.5
    drag(viewport, centre, centre + QPoint(30, 20), Qt.MouseButton.MiddleButton)
    drag(viewport, centre, centre + QPoint(5, 5), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier)
    assert viewport.model.pan[0] == pytest.approx(35) and viewport.model.pan[1] == pytest.approx(25)
    assert viewport.model.window.width == pytest.approx(800)  # Shift+left panned, did not window


def test_physical_aspect_from_pixel_spacing(qtbot, viewport, library, tmp_path):
    # 32 rows x 64 columns with rows 1.0 mm apart and columns 0.5 mm apart: a square of 32 mm.
    _, series_uid, files = write_ct_series(tmp_path / "aniso", n=2, rows=32, cols=64, pixel_spacing=(1.0, 0.5))
    for f in files:
        library.store_file(f)
    viewport.set_series(open_series(library, series_uid))
    viewport.displayed_array()
    rect = viewport.view_transform().mapRect(viewport._qimage.rect().toRectF())
    assert rect.width() == pytest.approx(rect.height())
    assert rect.height() == pytest.approx(400)  # fitted
    viewport.model.rotate(90)
    rect = viewport.view_transform().mapRect(viewport._qimage.rect().toRectF())
    assert rect.width() == pytest.approx(rect.height())


def test_rotation_and_flip_move_pixels_on_screen(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    viewport.model.apply_preset("CT lung")
    shown = viewport.displayed_array()
    top_left = screen_grey(viewport, 0, 0)
    assert top_left == (shown[0, 0],) * 3
    image = widget_image(viewport)
    viewport.model.flip(horizontal=True)
    flipped = widget_image(viewport)
    y = 200
    assert image.pixelColor(120, y) == flipped.pixelColor(400 - 1 - 120, y)
    viewport.model.flip(horizontal=True)
    viewport.model.rotate(180)
    rotated = widget_image(viewport)
    assert image.pixelColor(120, 150) == rotated.pixelColor(400 - 1 - 120, 400 - 1 - 150)


def test_cine_plays_and_stops(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    viewport.model.set_cine_fps(60)
    qtbot.keyClick(viewport, Qt.Key.Key_Space)
    assert viewport.model.playing
    qtbot.waitUntil(lambda: viewport.model.index >= 3, timeout=5000)
    qtbot.keyClick(viewport, Qt.Key.Key_Space)
    assert not viewport.model.playing
    stopped_at = viewport.model.index
    qtbot.wait(100)
    assert viewport.model.index == stopped_at


def test_overlays_toggle(qtbot, viewport, ct_series):
    viewport.set_series(open_series(ct_series.library, ct_series.series_uid))
    lines = viewport.overlay_lines()
    assert lines["top_left"] == ("Test Patient", "ID: UI-0001")
    assert lines["top_right"][0] == "2024-01-02"
    with_overlays = widget_image(viewport)
    viewport.set_overlays_visible(False)
    without = widget_image(viewport)
    # The top-left corner holds text only with overlays on (the image is centred well below it).
    corner = [with_overlays.pixelColor(x, y).red() for x in range(5, 60) for y in range(3, 20)]
    bare = [without.pixelColor(x, y).red() for x in range(5, 60) for y in range(3, 20)]
    assert max(corner) > 150 and max(bare) == 0


def test_colour_file_is_shown_in_colour(qtbot, viewport, library, pydicom_test_files):
    path = next(p for p in pydicom_test_files if p.name == "SC_rgb_jpeg_gdcm.dcm")
    expected = pydicom.dcmread(path).pixel_array  # lossless JPEG, RGB
    viewport.set_series(open_series(library, library.store_file(path).series_instance_uid))
    shown = viewport.displayed_array()
    assert shown.shape == (100, 100, 3)
    np.testing.assert_array_equal(shown, expected)
    assert viewport.overlay_lines()["bottom_right"][0].startswith("Zoom")  # no W/L line for colour
    for r, c in ((10, 10), (50, 80), (90, 30)):
        assert screen_grey(viewport, r, c) == tuple(int(v) for v in expected[r, c])


def test_multiframe_instance_scrolls_through_its_frames(qtbot, viewport, library, tmp_path):
    ds = ct_dataset(0, 1, study_uid=pydicom.uid.generate_uid(), series_uid=pydicom.uid.generate_uid(),
                    rows=16, cols=16, window=None)
    del ds.ImagePositionPatient, ds.SliceLocation
    frames = np.stack([np.full((16, 16), 100 * k, dtype=np.int16) for k in range(5)])
    frames[:, 0, 0] = 0  # every frame spans 0..100k: the min/max window differs per frame
    ds.NumberOfFrames = 5
    ds.PixelData = frames.tobytes()
    path = tmp_path / "multi.dcm"
    ds.save_as(path, enforce_file_format=True)
    viewport.set_series(open_series(library, library.store_file(path).series_instance_uid))
    assert viewport.model.count == 5
    viewport.model.set_index(3)
    qtbot.waitUntil(lambda: viewport.message == "", timeout=5000)
    shown = viewport.displayed_array()
    assert shown[0, 0] == 0 and shown[5, 5] == 255  # min/max window of frame 4: 0 -> black, 300 -> white
    assert viewport.overlay_lines()["bottom_left"] == ("Im: 4/5",)


def test_every_pydicom_test_series_shows_an_image_or_a_sentence(qtbot, viewport, library, pydicom_test_files):
    """Robustness sweep: nothing in pydicom's test data (broken files included) may crash the viewport."""
    from viewer.library import import_paths

    import_paths(library, pydicom_test_files)
    shown = failed = 0
    for study in library.studies():
        for record in library.series(study.study_uid):
            viewport.set_series(open_series(library, record.series_uid))
            for action in (lambda: None, lambda: viewport.model.scroll(1), lambda: viewport.model.drag_window(9, 4),
                           viewport.model.toggle_invert, lambda: viewport.model.rotate(90)):
                action()
                assert not viewport.grab().isNull()
            viewport.model.set_index(0)
            qtbot.waitUntil(lambda: viewport.message != LOADING_TEXT, timeout=10000)
            if viewport.message:
                failed += 1
                assert viewport.displayed_array() is None
                assert not viewport.message.startswith("An unexpected error"), viewport.message
            else:
                shown += 1
    assert shown >= 20 and failed >= 1
