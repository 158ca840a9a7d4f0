"""The audit messages and the local log, without a repository: schema, file modes, rotation, failures."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
from pathlib import Path

import pytest

from mifaslab.orthanc import free_port
from tests.audit.support import assert_valid
from viewer.audit import AuditTrail, messages
from viewer.audit.config import AuditConfig, config_from_json, load_audit_config

PATIENT_NAME, PATIENT_ID = "Doe^Jane\n<b>&", "PID-7731"
STUDY = messages.StudyRef("1.2.840.99.1", PATIENT_ID, PATIENT_NAME, 12, "1.2.840.10008.5.1.4.1.1.2", "ACC-9")
ALL_EVENTS = (
    messages.application_activity("mifas-viewer", True),
    messages.application_activity("mifas-viewer", False),
    messages.query("mifas-pacs", "ORTHANC", "127.0.0.1", b'{"PatientName": "Doe*"}'),
    messages.transfer_begin("mifas-pacs", "ORTHANC", "pacs.example.org", messages.StudyRef("1.2.840.99.1")),
    messages.transferred("mifas-pacs", "ORTHANC", "pacs.example.org", STUDY, messages.MINOR_FAILURE, "incomplete"),
    messages.instances_accessed("mifas-viewer", STUDY),
    messages.export("mifas-viewer", "/home/u/view.png", [STUDY]),
    messages.import_("mifas-viewer", "/media/cdrom", [STUDY, messages.StudyRef("1.2.3", "", None)]),
    messages.study_deleted("mifas-viewer", STUDY),
    messages.node_authentication_failure("mifas-pacs", "ORTHANC", "pacs.example.org", "the certificate expired"),
    messages.user_authentication("mifas-viewer", "https://pacs.example.org/dicom-web", True),
)


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.name)
def test_every_event_is_valid_against_the_ps3_15_schema(event: messages.AuditEvent) -> None:
    root = assert_valid(messages.render(event, messages.Source(enterprise_site_id="Test Hospital")))
    assert root.find("EventIdentification/EventID").get("csd-code") == event.event_id.code
    xml = messages.render(event, messages.Source())
    assert b"\n" not in xml  # one line: the local log and the syslog message hold it whole
    if event.studies and event.studies[0].patient_id:
        patient = root.find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
        assert patient.get("ParticipantObjectID") == PATIENT_ID
        assert patient.findtext("ParticipantObjectName") == "Doe^Jane <b>&"


def test_the_local_log_is_private_one_file_a_day_and_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    old_umask = os.umask(0o022)
    try:
        folder.mkdir(mode=0o755)
        today = dt.datetime.now(dt.timezone.utc).date()
        ancient = folder / "audit-2001-01-01.log"  # older than local_days
        ancient.write_bytes(b"x\n")
        recent = [folder / f"audit-{today - dt.timedelta(days=n)}.log" for n in (3, 2, 1)]
        for path in recent:
            path.write_bytes(b"y" * (600 << 10))  # three of them exceed 1 MiB together
        (folder / "notes.txt").write_bytes(b"not ours")
        trail = AuditTrail(AuditConfig(local_days=30, local_max_mib=1), "mifas-viewer", folder)
        for event in ALL_EVENTS:
            trail.record(event)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # tightened
    today_file = folder / f"audit-{today}.log"
    assert stat.S_IMODE(today_file.stat().st_mode) == 0o600
    lines = today_file.read_bytes().splitlines()
    assert len(lines) == len(ALL_EVENTS) == trail.recorded
    for line in lines:
        assert b" DICOM+RFC3881 - <AuditMessage>" in line
        assert_valid(line.split(b" - ", 1)[1])
    assert not ancient.exists()
    # The oldest go first until the rest fit in 1 MiB; today's file and foreign files stay.
    assert [p.exists() for p in recent] == [False, False, True]
    assert (folder / "notes.txt").exists()
    assert trail.day_files() == [recent[2], today_file]


def test_a_write_failure_is_a_warning_without_patient_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="viewer.audit")
    trail = AuditTrail(AuditConfig(), "mifas-viewer", blocker / "audit")  # a folder under a file: ENOTDIR
    trail.record(messages.instances_accessed("mifas-viewer", STUDY))  # does not raise
    assert trail.write_errors >= 1 and trail.recorded == 0
    assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot write" in text
    assert PATIENT_ID not in text and "Doe" not in text and STUDY.study_uid not in text


def test_the_full_queue_keeps_writing_locally_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Repository unreachable (nobody listens), queue bound 1 MiB: past it messages go to the local log only,
    each counted and said in a warning line; none is lost from the local log, none dropped silently."""
    caplog.set_level(logging.WARNING, logger="viewer.audit")
    folder = tmp_path / "audit"
    config = AuditConfig(scheme="tls", host="127.0.0.1", port=free_port(), queue_max_mib=1)
    trail = AuditTrail(config, "mifas-viewer", folder)
    try:
        total = 1200  # about 1.1 KB each
        for index in range(total):
            trail.record(messages.instances_accessed("mifas-viewer", messages.StudyRef(f"1.2.3.{index}", "P", "N")))
        queued = trail.queued()
        assert 0 < queued < total
        assert trail.not_queued == total - queued
        assert sum(p.stat().st_size for p in (folder / "queue").glob("*.msg")) <= 1 << 20
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (folder / "queue").glob("*.msg"))
        assert stat.S_IMODE((folder / "queue").stat().st_mode) == 0o700
        assert len(trail.day_files()[-1].read_bytes().splitlines()) == total
        full = [r.getMessage() for r in caplog.records if "queue" in r.getMessage() and "full" in r.getMessage()]
        assert len(full) == trail.not_queued
        assert f"({trail.not_queued} so far)" in full[-1]
    finally:
        trail.close()


def test_it_configures_the_repository_in_the_system_settings(tmp_path: Path) -> None:
    system = tmp_path / "settings.json"
    system.write_text('{"version": 1, "nodes": [], "audit": {"repository": "tls://audit.example.org:6514", '
                      '"ca_file": "/etc/mifas-viewer/audit-ca.pem", "local_days": 30, "queue_max_mib": 0}}')
    config = load_audit_config(system)
    assert (config.scheme, config.host, config.port) == ("tls", "audit.example.org", 6514)
    assert config.ca_file == "/etc/mifas-viewer/audit-ca.pem" and config.local_days == 30
    assert config.queue_max_mib == 64 and len(config.warnings) == 1 and "queue_max_mib" in config.warnings[0]
    assert config_from_json({"repository": "http://x:1"}).scheme is None
    assert config_from_json({"repository": "udp://10.0.0.5:514"}).repository == "udp://10.0.0.5:514"
    assert load_audit_config(tmp_path / "missing.json") == AuditConfig()


def test_a_refused_certificate_is_a_security_alert(tmp_path: Path) -> None:
    """mifas-pacs records a Security Alert (Node Authentication) when a command fails on a certificate."""
    from tests.audit.support import parse
    from viewer import audit
    from viewer.errors import PacsError
    from viewer.pacs.tls import TlsError

    audit.start("mifas-pacs", AuditConfig(), tmp_path / "audit")
    try:
        audit.authentication_failure(TlsError("The PACS's certificate is not signed by the CA you configured."),
                                     "RADPACS", "pacs.example.org")
        audit.authentication_failure(PacsError("The PACS did not answer."), "RADPACS", "pacs.example.org")
        audit.authentication_failure(PacsError("The DICOMweb server refused our sign-in (HTTP 401).", http_status=401),
                                     "WEBPACS", "web.example.org")
    finally:
        audit.stop()
    assert audit.current() is None
    audit.emit(messages.application_activity, True)  # no trail: nothing, and no error
    lines = (tmp_path / "audit").glob("audit-*.log")
    received = [parse(line) for path in lines for line in path.read_bytes().splitlines()]
    assert [m.event for m in received] == ["Application Start", "Node Authentication", "Node Authentication",
                                           "Application Stop"]
    alert = received[1].xml
    assert alert.find("EventIdentification/EventID").get("originalText") == "Security Alert"
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert "not signed by the CA" in alert.findtext("EventIdentification/EventOutcomeDescription")


def test_import_and_deletion_are_recorded_with_their_patient(tmp_path: Path) -> None:
    from tests.audit.support import parse
    from tests.pacs.conftest import ct_series, part10
    from viewer import audit
    from viewer.library import Library, import_paths

    media = tmp_path / "media"
    media.mkdir()
    series = ct_series(3, patient_name="Import^Patient", patient_id="IMP-1")
    for index, ds in enumerate(series):
        (media / f"{index}.dcm").write_bytes(part10(ds))
    study_uid = str(series[0].StudyInstanceUID)
    audit.start("mifas-viewer", AuditConfig(), tmp_path / "audit")
    try:
        with Library.open(tmp_path / "library") as library:
            assert import_paths(library, [media]).added == 3
            assert library.delete_study(study_uid) == 3
            assert library.delete_study(study_uid) == 0  # nothing deleted: no message
    finally:
        audit.stop()
    lines = (tmp_path / "audit").glob("audit-*.log")
    received = [parse(line) for path in lines for line in path.read_bytes().splitlines()]
    assert [m.event for m in received] == ["Application Start", "Import", "DICOM Study Deleted", "Application Stop"]
    for message in received[1:3]:
        assert message.study_uids == [study_uid] and message.patient_ids == ["IMP-1"]
    source = [p for p in received[1].xml.findall("ActiveParticipant") if p.find("RoleIDCode") is not None
              and p.find("RoleIDCode").get("csd-code") == "110153"]
    assert source[0].get("UserID") == str(media)
