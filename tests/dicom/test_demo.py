"""The demo phantom and the test-series generator."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from viewer.dicom.demo import (
    DEMO_STUDY_UID,
    ct_series_datasets,
    demo_datasets,
)
from viewer.dicom.image import DicomImage
from viewer.library.store import is_valid_uid


def test_demo_is_a_believable_ct_series():
    datasets = list(demo_datasets())
    assert len(datasets) == 120
    first = datasets[0]
    assert first.PatientName == "MIFAS^Demo" and first.PatientID == "DEMO-0001"
    assert first.StudyDescription == "MIFAS demo CT phantom" and first.Modality == "CT"
    assert first.SOPClassUID == CTImageStorage and first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (first.Rows, first.Columns, first.BitsAllocated, first.PixelRepresentation) == (256, 256, 16, 1)
    assert float(first.RescaleIntercept) == -1024 and float(first.RescaleSlope) == 1
    assert float(first.WindowCenter) == 40 and float(first.WindowWidth) == 400
    assert [float(v) for v in first.PixelSpacing] == [0.9, 0.9] and float(first.SliceThickness) == 2.0
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), -2.0)
    assert {ds.StudyInstanceUID for ds in datasets} == {DEMO_STUDY_UID}
    uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(uids)) == 120 and all(is_valid_uid(u) for u in uids + [DEMO_STUDY_UID])
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, 121))


def test_demo_pixels_are_plausible_hounsfield_units_and_vary_with_z():
    datasets = list(demo_datasets())
    hu = np.stack([np.frombuffer(ds.PixelData, "<i2").reshape(256, 256) for ds in datasets]) - 1024
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert (hu[:, 0, 0] < -900).all()  # air in the corners
    assert (hu > 1000).sum() > 0 and ((hu > -150) & (hu < -50)).sum() > 0  # bone and fat exist
    assert ((hu > -900) & (hu < -700)).sum() > 0  # lung
    means = hu.reshape(120, -1).mean(axis=1)
    assert len(np.unique(np.round(means))) > 30  # scrolling shows change


def test_demo_is_deterministic_and_encodes_as_part_10():
    a, b = next(demo_datasets(slices=3, size=64)), next(demo_datasets(slices=3, size=64))
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.PixelData == b.PixelData
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, a, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert back.SOPInstanceUID == a.SOPInstanceUID and back.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_demo_imports_idempotently(library):
    first = [library.store_dataset(ds).added for ds in demo_datasets(slices=4, size=32)]
    again = [library.store_dataset(ds).added for ds in demo_datasets(slices=4, size=32)]
    assert first == [True] * 4 and again == [False] * 4
    series = library.series(DEMO_STUDY_UID)
    assert len(series) == 1 and len(library.instances(series[0].series_uid)) == 4


def test_ct_series_is_deterministic_given_the_seed():
    one = list(ct_series_datasets(3, 16, 24, seed=4))
    two = list(ct_series_datasets(3, 16, 24, seed=4))
    other = list(ct_series_datasets(3, 16, 24, seed=5))
    assert [d.PixelData for d in one] == [d.PixelData for d in two]
    assert [d.SOPInstanceUID for d in one] == [d.SOPInstanceUID for d in two]
    assert one[0].PixelData != other[0].PixelData and one[0].SOPInstanceUID != other[0].SOPInstanceUID
    assert [d.InstanceNumber for d in one] == [1, 2, 3]
    assert len({tuple(d.ImagePositionPatient) for d in one}) == 3
    assert one[0].pixel_array.dtype == np.int16 and (one[0].Rows, one[0].Columns) == (16, 24)
    assert len({d.SeriesInstanceUID for d in one}) == 1


@pytest.mark.parametrize("transfer_syntax", [RLELossless, JPEG2000Lossless, ExplicitVRBigEndian,
                                             ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_ct_series_honours_given_uids_and_transfer_syntax(tmp_path, transfer_syntax):
    ds = next(ct_series_datasets(1, 64, 64, study_uid="1.2.3", series_uid="1.2.3.4",
                                 transfer_syntax=transfer_syntax))  # 64: JPEG 2000 needs room for its levels
    assert ds.StudyInstanceUID == "1.2.3" and ds.SeriesInstanceUID == "1.2.3.4"
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    path = tmp_path / "series.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    plain = next(ct_series_datasets(1, 64, 64))
    np.testing.assert_array_equal(DicomImage.open(path).frame(0), np.frombuffer(plain.PixelData, "<i2").reshape(64, 64))
