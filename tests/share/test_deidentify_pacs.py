"""A de-identified study (images and a reading: GSPS, SR, KOS) is accepted by a real Orthanc as it is."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from tests.pacs.conftest import move_port, orthanc, seed_data  # noqa: F401  (the session's Orthanc)
from tests.reading.saved_support import make_study, marked_store
from viewer.reading import persist
from viewer.share.deidentify import Deidentifier, Options

pytestmark = pytest.mark.network


def test_a_deidentified_study_and_its_reading_are_stored_by_orthanc(tmp_path: Path, orthanc) -> None:  # noqa: F811
    study = make_study(tmp_path / "lib", count=2, seed=7)
    try:
        saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
        deid = Deidentifier(Options(retain_modified_dates=True))
        sent = set()
        for uid in [*study.uids, *saved.all()]:
            out = deid.deidentify(pydicom.dcmread(study.library.path_of(uid)))
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, out, enforce_file_format=True)
            answer = orthanc.rest("POST", "/instances", data=buffer.getvalue())
            assert answer["Status"] in ("Success", "AlreadyStored")
            sent.add(str(out.SOPInstanceUID))
    finally:
        study.library.close()
    found = orthanc.rest("POST", "/tools/lookup", data=deid.uid(study.study_uid))
    orthanc_study = next(r["ID"] for r in found if r["Type"] == "Study")
    held = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.rest("GET", f"/studies/{orthanc_study}/instances")}
    assert held == sent
    tags = orthanc.rest("GET", f"/studies/{orthanc_study}")
    assert tags["PatientMainDicomTags"]["PatientName"].startswith("ANON^")
