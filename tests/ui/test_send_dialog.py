"""The Send to PACS dialog (pytest-qt, a real window and library, a real Orthanc on loopback): a study sent from the
Studies panel's context menu is held by Orthanc, instance for instance, and the status line says how many were sent;
sending it again sends nothing and says they are already there."""

from __future__ import annotations

import json

import pydicom
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from mifaslab.orthanc import free_port
from tests.ui.test_reading_send import orthanc  # noqa: F401  (the fixture)
from viewer.settings import Settings

pytestmark = [pytest.mark.gui, pytest.mark.network]


def send(qtbot, window):
    window.browser_send_action.trigger()  # the study list's context menu entry
    dialog = window.sharing.send_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.scopes[0].key == "study" and dialog.target.currentText() == "PACS: orthanc"
    assert dialog.send_button.isEnabled(), dialog.send_button.toolTip()
    with qtbot.waitSignal(dialog.send_finished, timeout=60000) as finished:
        qtbot.mouseClick(dialog.send_button, Qt.MouseButton.LeftButton)
    result = finished.args[0]
    assert not isinstance(result, BaseException), result
    return dialog, result


def test_send_a_study_from_the_browser(qtbot, make_window, ct_series, orthanc, tmp_path,  # noqa: F811
                                       monkeypatch) -> None:
    monkeypatch.setenv("TCP_NODELAY", "1")
    settings = Settings(nodes=[orthanc.node()], default_via="get")
    window = make_window(ct_series.library, settings, resume_jobs=False,
                         cluster_profiles_path=tmp_path / "clusters.json", system_profiles_dir=None)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    assert window.browser.local.select_study(ct_series.study_uid)
    dialog, result = send(qtbot, window)
    assert result.complete and len(result.sent) == ct_series.n and not result.already_held
    assert f"Sent {ct_series.n} images to orthanc; 0 already there." in said
    assert not dialog.isVisible()
    held = {orthanc.rest("GET", f"/instances/{i}/tags?simplify")["SOPInstanceUID"]
            for i in orthanc.rest("GET", "/instances")}
    assert held == {pydicom.dcmread(f).SOPInstanceUID for f in ct_series.files}

    _, again = send(qtbot, window)  # nothing twice: Orthanc already holds them all
    assert again.complete and not again.sent and len(again.already_held) == ct_series.n
    assert f"Sent 0 images to orthanc; {ct_series.n} already there." in said
    assert len(orthanc.rest("GET", "/instances")) == ct_series.n


def test_a_failover_during_the_send_is_a_line_not_an_error_dialog(qtbot, make_window, ct_series, orthanc,  # noqa: F811
                                                                 tmp_path, monkeypatch) -> None:
    """A cluster whose virtual IP does not answer: the send goes on through the member that does; the dialog says
    so on its status line, the window's status line says what was sent, and no message box opens."""
    monkeypatch.setenv("TCP_NODELAY", "1")
    profiles = tmp_path / "clusters.json"
    profiles.write_text(json.dumps({"profiles": [{
        "name": "failover cluster", "ae_title": orthanc.aet, "calling_ae": "MIFASUI",
        "vip": {"host": "127.0.0.1", "port": free_port(), "name": "virtual IP"},
        "members": [{"name": "node A", "host": "127.0.0.1", "port": orthanc.dicom_port}],
        "timeouts": {"connect_s": 1, "acse_s": 2, "dimse_s": 5, "network_s": 10},
        "retry": {"budget_s": 20, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}}]}))
    window = make_window(ct_series.library, Settings(), resume_jobs=False, cluster_profiles_path=profiles,
                         system_profiles_dir=None)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    boxes: list[str] = []
    watch = QTimer()
    watch.timeout.connect(lambda: boxes.extend(
        w.text() for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()))
    watch.start(10)
    assert window.browser.local.select_study(ct_series.study_uid)
    window.browser_send_action.trigger()
    dialog = window.sharing.send_dialog
    assert dialog.target.currentText() == "PACS cluster: failover cluster"
    with qtbot.waitSignal(dialog.send_finished, timeout=60000) as finished:
        qtbot.mouseClick(dialog.send_button, Qt.MouseButton.LeftButton)
    watch.stop()
    result = finished.args[0]
    assert not isinstance(result, BaseException), result
    assert result.complete and len(result.sent) == ct_series.n
    assert any(text.startswith("virtual IP did not answer") for text in dialog.events)
    assert f"Sent {ct_series.n} images to failover cluster; 0 already there." in said
    assert boxes == []
    assert len(orthanc.rest("GET", "/instances")) == ct_series.n
