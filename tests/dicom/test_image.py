"""Decoding: every transfer syntax pydicom ships a sample of, colour models, and hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from viewer.dicom.demo import ct_series_datasets
from viewer.dicom.image import (
    IMAGE_BYTES_MAX,
    DicomImage,
    check_image_size,
    image_info,
)
from viewer.dicom.info import transfer_syntax_words
from viewer.dicom.pixels import Window
from viewer.errors import (
    DicomError,
    ImageTooLargeError,
    MalformedDicomError,
    NotDicomError,
    UnsupportedImageError,
)

from .conftest import image_dataset, reference_pixels, sample_file, write

# -- header facts --------------------------------------------------------------------------------------------


def test_image_info_of_a_ct_slice():
    ds = next(ct_series_datasets(1, 32, 48, seed=3))
    del ds.RescaleType
    info = image_info(ds)
    assert (info.rows, info.columns, info.frames, info.samples_per_pixel) == (32, 48, 1, 1)
    assert (info.bits_allocated, info.bits_stored, info.pixel_representation) == (16, 16, 1)
    assert info.photometric == "MONOCHROME2" and not info.is_color
    assert (info.rescale_slope, info.rescale_intercept, info.rescale_type) == (1.0, -1024.0, "HU")
    assert info.windows == (Window(40.0, 400.0),)
    assert info.pixel_spacing == (0.7, 0.7)
    assert info.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert info.image_position is not None and info.instance_number == 1
    assert info.transfer_syntax_uid == ExplicitVRLittleEndian
    assert info.sop_instance_uid == ds.SOPInstanceUID and info.modality == "CT"
    assert info.decoded_bytes == 32 * 48 * 2 == check_image_size(info)


def test_multi_valued_windows_and_explanations():
    ds = image_dataset(np.zeros((4, 4), np.uint16), WindowCenter=["40", "-600"], WindowWidth=["400", "1500"],
                       WindowCenterWidthExplanation=["SOFT", "LUNG"])
    info = image_info(ds)
    assert info.windows == (Window(40, 400), Window(-600, 1500))
    assert info.window_explanations == ("SOFT", "LUNG")
    assert image_info(image_dataset(np.zeros((4, 4), np.uint16))).rescale_type == ""  # not CT: no default


def test_imager_pixel_spacing_is_the_fallback():
    ds = image_dataset(np.zeros((4, 4), np.uint16), ImagerPixelSpacing=["0.15", "0.2"])
    assert image_info(ds).pixel_spacing == (0.15, 0.2)


@pytest.mark.parametrize(("keyword", "value", "error"), [
    ("Rows", 0, MalformedDicomError),
    ("Columns", 70000, MalformedDicomError),
    ("BitsAllocated", 12, MalformedDicomError),
    ("BitsStored", 17, MalformedDicomError),
    ("SamplesPerPixel", 4, UnsupportedImageError),
    ("NumberOfFrames", 0, MalformedDicomError),
])
def test_impossible_header_values_are_refused(keyword, value, error):
    ds = image_dataset(np.zeros((4, 4), np.uint16))
    setattr(ds, keyword, value)
    with pytest.raises(error):
        image_info(ds)


def test_check_image_size_uses_python_ints_and_the_limit():
    ds = image_dataset(np.zeros((4, 4), np.uint16), Rows=65535, Columns=65535, NumberOfFrames=1_000_000)
    with pytest.raises(ImageTooLargeError, match="too large"):
        image_info(ds)
    info = image_info(ds, max_bytes=1 << 64)
    assert info.decoded_bytes == 65535 * 65535 * 1_000_000 * 2
    with pytest.raises(ImageTooLargeError, match="too large"):
        check_image_size(info)
    small = image_info(image_dataset(np.zeros((64, 64), np.uint16)))
    with pytest.raises(ImageTooLargeError):
        check_image_size(small, max_bytes=1000)
    with pytest.raises(MalformedDicomError, match="truncated"):
        check_image_size(small, pixel_data_bytes=64 * 64 * 2 - 1)
    assert check_image_size(small, pixel_data_bytes=64 * 64 * 2 + 2) == 64 * 64 * 2


# -- native decoding -----------------------------------------------------------------------------------------


def test_native_int16_ct_decodes_to_stored_values(tmp_path):
    ds = next(ct_series_datasets(1, 64, 80, seed=1))
    path = write(ds, tmp_path / "ct.dcm")
    image = DicomImage.open(path)
    expected = np.frombuffer(ds.PixelData, dtype="<i2").reshape(64, 80)
    frame = image.frame(0)
    assert frame.dtype == np.int16 and frame.shape == (64, 80)
    np.testing.assert_array_equal(frame, expected)
    assert not frame.flags.writeable
    assert "PixelData" not in image.header and image.header.SOPInstanceUID == ds.SOPInstanceUID
    assert image.frames_all().shape == (1, 64, 80)
    with pytest.raises(IndexError):
        image.frame(1)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "examples_overlay.dcm",
                                  "liver_1frame.dcm", "rtdose.dcm", "image_dfl.dcm"])
def test_native_files_match_pydicom(name):
    image = DicomImage.open(sample_file(name))
    expected = reference_pixels(name)
    got = image.frames_all()
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_bits_above_bits_stored_are_cleared_or_sign_extended(write_image):
    raw = np.array([[0x0FFF, 0x8001, 0xF800, 0x0800]], dtype=np.uint16)  # garbage in bits 12..15 of some
    unsigned = DicomImage.open(write_image(raw, bits_stored=12)).frame(0)
    np.testing.assert_array_equal(unsigned, [[0x0FFF, 0x0001, 0x0800, 0x0800]])
    signed = DicomImage.open(write_image(raw.view(np.int16), bits_stored=12)).frame(0)
    np.testing.assert_array_equal(signed, [[-1, 1, -2048, -2048]])


def test_multi_frame_grayscale(write_image):
    frames = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    image = DicomImage.open(write_image(frames))
    assert image.info.frames == 5
    for k in range(5):
        np.testing.assert_array_equal(image.frame(k), frames[k])


def test_float_pixel_data(tmp_path):
    ds = image_dataset(np.zeros((2, 3), np.uint16))
    del ds.PixelData
    ds.BitsAllocated = 32
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    values = np.array([[0.5, -1.25, 3.0], [1e6, 0.0, -7.5]], dtype=np.float32)
    ds.FloatPixelData = values.tobytes()
    image = DicomImage.open(write(ds, tmp_path / "float.dcm"))
    assert image.info.float_pixels
    np.testing.assert_array_equal(image.frame(0), values)


# -- compressed and other transfer syntaxes ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
                                  "MR_small_padded.dcm"])
def test_lossless_variants_equal_the_uncompressed_reference(name):
    reference = DicomImage.open(sample_file("MR_small.dcm")).frame(0)
    np.testing.assert_array_equal(reference, reference_pixels("MR_small.dcm"))
    np.testing.assert_array_equal(DicomImage.open(sample_file(name)).frame(0), reference)


@pytest.mark.parametrize("name", ["JPEGLSNearLossless_16.dcm", "JPEGLSNearLossless_08.dcm", "JPEG2000.dcm",
                                  "JPGExtended.dcm", "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm",
                                  "rtdose_rle.dcm", "liver_expb_1frame.dcm", "rtdose_expb.dcm"])
def test_other_compressed_files_match_pydicom(name):
    image = DicomImage.open(sample_file(name))
    expected = reference_pixels(name)
    np.testing.assert_array_equal(image.frames_all().reshape(expected.shape), expected)


def test_one_bit_big_endian_equals_little_endian():
    np.testing.assert_array_equal(DicomImage.open(sample_file("liver_expb_1frame.dcm")).frame(0),
                                  DicomImage.open(sample_file("liver_1frame.dcm")).frame(0))


def test_jpeg_lossless_rgb_equals_the_rle_reference():
    reference = DicomImage.open(sample_file("SC_rgb_rle.dcm")).frame(0)
    np.testing.assert_array_equal(reference, reference_pixels("SC_rgb_rle.dcm"))
    np.testing.assert_array_equal(DicomImage.open(sample_file("SC_rgb_jpeg_gdcm.dcm")).frame(0), reference)
    np.testing.assert_array_equal(DicomImage.open(sample_file("SC_rgb_gdcm_KY.dcm")).frame(0), reference)


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm",
                                  "SC_rgb_dcmtk_+eb+cr.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_jls_lossy_line.dcm"])
def test_ybr_and_lossy_colour_is_converted_to_rgb_exactly_once(name):
    reference = DicomImage.open(sample_file("SC_rgb_rle.dcm")).frame(0).astype(np.int16)
    got = DicomImage.open(sample_file(name)).frame(0)
    assert got.dtype == np.uint8 and got.shape == (100, 100, 3)
    # Lossy coding leaves small differences; a missing or a double YCbCr->RGB conversion leaves large ones.
    assert np.abs(got.astype(np.int16) - reference).mean() < 4


def test_jpeg2000_ybr_rct_is_rgb_after_decoding():
    image = DicomImage.open(sample_file("GDCMJ2K_TextGBR.dcm"))
    assert image.info.photometric == "YBR_RCT" and image.frame(0).shape == (400, 400, 3)
    np.testing.assert_array_equal(image.frame(0), reference_pixels("GDCMJ2K_TextGBR.dcm"))


def test_big_endian_rgb_and_multi_frame_colour():
    np.testing.assert_array_equal(DicomImage.open(sample_file("ExplVR_BigEnd.dcm")).frame(0),
                                  reference_pixels("ExplVR_BigEnd.dcm"))
    two = DicomImage.open(sample_file("SC_rgb_rle_2frame.dcm"))
    np.testing.assert_array_equal(two.frames_all(), reference_pixels("SC_rgb_rle_2frame.dcm"))
    cine = DicomImage.open(sample_file("examples_ybr_color.dcm"))
    assert cine.frames_all().shape == (30, 240, 320, 3)


def test_sixteen_bit_rgb_is_scaled_to_eight_bits():
    got = DicomImage.open(sample_file("SC_rgb_rle_16bit.dcm")).frame(0)
    expected = (reference_pixels("SC_rgb_rle_16bit.dcm") >> 8).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_palette_colour_is_applied(tmp_path):
    indices = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = image_dataset(indices, photometric="PALETTE COLOR")
    red = np.arange(256, dtype=np.uint16) * 257
    green = (255 - np.arange(256, dtype=np.uint16)) * 257
    blue = np.full(256, 0x8000, dtype=np.uint16)
    for colour, table in (("Red", red), ("Green", green), ("Blue", blue)):
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableDescriptor"), "US",
                   [256, 0, 16])
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableData"), "OW",
                   table.astype("<u2").tobytes())
    image = DicomImage.open(write(ds, tmp_path / "palette.dcm"))
    expected = np.stack([red[indices], green[indices], blue[indices]], axis=-1) >> 8
    np.testing.assert_array_equal(image.frame(0), expected.astype(np.uint8))


def test_palette_sample_file_matches_pydicom():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(sample_file("examples_palette.dcm"))
    expected = apply_color_lut(ds.pixel_array, ds)
    if expected.dtype != np.uint8:
        expected = (expected >> 8).astype(np.uint8)
    np.testing.assert_array_equal(DicomImage.open(sample_file("examples_palette.dcm")).frame(0), expected)


# -- hostile and unsupported input ---------------------------------------------------------------------------


def test_empty_file_and_text_file_are_not_dicom(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("Patient notes, definitely not DICOM.\n" * 20)
    with pytest.raises(NotDicomError, match="empty"):
        DicomImage.open(tmp_path / "empty.dcm")
    with pytest.raises(NotDicomError):
        DicomImage.open(tmp_path / "notes.txt")


def test_missing_file_is_a_dicom_error(tmp_path):
    with pytest.raises(DicomError):
        DicomImage.open(tmp_path / "nope.dcm")


def test_non_image_dicom_is_unsupported():
    with pytest.raises(UnsupportedImageError, match="no image"):
        DicomImage.open(sample_file("rtplan.dcm"))


def test_truncated_pixel_data_is_malformed(tmp_path):
    path = write(next(ct_series_datasets(1, 64, 64)), tmp_path / "ct.dcm")
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-1000])
    with pytest.raises(MalformedDicomError, match="truncated"):
        DicomImage.open(tmp_path / "cut.dcm")


def test_header_claiming_more_pixels_than_present_is_malformed(tmp_path):
    ds = next(ct_series_datasets(1, 64, 64))
    ds.Rows = 128  # the data hold 64 x 64
    with pytest.raises(MalformedDicomError, match="truncated"):
        DicomImage.open(write(ds, tmp_path / "lying.dcm"))


def test_pixel_data_element_shorter_than_the_image_is_malformed(tmp_path):
    path = write(next(ct_series_datasets(1, 32, 32)), tmp_path / "ct.dcm")
    data = bytearray(path.read_bytes())
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    struct.pack_into("<L", data, at + 8, 32 * 32 * 2 - 64)  # the element says it is shorter than the image
    (tmp_path / "short.dcm").write_bytes(bytes(data))
    with pytest.raises(MalformedDicomError, match="truncated"):
        DicomImage.open(tmp_path / "short.dcm")


def test_huge_claimed_size_is_refused_before_allocating(tmp_path):
    ds = next(ct_series_datasets(1, 16, 16))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100_000
    with pytest.raises(ImageTooLargeError):  # 800 TiB: had anything been allocated, this would be MemoryError
        DicomImage.open(write(ds, tmp_path / "huge.dcm"))


def test_max_bytes_is_honoured(tmp_path):
    path = write(next(ct_series_datasets(1, 64, 64)), tmp_path / "ct.dcm")
    with pytest.raises(ImageTooLargeError):
        DicomImage.open(path, max_bytes=64 * 64 * 2 - 1)
    assert DicomImage.open(path, max_bytes=64 * 64 * 2).frame(0).shape == (64, 64)
    assert IMAGE_BYTES_MAX == 1 << 30


def _nested_sequence_file(tmp_path: Path, depth: int) -> Path:
    """An image whose header holds ``depth`` nested Content Sequences (undefined lengths, explicit VR LE)."""
    path = write(image_dataset(np.arange(16, dtype=np.uint16).reshape(4, 4)), tmp_path / f"deep{depth}.dcm")
    data = path.read_bytes()
    at = data.rindex(b"\xe0\x7f\x10\x00OW")
    opening = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    path.write_bytes(data[:at] + opening * depth + closing * depth + data[at:])
    return path


def test_200_deep_nested_sequence_does_not_crash(tmp_path):
    path = _nested_sequence_file(tmp_path, 200)
    try:
        image = DicomImage.open(path)
    except MalformedDicomError as exc:  # refusing in plain words is acceptable; crashing is not
        assert "nested too deeply" in str(exc)
        return
    np.testing.assert_array_equal(image.frame(0), np.arange(16).reshape(4, 4))


def test_absurdly_deep_nesting_is_malformed(tmp_path):
    with pytest.raises(MalformedDicomError, match="nested too deeply"):
        DicomImage.open(_nested_sequence_file(tmp_path, 20000))


def test_deflate_bomb_is_stopped(tmp_path):
    ds = image_dataset(np.zeros((4, 4), np.uint16))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    meta_end = 132 + 12 + struct.unpack_from("<L", data, 132 + 8)[0]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(80)) + compressor.flush()
    (tmp_path / "bomb.dcm").write_bytes(data[:meta_end] + bomb)
    with pytest.raises(ImageTooLargeError):
        DicomImage.open(tmp_path / "bomb.dcm", max_bytes=1 << 20)


def _with_transfer_syntax(tmp_path: Path, written_as: str, declared: str) -> Path:
    """An encapsulated image written under ``written_as`` whose meta then declares ``declared`` (same length:
    pydicom refuses to write transfer syntaxes it does not know)."""
    assert len(written_as) == len(declared)
    ds = image_dataset(np.zeros((4, 4), np.uint8))
    ds.file_meta.TransferSyntaxUID = written_as
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x0a" + bytes(30)])
    path = write(ds, tmp_path / "odd.dcm")
    data = path.read_bytes()
    path.write_bytes(data.replace(written_as.encode(), declared.encode()))
    return path


@pytest.mark.parametrize(("written_as", "declared", "words"), [
    ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.110", "JPEG XL"),
    ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.100", "MPEG-2 video"),
    ("1.2.840.10008.1.2.4.100", "1.2.840.10008.9.9.9.9.9", "Unknown compression"),
])
def test_unsupported_transfer_syntax_names_the_compression(tmp_path, written_as, declared, words):
    with pytest.raises(UnsupportedImageError, match=words):
        DicomImage.open(_with_transfer_syntax(tmp_path, written_as, declared))


def test_broken_codestream_names_the_compression(tmp_path):
    ds = image_dataset(np.zeros((8, 8), np.uint16))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    with pytest.raises(UnsupportedImageError, match="^JPEG 2000 image cannot be decoded: "):
        DicomImage.open(write(ds, tmp_path / "broken.dcm"))


def test_transfer_syntax_words():
    assert transfer_syntax_words("1.2.840.10008.1.2.4.91") == "JPEG 2000"
    assert transfer_syntax_words("1.2.840.10008.1.2.5") == "RLE"
    assert "9.9.9" in transfer_syntax_words("9.9.9")


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                  "image_dfl.dcm", "examples_palette.dcm"])
def test_damaged_files_raise_only_dicom_errors(tmp_path, name):
    """Truncate and corrupt real files at many places: every failure must be one of ours."""
    data = sample_file(name).read_bytes()
    rng = np.random.default_rng(7)
    cases: list[bytes] = [data[:n] for n in np.linspace(1, len(data) - 1, 25).astype(int)]
    for _ in range(25):
        damaged = bytearray(data)
        for at in rng.integers(128, len(data), size=8):
            damaged[at] = int(rng.integers(0, 256))
        cases.append(bytes(damaged))
    for k, case in enumerate(cases):
        path = tmp_path / f"case{k}.dcm"
        path.write_bytes(case)
        try:
            DicomImage.open(path, max_bytes=64 << 20)
        except DicomError as exc:
            assert str(exc) and "Traceback" not in str(exc)


def test_from_dataset_keeps_the_callers_pixels():
    ds = next(ct_series_datasets(1, 16, 16))
    image = DicomImage.from_dataset(ds)
    assert "PixelData" in ds and "PixelData" not in image.header
    np.testing.assert_array_equal(image.frame(0), np.frombuffer(ds.PixelData, "<i2").reshape(16, 16))


def test_lut_items_are_normalised(tmp_path):
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0xFFFF, 16])  # first mapped -1, written unsigned
    item.add_new(0x00283006, "US", [10, 20, 30, 40])
    ds = image_dataset(np.zeros((2, 2), np.int16), VOILUTSequence=[item])
    image = DicomImage.open(write(ds, tmp_path / "voi.dcm"))
    assert image.voi_lut is not None
    assert list(image.voi_lut.LUTDescriptor) == [4, -1, 16]
    np.testing.assert_array_equal(np.frombuffer(image.voi_lut.LUTData, "<u2"), [10, 20, 30, 40])
    assert image.modality_lut is None


@pytest.mark.parametrize(("name", "marker", "offset"), [
    ("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8),  # SIZ: Xsiz, Ysiz
    ("SC_rgb_jpeg_dcmtk.dcm", b"\xff\xc0", 5),  # SOF0: Y, X
])
def test_codestream_claiming_more_pixels_than_the_header_is_refused(tmp_path, name, marker, offset):
    data = bytearray(sample_file(name).read_bytes())
    at = data.index(marker) + offset
    size = struct.pack(">LL", 60000, 60000) if marker == b"\xff\x4f\xff\x51" else struct.pack(">HH", 60000, 60000)
    data[at: at + len(size)] = size
    (tmp_path / "bomb.dcm").write_bytes(bytes(data))
    with pytest.raises(MalformedDicomError, match="60000 x 60000"):
        DicomImage.open(tmp_path / "bomb.dcm")


def test_codestream_size_reads_headers_only():
    from pydicom.encaps import generate_frames

    from viewer.dicom.decode import codestream_size

    for name in ("SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm", "GDCMJ2K_TextGBR.dcm"):
        ds = pydicom.dcmread(sample_file(name))
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert codestream_size(frame) == (ds.Rows, ds.Columns)
    assert codestream_size(b"not a codestream") is None
