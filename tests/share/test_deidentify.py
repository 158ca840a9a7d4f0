"""De-identification (PS3.15 Annex E) checked attribute by attribute against the table, on real generated studies
and readings (GSPS, SR, KOS), with dciodvfy and the viewer's own Library as judges."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.pacs.conftest import ct_series, part10
from tests.reading.saved_support import dciodvfy_errors, make_study, marked_store
from viewer.dicom.demo import ct_series_datasets
from viewer.errors import ExportError
from viewer.library import Library
from viewer.reading import persist
from viewer.share.deidentify import (
    OPTION_NAMES,
    Deidentifier,
    Options,
    Rect,
    action_for,
    burned_in_reason,
    profile,
)

NAME, PATIENT_ID, BIRTH = "Doe^Johnathan", "PID-778899", "19610203"
OPTION_FIELDS = [slug.replace("-", "_") for slug in OPTION_NAMES]
ORIGINAL_UID = "1.2.826.0.1.3680043.8.498.111222333"


def _value(tag: int, vr: str):
    """An identifying value valid for the VR."""
    text = {"PN": NAME, "DA": "20200115", "DT": "20200115103000", "TM": "103000", "AS": "042Y", "IS": "7",
            "DS": "7.5", "UI": ORIGINAL_UID, "CS": "DOE", "AE": "DOE", "UR": "http://example.org/Doe"}
    if vr in text:
        return text[vr]
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
        return "by Johnathan"
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr == "AT":
        return 0x00100010
    if vr == "SQ":
        item = Dataset()
        item.PersonName = NAME
        return Sequence([item])
    return b"\x01\x02"  # OB, OW, UN, ...


def _table_tags() -> dict[int, str]:
    """Every standard attribute of the table pydicom knows, with the VR it gets here."""
    tags = {}
    for tag in profile().rows:
        if tag >> 16 in (0x0000, 0x0002) or not dictionary_has_tag(tag):
            continue
        tags[tag] = dictionary_VR(tag).split(" or ")[0]
    return tags


def _full_dataset() -> Dataset:
    ds = Dataset()
    for tag, vr in _table_tags().items():
        ds.add_new(tag, vr, _value(tag, vr))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH
    ds.add_new(0x00090010, "LO", "SECRET CREATOR")
    ds.add_new(0x00091001, "LO", "private note on Johnathan")
    ds.add_new(0x60003000, "OW", b"\x01\x02")  # overlay data (masked row)
    ds.add_new(0x50000010, "US", 3)  # a curve element (masked row)
    return ds


def _check(deid: Deidentifier, before: Dataset, after: Dataset, options: Options, where: str) -> list[str]:
    wrong = []
    for tag, vr in _table_tags().items():
        action = action_for(profile().rows[tag], options)
        old = before[tag].value
        present = tag in after
        new = after[tag].value if present else None
        if tag in (0x00100010, 0x00100020):  # Z with the pseudonym as the dummy
            ok = present and str(new) not in (NAME, PATIENT_ID)
        elif action == "X" and tag in (0x00700082, 0x00700083):  # Type 1 in presentation states: a dummy
            ok = present and new != old
        elif action == "X":
            ok = not present
        elif action == "Z":
            ok = present and (new in (None, "", b"") or (vr == "SQ" and len(new) == 0) or new != old)
        elif action == "D":
            ok = present and new not in (None, "") and new != old
        elif action == "U":
            ok = present and (new == deid.uid(ORIGINAL_UID) if vr == "UI" else vr == "SQ")
        elif action == "K":
            ok = present and (len(new) == len(old) if vr == "SQ" else new == old)
        else:  # C: changed or removed; TM is kept when dates move by whole days
            ok = (new == old) if vr == "TM" else (not present or new != old)
        if not ok:
            wrong.append(f"{where} {tag:08X} {profile().rows[tag].name}: {action} gave {new!r}")
    return wrong


@pytest.mark.parametrize("option", [None, *OPTION_FIELDS])
def test_every_attribute_of_the_table_gets_its_columns_action_also_inside_sequences(option) -> None:
    options = Options(**({option: True} if option else {}))
    source = _full_dataset()
    outer = Dataset()
    outer.PatientID = PATIENT_ID
    outer.ReferencedSeriesSequence = Sequence([_full_dataset()])  # (0008,1115): not in the table, walked
    for data in (source, outer):
        deid = Deidentifier(options, secret=b"k")
        after = deid.deidentify(data)
        if data is source:
            wrong = _check(deid, source, after, options, "top")
        else:
            wrong = _check(deid, data.ReferencedSeriesSequence[0], after.ReferencedSeriesSequence[0], options,
                           "nested")
            after = after.ReferencedSeriesSequence[0]
        assert wrong == []
        if option == "retain_safe_private":
            assert 0x00091001 not in after  # not on the safe list
        assert 0x00090010 not in after and 0x60003000 not in after and 0x50000010 not in after
    top = Deidentifier(options, secret=b"k").deidentify(source)
    assert top.PatientIdentityRemoved == "YES"
    codes = [i.CodeValue for i in top.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and len(codes) == (2 if option else 1)
    assert top.LongitudinalTemporalInformationModified == {
        "retain_full_dates": "UNMODIFIED", "retain_modified_dates": "MODIFIED"}.get(option, "REMOVED")


def test_modified_dates_move_every_date_by_one_whole_day_offset() -> None:
    deid = Deidentifier(Options(retain_modified_dates=True), secret=b"s")
    a, b = ct_series(1, study_date="20240315")[0], ct_series(1, study_date="20240320")[0]
    b.add_new(0x00181200, "DA", ["20240321"])  # Date of Last Calibration: not in the table, moved all the same
    out_a, out_b = deid.deidentify(a), deid.deidentify(b)
    day = pydicom.valuerep.DA
    assert (day(out_b.StudyDate) - day(out_a.StudyDate)).days == 5
    assert out_a.StudyDate != "20240315" and out_a.StudyTime == a.StudyTime
    assert (day(out_b.DateOfLastCalibration) - day(out_b.StudyDate)).days == 1


def test_safe_private_elements_stay_with_their_creator_and_others_go() -> None:
    ds = ct_series(1)[0]
    ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    ds.add_new(0x0019100C, "IS", "1000")
    ds.add_new(0x00191008, "CS", "IMAGE NUM 4")
    kept = Deidentifier(Options(retain_safe_private=True)).deidentify(ds)
    assert kept[0x0019100C].value == "1000" and 0x00190010 in kept and 0x00191008 not in kept
    assert 0x00190010 not in Deidentifier().deidentify(ds)


def test_odd_input_does_not_raise_and_a_broken_image_is_an_export_error() -> None:
    ds = Dataset()
    ds.PatientName = ""
    ds.add_new(0x00080020, "DA", "not a date")
    ds.add_new(0x00100030, "DA", None)
    out = Deidentifier(Options(retain_modified_dates=True)).deidentify(ds)
    assert out.PatientIdentityRemoved == "YES"
    broken = ct_series(1, patient_name=NAME)[0]
    broken.PixelData = b"\0" * 10
    with pytest.raises(ExportError) as caught:
        Deidentifier().deidentify(broken, blackout=[Rect(0, 0, 4, 4)])
    assert "Johnathan" not in str(caught.value) and "Doe" not in str(caught.value)


def test_burned_in_reasons() -> None:
    ct = ct_series(1)[0]
    assert burned_in_reason(ct) is None
    ct.BurnedInAnnotation = "YES"
    assert "YES" in burned_in_reason(ct)
    us = ct_series(1)[0]
    us.Modality = "US"
    assert "ultrasound" in burned_in_reason(us)
    us.BurnedInAnnotation = "NO"
    assert burned_in_reason(us) is None


def test_pixels_stay_byte_identical_without_rectangles_and_a_rectangle_is_blacked_out() -> None:
    ds = ct_series(1, rows=32, columns=40, seed=3)[0]
    ds.BurnedInAnnotation = "YES"
    deid = Deidentifier()
    untouched = deid.deidentify(ds)
    assert untouched.PixelData == ds.PixelData and untouched.BurnedInAnnotation == "YES"
    assert "113101" not in [i.CodeValue for i in untouched.DeidentificationMethodCodeSequence]
    jpeg = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    same = deid.deidentify(jpeg)
    assert same.PixelData == jpeg.PixelData and same.file_meta.TransferSyntaxUID == jpeg.file_meta.TransferSyntaxUID
    out = deid.deidentify(ds, blackout=[Rect(5, 2, 10, 6), Rect(35, 30, 50, 50)])
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    before = np.frombuffer(ds.PixelData, np.int16).reshape(32, 40)
    after = np.frombuffer(out.PixelData, np.int16).reshape(32, 40)
    mask = np.zeros((32, 40), bool)
    mask[2:8, 5:15] = mask[30:, 35:] = True
    assert (after[mask] == before.min()).all() and (after[~mask] == before[~mask]).all()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


@pytest.fixture
def reading_study(tmp_path: Path):
    study = make_study(tmp_path / "lib", count=3)
    saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
    yield study, saved
    study.library.close()


def _walk(ds: Dataset):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)
        else:
            yield elem


def _deidentified_study(study, saved, deid: Deidentifier) -> dict[str, Dataset]:
    uids = [*study.uids, *saved.all()]
    return {u: deid.deidentify(pydicom.dcmread(study.library.path_of(u))) for u in uids}


def test_references_of_gsps_sr_and_kos_point_at_the_new_images(reading_study) -> None:
    study, saved = reading_study
    deid = Deidentifier(Options(), secret=b"export-1")
    out = _deidentified_study(study, saved, deid)
    originals = set(study.uids) | set(saved.all()) | {study.study_uid, study.series_uid}
    new_images = {str(out[u].SOPInstanceUID) for u in study.uids}
    assert {str(ds.StudyInstanceUID) for ds in out.values()} == {deid.uid(study.study_uid)}
    for uid in saved.all():
        ds = out[uid]
        refs = [str(e.value) for e in _walk(ds) if e.tag == 0x00081155]
        assert refs and set(refs) <= new_images, uid
        assert not originals & {str(e.value) for e in _walk(ds) if e.VR == "UI"}
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == deid.uid(uid)
        assert str(ds.SOPClassUID) == str(pydicom.dcmread(study.library.path_of(uid)).SOPClassUID)
    again = deid.deidentify(pydicom.dcmread(study.library.path_of(study.uids[0])))
    assert again.SOPInstanceUID == out[study.uids[0]].SOPInstanceUID
    assert Deidentifier(secret=b"export-2").uid(study.uids[0]) != deid.uid(study.uids[0])


def test_deidentified_files_pass_dciodvfy_leak_nothing_and_reimport(reading_study, tmp_path: Path) -> None:
    study, saved = reading_study
    for n, options in enumerate((Options(), Options(retain_modified_dates=True, clean_descriptors=True))):
        out = _deidentified_study(study, saved, Deidentifier(options))
        library = Library(tmp_path / f"again{n}")
        try:
            for uid, ds in out.items():
                buffer = io.BytesIO()
                pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
                data = buffer.getvalue()
                for secret in (b"Test", b"Phantom", b"MIFAS-T1", b"ACC0001"):
                    assert secret not in data, (uid, secret)
                if uid in saved.all():  # the generated CT is not a complete CT IOD; the demo CT below is
                    path = tmp_path / f"{n}-{uid}.dcm"
                    path.write_bytes(data)
                    assert dciodvfy_errors(path) == [], (uid, options)
                library.store_bytes(data)
            for ds in out.values():
                record = library.instance(str(ds.SOPInstanceUID))
                assert record.series_uid == str(ds.SeriesInstanceUID)
        finally:
            library.close()


def test_a_deidentified_ct_passes_dciodvfy(tmp_path: Path) -> None:
    ds = next(ct_series_datasets(1, 64, 64))
    ds.AcquisitionNumber = 1
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    pydicom.dcmwrite(before, ds, enforce_file_format=True)
    assert dciodvfy_errors(before) == []
    everything = Options(**{f: True for f in OPTION_FIELDS if f != "retain_full_dates"})
    for options in (Options(), everything):
        pydicom.dcmwrite(after, Deidentifier(options).deidentify(ds), enforce_file_format=True)
        assert dciodvfy_errors(after) == [], options


def test_patient_identity_never_reaches_the_written_bytes_with_every_option(tmp_path: Path) -> None:
    ds = _full_dataset()
    ds.update(ct_series(1, patient_name=NAME, patient_id=PATIENT_ID)[0])
    ds.PatientBirthDate = BIRTH
    ds.file_meta = ct_series(1)[0].file_meta
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    # The retain options keep what they name as it is (K); every other option must not let identity through.
    cleaning = Options(retain_safe_private=True, retain_uids=True, retain_modified_dates=True, clean_descriptors=True,
                       clean_structured_content=True, clean_graphics=True)
    for options in (Options(), cleaning):
        out = Deidentifier(options).deidentify(ds)
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, out, enforce_file_format=True)
        data = buffer.getvalue()
        for secret in (b"Johnathan", b"Doe^", PATIENT_ID.encode(), BIRTH.encode()):
            assert secret not in data, (options, secret)


def test_report_text_is_dummied_by_the_basic_profile_and_cleaned_with_the_option() -> None:
    sr = Dataset()
    sr.PatientName, sr.PatientID = NAME, PATIENT_ID
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", "Johnathan Doe: nodule 4 mm"
    sr.ContentSequence = Sequence([item])
    basic = Deidentifier().deidentify(sr).ContentSequence[0].TextValue
    cleaned = Deidentifier(Options(clean_structured_content=True)).deidentify(sr).ContentSequence[0].TextValue
    assert basic == "ANONYMIZED"
    assert "nodule 4 mm" in cleaned and "Johnathan" not in cleaned and "Doe" not in cleaned


def test_options_by_name_and_the_input_stays_untouched() -> None:
    options = Options.from_names(["retain-modified-dates", "clean-descriptors"], patient_name="CASE^7")
    assert options.retain_modified_dates and options.clean_descriptors and not options.retain_uids
    with pytest.raises(ValueError):
        Options.from_names(["retain-everything"])
    ds = ct_series(1, patient_name=NAME)[0]
    before = part10(ds)
    out = Deidentifier(options).deidentify(ds, blackout=[Rect(0, 0, 3, 3)])
    assert part10(ds) == before and str(out.PatientName) == "CASE^7"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100", "113107", "113105", "113101"]
