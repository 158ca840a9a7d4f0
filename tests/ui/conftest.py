"""UI test fixtures: small generated CT series (pydicom) stored in a temporary library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from viewer.library import Library

RESCALE_INTERCEPT = -1024.0
RESCALE_SLOPE = 1.0


def ct_pixels(index: int, rows: int, cols: int) -> np.ndarray:
    """Stored values (int16) of slice ``index``: a diagonal ramp over -1000..+2000 HU shifted by the slice
    index, so every slice differs and every window maps to many grey levels."""
    y, x = np.mgrid[0:rows, 0:cols]
    hu = -1000.0 + 3000.0 * (x + y) / (rows + cols - 2) + 7.0 * index
    return np.round(hu - RESCALE_INTERCEPT).astype(np.int16)


def ct_dataset(index: int, n: int, *, rows: int = 64, cols: int = 64, study_uid: str, series_uid: str,
               pixel_spacing: tuple[float, float] = (0.7, 0.7), photometric: str = "MONOCHROME2",
               window: tuple[float, float] | None = (40.0, 400.0)) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Test^Patient"
    ds.PatientID = "UI-0001"
    ds.StudyDate = "20240102"
    ds.StudyDescription = "UI test study"
    ds.SeriesDescription = "Axial"
    ds.SeriesNumber = 1
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, 2.5 * index]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = 2.5 * index
    ds.PixelSpacing = list(pixel_spacing)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = RESCALE_SLOPE
    ds.RescaleType = "HU"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = ct_pixels(index, rows, cols).tobytes()
    return ds


@dataclass
class StoredSeries:
    library: Library
    study_uid: str
    series_uid: str
    files: list[Path]
    n: int
    rows: int
    cols: int


def write_ct_series(folder: Path, n: int = 8, **kwargs) -> tuple[str, str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i in range(n):
        path = folder / f"ct{i:03d}.dcm"
        pydicom.dcmwrite(path, ct_dataset(i, n, study_uid=study_uid, series_uid=series_uid, **kwargs),
                         enforce_file_format=True)
        files.append(path)
    return study_uid, series_uid, files


@pytest.fixture
def ct_series(tmp_path: Path, library: Library) -> StoredSeries:
    study_uid, series_uid, files = write_ct_series(tmp_path / "ct", n=8)
    for f in files:
        library.store_file(f)
    return StoredSeries(library, study_uid, series_uid, files, 8, 64, 64)


def linear_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of viewer.dicom.pixels."""
    hu = np.asarray(hu, dtype=np.float64)
    y = ((hu - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    y = np.where(hu <= center - 0.5 - (width - 1) / 2, 0.0, y)
    y = np.where(hu > center - 0.5 + (width - 1) / 2, 255.0, y)
    return np.rint(np.clip(y, 0, 255)).astype(np.uint8)


@pytest.fixture
def make_window(qtbot):
    """make(library, settings=None, **kwargs): a shown MainWindow, shut down (workers stopped) after the test."""
    from viewer.ui.main_window import MainWindow

    made = []

    def make(library, settings=None, **kwargs):
        window = MainWindow(library, settings, **kwargs)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        return window

    yield make
    for w in made:
        w.shutdown()
