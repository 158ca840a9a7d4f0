"""Reading one DICOM image: header facts (:class:`ImageInfo`) and decoded stored pixel values (:class:`DicomImage`).

This module reads the file: the header up to the pixel data (:func:`read_header`), then the pixel data element,
which :mod:`viewer.dicom.decode` turns into arrays (what they mean is told there).  The header facts and the size
limit are :mod:`viewer.dicom.info`'s; callers import :data:`IMAGE_BYTES_MAX`, :class:`ImageInfo`,
:func:`image_info` and :func:`check_image_size` from here all the same.

Hostile input is expected: every size is checked from header fields with Python ints (no overflow) before
anything is allocated (:func:`check_image_size`), a deflated dataset is inflated with a bound, deep nesting is
caught, and every library exception is translated once, here and in :mod:`viewer.dicom.decode`, into a
:mod:`viewer.errors` type whose message is a plain sentence.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from viewer.errors import DicomError, ImageTooLargeError, MalformedDicomError, NotDicomError
from viewer.library.header import convert_elements, damaged, inflate_prefix
from viewer.limits import HEADER_BYTES_MAX

from .decode import _check_pixel_element, _decode_dataset, _fast_path_ok, _read_native_gray
from .info import IMAGE_BYTES_MAX, ImageInfo, _mebibytes, check_image_size, image_info, lut_items

"""Limit on the non-pixel part of a file we are willing to hold (inflated, for deflated files)."""

DEFER_VALUE_BYTES = 1 << 20
"""Header values larger than this (private blobs, icons) stay on disk and are read only when looked at."""

# PS3.5 7.5 and 8: the pixel data elements (Pixel Data, Float Pixel Data, Double Float Pixel Data).
TAG_PIXEL_DATA = 0x7FE00010
TAG_FLOAT_PIXEL_DATA = 0x7FE00008
TAG_DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_DATA_TAGS = (TAG_PIXEL_DATA, TAG_FLOAT_PIXEL_DATA, TAG_DOUBLE_FLOAT_PIXEL_DATA)

# PS3.5 7.1.2: explicit VRs whose length field is 4 bytes (after 2 reserved bytes).
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                              b"UV"})


# -- reading files -------------------------------------------------------------------------------------------


def _stop_at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def _parse_failure(exc: BaseException, has_preamble: bool) -> DicomError:
    if isinstance(exc, RecursionError):
        return MalformedDicomError("The DICOM header is nested too deeply to be read.")
    if isinstance(exc, MemoryError):
        return ImageTooLargeError("The DICOM file is too large to read.")
    if has_preamble:
        return damaged(exc)
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
                inflated, src = _read_deflated_header(fp, meta, max_inflated_bytes)
                convert_elements(inflated)
                return inflated, src
            fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble, defer_size=DEFER_VALUE_BYTES)
    except DicomError:
        raise
    except InvalidDicomError as exc:
        raise NotDicomError("This is not a DICOM file.") from exc
    except Exception as exc:  # pydicom raises many types for damaged input; RecursionError for deep nesting
        raise _parse_failure(exc, has_preamble) from exc
    convert_elements(ds, has_preamble)
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


def _inflate(fp: BinaryIO, limit_bytes: int) -> bytes:
    """Inflate the deflated dataset at `fp` (PS3.5 A.5) but never beyond ``limit_bytes`` (a "zip bomb" stops here;
    the library's inflate_prefix, which its header reader uses too)."""
    try:
        out = inflate_prefix(fp, limit_bytes + 1)
    except zlib.error as exc:
        raise MalformedDicomError("The deflated DICOM file is damaged and cannot be read.") from exc
    if len(out) > limit_bytes:
        raise ImageTooLargeError("The deflated DICOM file expands to more than the size limit.")
    return out


def _read_deflated_header(fp: BinaryIO, meta: FileMetaDataset, limit_bytes: int) -> tuple[Dataset, BinaryIO]:
    inflated = io.BytesIO(_inflate(fp, limit_bytes))
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
    for tag in rest.keys():  # only the pixel data: what follows it (padding, signatures, junk) is not displayed
        if tag in (TAG_PIXEL_DATA, TAG_FLOAT_PIXEL_DATA, TAG_DOUBLE_FLOAT_PIXEL_DATA):
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
