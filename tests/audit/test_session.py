"""Issue 12's acceptance for the audit trail: a scripted session - search and retrieve with ``mifas-pacs`` (the
installed command, against the session's Orthanc), then open two series and export one view in the viewer's
main window - gives the repository exactly the expected messages, each valid against PS3.15; with the repository
down they wait on disk and arrive once it is back, none lost, none twice.  IT's configuration is a real
``settings.json`` in the system folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mifaslab.orthanc import OrthancProcess
from tests.audit.conftest import Certs, Rsyslog
from tests.audit.support import parse
from tests.pacs.conftest import CALLING_AE, Seed
from tests.support import require
from viewer import audit
from viewer.audit import AuditTrail, load_audit_config
from viewer.library import Library
from viewer.settings import Settings, save_settings

pytestmark = pytest.mark.gui

MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"
EXPECTED = [
    ("mifas-pacs", "Application Start"), ("mifas-pacs", "Query"), ("mifas-pacs", "Application Stop"),
    ("mifas-pacs", "Application Start"), ("mifas-pacs", "Begin Transferring DICOM Instances"),
    ("mifas-pacs", "DICOM Instances Transferred"), ("mifas-pacs", "Application Stop"),
    ("mifas-viewer", "Application Start"), ("mifas-viewer", "DICOM Instances Accessed"),
    ("mifas-viewer", "DICOM Instances Accessed"), ("mifas-viewer", "Export"), ("mifas-viewer", "Application Stop"),
]


def mifas_pacs(*args: str) -> subprocess.CompletedProcess[str]:
    require(MIFAS_PACS.exists(), "mifas-pacs is not installed in the venv (pip install -e .)")
    return subprocess.run([str(MIFAS_PACS), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("repository_up", [True, False], ids=["repository-up", "repository-down"])
def test_scripted_session(repository_up: bool, rsyslog: Rsyslog, certs: Certs, orthanc: OrthancProcess,
                          seed_data: Seed, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from viewer.ui.main_window import MainWindow

    system = tmp_path / "etc"
    system.mkdir()
    (system / "settings.json").write_text(json.dumps({"version": 1, "audit": rsyslog.tls_json(certs)}))
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(system))
    monkeypatch.setenv("MIFAS_AUDIT_DIR", str(tmp_path / "audit"))
    config = tmp_path / "settings.json"
    save_settings(Settings(calling_ae=CALLING_AE), config)
    if repository_up:
        rsyslog.start()
    node, library_dir = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", tmp_path / "library"
    study = seed_data.two_series_study

    # Search, then retrieve: the command line, as a user runs it.
    find = mifas_pacs("find", "--config", str(config), "--node", node, "--level", "study", "-k", "PatientID=MIFAS-T2")
    assert find.returncode == 0 and study in find.stdout, find.stderr
    get = mifas_pacs("get", "--config", str(config), "--node", node, "--study", study, "--library", str(library_dir))
    assert get.returncode == 0, get.stderr
    for run in (find, get):
        assert "MIFAS-T2" not in run.stderr and "Other" not in run.stderr

    # Open both series and export the view: the viewer's main window, with the trail its main() starts.
    trail = audit.start("mifas-viewer")
    with Library.open(library_dir) as library:
        window = MainWindow(library, None)
        qtbot.addWidget(window)
        window.show()
        try:
            for series_uid in seed_data.two_series:
                assert window.open_series(series_uid)
            assert window.export_view_to(tmp_path / "view.png")
        finally:
            window.shutdown()
    audit.stop()
    assert (tmp_path / "view.png").stat().st_size > 0

    if not repository_up:
        assert trail.queued() == len(EXPECTED)  # every message waits on disk; none was dropped
        rsyslog.start()
    # What no process sent before it exited goes out with the next one to start (here a bare trail).
    drain = AuditTrail(load_audit_config(), "mifas-viewer")
    try:
        assert drain.flush(30.0)
    finally:
        drain.close()
    received = [parse(rsyslog.receive()) for _ in EXPECTED]
    assert [(m.app_name, m.event) for m in received] == EXPECTED
    by_event = {m.event: m for m in received}
    assert json.loads(by_event["Query"].query) == {"QueryRetrieveLevel": "STUDY", "PatientID": "MIFAS-T2"}
    for event in ("Begin Transferring DICOM Instances", "DICOM Instances Transferred", "Export"):
        assert by_event[event].study_uids == [study]
    for message in received:
        if message.event in ("DICOM Instances Transferred", "DICOM Instances Accessed", "Export"):
            assert message.patient_ids == ["MIFAS-T2"] and message.study_uids == [study]
    # Nothing more arrives: a last message, sent after the others through the same queue, is the next one.
    check = AuditTrail(load_audit_config(), "mifas-viewer")
    try:
        check.record(audit.messages.application_activity("sentinel", True))
        assert check.flush(30.0)
    finally:
        check.close()
    assert parse(rsyslog.receive()).xml.find("ActiveParticipant").get("UserID") == "sentinel"
    # The local log holds the same messages, one line each, in files only the user can read.
    lines = [line for path in sorted((tmp_path / "audit").glob("audit-*.log")) for line in path.read_bytes().splitlines()]
    assert len(lines) == len(EXPECTED) + 1


def test_the_viewer_records_its_start_the_series_it_opens_and_its_stop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``mifas-viewer`` itself (its main(), as a user starts it): no repository configured, the local log only."""
    monkeypatch.setenv("MIFAS_AUDIT_DIR", str(tmp_path / "audit"))
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    if os.environ.get("DISPLAY"):
        env.pop("QT_QPA_PLATFORM")
    run = subprocess.run([sys.executable, "-m", "viewer.ui.app", "--demo", "--library", str(tmp_path / "lib"),
                          "--screenshot", str(tmp_path / "shot.png")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr
    lines = (tmp_path / "audit").glob("audit-*.log")
    received = [parse(line) for path in sorted(lines) for line in path.read_bytes().splitlines()]
    assert [(m.app_name, m.event) for m in received] == [
        ("mifas-viewer", "Application Start"), ("mifas-viewer", "DICOM Instances Accessed"),
        ("mifas-viewer", "Application Stop")]
    assert received[1].patient_ids and received[1].study_uids
    assert not (tmp_path / "audit" / "queue").exists()  # no repository: nothing is queued
