"""Sending a saved reading (viewer.reading.send) to a real Orthanc: C-STORE through the resilient client and back
by C-GET through the retrieval engine byte for byte, STOW-RS into Orthanc's DICOMweb plugin, and the drafts
marked sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.pacs.conftest import move_port, node, orthanc, seed_data  # noqa: F401  (the session's Orthanc)
from tests.reading.saved_support import make_study, marked_store
from viewer.library import Library
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.resume import ResilientClient
from viewer.reading import persist
from viewer.reading.send import send_reading

pytestmark = pytest.mark.network


@pytest.fixture
def study(tmp_path: Path):
    s = make_study(tmp_path / "lib", seed=7)
    yield s
    s.library.close()


def test_the_reading_goes_by_c_store_and_comes_back_by_c_get_unchanged(study, node, tmp_path: Path) -> None:  # noqa: F811
    saved = persist.save_reading(study.library, marked_store(study), study.study_uid,
                                 {study.series_uid: persist.DisplayState((40.0, 400.0), 180, False, True)})
    profile = ClusterProfile.of_node(node, "get")
    result = send_reading(study.library, ResilientClient(profile), study.study_uid)
    assert result.complete and sorted(result.sent) == sorted(saved.all())
    assert persist.unsent(study.library, study.study_uid) == []

    with Library(tmp_path / "back") as back:
        client = ResilientClient(profile, library=back)
        for uid in saved.all():
            series_uid = study.library.instance(uid).series_uid
            assert client.retrieve(study.study_uid, series_uid).complete
            # The data set byte for byte (the file meta is each receiver's own: DIMSE does not carry it).
            assert _data_set(back.path_of(uid).read_bytes()) == _data_set(study.library.path_of(uid).read_bytes())

    # Sending again sends nothing: the PACS is asked first, and it holds them all.
    again = send_reading(study.library, ResilientClient(profile), study.study_uid)
    assert again.complete and again.sent == () and sorted(again.already_held) == sorted(saved.all())


def test_the_reading_goes_by_stow_rs_and_is_audited_as_a_transfer(study, orthanc, node, tmp_path) -> None:  # noqa: F811
    from lxml import etree

    from tests.audit.support import assert_valid, parse
    from viewer import audit
    from viewer.audit import AuditConfig

    saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
    profile = dataclasses.replace(ClusterProfile.of_node(node, "wado"), transports=("dicomweb",))
    audit.start("mifas-viewer", AuditConfig(), tmp_path / "audit")
    try:
        result = send_reading(study.library, ResilientClient(profile), study.study_uid)
    finally:
        audit.stop()
    lines = [line for path in (tmp_path / "audit").glob("audit-*.log") for line in path.read_bytes().splitlines()]
    received = [parse(line) for line in lines]
    assert [m.event for m in received] == ["Application Start", "Begin Transferring DICOM Instances",
                                           "DICOM Instances Transferred", "Application Stop"]
    done = received[2]
    assert done.xml.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert done.xml.find("EventIdentification").get("EventActionCode") == "R"  # we are the source
    assert done.study_uids == [study.study_uid]
    for message in received:
        assert_valid(etree.tostring(message.xml))  # PS3.15 A.5.1
    assert result.complete, result
    assert sorted(result.sent) == sorted(saved.all())
    held = _held(orthanc, study.study_uid)
    assert set(saved.all()) <= held
    assert persist.unsent(study.library, study.study_uid) == []


def _orthanc_study(orthanc, study_uid: str) -> str:  # noqa: F811
    return next(r["ID"] for r in orthanc.rest("POST", "/tools/lookup", data=study_uid) if r["Type"] == "Study")


def _held(orthanc, study_uid: str) -> set[str]:  # noqa: F811
    instances = orthanc.rest("GET", f"/studies/{_orthanc_study(orthanc, study_uid)}/instances")
    return {i["MainDicomTags"]["SOPInstanceUID"] for i in instances}


def _data_set(part10: bytes) -> bytes:
    """A Part 10 file's data set: what follows the file meta group (its length is the first element's value)."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00"
    return part10[144 + int.from_bytes(part10[140:144], "little"):]
