"""The Export dialog (pytest-qt, a real window, library and export engine): a study exported as DICOM into a folder
through the dialog's choices, with its status line; a de-identified export whose files carry no patient name or
ID; a series with burned-in annotation listed with its reason and left out by default; Cancel leaves nothing at the
destination; the browser's context menu and File > Export… open the dialog."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt

from tests.ui.conftest import ct_dataset
from viewer.ui.export_dialog import LEAVE_OUT

pytestmark = [pytest.mark.gui]

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def add_burned_in_series(library, study_uid: str, folder: Path, n: int = 2) -> str:
    """A US series of the same study whose images say Burned In Annotation YES."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for i in range(n):
        ds = ct_dataset(i, n, study_uid=study_uid, series_uid=series_uid)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
        ds.Modality = "US"
        ds.SeriesNumber = 2
        ds.SeriesDescription = "Echo"
        ds.BurnedInAnnotation = "YES"
        path = folder / f"us{i}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        library.store_file(path)
    return series_uid


def open_dialog(qtbot, make_window, library, study_uid, tmp_path):
    window = make_window(library, resume_jobs=False, cluster_profiles_path=tmp_path / "clusters.json",
                         system_profiles_dir=None)
    assert window.browser.local.select_study(study_uid)
    window.browser_export_action.trigger()  # the study list's context menu entry
    dialog = window.sharing.export_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.current_scope.key == "study"
    return window, dialog


def dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".dcm")


def run_export(qtbot, dialog) -> object:
    with qtbot.waitSignal(dialog.export_finished, timeout=30000) as finished:
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    return finished.args[0]


def test_a_study_exported_as_dicom_into_a_folder(qtbot, make_window, ct_series, tmp_path) -> None:
    window, dialog = open_dialog(qtbot, make_window, ct_series.library, ct_series.study_uid, tmp_path)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    dialog.choose(container="folder", form="dicom")
    out = tmp_path / "exported"
    dialog.destination.setText(str(out))
    result = run_export(qtbot, dialog)
    assert not isinstance(result, BaseException), result
    files = dicom_files(out)
    assert len(files) == ct_series.n
    exported = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert exported == {pydicom.dcmread(f).SOPInstanceUID for f in ct_series.files}
    assert f"Exported {ct_series.n} images to {out}." in said
    assert not dialog.isVisible()


def test_a_deidentified_export_leaves_out_the_burned_in_series(qtbot, make_window, ct_series, tmp_path) -> None:
    library = ct_series.library
    us_uid = add_burned_in_series(library, ct_series.study_uid, tmp_path / "us")
    window, dialog = open_dialog(qtbot, make_window, library, ct_series.study_uid, tmp_path)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    assert len(dialog.option_boxes) >= 10  # the profile's options, by their standard names
    assert any("Modified Dates" in box.text() for box in dialog.option_boxes.values())
    with qtbot.waitSignal(dialog.burned_in_listed, timeout=10000):
        qtbot.mouseClick(dialog.deidentify, Qt.MouseButton.LeftButton)
    rows = dialog.burned_in_rows()
    assert [(uid, choice) for uid, _reason, choice in rows] == [(us_uid, LEAVE_OUT)]
    assert rows[0][1]  # the reason, in words
    dialog.pseudonym.setText("TEACHING^CASE1")
    out = tmp_path / "anonymous"
    dialog.destination.setText(str(out))
    result = run_export(qtbot, dialog)
    assert not isinstance(result, BaseException), result
    files = dicom_files(out)
    assert len(files) == ct_series.n  # the echo series was left out
    for f in files:
        data = f.read_bytes()
        assert b"Test^Patient" not in data and b"UI-0001" not in data
        assert pydicom.dcmread(f).PatientName == "TEACHING^CASE1"
    line = next(text for text in said if text.startswith("Exported"))
    assert line.startswith(f"Exported {ct_series.n} images to {out}; 1 series left out: ")


def test_cancel_leaves_no_destination(qtbot, make_window, ct_series, tmp_path) -> None:
    window, dialog = open_dialog(qtbot, make_window, ct_series.library, ct_series.study_uid, tmp_path)
    out = tmp_path / "cancelled"
    dialog.destination.setText(str(out))
    # The dialog's one worker is held busy, so the export is queued when Cancel is clicked: the cancel is
    # certain to be seen by the export, with no race against a fast disk.
    release = threading.Event()
    dialog._runner.submit(lambda progress, cancel: release.wait(10))
    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert dialog.running
    with qtbot.waitSignal(dialog.export_finished, timeout=30000) as finished:
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
        release.set()
    assert type(finished.args[0]).__name__ == "OperationCancelled"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cancelled")]  # no partial folder either
    assert dialog.status.text() == "The export was cancelled; nothing was written."
    assert dialog.isVisible()  # the user may choose again


def test_file_menu_export_offers_the_open_series_and_movie_forms(qtbot, make_window, ct_series, tmp_path) -> None:
    from tests.ui.test_reading_persist import show

    window = make_window(ct_series.library, resume_jobs=False, cluster_profiles_path=tmp_path / "clusters.json",
                         system_profiles_dir=None)
    show(qtbot, window, ct_series.series_uid)
    assert window.export_action.shortcut().toString() == "Ctrl+Shift+E"
    window.export_action.trigger()
    dialog = window.sharing.export_dialog
    assert dialog.current_scope.key == "viewport"
    assert dialog.current_scope.instances and len(dialog.current_scope.instances) == ct_series.n
    model = dialog.form.model()
    assert model.item(dialog.form.findData("mp4")).isEnabled()  # eight frames: a movie is possible
    dialog.choose(container="media")
    assert not model.item(dialog.form.findData("png")).isEnabled()  # a DICOMDIR holds DICOM only
    assert dialog.copy_viewer.isEnabled()


def test_black_out_regions_exports_the_burned_in_series_with_the_rectangles_black(qtbot, make_window, ct_series,
                                                                                   tmp_path) -> None:
    library = ct_series.library
    us_uid = add_burned_in_series(library, ct_series.study_uid, tmp_path / "us")
    window, dialog = open_dialog(qtbot, make_window, library, ct_series.study_uid, tmp_path)
    with qtbot.waitSignal(dialog.burned_in_listed, timeout=10000):
        qtbot.mouseClick(dialog.deidentify, Qt.MouseButton.LeftButton)
    choice = dialog.burned_in.cellWidget(0, 2)
    choice.setFocus()
    qtbot.keyClick(choice, Qt.Key.Key_Down)  # "Black out regions…": the editor opens on the echo's first image
    editor = dialog.editor
    assert editor is not None
    qtbot.waitUntil(lambda: editor.canvas.image_size == (ct_series.cols, ct_series.rows), timeout=10000)
    canvas = editor.canvas
    canvas.set_zoom(3.0)
    a, b = canvas.image_to_widget(4.5, 2.5), canvas.image_to_widget(19.5, 9.5)  # columns 4-19, rows 2-9
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a.toPoint())
    qtbot.mouseMove(canvas, b.toPoint())
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b.toPoint())
    qtbot.mouseClick(editor.buttons.button(editor.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert {uid: [(r.x, r.y, r.width, r.height) for r in rects] for uid, rects in dialog.blackout.items()} == {
        us_uid: [(4, 2, 16, 8)]}
    assert dialog.burned_in_rows()[0][2].startswith("Black out 1 region")
    out = tmp_path / "blacked"
    dialog.destination.setText(str(out))
    result = run_export(qtbot, dialog)
    assert not isinstance(result, BaseException), result
    assert not result.excluded
    echoes = [ds for ds in map(pydicom.dcmread, dicom_files(out)) if ds.Modality == "US"]
    assert len(echoes) == 2
    for ds in echoes:
        pixels = ds.pixel_array
        assert (pixels[2:10, 4:20] == pixels.min()).all()
        assert not (pixels[10:, 20:] == pixels.min()).all()  # the rest is the image


def test_the_scopes_follow_the_series_selected_and_the_key_images(qtbot, make_window, ct_series, tmp_path) -> None:
    """Several series selected with Ctrl-click in the Studies panel, then its context menu: the selection is what
    is exported; a key image makes a scope of its own."""
    library = ct_series.library
    us_uid = add_burned_in_series(library, ct_series.study_uid, tmp_path / "us")
    window = make_window(library, resume_jobs=False, cluster_profiles_path=tmp_path / "clusters.json",
                         system_profiles_dir=None)
    local = window.browser.local
    assert local.select_study(ct_series.study_uid)
    qtbot.waitUntil(lambda: local.series.rowCount() == 2, timeout=5000)
    view = local.series_view
    for row in range(2):
        rect = view.visualRect(local.series.index(row, 0))
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ControlModifier,
                         rect.center())
    assert set(local.selected_series_uids()) == {ct_series.series_uid, us_uid}
    assert window.series_export_action in view.actions() and window.series_send_action in view.actions()
    window.series_export_action.trigger()  # the series list's context menu entry
    dialog = window.sharing.export_dialog
    assert dialog.current_scope.key == "selection"
    assert set(dialog.current_scope.series_uids) == {ct_series.series_uid, us_uid}
    assert len(dialog.current_scope.instances) == ct_series.n + 2
    dialog.reject()

    sop = sorted(library.instance_uids(ct_series.series_uid))[3]
    window.grid.annotations.set_key_image((sop, 0), True)
    window.export_action.trigger()
    scopes = {s.key: s for s in window.sharing.export_dialog.scopes}
    assert scopes["key-images"].instances == (sop,)


def test_an_export_that_cannot_be_written_is_an_error_dialog_with_a_sentence(qtbot, make_window, ct_series,
                                                                             tmp_path) -> None:
    window, dialog = open_dialog(qtbot, make_window, ct_series.library, ct_series.study_uid, tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    dialog.destination.setText(str(taken))
    result = run_export(qtbot, dialog)
    assert type(result).__name__ == "ExportError"
    box = window.message_box
    assert box is not None and box.isVisible() and box.windowTitle() == "Export failed"
    assert box.text() == str(result) and "Test" not in box.text() and "UI-0001" not in box.text()
    assert sorted(p.name for p in taken.iterdir()) == ["mine.txt"]  # nothing overwritten
    assert dialog.isVisible() and dialog.export_button.isEnabled()
