"""Issuer of Patient ID in the library index (version 3): read by both header readers, kept per study, and
filled in when a library of version 2 is opened (the upgrade reads one file of each study)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.pacs.conftest import ct_series, part10
from viewer.library.header import _fast_index_row, _row_from_dataset, index_row, read_header
from viewer.library.store import SCHEMA_VERSION, Library


def _file(issuer: str | None, **kwargs) -> bytes:
    ds = ct_series(1, **kwargs)[0]
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    return part10(ds)


def test_both_header_readers_read_the_issuer() -> None:
    data = _file("HOSP-A")
    fast = _fast_index_row(data)
    assert fast.study[9] == "HOSP-A"
    assert fast == _row_from_dataset(read_header(data))
    assert index_row(_file(None)).study[9] == ""
    latin = _file(None)
    ds = read_header(latin)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.IssuerOfPatientID = "Hôpital Nord"  # not ASCII: the fast reader leaves it to pydicom
    assert _row_from_dataset(ds).study[9] == "Hôpital Nord"


def test_the_study_record_has_the_issuer(tmp_path: Path) -> None:
    with Library.open(tmp_path / "lib") as library:
        stored = library.store_bytes(_file("HOSP-A"))
        record = library.study(stored.study_instance_uid)
    assert record is not None and record.issuer_of_patient_id == "HOSP-A"
    assert record.patient_id == "MIFAS-T1" and record.modalities == ("CT",) and record.instance_count == 1


def test_a_version_2_library_upgrades_in_place_and_reads_its_issuers(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    with Library.open(root) as library:
        with_issuer = library.store_bytes(_file("HOSP-A")).study_instance_uid
        without = library.store_bytes(_file(None)).study_instance_uid
    db = sqlite3.connect(root / "index.sqlite")  # what MIFAS Viewer wrote at index version 2: no issuer column
    db.executescript("ALTER TABLE studies DROP COLUMN issuer_of_patient_id; PRAGMA user_version=2;")
    db.close()
    with Library.open(root) as library:
        assert library._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
        assert library.study(with_issuer).issuer_of_patient_id == "HOSP-A"
        assert library.study(without).issuer_of_patient_id == ""
        assert len(library.instance_uids(library.series(with_issuer)[0].series_uid)) == 1
        added = library.store_bytes(_file("HOSP-B"))  # and it stores as a new one does
        assert library.study(added.study_instance_uid).issuer_of_patient_id == "HOSP-B"
