"""DICOM audit messages (PS3.15 Annex A.5) for the events a viewer produces, as XML bytes (no Qt, stdlib only).

Each builder returns an :class:`AuditEvent`: what happened, who took part and which objects (studies, patients,
a query) it touched.  :func:`render` turns one into the XML of the PS3.15 A.5.1 schema
(``tests/audit/audit-message.rng`` validates it).  The XML is the one place patient data may go: the patient's ID
and name ride in ParticipantObjectIdentification, a query's keys in ParticipantObjectQuery (base64).  Nothing
here logs.

Codes used (PS3.15 A.5.3, DCM code system):

| event | EventID | EventTypeCode | action |
|---|---|---|---|
| application start / stop | 110100 Application Activity | 110120 Application Start / 110121 Application Stop | E |
| query | 110112 Query | | E |
| retrieval begins | 110102 Begin Transferring DICOM Instances | | E |
| retrieval ends | 110104 DICOM Instances Transferred | | C |
| series opened | 110103 DICOM Instances Accessed | | R |
| export | 110106 Export | | R |
| import | 110107 Import | | C |
| deletion | 110105 DICOM Study Deleted | | D |
| node authentication failure | 110113 Security Alert | 110126 Node Authentication | E |
| user authentication | 110114 User Authentication | 110122 Login / 110123 Logout | E |
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = "0", "4", "8", "12"
FIND_STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]|[\ud800-\udfff]")


def _clean(text: object) -> str:
    """Text that XML 1.0 can carry on one line: control characters and line breaks become spaces."""
    return _CONTROL.sub(" ", str(text)).replace("\r", " ").replace("\n", " ").replace("\t", " ")


@dataclass(frozen=True)
class Code:
    code: str
    meaning: str
    system: str = "DCM"


APPLICATION_ACTIVITY = Code("110100", "Application Activity")
APPLICATION_START = Code("110120", "Application Start")
APPLICATION_STOP = Code("110121", "Application Stop")
QUERY = Code("110112", "Query")
BEGIN_TRANSFERRING = Code("110102", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED = Code("110104", "DICOM Instances Transferred")
INSTANCES_ACCESSED = Code("110103", "DICOM Instances Accessed")
EXPORT = Code("110106", "Export")
IMPORT = Code("110107", "Import")
STUDY_DELETED = Code("110105", "DICOM Study Deleted")
SECURITY_ALERT = Code("110113", "Security Alert")
NODE_AUTHENTICATION = Code("110126", "Node Authentication")
USER_AUTHENTICATION = Code("110114", "User Authentication")
LOGIN, LOGOUT = Code("110122", "Login"), Code("110123", "Logout")

ROLE_APPLICATION = Code("110150", "Application")
ROLE_LAUNCHER = Code("110151", "Application Launcher")
ROLE_DESTINATION = Code("110152", "Destination Role ID")
ROLE_SOURCE = Code("110153", "Source Role ID")
ID_STUDY = Code("110180", "Study Instance UID")
ID_SOP_CLASS = Code("110181", "SOP Class UID")
ID_NODE = Code("110182", "Node ID")
ID_PATIENT = Code("2", "Patient Number", "RFC-3881")


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a person, this application, or a peer (a PACS, a file, a medium)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    alternative_id: str | None = None
    user_name: str | None = None
    access_point: str | None = None  # a host name or IP address
    access_point_type: str = "1"  # 1: machine name, 2: IP address, 5: URI


@dataclass(frozen=True)
class StudyRef:
    """A study an event touched, with its patient when known (patient_id None: the patient is not named)."""

    study_uid: str
    patient_id: str | None = None
    patient_name: str | None = None
    instances: int | None = None  # how many instances the event touched, when known
    sop_class_uid: str | None = None
    accession: str | None = None


@dataclass(frozen=True)
class AuditEvent:
    event_id: Code
    action: str  # C R U D E
    participants: tuple[Participant, ...]
    event_type: Code | None = None
    outcome: str = SUCCESS
    outcome_text: str | None = None  # no patient data: it is copied into the normal log on a write failure
    studies: tuple[StudyRef, ...] = ()
    query: tuple[str, bytes] | None = None  # (SOP Class UID of the model, the query as sent)
    node: str | None = None  # a peer's address, as a Security Alert's participant object

    @property
    def name(self) -> str:
        """The event's name for a normal log line (no patient data)."""
        return self.event_type.meaning if self.event_type else self.event_id.meaning


@dataclass(frozen=True)
class Source:
    """AuditSourceIdentification: who reports (this workstation's viewer)."""

    source_id: str = field(default_factory=lambda: f"mifas-viewer@{socket.gethostname()}")
    enterprise_site_id: str | None = None


def user() -> Participant:
    """The person running the viewer (the operating system's account name), the requestor."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return Participant(name, True, access_point=socket.gethostname())


def application(app_name: str, requestor: bool = False, role: Code | None = ROLE_APPLICATION) -> Participant:
    return Participant(app_name, requestor, role, alternative_id=str(os.getpid()),
                       access_point=socket.gethostname())


def peer(name: str, host: str | None, role: Code) -> Participant:
    """A PACS (AE title or URL as `name`) or a file/medium (its path as `name`, no host)."""
    return Participant(name, False, role, access_point=host, access_point_type="1")


# -- the events ---------------------------------------------------------------------------------------------

def application_activity(app_name: str, started: bool) -> AuditEvent:
    launcher = user()
    return AuditEvent(APPLICATION_ACTIVITY, "E",
                      (application(app_name), Participant(launcher.user_id, True, ROLE_LAUNCHER,
                                                          access_point=launcher.access_point)),
                      event_type=APPLICATION_START if started else APPLICATION_STOP)


def query(app_name: str, node_name: str, node_host: str | None, query_bytes: bytes,
          sop_class_uid: str = FIND_STUDY_ROOT, outcome: str = SUCCESS) -> AuditEvent:
    return AuditEvent(QUERY, "E", (user(), application(app_name, role=ROLE_SOURCE),
                                   peer(node_name, node_host, ROLE_DESTINATION)),
                      outcome=outcome, query=(sop_class_uid, query_bytes))


def transfer_begin(app_name: str, node_name: str, node_host: str | None, study: StudyRef) -> AuditEvent:
    return AuditEvent(BEGIN_TRANSFERRING, "E", (user(), peer(node_name, node_host, ROLE_SOURCE),
                                                application(app_name, role=ROLE_DESTINATION)),
                      studies=(study,))


def transferred(app_name: str, node_name: str, node_host: str | None, study: StudyRef,
                outcome: str = SUCCESS, outcome_text: str | None = None) -> AuditEvent:
    return AuditEvent(INSTANCES_TRANSFERRED, "C", (user(), peer(node_name, node_host, ROLE_SOURCE),
                                                   application(app_name, role=ROLE_DESTINATION)),
                      outcome=outcome, outcome_text=outcome_text, studies=(study,))


def sending_begin(app_name: str, node_name: str, node_host: str | None, study: StudyRef) -> AuditEvent:
    """Begin Transferring DICOM Instances to a node (we are the source: a C-STORE or STOW-RS send)."""
    return AuditEvent(BEGIN_TRANSFERRING, "E", (user(), application(app_name, role=ROLE_SOURCE),
                                                peer(node_name, node_host, ROLE_DESTINATION)),
                      studies=(study,))


def sent(app_name: str, node_name: str, node_host: str | None, study: StudyRef, outcome: str = SUCCESS,
         outcome_text: str | None = None) -> AuditEvent:
    """DICOM Instances Transferred to a node: action R (the source's side of the transfer, PS3.15 A.5.3.4)."""
    return AuditEvent(INSTANCES_TRANSFERRED, "R", (user(), application(app_name, role=ROLE_SOURCE),
                                                   peer(node_name, node_host, ROLE_DESTINATION)),
                      outcome=outcome, outcome_text=outcome_text, studies=(study,))


def instances_accessed(app_name: str, study: StudyRef) -> AuditEvent:
    return AuditEvent(INSTANCES_ACCESSED, "R", (user(), application(app_name)), studies=(study,))


def export(app_name: str, destination: str, studies: Sequence[StudyRef]) -> AuditEvent:
    return AuditEvent(EXPORT, "R", (user(), application(app_name, role=ROLE_SOURCE),
                                    peer(destination, None, ROLE_DESTINATION)), studies=tuple(studies))


def import_(app_name: str, source: str, studies: Sequence[StudyRef], outcome: str = SUCCESS) -> AuditEvent:
    return AuditEvent(IMPORT, "C", (user(), peer(source, None, ROLE_SOURCE),
                                    application(app_name, role=ROLE_DESTINATION)),
                      outcome=outcome, studies=tuple(studies))


def study_deleted(app_name: str, study: StudyRef) -> AuditEvent:
    return AuditEvent(STUDY_DELETED, "D", (user(), application(app_name)), studies=(study,))


def node_authentication_failure(app_name: str, node_name: str, node_host: str | None, reason: str) -> AuditEvent:
    """A peer's certificate (or ours, at the peer) was refused: `reason` is the sentence the user saw."""
    return AuditEvent(SECURITY_ALERT, "E", (application(app_name, requestor=True), user(),
                                            peer(node_name, node_host, ROLE_DESTINATION)),
                      event_type=NODE_AUTHENTICATION, outcome=MINOR_FAILURE, outcome_text=reason,
                      node=f"{node_name}@{node_host}" if node_host else node_name)


def user_authentication(app_name: str, server: str, login: bool, outcome: str = SUCCESS,
                        reason: str | None = None) -> AuditEvent:
    return AuditEvent(USER_AUTHENTICATION, "E", (user(), application(app_name), peer(server, None, ROLE_DESTINATION)),
                      event_type=LOGIN if login else LOGOUT, outcome=outcome, outcome_text=reason)


# -- XML -----------------------------------------------------------------------------------------------------

def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                       "originalText": code.meaning})


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": _clean(p.user_id), "UserIsRequestor": "true" if p.requestor else "false"}
    if p.alternative_id:
        attrs["AlternativeUserID"] = _clean(p.alternative_id)
    if p.user_name:
        attrs["UserName"] = _clean(p.user_name)
    if p.access_point:
        attrs["NetworkAccessPointID"] = _clean(p.access_point)
        attrs["NetworkAccessPointTypeCode"] = p.access_point_type
    element = ET.SubElement(root, "ActiveParticipant", attrs)
    if p.role is not None:
        _code(element, "RoleIDCode", p.role)


def _study_objects(root: ET.Element, study: StudyRef) -> None:
    element = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": _clean(study.study_uid), "ParticipantObjectTypeCode": "2",
        "ParticipantObjectTypeCodeRole": "3"})
    _code(element, "ParticipantObjectIDTypeCode", ID_STUDY)
    # The schema asks for a name (or a query) on every object: a study's is its UID.
    ET.SubElement(element, "ParticipantObjectName").text = _clean(study.study_uid)
    if study.accession or study.instances is not None:
        description = ET.SubElement(element, "ParticipantObjectDescription")
        if study.accession:
            ET.SubElement(description, "Accession", {"Number": _clean(study.accession)})
        if study.instances is not None:
            attrs = {"NumberOfInstances": str(int(study.instances))}
            if study.sop_class_uid:
                attrs["UID"] = _clean(study.sop_class_uid)
            ET.SubElement(description, "SOPClass", attrs)
    if study.patient_id is not None:
        patient = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(study.patient_id), "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1"})
        _code(patient, "ParticipantObjectIDTypeCode", ID_PATIENT)
        ET.SubElement(patient, "ParticipantObjectName").text = _clean(study.patient_name or study.patient_id)


def render(event: AuditEvent, source: Source, when: dt.datetime | None = None) -> bytes:
    """The event as one line of UTF-8 XML (no declaration, no line break) in the PS3.15 A.5.1 schema."""
    when = when or dt.datetime.now(dt.timezone.utc)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": when.isoformat(timespec="milliseconds"),
        "EventOutcomeIndicator": event.outcome})
    _code(ident, "EventID", event.event_id)
    if event.event_type is not None:
        _code(ident, "EventTypeCode", event.event_type)
    if event.outcome_text:
        ET.SubElement(ident, "EventOutcomeDescription").text = _clean(event.outcome_text)
    for participant in event.participants:
        _participant(root, participant)
    src_attrs = {"AuditSourceID": _clean(source.source_id)}
    if source.enterprise_site_id:
        src_attrs["AuditEnterpriseSiteID"] = _clean(source.enterprise_site_id)
    src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "1"})  # end-user display device
    if event.query is not None:
        sop_class, raw = event.query
        element = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": sop_class, "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "24"})
        _code(element, "ParticipantObjectIDTypeCode", ID_SOP_CLASS)
        ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(raw).decode("ascii")
    if event.node is not None:
        element = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": _clean(event.node), "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "13"})
        _code(element, "ParticipantObjectIDTypeCode", ID_NODE)
        ET.SubElement(element, "ParticipantObjectName").text = _clean(event.node)
    for study in event.studies:
        _study_objects(root, study)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


def studies_from(records: Iterable[object]) -> tuple[StudyRef, ...]:
    """StudyRefs from the library's StudyRecords (duck-typed: study_uid, patient_id, patient_name, ...)."""
    return tuple(StudyRef(getattr(r, "study_uid"), getattr(r, "patient_id", None) or "",  # noqa: B009
                          getattr(r, "patient_name", None) or None,
                          getattr(r, "instance_count", None), None,
                          getattr(r, "accession_number", None) or None) for r in records)
