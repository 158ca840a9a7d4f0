"""Pictures of a series (viewer.share.pictures): the display values the 2D view computes, written as PNG (exact)
or JPEG, read back by FFmpeg; MONOCHROME1 inverted, colour kept, every frame of a multi-frame image, nothing of
the patient in the file."""

from __future__ import annotations

import os
import struct

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.dicom.generated import cine_dataset
from tests.share.ffreader import decode, need_ffmpeg
from tests.ui.conftest import RESCALE_INTERCEPT, ct_pixels, linear_window, write_ct_series
from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import ExportError
from viewer.share.pictures import dataset_frames, series_frame_count, series_frames, write_picture

N, SIZE = 4, 64
PATIENT = (b"Test^Patient", b"UI-0001")


@pytest.fixture
def ct(tmp_path, library):
    _, series_uid, files = write_ct_series(tmp_path / "ct", n=N)
    for f in files:
        library.store_file(f)
    return series_uid


def hu(i: int) -> np.ndarray:
    return ct_pixels(i, SIZE, SIZE).astype(np.float64) + RESCALE_INTERCEPT


def us_rgb_dataset() -> FileDataset:
    """An RGB ultrasound image: a red, a green and a blue band over a grey ramp (no patient data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "US"
    ds.Rows, ds.Columns = 48, 60
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = us_rgb_pixels().tobytes()
    return ds


def us_rgb_pixels() -> np.ndarray:
    rgb = np.repeat(np.linspace(0, 250, 60, dtype=np.uint8)[None, :, None], 48, axis=0).repeat(3, axis=2)
    rgb[5:15, :, :] = (220, 30, 30)
    rgb[20:30, :, :] = (30, 200, 40)
    rgb[35:45, :, :] = (20, 40, 210)
    return rgb


def png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    kinds, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        kinds.append(kind)
        at += 12 + length
    return kinds


def test_ct_frames_are_the_values_the_2d_view_computes(library, ct) -> None:
    frames = list(series_frames(library, ct))
    assert series_frame_count(library, ct) == N == len(frames)
    view = SeriesImages(order_frames(library.instances(ct)))
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.shape == (SIZE, SIZE)
        # what viewer.ui.viewport renders for the slice (no user window), and PS3.3 C.11.2.1.2.1 written out
        assert np.array_equal(frame, view.pipeline(i).render(view.stored(i), None))
        assert np.array_equal(frame, linear_window(hu(i), 40.0, 400.0))  # the file's window, slice i in order


def test_a_png_holds_exactly_the_display_values_and_nothing_of_the_patient(tmp_path, library, ct) -> None:
    need_ffmpeg()
    frame = list(series_frames(library, ct, window=(-600.0, 1500.0)))[2]
    assert np.array_equal(frame, linear_window(hu(2), -600.0, 1500.0))
    path = tmp_path / "slice.png"
    old = os.umask(0o022)
    try:
        write_picture(frame, path, "png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert np.array_equal(decode(path, "gray", SIZE, SIZE)[0], frame)  # lossless, read by FFmpeg
    data = path.read_bytes()
    assert png_chunk_types(data) == [b"IHDR", *[b"IDAT"] * png_chunk_types(data).count(b"IDAT"), b"IEND"]
    assert not any(word in data for word in PATIENT)


def test_monochrome1_is_inverted(tmp_path, library) -> None:
    _, series_uid, files = write_ct_series(tmp_path / "m1", n=2, photometric="MONOCHROME1")
    for f in files:
        library.store_file(f)
    frames = list(series_frames(library, series_uid))
    assert np.array_equal(frames[1], 255 - linear_window(hu(1), 40.0, 400.0))


def test_rgb_ultrasound_stays_in_colour(tmp_path) -> None:
    need_ffmpeg()
    (frame,) = dataset_frames([us_rgb_dataset()])
    assert frame.shape == (48, 60, 3) and np.array_equal(frame, us_rgb_pixels())
    write_picture(frame, tmp_path / "us.png", "png")
    assert np.array_equal(decode(tmp_path / "us.png", "rgb24", 48, 60)[0], frame)
    write_picture(frame, tmp_path / "us.jpg", "jpeg")
    back = decode(tmp_path / "us.jpg", "rgb24", 48, 60)[0].astype(int)
    assert np.abs(back - frame).mean() < 3.0  # quality 95
    assert back[10, 30, 0] > 180 > back[10, 30, 1] + 100  # the red band is still red, the others theirs
    assert back[25, 30, 1] > 160 > back[25, 30, 0] + 100
    assert back[40, 30, 2] > 170 > back[40, 30, 0] + 100


def test_jpeg_of_a_grey_slice_is_close_and_carries_no_text(tmp_path, library, ct) -> None:
    need_ffmpeg()
    frame = next(series_frames(library, ct))
    write_picture(frame, tmp_path / "slice.jpg", "jpeg")
    data = (tmp_path / "slice.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8" and b"Exif" not in data and not any(word in data for word in PATIENT)
    back = decode(tmp_path / "slice.jpg", "gray", SIZE, SIZE)[0].astype(int)
    assert np.abs(back - frame).mean() < 2.0


def test_every_frame_of_a_multiframe_image_in_order(tmp_path, library) -> None:
    ds = cine_dataset(frames=12, size=32)
    pydicom.dcmwrite(tmp_path / "cine.dcm", ds, enforce_file_format=True)
    library.store_file(tmp_path / "cine.dcm")
    frames = list(series_frames(library, ds.SeriesInstanceUID))
    stored = ds.pixel_array
    assert len(frames) == 12
    for frame, source in zip(frames, stored, strict=True):
        # no window in the file: the frame's min/max (20..230) spans 0..255, as in the view
        assert np.array_equal(frame > 128, source > 128) and frame.min() == 0 and frame.max() == 255


def test_a_picture_that_cannot_be_written_is_a_sentence_and_leaves_nothing(tmp_path) -> None:
    frame = np.zeros((8, 8), np.uint8)
    with pytest.raises(ExportError, match=r"^The picture could not be written: .+\.$"):
        write_picture(frame, tmp_path / "missing" / "x.png", "png")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError):
        write_picture(np.zeros((8, 8), np.uint16), tmp_path / "x.png", "png")
    assert not (tmp_path / "x.png").exists()
