"""The main window: opening series, importing with a summary, the demo, docks and the last-resort hook."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from viewer.dicom.demo import DEMO_SERIES_UID, DEMO_STUDY_UID
from viewer.library import import_paths
from viewer.ui import main_window as mw
from viewer.ui.excepthook import ExceptHook

pytestmark = pytest.mark.gui


@pytest.fixture(scope="session")
def pydicom_test_folder(pydicom_test_files) -> Path:
    folder = pydicom_test_files[0].parent
    while folder.name != "test_files":
        folder = folder.parent
    return folder


def test_open_series_from_browser(qtbot, make_window, ct_series):
    window = make_window(ct_series.library)
    with qtbot.waitSignal(window.series_opened, timeout=2000):
        window.browser.local.series_view.activated.emit(window.browser.local.series.index(0))
    assert window.current_series_uid == ct_series.series_uid
    assert window.viewport.model.count == 8
    assert window.viewport.displayed_array() is not None
    qtbot.waitUntil(lambda: window.viewport.painted_index == 0, timeout=3000)


def test_toolbar_actions_drive_the_model(qtbot, make_window, ct_series):
    window = make_window(ct_series.library)
    window.open_series(ct_series.series_uid)
    m = window.viewport.model
    window.preset_actions["CT bone"].trigger()
    assert (m.window.center, m.window.width) == (400, 1800)
    window.invert_action.trigger()
    assert m.invert
    window.viewport.model.toggle_invert()  # and the model keeps the action in step
    assert not window.invert_action.isChecked()
    window.rotate_right_action.trigger()
    window.flip_h_action.trigger()
    assert (m.rotation, m.flip_h) == (90, True)
    window.reset_action.trigger()
    assert (m.rotation, m.flip_h, m.window) == (0, False, None)
    window.fps_box.setValue(25)
    assert m.cine_fps == 25
    window.cine_action.trigger()
    assert m.playing
    window.cine_action.trigger()
    assert not m.playing
    window.overlays_action.trigger()
    assert not window.viewport.overlays_visible


def test_import_folder_shows_summary_with_failures(qtbot, make_window, library, pydicom_test_folder):
    window = make_window(library)
    assert window.browser.local.demo_button.isVisible()
    with qtbot.waitSignal(window.import_finished, timeout=60000) as finished:
        assert window.import_paths([pydicom_test_folder]) is not None
        assert window.busy
    summary = finished.args[0]
    assert summary.added > 50 and summary.failures_total > 0
    dialog = window.import_summary_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    assert dialog.message.text() == summary.describe()
    rows = dialog.failure_rows()
    assert len(rows) == len(summary.failures)
    assert any(Path(path).name == "README.txt" and reason == "This is not a DICOM file." for path, reason in rows)
    assert window.browser.local.studies.rowCount() == len(library.studies())
    assert not window.browser.local.demo_button.isVisible()
    assert not window.busy and window.import_files_action.isEnabled()


def test_import_can_be_cancelled_from_the_progress_dialog(qtbot, make_window, library, pydicom_test_folder,
                                                        monkeypatch):
    started = threading.Event()
    release = threading.Event()

    def slow_import(lib, paths, *, progress=None, cancel=None):
        started.set()
        release.wait(10)
        return import_paths(lib, paths, progress=progress, cancel=cancel)

    monkeypatch.setattr(mw, "import_paths", slow_import)
    window = make_window(library)
    with qtbot.waitSignal(window.import_finished, timeout=20000) as finished:
        window.import_paths([pydicom_test_folder])
        assert started.wait(5)
        assert window.progress_dialog is not None
        button = window.progress_dialog.findChild(QPushButton)
        assert button.text() == "Cancel"
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        release.set()
    summary = finished.args[0]
    assert summary.cancelled and summary.added == 0
    assert window.import_summary_dialog.windowTitle() == "Import cancelled"


def test_import_then_open_first_series(qtbot, make_window, library, ct_series):
    window = make_window(library)  # a second, empty library: import the series' files into it
    with qtbot.waitSignal(window.series_opened, timeout=20000) as opened:
        window.import_paths([ct_series.files[0].parent], open_first=True)
    assert opened.args == [ct_series.series_uid]


def test_nothing_importable_reports_failure(qtbot, make_window, library, tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("not dicom")
    window = make_window(library)
    with qtbot.waitSignal(window.load_failed, timeout=20000) as failed:
        window.import_paths([junk], open_first=True)
    assert "Nothing that could be shown was imported" in failed.args[0]


def test_demo_study_loads_and_opens(qtbot, make_window, library):
    window = make_window(library)
    with qtbot.waitSignal(window.series_opened, timeout=60000) as opened:
        qtbot.mouseClick(window.browser.local.demo_button, Qt.MouseButton.LeftButton)
    assert opened.args == [DEMO_SERIES_UID]
    assert library.study(DEMO_STUDY_UID) is not None
    shown = window.viewport.displayed_array()
    assert shown is not None and len(np.unique(shown)) > 3
    assert window.viewport.overlay_lines()["top_left"][0] == "MIFAS Demo"
    # Idempotent: a second demo load adds nothing.
    before = len(library.instance_uids(DEMO_SERIES_UID))
    with qtbot.waitSignal(window.series_opened, timeout=60000):
        window.load_demo()
    assert len(library.instance_uids(DEMO_SERIES_UID)) == before


def test_tag_dock_follows_the_slice(qtbot, make_window, ct_series):
    window = make_window(ct_series.library)
    window.open_series(ct_series.series_uid)
    assert not window.tag_dock.isVisible()
    window.tags_action.trigger()
    assert window.tag_dock.isVisible()

    def instance_number() -> str:
        return next((r[3] for r in window.tag_browser.visible_rows() if r[1] == "InstanceNumber"), "")

    qtbot.waitUntil(lambda: instance_number() == "1", timeout=5000)
    window.viewport.model.scroll(3)
    qtbot.waitUntil(lambda: instance_number() == "4", timeout=5000)


def test_open_missing_series_says_so(qtbot, make_window, library):
    window = make_window(library)
    with qtbot.waitSignal(window.load_failed, timeout=1000) as failed:
        assert not window.open_series("1.2.3.4")
    assert failed.args == ["That series has no images in the local library."]
    assert window.message_box is not None and window.message_box.text() == failed.args[0]


def test_excepthook_shows_a_dialog_and_the_app_survives(qtbot, make_window, library, monkeypatch):
    hook = ExceptHook()
    monkeypatch.setattr(sys, "excepthook", hook)
    window = make_window(library)

    def broken_slot():
        raise RuntimeError("a bug in a slot")

    QTimer.singleShot(0, broken_slot)
    qtbot.waitUntil(lambda: hook.count == 1, timeout=3000)
    assert hook.last_text == "An unexpected error occurred (RuntimeError). Details are in the log."
    boxes = [w for w in QApplication.topLevelWidgets() + window.findChildren(QMessageBox)
             if isinstance(w, QMessageBox) and w.isVisible() and w.windowTitle() == "Unexpected error"]
    assert len(boxes) == 1 and hook.last_text in boxes[0].text()
    QTimer.singleShot(0, broken_slot)  # a second error while the dialog is open: logged, no second dialog
    qtbot.waitUntil(lambda: hook.count == 2, timeout=3000)
    boxes[0].close()
    assert window.isVisible()
    window.viewport.model.scroll(1)  # still responsive
