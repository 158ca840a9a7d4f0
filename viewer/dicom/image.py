"""Reading one DICOM image: header facts (:class:`ImageInfo`) and decoded stored pixel values (:class:`DicomImage`).

What the pixel arrays mean (PS3.3 C.7.6.3, Image Pixel Module):

* grayscale (MONOCHROME1/2): a 2-D array of *stored values* in their native dtype (uint8/int8, uint16/int16,
  uint32/int32, float32/float64 for Float / Double Float Pixel Data).  No rescale, no VOI: that is
  :mod:`viewer.dicom.pixels`' job, so the pixel probe and the window can both work from the same array.
* colour: ``(rows, columns, 3)`` uint8 RGB.  YBR_FULL / YBR_FULL_422 are converted to RGB (PS3.3 C.7.6.3.1.2)
  exactly once (pydicom's decoders report the colour space they return; we trust that report), YBR_ICT /
  YBR_RCT are undone by the JPEG 2000 codec itself (PS3.5 A.4.4), planar configuration is normalised and
  PALETTE COLOR is applied (PS3.3 C.7.6.3.1.5).  More than 8 bits per sample are scaled down to 8.

Hostile input is expected: every size is checked from header fields with Python ints (no overflow) before
anything is allocated (:func:`check_image_size`), a deflated dataset is inflated with a bound, deep nesting is
caught, and every library exception is translated once, here, into a :mod:`viewer.errors` type whose message
is a plain sentence.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from viewer.errors import (
    DicomError,
    ImageTooLargeError,
    MalformedDicomError,
    NotDicomError,
    UnsupportedImageError,
)

from .pixels import Window

log = logging.getLogger(__name__)

IMAGE_BYTES_MAX = 1 << 30
"""Default limit for one decoded image, all frames together."""

HEADER_BYTES_MAX = 64 << 20
"""Limit on the non-pixel part of a file we are willing to hold (inflated, for deflated files)."""

DEFER_VALUE_BYTES = 1 << 20
"""Header values larger than this (private blobs, icons) stay on disk and are read only when looked at."""

# PS3.5 7.5 and 8: the pixel data elements (Pixel Data, Float Pixel Data, Double Float Pixel Data).
TAG_PIXEL_DATA = 0x7FE00010
TAG_FLOAT_PIXEL_DATA = 0x7FE00008
TAG_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_DATA_TAGS = (TAG_PIXEL_DATA, TAG_FLOAT_PIXEL_DATA, TAG_DOUBLE_FLOAT_PIXEL_DATA)
UNDEFINED_LENGTH = 0xFFFFFFFF

# PS3.5 7.1.2: explicit VRs whose length field is 4 bytes (after 2 reserved bytes).
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                              b"UV"})

GRAYSCALE_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
COLOR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
PALETTE_COLOR = "PALETTE COLOR"
# Photometric interpretations that leave a colour codec already as RGB (PS3.5 A.4.4: the JPEG 2000 component
# transform is part of the codestream and is undone by the decoder).
_RGB_AFTER_DECODE = frozenset({"RGB", "YBR_ICT", "YBR_RCT"})

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)

# Short names a clinician or IT person recognises, by transfer syntax UID (PS3.6 Table A-1).
_COMPRESSION_WORDS = {
    "1.2.840.10008.1.2.4.50": "JPEG",
    "1.2.840.10008.1.2.4.51": "JPEG (12-bit)",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless",
    "1.2.840.10008.1.2.4.80": "JPEG-LS",
    "1.2.840.10008.1.2.4.81": "JPEG-LS",
    "1.2.840.10008.1.2.4.90": "JPEG 2000",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.92": "JPEG 2000 multi-component",
    "1.2.840.10008.1.2.4.93": "JPEG 2000 multi-component",
    "1.2.840.10008.1.2.4.94": "JPIP-referenced",
    "1.2.840.10008.1.2.4.95": "JPIP-referenced",
    "1.2.840.10008.1.2.4.100": "MPEG-2 video",
    "1.2.840.10008.1.2.4.101": "MPEG-2 video",
    "1.2.840.10008.1.2.4.102": "MPEG-4 video",
    "1.2.840.10008.1.2.4.103": "MPEG-4 video",
    "1.2.840.10008.1.2.4.104": "MPEG-4 video",
    "1.2.840.10008.1.2.4.105": "MPEG-4 video",
    "1.2.840.10008.1.2.4.106": "MPEG-4 video",
    "1.2.840.10008.1.2.4.107": "HEVC video",
    "1.2.840.10008.1.2.4.108": "HEVC video",
    "1.2.840.10008.1.2.4.110": "JPEG XL",
    "1.2.840.10008.1.2.4.111": "JPEG XL",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.201": "High-Throughput JPEG 2000",
    "1.2.840.10008.1.2.4.202": "High-Throughput JPEG 2000",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.1.99": "Deflated",
    "1.2.840.10008.1.2": "Uncompressed",
    "1.2.840.10008.1.2.1": "Uncompressed",
    "1.2.840.10008.1.2.2": "Uncompressed (big endian)",
}


def transfer_syntax_words(transfer_syntax_uid: str) -> str:
    """The compression of a transfer syntax in words ("JPEG 2000"), for messages and the UI."""
    if transfer_syntax_uid in _COMPRESSION_WORDS:
        return _COMPRESSION_WORDS[transfer_syntax_uid]
    name = UID(transfer_syntax_uid).name if transfer_syntax_uid else ""
    if name and name != transfer_syntax_uid:
        return name
    return f"Unknown compression ({transfer_syntax_uid or 'none declared'})"


# -- header facts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """The facts about one image that decoding and display need, read from its header (PS3.3 C.7.6.3 Image
    Pixel, C.11.1 Modality LUT, C.11.2 VOI LUT, C.7.6.2 Image Plane)."""

    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    rescale_type: str = ""
    windows: tuple[Window, ...] = ()
    window_explanations: tuple[str, ...] = ()
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) in mm
    image_position: tuple[float, float, float] | None = None  # mm, patient coordinates (LPS)
    image_orientation: tuple[float, float, float, float, float, float] | None = None
    slice_location: float | None = None
    instance_number: int | None = None
    transfer_syntax_uid: str = ""
    sop_instance_uid: str = ""
    modality: str = ""
    # Additions to the contract:
    voi_lut_function: str = "LINEAR"  # (0028,1056): LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.3)
    float_pixels: bool = False  # Float / Double Float Pixel Data (PS3.3 C.7.6.24)
    pixel_padding_value: int | None = None  # (0028,0120), stored-value domain

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel == 3

    @property
    def is_palette(self) -> bool:
        return self.photometric == PALETTE_COLOR

    @property
    def is_monochrome1(self) -> bool:
        return self.photometric == "MONOCHROME1"

    @property
    def decoded_bytes(self) -> int:
        """Upper bound of the bytes decoding all frames allocates (Python ints: cannot overflow)."""
        pixels = self.frames * self.rows * self.columns
        sample_bytes = max(1, self.bits_allocated // 8)
        if self.is_palette:
            return pixels * 3 * 2  # palette entries are up to 16 bits (PS3.3 C.7.6.3.1.5)
        return pixels * self.samples_per_pixel * sample_bytes

    @property
    def native_pixel_bytes(self) -> int:
        """Bytes the uncompressed Pixel Data must hold (PS3.5 8.1.1; YBR_FULL_422 is subsampled, PS3.3
        C.7.6.3.1.2; single-bit data is packed)."""
        samples = self.samples_per_pixel
        if self.photometric == "YBR_FULL_422":
            samples = 2  # two luminance samples share one Cb/Cr pair
        bits = self.frames * self.rows * self.columns * samples * self.bits_allocated
        return (bits + 7) // 8

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one decoded frame as :meth:`DicomImage.frame` returns it."""
        if self.is_color or self.is_palette:
            return (self.rows, self.columns, 3)
        return (self.rows, self.columns)

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype of decoded grayscale stored values."""
        return stored_dtype(self.bits_allocated, self.pixel_representation, self.float_pixels)


def stored_dtype(bits_allocated: int, pixel_representation: int, float_pixels: bool = False) -> np.dtype:
    if float_pixels:
        return np.dtype(np.float64 if bits_allocated == 64 else np.float32)
    bits = 8 if bits_allocated <= 8 else bits_allocated
    return np.dtype(f"{'int' if pixel_representation == 1 else 'uint'}{bits}")


def _get(ds: Dataset, keyword: str) -> Any:
    """A value, or None when absent, empty or unreadable (a damaged optional value must not stop display)."""
    try:
        value = ds.get(keyword)
    except Exception:
        log.debug("unreadable %s", keyword)
        return None
    if value is None or value == "":
        return None
    return value


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in _values(value))
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _optional_float(value: Any) -> float | None:
    numbers = _floats(value, 1)
    return numbers[0] if numbers else None


def _optional_int(value: Any) -> int | None:
    try:
        return int(_values(value)[0]) if value is not None else None
    except (TypeError, ValueError, IndexError):
        return None


def _required_int(ds: Dataset, keyword: str, low: int, high: int, words: str) -> int:
    value = _optional_int(_get(ds, keyword))
    if value is None:
        raise MalformedDicomError(f"The image header has no valid {words}.")
    if not low <= value <= high:
        raise MalformedDicomError(f"The image header gives an impossible {words} ({value}).")
    return value


def _functional_group_item(ds: Dataset, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in the Shared Functional Groups (PS3.3 C.7.6.16), for enhanced
    multi-frame images that keep spacing and orientation there instead of at the top level."""
    try:
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            inner = shared[0].get(sequence)
            if inner:
                return inner[0]
    except Exception:
        return None
    return None


def _windows(ds: Dataset) -> tuple[tuple[Window, ...], tuple[str, ...]]:
    """Window Center/Width pairs (PS3.3 C.11.2.1.2); pairs with a non-number are dropped."""
    centers = _values(_get(ds, "WindowCenter"))
    widths = _values(_get(ds, "WindowWidth"))
    explanations = [str(e) for e in _values(_get(ds, "WindowCenterWidthExplanation"))]
    windows: list[Window] = []
    names: list[str] = []
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        center, width = _optional_float(c), _optional_float(w)
        if center is None or width is None or width <= 0:
            continue
        windows.append(Window(center, width))
        names.append(explanations[i] if i < len(explanations) else "")
    return tuple(windows), tuple(names)


def image_info(ds: Dataset, *, max_bytes: int = IMAGE_BYTES_MAX) -> ImageInfo:
    """Read the image facts from a header.

    Raises UnsupportedImageError when the dataset holds no image at all, MalformedDicomError for a missing
    or impossible Rows/Columns/Bits Allocated/... and ImageTooLargeError when the header claims more than
    ``max_bytes`` (:func:`check_image_size`).
    """
    try:
        info = _image_info(ds)
    except RecursionError as exc:
        raise MalformedDicomError("The DICOM header is nested too deeply to be read.") from exc
    check_image_size(info, max_bytes)
    return info


def _image_info(ds: Dataset) -> ImageInfo:
    if all(_get(ds, k) is None for k in ("Rows", "Columns", "BitsAllocated")):
        raise UnsupportedImageError("This DICOM file holds no image.")
    rows = _required_int(ds, "Rows", 1, 0xFFFF, "number of rows")
    columns = _required_int(ds, "Columns", 1, 0xFFFF, "number of columns")
    frames = _optional_int(_get(ds, "NumberOfFrames"))
    frames = 1 if frames is None else frames
    if frames < 1:
        raise MalformedDicomError(f"The image header gives an impossible number of frames ({frames}).")
    samples = _optional_int(_get(ds, "SamplesPerPixel")) or 1
    if samples not in (1, 3):
        raise UnsupportedImageError(f"Images with {samples} samples per pixel cannot be shown.")
    bits_allocated = _required_int(ds, "BitsAllocated", 1, 64, "bits allocated")
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise MalformedDicomError(f"The image header gives an impossible bits allocated ({bits_allocated}).")
    bits_stored = _optional_int(_get(ds, "BitsStored")) or bits_allocated
    if not 1 <= bits_stored <= bits_allocated:
        raise MalformedDicomError(
            f"The image header says {bits_stored} bits are stored in {bits_allocated} bits allocated."
        )
    pixel_representation = _optional_int(_get(ds, "PixelRepresentation")) or 0
    if pixel_representation not in (0, 1):
        raise MalformedDicomError(f"The image header gives an impossible pixel representation "
                                  f"({pixel_representation}).")
    photometric = str(_get(ds, "PhotometricInterpretation") or ("RGB" if samples == 3 else "MONOCHROME2"))
    photometric = photometric.strip().upper()
    planar = _optional_int(_get(ds, "PlanarConfiguration")) or 0

    modality = str(_get(ds, "Modality") or "").strip().upper()
    slope = _optional_float(_get(ds, "RescaleSlope"))
    intercept = _optional_float(_get(ds, "RescaleIntercept"))
    rescale_type = str(_get(ds, "RescaleType") or "").strip()
    if slope is None or intercept is None:
        transform = _functional_group_item(ds, "PixelValueTransformationSequence")
        if transform is not None:
            slope = _optional_float(_get(transform, "RescaleSlope")) if slope is None else slope
            intercept = _optional_float(_get(transform, "RescaleIntercept")) if intercept is None else intercept
            rescale_type = rescale_type or str(_get(transform, "RescaleType") or "").strip()
    modality_lut = first_item(ds, "ModalityLUTSequence")
    if modality_lut is not None:
        rescale_type = str(_get(modality_lut, "ModalityLUTType") or rescale_type).strip()
    if not rescale_type and modality == "CT":
        rescale_type = "HU"  # PS3.3 C.8.2.1: CT rescale output is Hounsfield units

    windows, explanations = _windows(ds)
    spacing = _floats(_get(ds, "PixelSpacing"), 2) or _floats(_get(ds, "ImagerPixelSpacing"), 2)
    orientation = _floats(_get(ds, "ImageOrientationPatient"), 6)
    if spacing is None and (measures := _functional_group_item(ds, "PixelMeasuresSequence")) is not None:
        spacing = _floats(_get(measures, "PixelSpacing"), 2)
    if orientation is None and (plane := _functional_group_item(ds, "PlaneOrientationSequence")) is not None:
        orientation = _floats(_get(plane, "ImageOrientationPatient"), 6)
    if spacing is not None and not all(s > 0 for s in spacing):
        spacing = None
    voi_function = str(_get(ds, "VOILUTFunction") or "LINEAR").strip().upper()
    if voi_function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        voi_function = "LINEAR"
    tsuid = ""
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        tsuid = str(_get(meta, "TransferSyntaxUID") or "")

    return ImageInfo(
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        pixel_representation=pixel_representation,
        photometric=photometric,
        planar_configuration=planar,
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=0.0 if intercept is None else intercept,
        rescale_type=rescale_type,
        windows=windows,
        window_explanations=explanations,
        pixel_spacing=spacing,  # type: ignore[arg-type]
        image_position=_floats(_get(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
        image_orientation=orientation,  # type: ignore[arg-type]
        slice_location=_optional_float(_get(ds, "SliceLocation")),
        instance_number=_optional_int(_get(ds, "InstanceNumber")),
        transfer_syntax_uid=tsuid,
        sop_instance_uid=str(_get(ds, "SOPInstanceUID") or ""),
        modality=modality,
        voi_lut_function=voi_function,
        float_pixels="FloatPixelData" in ds or "DoubleFloatPixelData" in ds,
        pixel_padding_value=_optional_int(_get(ds, "PixelPaddingValue")),
    )


def check_image_size(info: ImageInfo, max_bytes: int = IMAGE_BYTES_MAX, *,
                     pixel_data_bytes: int | None = None) -> int:
    """Check the header's claimed size before anything is allocated; return :attr:`ImageInfo.decoded_bytes`.

    ``pixel_data_bytes`` is the length of an uncompressed Pixel Data value: shorter than the header claims
    (PS3.5 8.1.1) means the file is truncated.
    """
    size = info.decoded_bytes
    if size > max_bytes:
        raise ImageTooLargeError(
            f"The image is too large to open: {info.frames} frame(s) of {info.columns} x {info.rows} pixels "
            f"need {_mebibytes(size)}, more than the limit of {_mebibytes(max_bytes)}."
        )
    if pixel_data_bytes is not None and pixel_data_bytes < info.native_pixel_bytes:
        raise MalformedDicomError(
            f"The image data is truncated: the header describes {info.native_pixel_bytes} bytes of pixels but "
            f"the file holds {pixel_data_bytes}."
        )
    return size


def _mebibytes(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a sequence, or None when absent, empty or unreadable."""
    try:
        seq = ds.get(keyword)
        return seq[0] if seq else None
    except Exception:
        return None


# -- reading files -------------------------------------------------------------------------------------------


def _stop_at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def _parse_failure(exc: BaseException, has_preamble: bool) -> DicomError:
    if isinstance(exc, RecursionError):
        return MalformedDicomError("The DICOM header is nested too deeply to be read.")
    if isinstance(exc, MemoryError):
        return ImageTooLargeError("The DICOM file is too large to read.")
    if has_preamble:
        return MalformedDicomError(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).")
    return NotDicomError("This is not a DICOM file.")


def _read_header(fp: BinaryIO, *, max_inflated_bytes: int) -> tuple[Dataset, BinaryIO]:
    """Parse everything up to the pixel data.

    Returns the header and the stream positioned at the pixel data element: ``fp`` itself, or for a deflated
    file (PS3.5 A.5) a bounded in-memory inflation of it (see :func:`_inflate`).
    """
    first = fp.read(132)
    if not first:
        raise NotDicomError("The file is empty.")
    fp.seek(0)
    has_preamble = len(first) == 132 and first[128:132] == b"DICM"
    try:
        if has_preamble:
            pydicom.filereader.read_preamble(fp, False)
            # The public read_file_meta_info() takes a path; we must not read the file twice.
            meta = pydicom.filereader._read_file_meta_info(fp)
            if str(meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                return _read_deflated_header(fp, meta, max_inflated_bytes)
            fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble, defer_size=DEFER_VALUE_BYTES)
    except DicomError:
        raise
    except InvalidDicomError as exc:
        raise NotDicomError("This is not a DICOM file.") from exc
    except Exception as exc:  # pydicom raises many types for damaged input; RecursionError for deep nesting
        raise _parse_failure(exc, has_preamble) from exc
    if not has_preamble:
        # force=True accepts almost anything: insist on the elements of an image or at least a SOP instance.
        try:
            plausible = any(k in ds for k in ("SOPInstanceUID", "Rows", "SOPClassUID"))
        except Exception:
            plausible = False
        if not plausible:
            raise NotDicomError("This is not a DICOM file.")
    return ds, fp


def read_header(path: str | os.PathLike[str]) -> Dataset:
    """The header of the file at ``path`` (everything but the pixel data), with errors translated."""
    try:
        with open(path, "rb") as fp:
            header, _ = _read_header(fp, max_inflated_bytes=HEADER_BYTES_MAX + IMAGE_BYTES_MAX)
            return header
    except OSError as exc:
        raise MalformedDicomError(f"The file {Path(path).name} cannot be read: {exc.strerror or exc}.") from exc


def _inflate(data: bytes, limit_bytes: int) -> bytes:
    """Inflate a deflated dataset (PS3.5 A.5) but never beyond ``limit_bytes`` (a "zip bomb" stops here)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit_bytes + 1)
    except zlib.error as exc:
        raise MalformedDicomError("The deflated DICOM file is damaged and cannot be read.") from exc
    if len(out) > limit_bytes:
        raise ImageTooLargeError("The deflated DICOM file expands to more than the size limit.")
    return out


def _read_deflated_header(fp: BinaryIO, meta: FileMetaDataset, limit_bytes: int) -> tuple[Dataset, BinaryIO]:
    inflated = io.BytesIO(_inflate(fp.read(limit_bytes + 1), limit_bytes))
    ds = read_dataset(inflated, is_implicit_VR=False, is_little_endian=True, stop_when=_stop_at_pixels)
    header = FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128, is_implicit_VR=False,
                         is_little_endian=True)
    return header, inflated


def _pixel_element_header(fp: BinaryIO, *, implicit_vr: bool, little_endian: bool) -> tuple[int, int] | None:
    """(tag, value length) of the pixel data element at ``fp``; ``fp`` is left at its value.  None at EOF."""
    endian = "<" if little_endian else ">"
    head = fp.read(8)
    if len(head) < 8:
        return None
    group, element = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    vr = head[4:6]
    if implicit_vr or not (vr.isalpha() and vr.isupper()):
        # Implicit VR, or a writer that switched to implicit VR for this element (pydicom tolerates it too).
        (length,) = struct.unpack(endian + "L", head[4:8])
    elif vr in _LONG_LENGTH_VRS:
        more = fp.read(4)
        if len(more) < 4:
            return None
        (length,) = struct.unpack(endian + "L", more)
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
    return tag, length


def _normalise_lut_item(item: Dataset | None, little_endian: bool, signed_first_mapped: bool) -> Dataset | None:
    """A copy of a Modality/VOI LUT item (PS3.3 C.11.1 / C.11.2) whose LUT Data is little-endian and whose
    first-mapped value carries the sign the US-or-SS descriptor lost (PS3.3 C.11.1.1.1)."""
    if item is None:
        return None
    try:
        descriptor = [int(v) for v in item.LUTDescriptor]
        data = item.LUTData
    except Exception:
        log.debug("ignoring unreadable LUT item")
        return None
    if len(descriptor) != 3:
        return None
    if signed_first_mapped and descriptor[1] >= 0x8000:
        descriptor[1] -= 0x10000
    if isinstance(data, (bytes, bytearray)):
        words = np.frombuffer(bytes(data[: len(data) // 2 * 2]), dtype="<u2" if little_endian else ">u2")
    else:
        try:
            words = np.asarray([int(v) for v in _values(data)], dtype=np.int64)
        except (TypeError, ValueError):
            return None
        words = np.clip(words, 0, 0xFFFF)
    out = Dataset()
    out.LUTDescriptor = [descriptor[0] & 0xFFFF, descriptor[1], descriptor[2]]
    out.LUTData = words.astype("<u2").tobytes()
    out["LUTData"].VR = "OW"
    for keyword in ("ModalityLUTType", "LUTExplanation"):
        if keyword in item:
            setattr(out, keyword, _get(item, keyword))
    return out


def lut_items(header: Dataset, info: ImageInfo) -> tuple[Dataset | None, Dataset | None]:
    """(first VOI LUT Sequence item, Modality LUT Sequence item), normalised for
    :class:`~viewer.dicom.pixels.GrayPipeline` (little-endian LUT Data, signed first-mapped value)."""
    little_endian = getattr(header, "original_encoding", (None, True))[1] is not False
    voi_lut = _normalise_lut_item(
        first_item(header, "VOILUTSequence"), little_endian,
        # The VOI LUT's input is the modality value: signed when stored values or the rescale can be negative.
        signed_first_mapped=info.pixel_representation == 1 or info.rescale_intercept < 0,
    )
    modality_lut = _normalise_lut_item(
        first_item(header, "ModalityLUTSequence"), little_endian,
        signed_first_mapped=info.pixel_representation == 1,
    )
    return voi_lut, modality_lut


class DicomImage:
    """One decoded DICOM image: :attr:`info`, :attr:`header` (without pixel data) and its frames.

    Use :meth:`open` (or :meth:`from_dataset`).  All frames are decoded when the image is opened, so that every
    decoding error surfaces there; the encoded bytes are not kept.  Returned arrays are read-only because they
    are shared (caches, threads).
    """

    def __init__(self, header: Dataset, info: ImageInfo, frames: np.ndarray) -> None:
        frames.flags.writeable = False
        self.header = header
        self.info = info
        self._frames = frames
        self.voi_lut: Dataset | None
        self.modality_lut: Dataset | None
        self.voi_lut, self.modality_lut = lut_items(header, info)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_bytes: int = IMAGE_BYTES_MAX) -> DicomImage:
        """Read and decode the image in ``path``.

        Raises NotDicomError (empty file, not DICOM), MalformedDicomError (damaged, truncated, inconsistent),
        ImageTooLargeError (beyond ``max_bytes``) or UnsupportedImageError (no codec, unknown colour model).
        """
        path = Path(path)
        try:
            with open(path, "rb") as fp:
                return cls._read(fp, max_bytes)
        except DicomError:
            raise
        except OSError as exc:
            raise MalformedDicomError(f"The file {path.name} cannot be read: {exc.strerror or exc}.") from exc

    @classmethod
    def from_dataset(cls, ds: Dataset, *, max_bytes: int = IMAGE_BYTES_MAX) -> DicomImage:
        """Decode an in-memory dataset (which keeps its pixel data: it is the caller's).  Addition to the
        contract, for generated and received datasets."""
        header = Dataset()
        for elem in ds:
            if elem.tag not in PIXEL_DATA_TAGS:
                header.add(elem)
        header.file_meta = getattr(ds, "file_meta", FileMetaDataset())
        info = image_info(ds, max_bytes=max_bytes)
        return cls(header, info, _decode_dataset(ds, info))

    @classmethod
    def _read(cls, fp: BinaryIO, max_bytes: int) -> DicomImage:
        header, src = _read_header(fp, max_inflated_bytes=max_bytes + HEADER_BYTES_MAX)
        info = image_info(header, max_bytes=max_bytes)
        tsuid = info.transfer_syntax_uid or ImplicitVRLittleEndian
        implicit_vr, little_endian = _encoding(header, tsuid)
        start = src.tell()
        element = _pixel_element_header(src, implicit_vr=implicit_vr, little_endian=little_endian)
        if element is None:
            raise MalformedDicomError("The file has an image header but no image data.")
        tag, length = element
        if tag != TAG_PIXEL_DATA:  # Float / Double Float Pixel Data (PS3.3 C.7.6.24)
            info = dataclasses.replace(info, float_pixels=True,
                                       bits_allocated=64 if tag == TAG_DOUBLE_FLOAT_PIXEL_DATA else 32)
            check_image_size(info, max_bytes)
        _check_pixel_element(info, tsuid, length, max_bytes)
        if _fast_path_ok(info, tsuid):
            return cls(header, info, _read_native_gray(src, info))
        src.seek(start)
        full = _with_pixel_element(header, src, tsuid, implicit_vr=implicit_vr, little_endian=little_endian,
                                   max_bytes=max_bytes)
        return cls(header, info, _decode_dataset(full, info))

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based): stored values (grayscale) or uint8 RGB (colour).  Read-only."""
        if not 0 <= index < self.info.frames:
            raise IndexError(f"frame {index} out of range (image has {self.info.frames})")
        return self._frames[index]

    def frames_all(self) -> np.ndarray:
        """All frames: ``(frames, rows, cols)`` or ``(frames, rows, cols, 3)``.  Read-only."""
        return self._frames


def _check_pixel_element(info: ImageInfo, tsuid: str, length: int, max_bytes: int) -> None:
    """Native pixel data has a defined length covering the image (PS3.5 8.1.1); encapsulated pixel data has an
    undefined length (PS3.5 A.4) and a decoder we have."""
    if tsuid in NATIVE_TRANSFER_SYNTAXES:
        if length == UNDEFINED_LENGTH:
            raise MalformedDicomError("The image data is compressed although the file declares it is not.")
        check_image_size(info, max_bytes, pixel_data_bytes=length)
        return
    _decoder_for(tsuid)  # no decoder: say so before looking at the data
    if length != UNDEFINED_LENGTH:
        raise MalformedDicomError(
            f"The {transfer_syntax_words(tsuid)} image data is not encapsulated as the standard requires."
        )


def _with_pixel_element(header: Dataset, src: BinaryIO, tsuid: str, *, implicit_vr: bool, little_endian: bool,
                        max_bytes: int) -> Dataset:
    """A dataset with the header's elements and the pixel data element read from ``src`` (for the decoders)."""
    remaining = _remaining_bytes(src)
    if remaining > max_bytes + HEADER_BYTES_MAX:
        raise ImageTooLargeError(f"The file is too large to open ({_mebibytes(remaining)}).")
    try:
        rest = read_dataset(src, is_implicit_VR=implicit_vr, is_little_endian=little_endian)
    except Exception as exc:
        raise _parse_failure(exc, has_preamble=True) from exc
    # A new element dict: Dataset(header) would share the header's and put the pixel data into it.
    full = Dataset({tag: header.get_item(tag) for tag in header.keys()})
    full.file_meta = FileMetaDataset()
    full.file_meta.TransferSyntaxUID = tsuid
    for tag in rest.keys():
        full[tag] = rest.get_item(tag)
    return full


def _encoding(header: Dataset, tsuid: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) as the data set is actually encoded: pydicom detects files that do not
    follow their declared transfer syntax (a known real-world defect), and the pixel element follows suit."""
    implicit, little = getattr(header, "original_encoding", (None, None))
    if implicit is None or little is None:
        return tsuid == ImplicitVRLittleEndian, tsuid != ExplicitVRBigEndian
    return bool(implicit), bool(little)


def _remaining_bytes(fp: BinaryIO) -> int:
    here = fp.tell()
    fp.seek(0, io.SEEK_END)
    end = fp.tell()
    fp.seek(here)
    return end - here


def _fast_path_ok(info: ImageInfo, tsuid: str) -> bool:
    """Uncompressed little-endian grayscale with whole-byte samples: read straight into the final array."""
    return (
        tsuid in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
        and info.samples_per_pixel == 1
        and info.photometric in GRAYSCALE_PHOTOMETRICS
        and info.bits_allocated in (8, 16, 32, 64)
    )


def _read_native_gray(fp: BinaryIO, info: ImageInfo) -> np.ndarray:
    """Read uncompressed little-endian pixel data into one freshly allocated array (no intermediate bytes)."""
    dtype = info.stored_dtype.newbyteorder("<")
    count = info.frames * info.rows * info.columns
    arr = np.empty(count, dtype=dtype)
    buffer = memoryview(arr).cast("B")
    got = fp.readinto(buffer)  # type: ignore[attr-defined]
    if got is None or got < len(buffer):
        raise MalformedDicomError(
            f"The image data is truncated: the header describes {len(buffer)} bytes of pixels but the file "
            f"holds {got or 0}."
        )
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    _correct_unused_bits(arr, info)
    return arr.reshape(info.frames, info.rows, info.columns)


def _correct_unused_bits(arr: np.ndarray, info: ImageInfo) -> None:
    """Bits above Bits Stored carry no pixel value (PS3.5 8.1.1; old files put overlays there): clear them, or
    sign-extend from the high stored bit for signed data."""
    if info.float_pixels or info.bits_stored >= info.bits_allocated:
        return
    if info.pixel_representation == 1:
        shift = info.bits_allocated - info.bits_stored
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    else:
        np.bitwise_and(arr, arr.dtype.type((1 << info.bits_stored) - 1), out=arr)


_NEVER_SWALLOWED = (KeyboardInterrupt, SystemExit, GeneratorExit)
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian, PS3.5 A.4
_SEQUENCE_DELIMITER_TAG = b"\xfe\xff\xdd\xe0"
_FRAGMENTS_MAX = 1 << 20
_JPEG_MARKERS_MAX = 1000
# ISO/IEC 10918-1 B.1.1.3 start-of-frame markers (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (ISO 14495-1).
_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})


def codestream_size(fragment: bytes | memoryview) -> tuple[int, int] | None:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 codestream declares, or None when it starts no codestream
    (or does not say).  Read from the SOF marker segment (ISO/IEC 10918-1 B.2.2) or the SIZ marker segment
    (ISO/IEC 15444-1 A.5.1); nothing is decoded."""
    data = bytes(fragment[:65536])
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":  # a JP2 file (ISO/IEC 15444-1 I.5.1) around the codestream
        start = data.find(b"\xff\x4f\xff\x51")
        data = data[start:] if start >= 0 else b""
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:  # SOC, SIZ
        x_siz, y_siz, x_offset, y_offset = struct.unpack(">4L", data[8:24])
        return max(0, y_siz - y_offset), max(0, x_siz - x_offset)
    if data[:2] != b"\xff\xd8":  # SOI
        return None
    at = 2
    for _ in range(_JPEG_MARKERS_MAX):
        if at + 9 > len(data) or data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            rows, columns = struct.unpack(">HH", data[at + 5: at + 9])
            return (rows, columns) if rows else None  # 0 rows: defined later by a DNL marker
        (length,) = struct.unpack(">H", data[at + 2: at + 4])
        at += 2 + length
    return None


def _check_codestreams(ds: Dataset, info: ImageInfo, words: str) -> None:
    """Refuse encapsulated frames whose codestream claims more pixels than the header: a codec allocates what
    the codestream says, so this is where a small file could make us allocate gigabytes."""
    try:
        data = memoryview(ds.PixelData)
    except Exception as exc:
        raise MalformedDicomError(f"The {words} image data cannot be read.") from exc
    at, fragments = 0, 0
    while at + 8 <= len(data) and fragments < _FRAGMENTS_MAX:
        tag = bytes(data[at: at + 4])
        (length,) = struct.unpack("<L", data[at + 4: at + 8])
        if tag != _ITEM_TAG or length == UNDEFINED_LENGTH:
            return  # the codec's own parsing reports the damage
        fragment = data[at + 8: at + 8 + length]
        if fragments > 0 and (size := codestream_size(fragment)) is not None:  # item 0: Basic Offset Table
            rows, columns = size
            if rows * columns > info.rows * info.columns:
                raise MalformedDicomError(
                    f"The {words} image data claims {columns} x {rows} pixels but the header says "
                    f"{info.columns} x {info.rows}."
                )
        at += 8 + length
        fragments += 1


def _decoder_for(tsuid: str) -> Any:
    """pydicom's decoder for a transfer syntax, or UnsupportedImageError naming the compression."""
    words = transfer_syntax_words(tsuid)
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError as exc:
        raise UnsupportedImageError(f"{words} images cannot be decoded: this compression is not supported.") \
            from exc
    if not decoder.is_available:
        raise UnsupportedImageError(f"{words} image cannot be decoded: no decoder for it is installed.")
    return decoder


def _decode_dataset(ds: Dataset, info: ImageInfo) -> np.ndarray:
    """Decode every frame of ``ds`` through pydicom's decoders into one array in display form."""
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "") if hasattr(ds, "file_meta") else "")
    tsuid = tsuid or ImplicitVRLittleEndian
    words = transfer_syntax_words(tsuid)
    decoder = _decoder_for(tsuid)
    if info.photometric not in GRAYSCALE_PHOTOMETRICS | COLOR_PHOTOMETRICS | {PALETTE_COLOR}:
        raise UnsupportedImageError(f"Images with the colour model {info.photometric!r} cannot be shown.")
    if tsuid not in NATIVE_TRANSFER_SYNTAXES:
        _check_codestreams(ds, info, words)
    out: np.ndarray | None = None
    decoded = 0
    try:
        for arr, meta in decoder.iter_array(ds, as_rgb=True):
            if decoded >= info.frames:
                break
            frame = _display_form(arr, meta, info, ds)
            if frame.shape != info.frame_shape:
                raise MalformedDicomError(
                    f"The {words} image data does not match its header ({frame.shape} vs {info.frame_shape})."
                )
            if out is None:
                out = np.empty((info.frames, *frame.shape), dtype=frame.dtype)
            out[decoded] = frame
            decoded += 1
    except DicomError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("There is not enough memory to decode this image.") from exc
    except RecursionError as exc:
        raise MalformedDicomError("The DICOM file is nested too deeply to be read.") from exc
    except _NEVER_SWALLOWED:
        raise
    except BaseException as exc:  # codecs written in Rust raise PanicException, a BaseException, on bad data
        reason = _short_reason(exc)
        if tsuid in NATIVE_TRANSFER_SYNTAXES:
            raise MalformedDicomError(f"The image data is damaged and cannot be read: {reason}.") from exc
        raise UnsupportedImageError(f"{words} image cannot be decoded: {reason}.") from exc
    if out is None or decoded < info.frames:
        raise MalformedDicomError(
            f"The {words} image data holds {decoded} frame(s) but the header announces {info.frames}."
        )
    return out


def _short_reason(exc: BaseException, chars_max: int = 160) -> str:
    """The gist of a codec error: pydicom lists every plugin's failure on its own line; keep the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    reason = lines[0] if lines else type(exc).__name__
    for plugin in ("pylibjpeg: ", "pillow: ", "gdcm: ", "pyjpegls: ", "pylibjpeg-", "pydicom: "):
        if reason.startswith(plugin):
            reason = reason[len(plugin):]
    reason = reason.rstrip(".")
    return reason if len(reason) <= chars_max else reason[: chars_max - 1] + "…"


def _display_form(arr: np.ndarray, meta: dict[str, Any], info: ImageInfo, ds: Dataset) -> np.ndarray:
    """One decoded frame -> stored values (grayscale) or uint8 RGB (colour, palette)."""
    photometric = str(meta.get("photometric_interpretation", info.photometric)).upper()
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if info.is_palette:
        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as exc:
            raise MalformedDicomError(f"The image's colour palette is damaged: {exc}.") from exc
        return _to_uint8(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if info.samples_per_pixel == 1:
        if photometric not in GRAYSCALE_PHOTOMETRICS:
            raise UnsupportedImageError(f"Images with the colour model {photometric!r} cannot be shown.")
        if info.float_pixels:
            return arr
        return arr.astype(info.stored_dtype, copy=False)
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        # Only reached when a decoder did not convert already (it reports RGB when it did): convert once.
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    elif photometric not in _RGB_AFTER_DECODE:
        raise UnsupportedImageError(f"Images with the colour model {photometric!r} cannot be shown.")
    return _to_uint8(arr, info.bits_stored)


def _to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(0, min(bits, 8 * arr.dtype.itemsize) - 8)
    return (arr.astype(np.uint64) >> shift).clip(0, 255).astype(np.uint8)
