"""A reading that lasts (pytest-qt, a real library on disk): measurements drawn with the mouse and a key image come
back, at the same places with the same texts, in a new window on the same library; several saved readings open a
picker; a presentation state made by another program (DCMTK's dcmpsmk) displays; a save that fails on a read-only
library is a sentence and keeps the marks; the browser lists reading series as readings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from tests.ui.conftest import ct_dataset
from tests.ui.mouse import at, drag
from tests.ui.screenshots import save_screenshots, screenshot_dir
from viewer.dicom.pixels import Window
from viewer.library import Library
from viewer.ui.viewport import KEY_MARK_COLOR, MEASURE_COLOR, Viewport

pytestmark = pytest.mark.gui

DCMPSMK = "/usr/bin/dcmpsmk"
SLICES = 6


def store_series(library: Library, folder: Path, study_uid: str, *, number: int, description: str,
                 n: int = SLICES) -> tuple[str, list[Path]]:
    """A CT series of `n` slices in `study_uid`, written to `folder` and stored in `library`."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    files = []
    for i in range(n):
        ds = ct_dataset(i, n, study_uid=study_uid, series_uid=series_uid)
        ds.SeriesNumber, ds.SeriesDescription = number, description
        path = folder / f"{number}-{i:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        library.store_file(path)
        files.append(path)
    return series_uid, files


@pytest.fixture
def study(tmp_path: Path):
    """A library folder holding one study with two series: (root, study UID, axial UID, second UID, files)."""
    root = tmp_path / "library"
    library = Library.open(root)
    study_uid = generate_uid()
    axial, files = store_series(library, tmp_path / "dicom", study_uid, number=1, description="Axial")
    second, _ = store_series(library, tmp_path / "dicom", study_uid, number=2, description="Second", n=3)
    library.close()
    return root, study_uid, axial, second, files


def new_window(make_window, qtbot, library: Library, autosave_ms: int = 200):
    """A main window on `library` whose autosave waits `autosave_ms` after a change (the user's: 1.5 s)."""
    window = make_window(library, resume_jobs=False)
    window.readings._debounce.setInterval(autosave_ms)
    return window


def show(qtbot, window, series_uid: str, *, loaded: bool = False) -> Viewport:
    """Open `series_uid` and wait for its image (and, with `loaded`, for its saved reading to be put on it)."""
    if loaded:
        with qtbot.waitSignal(window.readings.loaded, timeout=10000):
            assert window.open_series(series_uid)
    else:
        with qtbot.waitSignal(window.readings.lookup_finished, timeout=10000):
            assert window.open_series(series_uid)
    viewport = window.viewport
    qtbot.waitUntil(lambda: viewport.displayed_array() is not None, timeout=5000)
    return viewport


def go_to(qtbot, view: Viewport, index: int) -> None:
    """Show slice `index` and wait until it is painted."""
    view.model.set_index(index)
    qtbot.waitUntil(lambda: view.displayed_array() is not None and view.painted_index == index, timeout=5000)


def draw_all_kinds(qtbot, window) -> None:
    """A distance and an angle on slice 1, a rectangle and an ellipse on slice 2, a probe on slice 4."""
    view = window.viewport
    tools = window.tool_actions
    go_to(qtbot, view, 1)
    tools["distance"].trigger()
    drag(qtbot, view, at(view, 10, 8), at(view, 40, 48))
    tools["angle"].trigger()
    drag(qtbot, view, at(view, 32, 32), at(view, 32, 52))
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 12, 32))
    go_to(qtbot, view, 2)
    tools["rectangle"].trigger()
    drag(qtbot, view, at(view, 12, 5), at(view, 30, 41))
    tools["ellipse"].trigger()
    drag(qtbot, view, at(view, 36, 10), at(view, 56, 50))
    go_to(qtbot, view, 4)
    tools["probe"].trigger()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 33))
    tools["probe"].trigger()  # back to navigating
    assert len(window.grid.annotations) == 5


def marks_by_slice(qtbot, view: Viewport) -> dict[int, list[tuple[str, tuple, str]]]:
    """What the viewport shows on each slice: (kind, points, text), sorted."""
    shown = {}
    for index in range(view.model.count):
        go_to(qtbot, view, index)
        shown[index] = sorted((a.kind, a.points, text) for a, text in view.measurements())
    return shown


def assert_same_marks(before, after) -> None:
    assert before.keys() == after.keys()
    for index in before:
        assert len(before[index]) == len(after[index]), f"slice {index}"
        for (kind, points, text), (kind2, points2, text2) in zip(before[index], after[index], strict=True):
            assert kind2 == kind and text2 == text
            assert np.allclose(np.array(points2), np.array(points), atol=0.5), (kind, points, points2)


def key_mark_pixels(view: Viewport) -> int:
    """How many pixels of the top strip have the key image mark's colour."""
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, strip = image.width(), 40
    raw = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * image.height())
    pixels = raw.reshape(image.height(), image.bytesPerLine())[:strip, :width * 3].reshape(strip, width, 3)
    target = np.array([KEY_MARK_COLOR.red(), KEY_MARK_COLOR.green(), KEY_MARK_COLOR.blue()])
    return int((np.abs(pixels.astype(int) - target).max(axis=2) <= 30).sum())


def press_k(qtbot, window, view: Viewport) -> None:
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_K)


# -- the acceptance round trip ---------------------------------------------------------------------------------


def test_measurements_and_key_image_survive_closing_the_viewer(qtbot, make_window, study) -> None:
    root, study_uid, axial, second, _ = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library, autosave_ms=600_000)  # only the close saves
    view = show(qtbot, window, axial)
    draw_all_kinds(qtbot, window)
    view.model.set_index(3)
    qtbot.waitUntil(lambda: view.painted_index == 3, timeout=5000)
    assert key_mark_pixels(view) == 0
    press_k(qtbot, window, view)
    assert window.grid.annotations.is_key_image(view.current_frame_key())
    qtbot.waitUntil(lambda: key_mark_pixels(view) > 20, timeout=3000)  # "KEY" on the image
    view.model.rotate(90)
    view.model.flip(horizontal=True)
    view.model.set_window(Window(100.0, 900.0))
    before = marks_by_slice(qtbot, view)
    view.model.set_index(0)
    view = show(qtbot, window, second)  # saves at once; the axial's view still counts once replaced
    window.tool_actions["probe"].trigger()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 10, 10))
    assert window.readings.dirty
    window.close()  # the last change is saved by the close, at once
    library.close()

    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial, loaded=True)
    assert_same_marks(before, marks_by_slice(qtbot, view))
    assert (view.model.rotation, view.model.flip_h, view.model.flip_v) == (90, True, False)
    assert (view.model.window.center, view.model.window.width) == pytest.approx((100.0, 900.0))
    keys = window.grid.annotations.key_images()
    assert [view.model.series.frame_ref(3).sop_instance_uid] == [sop for sop, _ in keys]
    panel = window.key_images_panel
    qtbot.waitUntil(lambda: panel.rows() == ["1: Axial — image 4"], timeout=3000)
    assert window.key_images_dock.isVisible()

    view = show(qtbot, window, second, loaded=True)  # another series: the key image's must open again
    assert window.current_series_uid == second
    assert [a.kind for a, _ in view.measurements()] == ["probe"]  # the change only the close saved
    panel.activate_row(0)
    qtbot.waitUntil(lambda: window.current_series_uid == axial and window.viewport.model.index == 3, timeout=5000)
    qtbot.waitUntil(lambda: key_mark_pixels(window.viewport) > 20, timeout=3000)
    press_k(qtbot, window, window.viewport)  # unmark: the list empties, the mark goes
    qtbot.waitUntil(lambda: panel.rows() == [] and key_mark_pixels(window.viewport) == 0, timeout=3000)
    window.close()
    library.close()


def test_a_calibration_is_stored_and_reloaded(qtbot, make_window, study) -> None:
    """The reader calibrates with the tool (a line over an object of known length, its mm typed in): after closing
    the viewer and reopening the series the image is still calibrated and its measurements say so."""
    root, _, axial, _, _ = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library, autosave_ms=600_000)  # only the close saves
    view = show(qtbot, window, axial)
    view.ask_length = lambda parent, current: 50.0  # the reader types 50 mm for the 40-pixel line
    window.tool_actions["calibrate"].trigger()
    drag(qtbot, view, at(view, 10, 10), at(view, 10, 50))
    sop = view.current_frame_key()[0]
    spacing = window.grid.annotations.calibration(sop)
    assert spacing == pytest.approx((1.25, 1.25), rel=0.01)  # 50 mm over about 40 pixels (mouse positions)
    window.tool_actions["distance"].trigger()
    drag(qtbot, view, at(view, 20, 10), at(view, 20, 30))
    [(_, text)] = view.measurements()
    value, unit = text.split(" ", 1)
    assert unit == "mm (calibrated)" and float(value) == pytest.approx(25.0, abs=0.5)
    assert "Calibrated" in sum(view.overlay_lines().values(), ())
    window.close()
    library.close()

    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial, loaded=True)
    assert window.grid.annotations.calibration(sop) == pytest.approx(spacing, abs=1e-6)
    assert [t for _, t in view.measurements()] == [text]
    assert "Calibrated" in sum(view.overlay_lines().values(), ())
    window.close()
    library.close()


def test_autosave_runs_after_a_change_without_closing(qtbot, make_window, study) -> None:
    root, study_uid, axial, _, _ = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial)
    window.tool_actions["distance"].trigger()
    with qtbot.waitSignal(window.readings.saved, timeout=10000) as saved:
        drag(qtbot, view, at(view, 5, 5), at(view, 50, 20))
    assert saved.args[0] and saved.args[0][0].presentation_states
    assert not window.readings.dirty
    held = {s.modality for s in library.series(study_uid)}
    assert "PR" in held  # the GSPS is in the study, in the library
    with qtbot.waitSignal(window.readings.saved, timeout=10000) as saved:  # a series' view counts too
        view.model.rotate(180)
    gsps = saved.args[0][0].presentation_states[0]
    assert pydicom.dcmread(library.path_of(gsps)).ImageRotation == 180


def test_a_failed_save_is_a_sentence_and_keeps_the_marks(qtbot, make_window, study) -> None:
    """A real fault: the library's folders for new files made read-only (immutable for root)."""
    root, study_uid, axial, _, _ = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial)
    locked = [library._tmp, root / "objects"]  # where every new file of the library is made
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    lock_folders(locked)
    try:
        window.tool_actions["distance"].trigger()
        with qtbot.waitSignal(window.readings.save_failed, timeout=10000) as failed:
            drag(qtbot, view, at(view, 5, 5), at(view, 50, 20))
        assert "could not be saved" in failed.args[0] and "kept on screen" in failed.args[0]
        assert any("could not be saved" in text for text in said)  # on the status line
        assert len(view.measurements()) == 1 and window.readings.dirty
    finally:
        unlock_folders(locked)
    with qtbot.waitSignal(window.readings.saved, timeout=10000):
        window.tool_actions["probe"].trigger()
        qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 20))
    assert not window.readings.dirty and len(view.measurements()) == 2


def lock_folders(folders: list[Path]) -> None:
    for folder in folders:
        os.chmod(folder, 0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the folders immutable instead
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", *map(str, folders)], capture_output=True).returncode:
            unlock_folders(folders)
            pytest.skip("running as root without chattr +i: no way to make a folder read-only")


def unlock_folders(folders: list[Path]) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run([shutil.which("chattr"), "-i", *map(str, folders)], capture_output=True)
    for folder in folders:
        os.chmod(folder, 0o700)


# -- another program's presentation state; the picker ---------------------------------------------------------


def dcmpsmk_gsps(image: Path, out: Path, points: tuple[tuple[float, float], tuple[float, float]],
                 label: str = "DCMTK") -> Path:
    """A GSPS for `image` made by DCMTK's dcmpsmk, with a polyline (columns, rows in GSPS pixel coordinates)
    added with pydicom."""
    subprocess.run([DCMPSMK, str(image), str(out)], check=True, capture_output=True,
                   env={**os.environ, "TCP_NODELAY": "1"})
    ds = pydicom.dcmread(out)
    image_ds = pydicom.dcmread(image, stop_before_pixels=True)
    layer = Dataset()
    layer.GraphicLayer = "ANNOTATIONS"
    layer.GraphicLayerOrder = 1
    ds.GraphicLayerSequence = [layer]
    graphic = Dataset()
    graphic.GraphicAnnotationUnits = "PIXEL"
    graphic.GraphicDimensions = 2
    graphic.NumberOfGraphicPoints = 2
    graphic.GraphicData = [float(v) for point in points for v in point]
    graphic.GraphicType = "POLYLINE"
    graphic.GraphicFilled = "N"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = image_ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = image_ds.SOPInstanceUID
    annotation = Dataset()
    annotation.ReferencedImageSequence = [referenced]
    annotation.GraphicLayer = "ANNOTATIONS"
    annotation.GraphicObjectSequence = [graphic]
    ds.GraphicAnnotationSequence = [annotation]
    ds.ContentLabel = label
    ds.ContentCreatorName = "Other^Reader"
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.mark.skipif(not Path(DCMPSMK).exists(), reason="DCMTK's dcmpsmk is not installed")
def test_a_gsps_made_by_dcmpsmk_displays(qtbot, make_window, study, tmp_path: Path) -> None:
    root, study_uid, axial, _, files = study
    library = Library.open(root)
    library.store_file(dcmpsmk_gsps(files[0], tmp_path / "gsps.dcm", ((8.5, 10.5), (48.5, 40.5))))
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial, loaded=True)
    view.model.set_index(0)
    qtbot.waitUntil(lambda: view.painted_index == 0, timeout=5000)
    (annotation, text), = view.measurements()
    assert annotation.kind == "distance"
    assert np.allclose(np.array(annotation.points), [(10, 8), (40, 48)], atol=0.5)
    assert text == "35.0 mm"  # 30 x 40 pixels of 0.7 mm
    view.set_overlays_visible(False)
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    mid = at(view, 25, 28)
    colour = image.pixelColor(mid.x(), mid.y())
    assert (colour.red(), colour.green(), colour.blue()) == pytest.approx(
        (MEASURE_COLOR.red(), MEASURE_COLOR.green(), MEASURE_COLOR.blue()), abs=40)
    window.close()
    library.close()


@pytest.mark.skipif(not Path(DCMPSMK).exists(), reason="DCMTK's dcmpsmk is not installed")
def test_several_readings_open_a_picker(qtbot, make_window, study, tmp_path: Path) -> None:
    root, study_uid, axial, _, files = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial)
    window.tool_actions["probe"].trigger()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 20))
    window.close()  # ours, saved
    library.store_file(dcmpsmk_gsps(files[0], tmp_path / "gsps.dcm", ((8.5, 10.5), (48.5, 40.5))))

    window = new_window(make_window, qtbot, library)
    with qtbot.waitSignal(window.readings.picker_opened, timeout=10000) as opened:
        window.open_series(axial)
    picker = opened.args[0]
    rows = picker.rows()
    assert len(rows) == 3 and rows[-1].startswith("None")
    assert sum("(MIFAS Viewer)" in r for r in rows) == 1 and sum("(another program)" in r for r in rows) == 1
    assert picker.list.currentRow() == 0  # the newest first
    foreign = next(r for r, text in enumerate(rows) if "(another program)" in text)
    assert rows[foreign].startswith("DCMTK — Other Reader")
    picker.list.setCurrentRow(foreign)
    with qtbot.waitSignal(window.readings.loaded, timeout=10000):
        picker.accept()
    qtbot.waitUntil(lambda: window.viewport.displayed_array() is not None, timeout=5000)
    assert [a.kind for a, _ in window.viewport.measurements()] == ["distance"]  # dcmpsmk's, not our probe
    window.close()

    window = new_window(make_window, qtbot, library)  # "None": nothing loaded
    with qtbot.waitSignal(window.readings.picker_opened, timeout=10000) as opened:
        window.open_series(axial)
    opened.args[0].list.setCurrentRow(2)
    opened.args[0].accept()
    qtbot.waitUntil(lambda: window.viewport.displayed_array() is not None, timeout=5000)
    assert window.viewport.measurements() == [] and len(window.grid.annotations) == 0
    window.close()
    library.close()


def test_the_browser_lists_reading_series_as_readings_and_opens_their_images(qtbot, make_window, study,
                                                                               tmp_path: Path) -> None:
    root, study_uid, axial, _, files = study
    library = Library.open(root)
    library.store_file(dcmpsmk_gsps(files[0], tmp_path / "gsps.dcm", ((8.5, 10.5), (48.5, 40.5))))
    window = new_window(make_window, qtbot, library)
    local = window.browser.local
    local.refresh(study_uid)
    texts = [local.series.data(local.series.index(r)) for r in range(local.series.rowCount())]
    reading_rows = [r for r, t in enumerate(texts) if t.startswith("Reading (GSPS)")]
    assert len(reading_rows) == 1 and sum(t.startswith("Reading") for t in texts) == 1
    with qtbot.waitSignal(window.readings.loaded, timeout=10000):
        local.series_view.activated.emit(local.series.index(reading_rows[0]))
    assert window.current_series_uid == axial  # the images the GSPS is about, with it
    window.viewport.model.set_index(0)
    qtbot.waitUntil(lambda: window.viewport.displayed_array() is not None, timeout=5000)
    assert [a.kind for a, _ in window.viewport.measurements()] == ["distance"]
    window.close()
    library.close()


# -- screenshots for docs/user-guide.md -----------------------------------------------------------------------


def test_screenshots_for_the_user_guide(qtbot, make_window, study, tmp_path: Path) -> None:
    """The user guide's pictures of a reading: measurements and a key image, the key images list, the picker."""
    out = screenshot_dir(tmp_path)
    root, study_uid, axial, _, files = study
    library = Library.open(root)
    window = new_window(make_window, qtbot, library)
    window.resize(1100, 700)
    view = show(qtbot, window, axial)
    draw_all_kinds(qtbot, window)
    view.model.set_index(2)
    qtbot.waitUntil(lambda: view.painted_index == 2, timeout=5000)
    press_k(qtbot, window, view)
    view.model.set_index(1)
    qtbot.waitUntil(lambda: view.painted_index == 1, timeout=5000)
    press_k(qtbot, window, view)
    qtbot.waitUntil(lambda: key_mark_pixels(view) > 20, timeout=3000)
    view.resize(560, 560)
    shots = {"reading-key-image.png": view.grab()}
    window.key_images_dock.show()
    qtbot.waitUntil(lambda: len(window.key_images_panel.rows()) == 2, timeout=3000)
    window.key_images_panel.resize(320, 160)
    shots["key-images-dock.png"] = window.key_images_panel.grab()
    window.close()
    library.store_file(dcmpsmk_gsps(files[0], tmp_path / "gsps.dcm", ((8.5, 10.5), (48.5, 40.5))))
    window = new_window(make_window, qtbot, library)
    with qtbot.waitSignal(window.readings.picker_opened, timeout=10000) as opened:
        window.open_series(axial)
    qtbot.waitExposed(opened.args[0])
    shots["reading-picker.png"] = opened.args[0].grab()
    opened.args[0].reject()
    window.close()
    library.close()
    save_screenshots(shots, out)


def test_a_reading_reopened_is_not_saved_again_for_a_change_elsewhere(qtbot, make_window, study,
                                                                       tmp_path: Path) -> None:
    """A sent reading, reopened, makes no new version when only another study changes."""
    from viewer.reading import persist

    root, study_uid, axial, _, _ = study
    library = Library.open(root)
    other_study = generate_uid()
    other, _ = store_series(library, tmp_path / "other", other_study, number=1, description="Other", n=2)
    window = new_window(make_window, qtbot, library)
    view = show(qtbot, window, axial)
    window.tool_actions["probe"].trigger()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 20))
    window.close()
    sent = persist.reading_uids(library, study_uid)
    persist.mark_sent(library, sent)

    window = new_window(make_window, qtbot, library)
    show(qtbot, window, axial, loaded=True)
    view = show(qtbot, window, other)
    window.tool_actions["probe"].trigger()
    with qtbot.waitSignal(window.readings.saved, timeout=10000):
        qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 10, 10))
    window.close()
    assert persist.reading_uids(library, study_uid) == sent  # untouched
    assert persist.reading_uids(library, other_study)  # the other study's reading is saved
    library.close()


def test_key_images_of_a_study_and_its_prior_are_told_apart(qtbot, tmp_path: Path) -> None:
    """Key images in two studies (a comparison with a prior): each row starts with its study's date, the newer
    study first; with one study the rows carry no date."""
    from viewer.reading.annotations import AnnotationStore
    from viewer.ui.key_images import KeyImagesPanel

    library = Library.open(tmp_path / "library")
    series = {}
    for date in ("20240601", "20200101"):
        study_uid, series_uid = generate_uid(), generate_uid()
        for i in range(3):
            ds = ct_dataset(i, 3, study_uid=study_uid, series_uid=series_uid)
            ds.StudyDate = date
            library.store_bytes(part10(ds))
        series[date] = series_uid
    store = AnnotationStore()
    panel = KeyImagesPanel(library, store)
    qtbot.addWidget(panel)
    newer = [i.sop_instance_uid for i in library.instances(series["20240601"])]
    older = [i.sop_instance_uid for i in library.instances(series["20200101"])]
    store.set_key_image((newer[2], 0), True)
    panel.refresh()
    assert panel.rows() == ["1: Axial — image 3"]
    store.set_key_image((older[0], 0), True)
    store.set_key_image((newer[0], 0), True)
    panel.refresh()
    assert panel.rows() == ["2024-06-01 · 1: Axial — image 1", "2024-06-01 · 1: Axial — image 3",
                            "2020-01-01 · 1: Axial — image 1"]
    library.close()


def part10(ds) -> bytes:
    from io import BytesIO

    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
