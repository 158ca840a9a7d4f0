"""What one image's header says (:class:`ImageInfo`), and the size limit checked from it.

:func:`image_info` reads the facts that decoding and display need (Image Pixel, Modality LUT, VOI LUT and Image
Plane modules) and refuses missing or impossible values; :func:`check_image_size` checks the size the header
claims against :data:`IMAGE_BYTES_MAX`, with Python ints (no overflow), before anything is allocated;
:func:`lut_items` gives the Modality and VOI LUT Sequence items normalised for
:class:`~viewer.dicom.pixels.GrayPipeline`; :func:`transfer_syntax_words` names a transfer syntax's compression
for messages and the UI.  Nothing here reads a file or decodes pixel data (:mod:`viewer.dicom.image` does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from viewer.errors import ImageTooLargeError, MalformedDicomError, UnsupportedImageError
from viewer.limits import IMAGE_BYTES_MAX

from .calibration import PIXEL_SCALE, Scale, header_scale
from .pixels import Window

log = logging.getLogger(__name__)

"""Default limit for one decoded image, all frames together."""

GRAYSCALE_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
COLOR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
PALETTE_COLOR = "PALETTE COLOR"

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
    # (row spacing, column spacing) in mm, for the display aspect only: Pixel Spacing, else Imager Pixel Spacing.
    # Measurements use ``scale``, which says where the mm are (patient, detector, ...; viewer.dicom.calibration).
    pixel_spacing: tuple[float, float] | None = None
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
    scale: Scale = PIXEL_SCALE  # the physical scale for measurements (viewer.dicom.calibration.header_scale)

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
        scale=header_scale(ds),
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


# -- Modality and VOI LUT sequences --------------------------------------------------------------------------


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
