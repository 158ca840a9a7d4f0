"""Decoding pixel data into arrays: native, compressed (through pydicom's decoders) and colour.

What the pixel arrays mean (PS3.3 C.7.6.3, Image Pixel Module):

* grayscale (MONOCHROME1/2): a 2-D array of *stored values* in their native dtype (uint8/int8, uint16/int16,
  uint32/int32, float32/float64 for Float / Double Float Pixel Data).  No rescale, no VOI: that is
  :mod:`viewer.dicom.pixels`' job, so the pixel probe and the window can both work from the same array.
* colour: ``(rows, columns, 3)`` uint8 RGB.  YBR_FULL / YBR_FULL_422 are converted to RGB (PS3.3 C.7.6.3.1.2)
  exactly once (pydicom's decoders report the colour space they return; we trust that report), YBR_ICT /
  YBR_RCT are undone by the JPEG 2000 codec itself (PS3.5 A.4.4), planar configuration is normalised and
  PALETTE COLOR is applied (PS3.3 C.7.6.3.1.5).  More than 8 bits per sample are scaled down to 8.

Before a codec sees them, the pixel data element is checked against the header (:func:`_check_pixel_element`) and
so is every encapsulated frame's codestream (:func:`codestream_size`).  The file itself is read by
:mod:`viewer.dicom.image`.

A frame that pydicom's decoders (pylibjpeg, pillow, pydicom's own) all refuse is tried once more with a second,
independent decoder, imagecodecs (libjpeg-turbo, CharLS, OpenJPEG: :func:`_second_decoder`), before it is called
undecodable.  The known case is 12-bit JPEG with non-conformant scan parameters (Se 0 instead of 63), which
libjpeg-turbo and DCMTK read with a warning and pylibjpeg-libjpeg refuses.  A refusal by every decoder is a plain
sentence; the codecs' own messages go to the log.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from viewer.errors import DicomError, ImageTooLargeError, MalformedDicomError, UnsupportedImageError

from .info import (
    COLOR_PHOTOMETRICS,
    GRAYSCALE_PHOTOMETRICS,
    PALETTE_COLOR,
    ImageInfo,
    check_image_size,
    transfer_syntax_words,
)

log = logging.getLogger(__name__)

UNDEFINED_LENGTH = 0xFFFFFFFF

# Photometric interpretations that leave a colour codec already as RGB (PS3.5 A.4.4: the JPEG 2000 component
# transform is part of the codestream and is undone by the decoder).
_RGB_AFTER_DECODE = frozenset({"RGB", "YBR_ICT", "YBR_RCT"})

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)


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
    frames: list[int] = []  # one entry per frame kept (only the count matters)
    out: np.ndarray | None = None

    def keep(frame: np.ndarray) -> None:
        nonlocal out
        if frame.shape != info.frame_shape:
            raise MalformedDicomError(
                f"The {words} image data does not match its header ({frame.shape} vs {info.frame_shape})."
            )
        if out is None:
            out = np.empty((info.frames, *frame.shape), dtype=frame.dtype)
        out[len(frames)] = frame
        frames.append(len(frames))

    try:
        try:
            for arr, meta in decoder.iter_array(ds, as_rgb=True):
                if len(frames) >= info.frames:
                    break
                keep(_display_form(arr, meta, info, ds))
        except (DicomError, MemoryError, RecursionError, *_NEVER_SWALLOWED):
            raise
        except BaseException as exc:  # codecs written in Rust raise PanicException, a BaseException, on bad data
            log.info("%s frame %d: pydicom's decoders refused it: %s", words, len(frames) + 1, exc)
            second = _second_decoder(tsuid, info)
            if second is None:
                raise _refusal(tsuid, words) from exc
            _decode_rest_with(second, ds, info, words, len(frames), keep, exc)
    except DicomError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("There is not enough memory to decode this image.") from exc
    except RecursionError as exc:
        raise MalformedDicomError("The DICOM file is nested too deeply to be read.") from exc
    if out is None or len(frames) < info.frames:
        raise MalformedDicomError(
            f"The {words} image data holds {len(frames)} frame(s) but the header announces {info.frames}."
        )
    return out


def _refusal(tsuid: str, words: str) -> DicomError:
    """What every decoder's refusal says: a sentence, no codec's words (they are in the log)."""
    if tsuid in NATIVE_TRANSFER_SYNTAXES:
        return MalformedDicomError("The image data is damaged and cannot be read.")
    return UnsupportedImageError(
        f"{words} image cannot be decoded: its compressed data is damaged, or uses a form of the compression "
        f"that none of the installed decoders reads."
    )


_JPEG_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_JPEG_LOSSLESS = frozenset({JPEGLossless, JPEGLosslessSV1})
_JPEG_LS = frozenset({JPEGLSLossless, JPEGLSNearLossless})
_JPEG_2000 = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})

SecondDecoder = Callable[[bytes], "tuple[np.ndarray, str]"]


def _second_decoder(tsuid: str, info: ImageInfo) -> SecondDecoder | None:
    """imagecodecs' decoder for this kind of frame, returning (array, photometric interpretation of the array),
    or None where there is none we trust to give what pydicom's decoders would (colour lossless JPEG and colour
    JPEG-LS leave the colour model to conventions we do not second-guess; palette colour likewise).  imagecodecs
    is imported here only: it is needed only once pydicom's decoders have refused a frame."""
    gray = info.samples_per_pixel == 1 and not info.is_palette
    kinds = _JPEG_LOSSY | _JPEG_2000 | ((_JPEG_LOSSLESS | _JPEG_LS) if gray else frozenset())
    if tsuid not in kinds or info.is_palette:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    if tsuid in _JPEG_LOSSY | _JPEG_LOSSLESS:
        if gray:
            return lambda data: (imagecodecs.jpeg8_decode(data), info.photometric)
        # DICOM says what the colour model is (PS3.5 8.2.1): RGB is stored without a colour transform, whatever
        # the JPEG's own markers suggest; YBR is converted to RGB by libjpeg-turbo.
        source = "RGB" if info.photometric == "RGB" else "YCBCR"
        return lambda data: (imagecodecs.jpeg8_decode(data, colorspace=source, outcolorspace="RGB"), "RGB")
    if tsuid in _JPEG_LS:
        return lambda data: (imagecodecs.jpegls_decode(data), info.photometric)
    # JPEG 2000: the codestream's component transform (YBR_ICT / YBR_RCT) is undone by the decoder (PS3.5 A.4.4).
    return lambda data: (imagecodecs.jpeg2k_decode(data), info.photometric)


def _decode_rest_with(second: SecondDecoder, ds: Dataset, info: ImageInfo, words: str, start: int,
                      keep: Callable[[np.ndarray], None], first: BaseException) -> None:
    """Decode frames ``start`` onwards with the second decoder; a frame it refuses too ends it with a sentence."""
    from pydicom.encaps import generate_frames

    try:
        for index, data in enumerate(generate_frames(ds.PixelData, number_of_frames=info.frames)):
            if index >= info.frames:
                break
            if index < start:
                continue
            try:
                arr, photometric = second(data)
            except (MemoryError, RecursionError, *_NEVER_SWALLOWED):
                raise
            except Exception as exc:
                log.info("%s frame %d: the second decoder refused it too: %s", words, index + 1, exc)
                raise _refusal("", words) from first
            keep(_second_form(arr, photometric, info, ds))
    except (DicomError, MemoryError, RecursionError, *_NEVER_SWALLOWED):
        raise
    except Exception as exc:  # the frames themselves cannot be split out of the encapsulated data
        raise _refusal("", words) from exc


def _second_form(arr: np.ndarray, photometric: str, info: ImageInfo, ds: Dataset) -> np.ndarray:
    """A frame from the second decoder in the form pydicom's decoders give: stored values of the header's type
    (JPEG codecs return signed data as unsigned: sign-extended from Bits Stored here), colour as RGB."""
    if info.samples_per_pixel == 1 and not info.float_pixels and arr.ndim == 2:
        arr = arr.astype(info.stored_dtype, copy=True)
        _correct_unused_bits(arr, info)
    return _display_form(arr, {"photometric_interpretation": photometric}, info, ds)


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
