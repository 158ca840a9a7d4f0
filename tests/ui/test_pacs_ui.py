"""PACS panel and settings dialog against a real Orthanc on loopback (C-FIND, C-GET, QIDO/WADO-RS, C-ECHO)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from mifaslab.orthanc import OrthancProcess, free_port, orthanc_available
from tests.support import require
from tests.ui.conftest import write_ct_series
from viewer.library import Library
from viewer.pacs.node import Node, Timeouts
from viewer.settings import Settings, load_settings
from viewer.ui.main_window import MainWindow
from viewer.ui.pacs_panel import PacsPanel
from viewer.ui.retrieval_service import RetrievalService
from viewer.ui.settings_dialog import SettingsDialog

pytestmark = [pytest.mark.gui, pytest.mark.network]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require(orthanc_available(), "Orthanc (Debian package 'orthanc') is not installed")
    work = tmp_path_factory.mktemp("orthanc")
    study_uid, series_uid, files = write_ct_series(work / "ct", n=6, rows=32, cols=32)
    with OrthancProcess(work / "server") as server:
        server.upload(files)
        server.study_uid, server.series_uid = study_uid, series_uid
        yield server


@pytest.fixture
def make_panel(qtbot, tmp_path):
    made, services = [], []

    def make(node, library, **kwargs):
        service = RetrievalService(library, profiles_path=tmp_path / "clusters.json", system_dir=None)
        services.append(service)
        panel = PacsPanel(node, library, service, **kwargs)
        qtbot.addWidget(panel)
        panel.resize(700, 600)
        panel.show()
        made.append(panel)
        return panel

    yield make
    for p in made:
        p.shutdown()
    for service in services:
        service.shutdown()


def query(qtbot, panel: PacsPanel, name: str = "", patient_id: str = "") -> None:
    panel.search.patient_name.setText(name)
    panel.search.patient_id.setText(patient_id)
    panel.run_query()
    assert panel.status.text().startswith("Searching")  # returned at once; the worker queries
    qtbot.waitUntil(lambda: not panel.status.text().startswith("Searching"), timeout=20000)


def test_the_panels_search_and_retrieval_are_in_the_audit_trail(qtbot, make_panel, library, orthanc, tmp_path):
    """A search and a retrieval from the PACS panel give the audit trail a Query, a Begin Transferring and an
    Instances Transferred (schema-valid, with the study's patient in the XML), like mifas-pacs's."""
    from tests.audit.support import parse
    from viewer import audit
    from viewer.audit import AuditConfig

    audit.start("mifas-viewer", AuditConfig(), tmp_path / "audit")
    try:
        panel = make_panel(orthanc.node(), library, via="get")
        query(qtbot, panel, patient_id="UI-0001")
        panel.table.selectRow(0)
        with qtbot.waitSignals([panel.retrieved, panel.retrieved], timeout=30000):
            panel.retrieve_selected()
        qtbot.waitUntil(lambda: not panel.busy, timeout=30000)
    finally:
        audit.stop()
    lines = [line for path in (tmp_path / "audit").glob("audit-*.log") for line in path.read_bytes().splitlines()]
    received = [parse(line) for line in lines]
    assert [m.event for m in received] == ["Application Start", "Query", "Begin Transferring DICOM Instances",
                                           "DICOM Instances Transferred", "Application Stop"]
    done = received[3].xml
    assert done.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert any(p.get("ParticipantObjectID") == orthanc.study_uid for p in done.iter("ParticipantObjectIdentification"))


@pytest.mark.parametrize("via", ["get", "wado"])
def test_query_and_retrieve_into_the_library(qtbot, make_panel, library, orthanc, via):
    panel = make_panel(orthanc.node(), library, via=via)
    assert panel.selected_via == via
    query(qtbot, panel, patient_id="UI-0001")
    assert panel.status.text() == "1 study found on orthanc.", panel.status.text()
    row = panel.results.row(0)
    assert row["StudyInstanceUID"] == orthanc.study_uid
    assert panel.results.index(0, 0).data() == "Test Patient"
    assert panel.results.index(0, 7).data() == ""  # not yet local
    panel.table.selectRow(0)
    assert panel.retrieve_button.isEnabled()
    with qtbot.waitSignals([panel.retrieved, panel.retrieved], timeout=30000):  # first images, then the end
        qtbot.mouseClick(panel.retrieve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.busy, timeout=30000)
    assert len(library.instance_uids(orthanc.series_uid)) == 6
    assert panel.status.text() == "Retrieved from orthanc: 6 of 6 images are here (6 received).", panel.status.text()
    assert panel.results.index(0, 7).data() == "yes"
    assert not panel.progress.isVisible()
    # Again: everything is held already, nothing is fetched.
    with qtbot.waitSignal(panel.retrieved, timeout=30000):
        panel.retrieve(orthanc.study_uid)
    qtbot.waitUntil(lambda: not panel.busy, timeout=30000)
    assert "6 already in the library" in panel.status.text()


@pytest.mark.parametrize("via", ["get", "wado"])
def test_patient_name_wildcard_search(qtbot, make_panel, library, orthanc, via):
    panel = make_panel(orthanc.node(), library, via=via)
    query(qtbot, panel, "test")  # sent as *test*: case-insensitive substring, like the local search
    assert panel.status.text() == "1 study found on orthanc.", panel.status.text()


def test_no_match_and_unreachable_node_are_sentences(qtbot, make_panel, library, orthanc):
    panel = make_panel(orthanc.node(), library)
    query(qtbot, panel, "nobody-by-this-name")
    assert panel.status.text() == "0 studies found on orthanc."
    dead = Node(name="dead", ae_title="NOBODY", host="127.0.0.1", port=free_port(),
                timeouts=Timeouts(connect_s=2, acse_s=2, dimse_s=2, network_s=2))
    panel = make_panel(dead, library)
    query(qtbot, panel)
    text = panel.status.text()
    assert "127.0.0.1" in text and "Traceback" not in text and panel.status.styleSheet()
    assert panel.results.rowCount() == 0
    with qtbot.waitSignal(panel.retrieved, timeout=20000):
        panel.retrieve("1.2.3.4")
    assert "127.0.0.1" in panel.status.text()


def test_settings_dialog_tests_and_saves_nodes(qtbot, orthanc, tmp_path):
    path = tmp_path / "settings.json"
    dialog = SettingsDialog(Settings(), path=path)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.test_button.isEnabled()
    dialog.add_node()
    dialog.name.setText("lab orthanc")
    dialog.ae_title.setText(orthanc.aet)
    dialog.host.setText("127.0.0.1")
    dialog.port.setValue(orthanc.dicom_port)
    dialog.dicomweb_url.setText(orthanc.dicomweb_url)
    dialog.test_node()
    qtbot.waitUntil(lambda: "answered in" in dialog.test_result.text(), timeout=20000)
    assert "C-ECHO answered" in dialog.test_result.text() and "DICOMweb answered" in dialog.test_result.text()
    # A wrong port: the test says so in words.
    dialog.port.setValue(free_port())
    dialog.dicomweb_url.setText("")
    dialog.test_node()
    qtbot.waitUntil(lambda: not dialog.test_result.text().startswith("Testing"), timeout=20000)
    assert "cannot" in dialog.test_result.text().lower() or "refused" in dialog.test_result.text().lower()
    dialog.port.setValue(orthanc.dicom_port)
    dialog.dicomweb_url.setText(orthanc.dicomweb_url)
    # An invalid AE title blocks saving with a sentence.
    dialog.ae_title.setText("THIS-AE-TITLE-IS-FAR-TOO-LONG")
    assert dialog.ae_title.text() == "THIS-AE-TITLE-IS"  # the field itself stops at 16 characters
    dialog.ae_title.setText("BAD\\AE")
    dialog.save()
    assert dialog.isVisible() and "backslash" in dialog.error.text()
    dialog.ae_title.setText(orthanc.aet)
    dialog.default_via.setCurrentIndex(dialog.default_via.findData("wado"))
    with qtbot.waitSignal(dialog.saved, timeout=2000) as saved:
        dialog.save()
    loaded = load_settings(path)
    assert loaded == saved.args[0]
    assert loaded.default_via == "wado"
    assert [(n.name, n.ae_title, n.port, n.dicomweb_url) for n in loaded.nodes] == [
        ("lab orthanc", orthanc.aet, orthanc.dicom_port, orthanc.dicomweb_url)]


def test_settings_dialog_remove_and_duplicate_names(qtbot, tmp_path):
    nodes = [Node(name="a", ae_title="A", host="127.0.0.1", port=104),
             Node(name="b", ae_title="B", host="127.0.0.1", port=105)]
    dialog = SettingsDialog(Settings(nodes=nodes), path=tmp_path / "s.json")
    qtbot.addWidget(dialog)
    dialog.name.setText("b")  # editing "a" into a duplicate
    dialog.node_list.setCurrentRow(1)
    assert dialog.node_list.currentRow() == 0 and "already called 'b'" in dialog.error.text()
    dialog.name.setText("a")
    dialog.node_list.setCurrentRow(1)
    dialog.remove_node()
    dialog.save()
    assert [n.name for n in load_settings(tmp_path / "s.json").nodes] == ["a"]


def test_settings_dialog_keeps_what_the_form_does_not_show(qtbot, tmp_path):
    """Editing a node's AE title in the dialog must not drop its TLS settings (nor its timeouts)."""
    from viewer.pacs.tls import TlsSettings

    tls = TlsSettings(ca_file="/etc/mifas-viewer/pki/ca.pem", server_name="pacs.example.org")
    node = Node(name="secure", ae_title="OLD", host="127.0.0.1", port=2762, tls=tls, timeouts=Timeouts(dimse_s=42))
    dialog = SettingsDialog(Settings(nodes=[node]), path=tmp_path / "s.json")
    qtbot.addWidget(dialog)
    dialog.ae_title.setText("NEW")
    dialog.save()
    saved = load_settings(tmp_path / "s.json").nodes[0]
    assert (saved.ae_title, saved.tls, saved.timeouts.dimse_s) == ("NEW", tls, 42)


def test_main_window_offers_configured_nodes(qtbot, library, orthanc, tmp_path):
    settings = Settings(nodes=[orthanc.node()], default_via="get")
    window = MainWindow(library, settings, settings_path=tmp_path / "settings.json")
    qtbot.addWidget(window)
    window.show()
    try:
        assert [window.browser.source.itemText(i) for i in range(window.browser.source.count())] == [
            "Local library", "PACS: orthanc"]
        window.browser.source.setCurrentIndex(1)
        panel = window.browser.current_page()
        assert isinstance(panel, PacsPanel)
        query(qtbot, panel, "")
        panel.table.selectRow(0)
        panel.retrieve_selected()
        qtbot.waitUntil(lambda: not panel.busy, timeout=30000)
        window.browser.source.setCurrentIndex(0)
        assert window.browser.local.selected_study_uid() == orthanc.study_uid
        window.open_settings()
        assert window.settings_dialog.node_list.count() == 1
        window.settings_dialog.reject()
    finally:
        window.shutdown()


def test_library_fixture_is_separate(library: Library):
    assert library.studies() == []


def test_settings_dialog_marks_it_nodes_and_keeps_them(qtbot, tmp_path, monkeypatch):
    """Nodes from IT's /etc/mifas-viewer/settings.json (a temporary folder here): marked, not removable (they would
    come back), editable into the user's own copy, which can be reverted; the user's file holds only the user's."""
    system = tmp_path / "etc"
    system.mkdir()
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(system))
    (system / "settings.json").write_text(json.dumps({"version": 1, "nodes": [
        {"name": "main pacs", "ae_title": "MAIN", "host": "192.0.2.10", "port": 104}]}))
    user = tmp_path / "user" / "settings.json"
    user.parent.mkdir()
    user.write_text(json.dumps({"version": 1, "nodes": [
        {"name": "my orthanc", "ae_title": "MINE", "host": "127.0.0.1", "port": 4242}]}))
    settings = load_settings(user)
    assert [n.name for n in settings.nodes] == ["main pacs", "my orthanc"]
    dialog = SettingsDialog(settings, path=user)
    qtbot.addWidget(dialog)
    dialog.show()
    rows = [dialog.node_list.item(i) for i in range(dialog.node_list.count())]
    assert [r.text() for r in rows] == ["main pacs  (set by IT)", "my orthanc"]
    assert rows[0].font().italic() and "IT" in rows[0].toolTip()
    assert dialog.node_list.currentRow() == 0
    assert not dialog.remove_button.isEnabled()  # IT's node: removing it would not stick
    dialog.remove_node()
    assert dialog.node_list.count() == 2
    dialog.host.setText("192.0.2.11")  # the user's own copy of IT's node
    dialog.node_list.setCurrentRow(1)
    assert dialog.node_list.item(0).text() == "main pacs  (your copy of IT's)"
    dialog.node_list.setCurrentRow(0)
    assert dialog.remove_button.isEnabled() and dialog.remove_button.text() == "Revert to IT's"
    with qtbot.waitSignal(dialog.saved, timeout=2000):
        dialog.save()
    saved = json.loads(user.read_text())
    assert [(n["name"], n["host"]) for n in saved["nodes"]] == [("main pacs", "192.0.2.11"), ("my orthanc", "127.0.0.1")]
    # revert: IT's node again, and nothing of it in the user's file
    dialog = SettingsDialog(load_settings(user), path=user)
    qtbot.addWidget(dialog)
    assert dialog.node_list.item(0).text() == "main pacs  (your copy of IT's)"
    dialog.remove_node()
    assert dialog.node_list.count() == 2 and dialog.host.text() == "192.0.2.10"
    assert dialog.node_list.item(0).text() == "main pacs  (set by IT)" and not dialog.remove_button.isEnabled()
    dialog.node_list.setCurrentRow(1)
    assert dialog.remove_button.text() == "Remove" and dialog.remove_button.isEnabled()
    dialog.remove_node()  # the user's own node goes
    with qtbot.waitSignal(dialog.saved, timeout=2000):
        dialog.save()
    assert json.loads(user.read_text()).get("nodes", []) == []
    assert [n.name for n in load_settings(user).nodes] == ["main pacs"]
