"""Sending a reading to a PACS from the window (pytest-qt, a real Orthanc on loopback): the Reading menu's "Send
reading to PACS" stores the study's GSPS, SR and KOS on the source chosen, and says so on the status line; a
failover during the send is a line in the PACS health log and a status line, never a dialog."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from mifaslab.orthanc import OrthancProcess, free_port, orthanc_available
from tests.support import require
from tests.ui.test_reading_persist import at, drag, show
from viewer.library import Library
from viewer.settings import Settings

pytestmark = [pytest.mark.gui, pytest.mark.network]


@pytest.fixture
def orthanc(tmp_path):
    require(orthanc_available(), "Orthanc (Debian package 'orthanc') is not installed")
    with OrthancProcess(tmp_path / "server") as server:
        yield server


def test_send_reading_to_the_pacs(qtbot, make_window, ct_series, orthanc, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TCP_NODELAY", "1")
    library: Library = ct_series.library
    settings = Settings(nodes=[orthanc.node()], default_via="get")
    window = make_window(library, settings, resume_jobs=False, cluster_profiles_path=tmp_path / "clusters.json",
                         system_profiles_dir=None)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    view = show(qtbot, window, ct_series.series_uid)
    window.tool_actions["probe"].trigger()
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=at(view, 20, 20))
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_K)
    with qtbot.waitSignal(window.readings.send_finished, timeout=30000) as finished:
        window.send_reading_action.trigger()  # the only PACS configured: no need to choose it
    result = finished.args[0]
    assert not isinstance(result, BaseException), result
    assert result.complete and len(result.sent) == 3  # GSPS, SR, KOS: saved first, then sent
    assert any("The reading was sent to orthanc (3 reading objects)." == text for text in said)
    on_pacs = {orthanc.rest("GET", f"/instances/{i}/tags?simplify")["SOPClassUID"]
               for i in orthanc.rest("GET", "/instances")}
    assert {"1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.88.34",
            "1.2.840.10008.5.1.4.1.1.88.59"} <= on_pacs


def test_a_failover_during_the_send_is_a_status_line(qtbot, make_window, ct_series, orthanc, tmp_path,
                                                     monkeypatch) -> None:
    """A cluster whose virtual IP does not answer: the send fails over to the member that does, says so in the
    PACS health log, and ends with a status line; no dialog opens."""
    monkeypatch.setenv("TCP_NODELAY", "1")
    closed = free_port()
    profiles = tmp_path / "clusters.json"
    profiles.write_text(json.dumps({"profiles": [{
        "name": "failover cluster", "ae_title": orthanc.aet, "calling_ae": "MIFASUI",
        "vip": {"host": "127.0.0.1", "port": closed, "name": "virtual IP"},
        "members": [{"name": "node A", "host": "127.0.0.1", "port": orthanc.dicom_port}],
        "timeouts": {"connect_s": 1, "acse_s": 2, "dimse_s": 5, "network_s": 10},
        "retry": {"budget_s": 20, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}}]}))
    window = make_window(ct_series.library, Settings(), resume_jobs=False, cluster_profiles_path=profiles,
                         system_profiles_dir=None)
    said: list[str] = []
    window.statusBar().messageChanged.connect(said.append)
    events = []
    window.retrievals.retry_event.connect(events.append)
    dialogs: list[str] = []
    watch = QTimer()
    watch.timeout.connect(lambda: dialogs.extend(
        type(w).__name__ for w in QApplication.topLevelWidgets()
        if isinstance(w, (QMessageBox, QDialog)) and w.isVisible()))
    watch.start(10)
    view = show(qtbot, window, ct_series.series_uid)
    window.tool_actions["distance"].trigger()
    drag(qtbot, view, at(view, 5, 5), at(view, 40, 30))
    window.browser.source.setCurrentIndex(window.browser.source.findText("PACS cluster: failover cluster"))
    with qtbot.waitSignal(window.readings.send_finished, timeout=30000) as finished:
        window.send_reading_action.trigger()
    watch.stop()
    result = finished.args[0]
    assert not isinstance(result, BaseException), result
    assert result.complete and len(result.sent) == 2  # GSPS and SR (no key image)
    assert any(e.node == "virtual IP" for e in events) and window.retrievals.event_log.entries()
    assert "The reading was sent to failover cluster (2 reading objects)." in said
    assert dialogs == []
