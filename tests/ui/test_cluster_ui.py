"""The failover UI against a real Orthanc on loopback: a cluster profile whose virtual IP (and member "node A")
is the Orthanc and whose member "node B" is a closed port.

- the PACS health dock shows each address's state in words (real table text) and the event log;
- a retrieval through the profile (a persisted job) fills the library and the series open in the viewport,
  keeping the slice shown;
- with the Orthanc stopped, the failover banner says it is retrying, then that it gave up, with Retry, and no
  message box or other dialog ever opens; after the Orthanc is back, Retry completes the job;
- a job left pending by a previous session resumes at start-up, in a worker;
- the profile editor writes the user's file in the engine's format (round trip through load_profiles) and shows
  system profiles read-only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from mifaslab.orthanc import OrthancProcess, free_port, orthanc_available
from tests.support import require
from tests.ui.conftest import write_ct_series
from viewer.library import Library
from viewer.library.jobs import JobStore
from viewer.pacs.cluster import ClusterAddress, ClusterProfile, load_profiles, profile_to_json, save_profiles
from viewer.pacs.health import STATE_TEXT
from viewer.pacs.node import Timeouts
from viewer.pacs.retry import RetryPolicy
from viewer.settings import Settings
from viewer.ui.banner import RETRYING_TEXT
from viewer.ui.main_window import MainWindow
from viewer.ui.pacs_panel import PacsPanel
from viewer.ui.profile_dialog import SYSTEM_SUFFIX, ProfileDialog

pytestmark = [pytest.mark.gui, pytest.mark.network]

PROFILE = "local cluster"
PATIENT = "patient cluster"  # the same addresses with a budget long enough to ride out a restart
BUDGET_S = 3.0
PATIENT_BUDGET_S = 60.0
BIG, SMALL = 40, 12


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Our own Orthanc (the test stops and restarts it), with a 40-slice and a 12-slice study."""
    require(orthanc_available(), "Orthanc (Debian package 'orthanc') is not installed")
    work = tmp_path_factory.mktemp("cluster-orthanc")
    big = write_ct_series(work / "big", n=BIG, rows=32, cols=32)
    small = write_ct_series(work / "small", n=SMALL, rows=32, cols=32)
    server = OrthancProcess(work / "server")
    with server:
        server.upload([*big[2], *small[2]])
        server.big, server.small = big, small
        yield server


@pytest.fixture
def profiles_path(tmp_path: Path, pacs: OrthancProcess) -> Path:
    closed = free_port()
    path = tmp_path / "config" / "clusters.json"
    path.parent.mkdir()
    profiles = [{
        "name": name, "ae_title": pacs.aet, "calling_ae": "MIFASUI",
        "vip": {"host": "127.0.0.1", "port": pacs.dicom_port, "name": "virtual IP", "rest_url": pacs.url},
        "members": [{"name": "node A", "host": "127.0.0.1", "port": pacs.dicom_port, "rest_url": pacs.url},
                    {"name": "node B", "host": "127.0.0.1", "port": closed}],
        "timeouts": {"connect_s": 1, "acse_s": 2, "dimse_s": 5, "network_s": 10},
        "retry": {"budget_s": budget, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}}
        for name, budget in ((PROFILE, BUDGET_S), (PATIENT, PATIENT_BUDGET_S))]
    path.write_text(json.dumps({"profiles": profiles}))
    return path


def visible_dialogs() -> list[str]:
    return [f"{type(w).__name__}: {w.windowTitle()}" for w in QApplication.topLevelWidgets()
            if isinstance(w, (QMessageBox, QDialog)) and w.isVisible()]


@pytest.fixture
def dialog_watch(qtbot):
    """Records every message box or dialog that becomes visible while the test runs (polled every 10 ms)."""
    seen: list[str] = []
    timer = QTimer()
    timer.timeout.connect(lambda: seen.extend(d for d in visible_dialogs() if d not in seen))
    timer.start(10)
    yield seen
    timer.stop()


@pytest.fixture
def make_window(qtbot, tmp_path: Path, profiles_path: Path):
    made = []

    def make(library: Library, **kwargs) -> MainWindow:
        window = MainWindow(library, Settings(), settings_path=tmp_path / "config" / "settings.json",
                            cluster_profiles_path=profiles_path, system_profiles_dir=None, health_interval_s=0.5,
                            **kwargs)
        qtbot.addWidget(window)
        window.resize(1200, 900)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.close()


def cluster_page(qtbot, window: MainWindow, profile: str = PROFILE) -> PacsPanel:
    index = window.browser.source.findText(f"PACS cluster: {profile}")
    assert index > 0, [window.browser.source.itemText(i) for i in range(window.browser.source.count())]
    window.browser.source.setCurrentIndex(index)
    page = window.browser.current_page()
    assert isinstance(page, PacsPanel)
    page.search.patient_id.setText("UI-0001")
    page.run_query()
    qtbot.waitUntil(lambda: "found on" in page.status.text(), timeout=20000)
    assert page.status.text() == f"2 studies found on {profile}.", page.status.text()
    assert window.health.profile.currentText() == profile  # the health dock follows the chosen cluster
    return page


def select_study(page: PacsPanel, study_uid: str) -> None:
    rows = [r for r in range(page.results.rowCount()) if page.results.row(r)["StudyInstanceUID"] == study_uid]
    assert rows, "the study is not in the results"
    page.table.clearSelection()
    page.table.selectRow(rows[0])


def test_health_dock_shows_each_address_in_words(qtbot, make_window, library, dialog_watch):
    window = make_window(library)
    assert window.health_dock.isVisible()
    panel = window.health
    assert panel.profile.currentText() == PROFILE
    expected = {"virtual IP": f"{STATE_TEXT['up']} (served by node A)", "node A": STATE_TEXT["serving"],
                "node B": STATE_TEXT["standby"]}
    qtbot.waitUntil(lambda: {r[0]: r[2] for r in panel.row_texts()} == expected, timeout=20000)
    rows = {r[0]: r for r in panel.row_texts()}
    assert rows["virtual IP"][1].startswith("127.0.0.1:")
    assert rows["virtual IP"][3].endswith(" ms") and rows["node A"][3].endswith(" ms")
    assert rows["node B"][3] == ""
    assert panel.table.item(2, 2).text() == "standby (host up, PACS not running)"
    assert "the virtual IP answers, served by node A; 2 of 3 addresses up" in panel.summary.text()
    qtbot.waitUntil(lambda: any("The virtual IP is served by node A" in t for t in panel.event_texts()), timeout=10000)
    assert any(t.startswith("Node B is on standby") for t in panel.event_texts()), panel.event_texts()
    assert not window.banner.isVisible()
    assert dialog_watch == []


def test_retrieval_through_the_cluster_fills_the_library_and_the_open_series(qtbot, make_window, library, pacs,
                                                                             dialog_watch):
    study_uid, series_uid, files = pacs.big
    for f in files[::8]:  # 5 of the 40 slices are here already: the series is open with them
        library.store_file(f)
    window = make_window(library)
    assert window.open_series(series_uid)
    model = window.viewport.model
    assert model.count == 5
    model.set_index(2)  # slice 16 of the whole series
    shown = model.series.frame_ref(2).sop_instance_uid
    qtbot.waitUntil(lambda: window.viewport.painted_index == 2, timeout=10000)
    before = window.viewport.displayed_array().copy()

    page = cluster_page(qtbot, window)
    select_study(page, study_uid)
    assert page.retrieve_button.isEnabled()
    qtbot.mouseClick(page.retrieve_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text().startswith("Retrieved from"), timeout=60000)
    assert page.status.text() == f"Retrieved from {PROFILE}: {BIG} of {BIG} images are here ({BIG - 5} received, 5 already in the library)."
    assert not page.busy
    assert len(library.instance_uids(series_uid)) == BIG
    # The open series filled in, and still shows the same slice (same instance, same pixels).
    assert model.count == BIG
    assert model.series.frame_ref(model.index).sop_instance_uid == shown
    assert model.index == 16
    qtbot.waitUntil(lambda: window.viewport.painted_index == 16, timeout=10000)
    assert (window.viewport.displayed_array() == before).all()
    assert window.viewport.message == ""
    assert page.results.index([r for r in range(page.results.rowCount())
                               if page.results.row(r)["StudyInstanceUID"] == study_uid][0], 7).data() == "yes"
    job = JobStore(library).jobs()[0]
    assert (job.study_uid, job.state, job.received, job.expected) == (study_uid, "done", BIG, BIG)
    assert not window.banner.isVisible()
    assert dialog_watch == []


def test_outage_shows_the_banner_and_retry_completes_the_job(qtbot, make_window, library, pacs, dialog_watch):
    study_uid, series_uid, _files = pacs.small
    window = make_window(library)
    page = cluster_page(qtbot, window)
    select_study(page, study_uid)
    events = window.health
    pacs.stop()
    try:
        qtbot.mouseClick(page.retrieve_button, Qt.MouseButton.LeftButton)
        banner = window.banner
        qtbot.waitUntil(lambda: banner.isVisible() and banner.state == "retrying", timeout=10000)
        assert banner.text.startswith(RETRYING_TEXT)
        assert not banner.retry_button.isVisible()
        qtbot.waitUntil(lambda: banner.state == "failed", timeout=30000)
        assert banner.isVisible() and banner.retry_button.isVisible() and banner.retry_button.isEnabled()
        assert banner.text == (f"The PACS did not come back within the retry budget ({BUDGET_S:g} s); the "
                               f"retrieval from '{PROFILE}' stopped. Retry fetches only what is "
                               "missing."), banner.text
        assert "refused the connection" in banner.toolTip()
        assert page.status.text().startswith(f"The retrieval from {PROFILE} stopped:")
        texts = events.event_texts()
        assert any("stopped answering at" in t and "retrying." in t for t in texts), texts
        assert any(t.startswith("Gave up the") for t in texts), texts
        assert JobStore(library).jobs()[0].state == "failed"
        assert len(library.instance_uids(series_uid)) == 0  # the PACS was down from the start
    finally:
        if not pacs.running:
            pacs.start()
    qtbot.mouseClick(window.banner.retry_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text().startswith("Retrieved from"), timeout=60000)
    assert not window.banner.isVisible()
    assert len(library.instance_uids(series_uid)) == SMALL
    job = JobStore(library).jobs()[0]
    assert (job.state, job.received, job.attempts) == ("done", SMALL, 2)
    assert dialog_watch == [], dialog_watch


def test_outage_within_the_budget_shows_the_banner_until_it_resumes(qtbot, make_window, library, pacs,
                                                                    dialog_watch):
    study_uid, series_uid, _files = pacs.small
    window = make_window(library)
    page = cluster_page(qtbot, window, PATIENT)
    select_study(page, study_uid)
    banner = window.banner
    pacs.stop()
    try:
        qtbot.mouseClick(page.retrieve_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: banner.isVisible() and banner.state == "retrying", timeout=10000)
        assert banner.text.startswith(RETRYING_TEXT) and not banner.retry_button.isVisible()
        assert page.busy
    finally:
        pacs.start()  # back well within the 60 s budget
    qtbot.waitUntil(lambda: not banner.isVisible(), timeout=30000)
    qtbot.waitUntil(lambda: page.status.text().startswith("Retrieved from"), timeout=30000)
    assert page.status.text() == f"Retrieved from {PATIENT}: {SMALL} of {SMALL} images are here ({SMALL} received)."
    assert banner.state == "hidden"
    assert len(library.instance_uids(series_uid)) == SMALL
    texts = window.health.event_texts()
    assert any("stopped answering at" in t and "retrying." in t for t in texts), texts
    assert not any(t.startswith("Gave up") for t in texts), texts
    job = JobStore(library).jobs()[0]
    assert (job.state, job.attempts) == ("done", 1)  # one job run: the engine rode out the outage itself
    assert dialog_watch == []


def test_pending_job_resumes_at_start_up(qtbot, make_window, library, pacs, dialog_watch):
    study_uid, series_uid, files = pacs.big
    library.store_file(files[0])  # an earlier session got one image, then the viewer was closed
    jobs = JobStore(library)
    job_id = jobs.add(study_uid, None, PROFILE)
    jobs.update(job_id, state="running", received=1, expected=BIG)  # as a crash leaves it
    window = make_window(library)
    qtbot.waitUntil(lambda: jobs.get(job_id).state == "done", timeout=60000)
    assert len(library.instance_uids(series_uid)) == BIG
    # the study's row exists from the start (one image was already here); wait for it to count them all
    qtbot.waitUntil(lambda: window.browser.local.studies.rowCount() == 1
                    and window.browser.local.studies.index(0, 7).data() == str(BIG), timeout=10000)
    assert any("Resuming 1 interrupted retrieval" in t for t in window.health.event_texts())
    assert dialog_watch == []
    jobs.close()


def test_a_single_nodes_pending_job_resumes_at_start_up(qtbot, tmp_path: Path, library, pacs, dialog_watch):
    """A retrieval from a plain node (a cluster of one) is a job too: one a crash left running resumes when the
    window is up, through the settings' node of that name, and fetches only what is missing."""
    study_uid, series_uid, files = pacs.big
    library.store_file(files[0])
    node = pacs.node(calling_ae="MIFASUI", name="plain node")
    jobs = JobStore(library)
    job_id = jobs.add(study_uid, None, ClusterProfile.of_node(node, "get").name)
    jobs.update(job_id, state="running", received=1, expected=BIG)
    window = MainWindow(library, Settings(nodes=[node]), settings_path=tmp_path / "settings.json",
                        cluster_profiles_path=tmp_path / "clusters.json", system_profiles_dir=None)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.waitUntil(lambda: jobs.get(job_id).state == "done", timeout=60000)
        assert len(library.instance_uids(series_uid)) == BIG
        assert any("Resuming 1 interrupted retrieval" in t for t in window.health.event_texts())
        assert dialog_watch == []
    finally:
        window.close()
        jobs.close()


def test_profile_editor_round_trip_and_read_only_system_profiles(qtbot, tmp_path: Path):
    system_dir, user_path = tmp_path / "etc", tmp_path / "config" / "clusters.json"
    system_dir.mkdir()
    system = ClusterProfile(name="hospital", vip=ClusterAddress("10.0.0.10", 104, name="virtual IP"),
                            members=(ClusterAddress("10.0.0.11", 104, name="a"),), ae_title="HOSPPACS")
    save_profiles(system_dir / "site.json", [system])
    kept = ClusterProfile(name="lab", vip=ClusterAddress("192.0.2.10", 4242, name="virtual IP",
                                                         rest_url="http://192.0.2.10:8042"),
                          ae_title="MIFASPACS", timeouts=Timeouts(1.5, 2.5, 7.0, 20.0),
                          retry=RetryPolicy(budget_s=60, backoff_max_s=2.0), fallbacks=("wado",))
    save_profiles(user_path, [kept])

    dialog = ProfileDialog(user_path, system_dir)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.profile_names() == ["lab", "hospital" + SYSTEM_SUFFIX]
    dialog.list.setCurrentRow(1)  # the system profile: shown, not editable
    assert dialog.name.text() == "hospital" and dialog.name.isReadOnly() and dialog.vip_host.isReadOnly()
    assert not dialog.remove_button.isEnabled() and not dialog.add_member_button.isEnabled()
    assert dialog.members.item(0, 1).text() == "10.0.0.11"

    dialog.list.setCurrentRow(0)  # edit the user's profile: only the budget changes
    assert not dialog.name.isReadOnly()
    dialog.budget.setValue(45.0)
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)  # a new one
    assert dialog.profile_names()[1] == "New cluster 1"
    dialog.name.setText("second")
    dialog.ae_title.setText("OTHERPACS")
    dialog.calling_ae.setText("MIFASWS")
    dialog.vip_host.setText("198.51.100.10")
    dialog.vip_port.setValue(11112)
    dialog.vip_web.setText("http://198.51.100.10:8042/dicom-web")
    dialog.dimse.setChecked(True)
    dialog.dicomweb.setChecked(True)
    dialog.budget.setValue(30.0)
    qtbot.mouseClick(dialog.add_member_button, Qt.MouseButton.LeftButton)
    for column, text in enumerate(("node A", "198.51.100.11", "11112", "", "", "")):
        dialog.members.item(0, column).setText(text)
    qtbot.mouseClick(dialog.add_member_button, Qt.MouseButton.LeftButton)
    for column, text in enumerate(("node B", "198.51.100.12", "not a port", "NODEB", "", "")):
        dialog.members.item(1, column).setText(text)
    assert not dialog.save()  # refused, said in the dialog's own status line
    assert dialog.status.text() == "Member 2: the port 'not a port' is not a number."
    assert visible_dialogs() == ["ProfileDialog: Cluster profiles"]  # no message box on top
    dialog.members.item(1, 2).setText("11113")
    with qtbot.waitSignal(dialog.saved, timeout=5000):
        assert dialog.save()

    loaded = load_profiles(user_path, system_dir)
    assert loaded.warnings == ()
    assert dict(loaded.origins) == {"lab": "user", "second": "user", "hospital": "system"}
    assert loaded.get("hospital") == system
    lab = loaded.get("lab")
    assert lab.retry.budget_s == 45.0
    assert profile_to_json(lab) == {**profile_to_json(kept), "retry": {**profile_to_json(kept)["retry"],
                                                                       "budget_s": 45.0}}
    second = loaded.get("second")
    assert second == ClusterProfile(
        name="second", vip=ClusterAddress("198.51.100.10", 11112, name="virtual IP",
                                          dicomweb_url="http://198.51.100.10:8042/dicom-web"),
        members=(ClusterAddress("198.51.100.11", 11112, name="node A"),
                 ClusterAddress("198.51.100.12", 11113, name="node B", ae_title="NODEB")),
        ae_title="OTHERPACS", calling_ae="MIFASWS", transports=("dimse", "dicomweb"),
        retry=RetryPolicy(budget_s=30.0))
    assert json.loads(user_path.read_text())["profiles"][1] == profile_to_json(second)  # the engine's format
    assert not list(user_path.parent.glob(".profiles-*"))  # the atomic write left no temporary file

    # Removing a profile (and reopening the file) round-trips too.
    again = ProfileDialog(user_path, system_dir)
    qtbot.addWidget(again)
    again.list.setCurrentRow(0)
    qtbot.mouseClick(again.remove_button, Qt.MouseButton.LeftButton)
    assert again.save()
    assert set(load_profiles(user_path, system_dir).profiles) == {"second", "hospital"}
