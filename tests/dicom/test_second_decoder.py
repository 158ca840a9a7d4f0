"""A frame pydicom's decoders refuse is tried with a second decoder (imagecodecs) before it is called undecodable.

The known case (issue 12): 12-bit JPEG Extended whose start-of-scan says Se 0 where sequential JPEG requires 63
(ISO/IEC 10918-1 B.2.3). DCMTK's dcmdjpeg decodes it with "Invalid SOS parameters for sequential JPEG";
pylibjpeg-libjpeg refuses it and pillow has no 12-bit JPEG. pydicom's own JPEG-lossy.dcm is such a file, and one is
built here from a conformant file too. The reference pixels are DCMTK's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from tests.dicom.conftest import sample_file
from viewer.dicom.image import DicomImage
from viewer.errors import UnsupportedImageError

DCMDJPEG = shutil.which("dcmdjpeg", path="/usr/bin:/usr/local/bin") or ""
needs_dcmtk = pytest.mark.skipif(not DCMDJPEG, reason="DCMTK's dcmdjpeg is not installed")


def _scan_header_at(codestream: bytes) -> int:
    """Offset of the first SOS marker segment (ISO/IEC 10918-1 B.2.3) of a one-component codestream."""
    at = codestream.index(b"\xff\xda")
    assert codestream[at + 4] == 1, "one component expected"
    return at


def non_conformant_scan(codestream: bytes) -> bytes:
    """The same codestream with the scan's spectral selection end (Se) 0 instead of 63."""
    at = _scan_header_at(codestream)
    damaged = bytearray(codestream)
    damaged[at + 7], damaged[at + 8], damaged[at + 9] = 0, 0, 0  # Ss, Se, Ah/Al
    return bytes(damaged)


def frames_of(ds: pydicom.Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))


def write_with_frames(ds: pydicom.Dataset, frames: list[bytes], path: Path) -> Path:
    ds = ds.copy()
    ds.PixelData = encapsulate(frames)
    ds.NumberOfFrames = len(frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmtk_pixels(path: Path, tmp_path: Path) -> np.ndarray:
    """DCMTK's decoding of ``path`` (checking that DCMTK only warns about the scan header)."""
    out = tmp_path / f"{path.stem}.dcmtk.dcm"
    done = subprocess.run([DCMDJPEG, str(path), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Invalid SOS parameters for sequential JPEG" in done.stderr
    return pydicom.dcmread(out).pixel_array.reshape(-1, *pydicom.dcmread(out).pixel_array.shape[-2:])


def pydicom_refuses(path: Path) -> str:
    with pytest.raises(RuntimeError) as refused:
        _ = pydicom.dcmread(path).pixel_array
    return str(refused.value)


@needs_dcmtk
def test_pydicoms_jpeg_lossy_file_decodes_as_dcmtk_does(tmp_path):
    path = sample_file("JPEG-lossy.dcm")
    assert "scan stop must be 63" in pydicom_refuses(path)  # the file still shows the problem
    np.testing.assert_array_equal(DicomImage.open(path).frames_all(), dcmtk_pixels(path, tmp_path))


@needs_dcmtk
def test_a_built_non_conformant_scan_decodes_as_dcmtk_does(tmp_path):
    ds = pydicom.dcmread(sample_file("JPGExtended.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51" and ds.BitsStored == 12
    good = frames_of(ds)[0]
    path = write_with_frames(ds, [non_conformant_scan(good)], tmp_path / "se0.dcm")
    assert "scan stop must be 63" in pydicom_refuses(path)
    got = DicomImage.open(path).frames_all()
    np.testing.assert_array_equal(got, dcmtk_pixels(path, tmp_path))
    # and the conformant file's pixels: the scan data is unchanged, only its header lied (lossy JPEG: the two
    # libraries' inverse DCTs may round a value differently by 1)
    conformant = DicomImage.open(sample_file("JPGExtended.dcm")).frames_all()
    assert np.abs(got.astype(np.int32) - conformant).max() <= 1


@needs_dcmtk
def test_the_second_decoder_takes_over_from_the_frame_refused(tmp_path):
    ds = pydicom.dcmread(sample_file("JPGExtended.dcm"))
    good = frames_of(ds)[0]
    path = write_with_frames(ds, [good, non_conformant_scan(good), good], tmp_path / "mixed.dcm")
    got = DicomImage.open(path).frames_all()
    assert got.shape == (3, 1024, 256)
    reference = dcmtk_pixels(path, tmp_path)
    # frame 1 by pydicom's decoder (pylibjpeg), as for the conformant file; frames 2 and 3 by the second decoder
    # (libjpeg-turbo), exactly as DCMTK's libjpeg: lossy JPEG's inverse DCTs may round differently by 1
    np.testing.assert_array_equal(got[0], DicomImage.open(sample_file("JPGExtended.dcm")).frame(0))
    np.testing.assert_array_equal(got[1:], reference[1:])


@pytest.mark.parametrize("codestream", [
    b"\xff\xd8" + bytes(200),  # no marker after SOI
    b"\xff\xd8\xff\xc1\x00\x0b\x0c\x04\x00\x01\x00\x01\x01\x11\x00\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00",  # no data
])
def test_a_frame_every_decoder_refuses_is_one_plain_sentence(tmp_path, codestream):
    ds = pydicom.dcmread(sample_file("JPGExtended.dcm"))
    path = write_with_frames(ds, [codestream], tmp_path / "broken.dcm")
    with pytest.raises(UnsupportedImageError) as refused:
        DicomImage.open(path).frames_all()
    message = str(refused.value)
    assert message == ("JPEG (12-bit) image cannot be decoded: its compressed data is damaged, or uses a form of "
                       "the compression that none of the installed decoders reads.")
