"""Volume assembly from real files through the library: pydicom's bundled test files each load as a volume or are
refused with a sentence (never a crash), the RT Dose grid loads with its frame offsets, and a written CT series
keeps its geometry."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from viewer.dicom.demo import ct_series_datasets
from viewer.dicom.series import SeriesImages, order_frames
from viewer.dicom.volume import Volume, assemble
from viewer.errors import DicomError
from viewer.library import Library


def _series(library: Library):
    for study in library.studies():
        for record in library.series(study.study_uid):
            yield record.series_uid, SeriesImages(order_frames(library.instances(record.series_uid)))


@pytest.fixture(scope="module")
def pydicom_library(tmp_path_factory) -> Library:
    from pydicom.data import get_testdata_files

    from viewer.library.importer import import_paths

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = [Path(f) for f in get_testdata_files()]
    library = Library.open(tmp_path_factory.mktemp("pydicom-library"))
    import_paths(library, files)
    yield library
    library.close()


def test_every_pydicom_series_loads_or_says_why(pydicom_library: Library) -> None:
    loaded, refused = {}, {}
    for uid, series in _series(pydicom_library):
        try:
            volume = assemble(series, bytes_max=256 << 20)
        except DicomError as exc:
            assert str(exc) and str(exc)[0].isupper() and str(exc).endswith("."), repr(exc)
            refused[uid] = str(exc)
            continue
        assert isinstance(volume, Volume)
        assert volume.data.shape == volume.geometry.shape and volume.data.ndim == 3
        assert np.isfinite(volume.data).all()
        loaded[uid] = volume
    assert len(loaded) + len(refused) > 30  # pydicom's ~190 files make about 40 series in the library
    assert any("at least 3 slices" in text for text in refused.values())
    assert any("too much would be invented" in text for text in refused.values())  # CT_small's scattered copies
    assert loaded, "no pydicom series loaded as a volume"
    assert any("different orientations" in text for text in refused.values())
    assert any("does not say where its frames lie" in text for text in refused.values())


def test_rt_dose_frames_follow_the_grid_frame_offset_vector(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from viewer.library.importer import import_paths

    path = Path(get_testdata_file("rtdose.dcm"))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    with Library.open(tmp_path / "lib") as library:
        import_paths(library, [path])
        (_, series), = list(_series(library))
        volume = assemble(series)
    offsets = [float(v) for v in header.GridFrameOffsetVector]
    assert volume.geometry.spacing[0] == pytest.approx(abs(offsets[1] - offsets[0]))
    assert volume.geometry.to_patient((0, 0, 0)) == pytest.approx(
        [float(v) for v in header.ImagePositionPatient], abs=1e-6) or volume.geometry.to_patient(
        (volume.data.shape[0] - 1, 0, 0)) == pytest.approx([float(v) for v in header.ImagePositionPatient], abs=1e-6)
    reference = pydicom.dcmread(path).pixel_array.astype(np.float64) * float(header.DoseGridScaling)
    order = np.argsort(offsets)
    assert np.allclose(volume.data, reference[order], rtol=1e-5, atol=1e-6)


def test_a_ct_series_keeps_its_geometry(tmp_path: Path) -> None:
    from viewer.library.importer import import_paths

    folder = tmp_path / "ct"
    folder.mkdir()
    datasets = list(ct_series_datasets(24, rows=64, cols=64, seed=5))
    for i, ds in enumerate(reversed(datasets)):  # written in reverse: order must come from the positions
        pydicom.dcmwrite(folder / f"{i}.dcm", ds, enforce_file_format=True)
    with Library.open(tmp_path / "lib") as library:
        import_paths(library, [folder])
        (_, series), = list(_series(library))
        volume = assemble(series)
    first = min(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert volume.data.dtype == np.int16 and volume.data.shape == (24, 64, 64)
    assert volume.geometry.to_patient((0, 0, 0)) == pytest.approx([float(v) for v in first.ImagePositionPatient])
    hu = first.pixel_array.astype(np.int32) * int(first.RescaleSlope) + int(first.RescaleIntercept)
    assert np.array_equal(volume.data[0], hu)
