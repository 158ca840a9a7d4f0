"""What the index records of an instance, read from its header (no Qt).

:func:`read_header` reads a DICOM header (up to Pixel Data) with pydicom and checks the identifying UIDs;
:func:`index_row` gives the row :class:`viewer.library.store.Library` enters in its index for a Part 10 file
held in memory.

Header reading for the index: :func:`_fast_index_row` takes the dozen elements the index needs straight from
the bytes (little-endian transfer syntaxes, plain ASCII values), about 20x cheaper than pydicom, and leaves
everything else to pydicom, which gives the same row.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import struct
import zlib
from typing import TYPE_CHECKING

from viewer.errors import MalformedDicomError, NotDicomError
from viewer.imports import need
from viewer.limits import FRAMES_PER_INSTANCE_MAX, HEADER_BYTES_MAX
from viewer.uid import is_valid_uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# pydicom is imported where it reads (read_header, and the fast reader's fallback), so that a retrieval whose
# headers the fast reader takes (every little-endian one with plain values) never imports it.

# Header reading stops before Pixel Data; this caps what a hostile header may make us read.
# Number of Frames is the header's claim; the index (and the series the viewer builds from it, one entry per
# frame) believes at most what the file can hold and at most this many (the longest cine loops and enhanced
# multi-frame images have thousands): a 9 KB file that claims 2,147,483,647 frames hung the viewer.
# Transfer syntaxes whose pixel data is stored as it is (PS3.5 A.1-A.3): a frame takes at least a bit per pixel.
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
_DEFLATED_HEADER_FIRST_BYTES = 4 << 20  # of a deflated file, inflated first to read its header
_PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel Data, Float and Double Float Pixel Data
_ITEM_HEADER_BYTES = 8  # an encapsulated frame is at least one fragment: an item tag and length (PS3.5 A.4)

log = logging.getLogger(__name__)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed value must not stop indexing
        return ""
    if value is None:
        return ""
    return str(value).strip()


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def _decimals(ds: Dataset, keyword: str, count: int) -> str:
    try:
        value = ds.get(keyword)
        if value is None:
            return ""
        numbers = [float(v) for v in value]
    except Exception:
        return ""
    if len(numbers) != count:
        return ""
    return "\\".join(repr(n) for n in numbers)


def read_header(source: str | os.PathLike | io.BufferedIOBase | bytes) -> Dataset:
    """Read a DICOM header (up to Pixel Data) and check the identifying UIDs.

    Raises NotDicomError for anything that is not DICOM (including empty files) and MalformedDicomError for DICOM
    that is truncated or lacks valid Study/Series/SOP Instance UIDs.
    """
    need("pydicom")
    import pydicom
    from pydicom.errors import InvalidDicomError

    fp: io.BufferedIOBase
    if isinstance(source, bytes):
        fp = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        fp = open(source, "rb")  # noqa: SIM115 - closed below
    else:
        fp = source
    try:
        start = fp.tell()
        first = fp.read(132)
        if not first:
            raise NotDicomError("The file is empty.")
        fp.seek(start)
        has_preamble = len(first) == 132 and first[128:132] == b"DICM"
        try:
            ds = (_deflated_header(fp) if has_preamble else None) or pydicom.dcmread(
                fp, stop_before_pixels=True, force=not has_preamble)
        except InvalidDicomError as exc:
            raise NotDicomError("This is not a DICOM file.") from exc
        except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, RecursionError,
                NotImplementedError, AttributeError, zlib.error, struct.error) as exc:
            if has_preamble:
                raise damaged(exc) from exc
            raise NotDicomError("This is not a DICOM file.") from exc
        convert_elements(ds, has_preamble)
        # pydicom converts lazily: touch the identifying elements now so that errors surface here.
        try:
            uids = {k: ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
        except Exception as exc:
            raise MalformedDicomError("The DICOM header is damaged (unreadable UIDs).") from exc
        if not has_preamble and not any(uids.values()):
            raise NotDicomError("This is not a DICOM file.")
        for keyword, value in uids.items():
            if not is_valid_uid(str(value) if value is not None else None):
                raise MalformedDicomError(f"The file has no valid {keyword} and cannot be stored.")
        return ds
    finally:
        if isinstance(source, (str, os.PathLike)):
            fp.close()


def damaged(exc: BaseException) -> MalformedDicomError:
    """The error for a DICOM file pydicom cannot parse; what pydicom said goes to the log (it may quote values)."""
    log.debug("unreadable DICOM: %s", type(exc).__name__)
    return MalformedDicomError("The DICOM file is damaged and cannot be read.")


def convert_elements(ds: Dataset, has_preamble: bool = True) -> None:
    """Convert every element of `ds` read so far (pydicom converts lazily, at first access), so that a damaged
    one (an unknown VR, a bad length) fails here with our sentence rather than in whatever reads it later.
    Deferred values (large ones left in the file) are not read."""
    try:
        for tag in ds.keys():
            raw = ds.get_item(tag, keep_deferred=True)
            if getattr(raw, "value", True) is None and getattr(raw, "length", 0):
                continue  # deferred: its value is still in the file
            ds[tag]
    except Exception as exc:
        if has_preamble:
            raise damaged(exc) from exc
        raise NotDicomError("This is not a DICOM file.") from exc


def _deflated_header(fp: io.BufferedIOBase) -> Dataset | None:
    """The header of a Deflated Explicit VR Little Endian file (PS3.5 A.5), inflating no more than
    :data:`HEADER_BYTES_MAX` (the header is all the index needs: a file that inflates to 400 MiB of pixels is
    not inflated whole); None, with `fp` where it was, for any other transfer syntax."""
    import pydicom.filereader
    from pydicom.dataset import FileDataset

    start = fp.tell()
    pydicom.filereader.read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)  # the public one takes a path; one read of the file
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED_SYNTAX:
        fp.seek(start)
        return None
    body = fp.tell()
    for limit in (_DEFLATED_HEADER_FIRST_BYTES, HEADER_BYTES_MAX):  # a header is small: try a little first
        fp.seek(body)
        inflated = inflate_prefix(fp, limit)
        try:
            ds, reached_pixels = _explicit_le_header(inflated)
        except (EOFError, ValueError, OSError):
            if len(inflated) < limit:
                raise  # the whole data set was inflated: it is damaged, not cut by us
            continue
        if reached_pixels or len(inflated) < limit:
            return FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128, is_implicit_VR=False,
                               is_little_endian=True)
    raise MalformedDicomError(f"The deflated DICOM file's header is larger than {HEADER_BYTES_MAX >> 20} MiB.")


def _explicit_le_header(data: bytes) -> tuple[Dataset, bool]:
    """The elements of an Explicit VR Little Endian data set up to its pixel data; whether that was reached."""
    import pydicom.filereader

    reached: list[bool] = []

    def at_pixels(tag: int, vr: object, length: int) -> bool:
        if tag in _PIXEL_DATA_TAGS:
            reached.append(True)
            return True
        return False

    ds = pydicom.filereader.read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True,
                                         stop_when=at_pixels)
    return ds, bool(reached)


def inflate_prefix(fp: io.BufferedIOBase, limit: int) -> bytes:
    """At most `limit` bytes of the raw deflate stream (PS3.5 A.5) that starts at `fp`, inflated in small steps
    (no large buffer grows and is copied).  Raises zlib.error for a damaged stream.  The one inflater of
    deflated data sets: the index's header reader here, and viewer.dicom.image's reader for display."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = inflater.unconsumed_tail or fp.read(1 << 16)
        if not chunk:
            break
        part = inflater.decompress(chunk, min(limit - size, 1 << 20))  # small steps: no large buffer grows
        parts.append(part)
        size += len(part)
        if inflater.eof:
            break
    return b"".join(parts)


# -- the index row, and a fast way to read it ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _IndexRow:
    """What the index records of one instance, read from its header (everything but where and how big)."""

    study: tuple  # studies columns (:data:`viewer.library.store.STUDY_COLUMNS`)
    series: tuple  # series columns
    instance: tuple  # instances columns up to transfer_syntax_uid

    @property
    def sop_uid(self) -> str:
        return self.instance[0]

    @property
    def series_uid(self) -> str:
        return self.series[0]

    @property
    def study_uid(self) -> str:
        return self.study[0]


def _row_from_dataset(ds: Dataset) -> _IndexRow:
    """The index row from a header pydicom decoded (the reference for :func:`_fast_index_row`)."""
    study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    tsuid = ""
    if getattr(ds, "file_meta", None) is not None:
        tsuid = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    frames = _int_or_none(ds, "NumberOfFrames") or 1
    return _IndexRow(
        (study_uid, _text(ds, "PatientName"), _text(ds, "PatientID"), _text(ds, "PatientBirthDate"),
         _text(ds, "PatientSex"), _text(ds, "StudyDate"), _text(ds, "StudyTime"), _text(ds, "AccessionNumber"),
         _text(ds, "StudyDescription"), _text(ds, "IssuerOfPatientID")),
        (series_uid, study_uid, _text(ds, "Modality"), _int_or_none(ds, "SeriesNumber"),
         _text(ds, "SeriesDescription"), _text(ds, "BodyPartExamined")),
        (sop_uid, series_uid, _text(ds, "SOPClassUID"), _int_or_none(ds, "InstanceNumber"),
         _decimals(ds, "ImagePositionPatient", 3), _decimals(ds, "ImageOrientationPatient", 6), max(1, frames),
         _int_or_none(ds, "Rows"), _int_or_none(ds, "Columns"), tsuid),
    )


class _Unusual(Exception):
    """The fast header reader met something it leaves to pydicom (the result would be the same, only slower)."""


# Elements the index needs, by tag; the walk stops after the last of them (Columns) or at Pixel Data.
_TEXT_TAGS = {
    0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x00080020: "StudyDate", 0x00080030: "StudyTime",
    0x00080050: "AccessionNumber", 0x00080060: "Modality", 0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription", 0x00100010: "PatientName", 0x00100020: "PatientID",
    0x00100021: "IssuerOfPatientID", 0x00100030: "PatientBirthDate", 0x00100040: "PatientSex",
    0x00180015: "BodyPartExamined",
    0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
}
_IS_TAGS = {0x00200011: "SeriesNumber", 0x00200013: "InstanceNumber", 0x00280008: "NumberOfFrames"}
_DS_TAGS = {0x00200032: "ImagePositionPatient", 0x00200037: "ImageOrientationPatient"}
_US_TAGS = {0x00280010: "Rows", 0x00280011: "Columns"}
_WANTED = frozenset((0x00080005, *_TEXT_TAGS, *_IS_TAGS, *_DS_TAGS, *_US_TAGS))
_LAST_TAG = 0x00280011
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"))
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_NESTING_MAX = 16
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")
_DECIMAL_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_ELEMENT = struct.Struct("<HH")
# Transfer syntaxes whose data set is not little endian, or is deflated: left to pydicom.
_NOT_PLAIN_LE = frozenset(("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"))


class _Walker:
    """Top-level elements of a little-endian data set from a byte string, without decoding anything."""

    def __init__(self, data: bytes | memoryview, implicit: bool) -> None:
        self.data = data
        self.implicit = implicit

    def element(self, pos: int) -> tuple[int, int, int, bytes]:
        """(tag, value offset, value length, VR) of the element at `pos` (VR b"" when implicit)."""
        data = self.data
        if pos + 8 > len(data):
            raise _Unusual("truncated")
        group, elem = _ELEMENT.unpack_from(data, pos)
        tag = group << 16 | elem
        if self.implicit or group == 0xFFFE:
            return tag, pos + 8, int.from_bytes(data[pos + 4:pos + 8], "little"), b""
        vr = bytes(data[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise _Unusual("truncated")
            return tag, pos + 12, int.from_bytes(data[pos + 8:pos + 12], "little"), vr
        return tag, pos + 8, int.from_bytes(data[pos + 6:pos + 8], "little"), vr

    def skip_undefined(self, pos: int, depth: int = 0) -> int:
        """The offset after an undefined-length sequence (or encapsulated value) whose items start at `pos`."""
        if depth > _NESTING_MAX:
            raise _Unusual("nested too deep")
        while True:
            tag, value, length, _ = self.element(pos)
            if tag == _SEQUENCE_END:
                return value
            if tag != _ITEM:
                raise _Unusual("not an item")
            if length != _UNDEFINED:
                pos = value + length
                continue
            pos = value
            while True:  # an item of undefined length: its elements up to the Item Delimitation Item
                tag, value, length, _ = self.element(pos)
                if tag == _ITEM_END:
                    pos = value
                    break
                pos = self.skip_undefined(value, depth + 1) if length == _UNDEFINED else value + length


def _fast_index_row(data: bytes) -> _IndexRow:
    """The index row of a Part 10 file read straight from its bytes: about 20x cheaper than pydicom.

    Handles the common case only: preamble and File Meta Information present, a little-endian, non-deflated
    transfer syntax, plain ASCII single values.  Anything else raises :class:`_Unusual` and the caller asks
    pydicom (:func:`_row_from_dataset`), which gives the same row; the tests compare both on varied files.
    """
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Unusual("no preamble")
    meta = _Walker(data, implicit=False)
    pos, tsuid = 132, ""
    while True:
        tag, value, length, _ = meta.element(pos)
        if tag >> 16 != 0x0002:
            break
        if length == _UNDEFINED or value + length > len(data):
            raise _Unusual("meta")
        if tag == 0x00020010:
            tsuid = bytes(data[value:value + length]).rstrip(b"\0 ").decode("ascii", "strict")
        pos = value + length
    if not tsuid or tsuid in _NOT_PLAIN_LE:
        raise _Unusual("transfer syntax")
    values = _walk(_Walker(data, implicit=tsuid == "1.2.840.10008.1.2"), pos)
    return _row_from_values(values, tsuid)


def _walk(walker: _Walker, pos: int) -> dict[int, bytes]:
    """The raw values of the wanted top-level elements, from `pos` to Pixel Data (or past the last wanted)."""
    data, end, found = walker.data, len(walker.data), {}
    while pos < end:
        tag, value, length, vr = walker.element(pos)
        if tag > _LAST_TAG:
            break
        if length == _UNDEFINED:
            if vr not in (b"", b"SQ", b"UN"):
                raise _Unusual("undefined length")
            pos = walker.skip_undefined(value)
            continue
        if value + length > end:
            raise _Unusual("truncated")
        if tag in _WANTED:
            found[tag] = bytes(data[value:value + length])
        pos = value + length
    return found


def _ascii(raw: bytes, uid: bool = False) -> str:
    """A single ASCII value, as pydicom would give it after our .strip(); anything else is left to pydicom."""
    if not raw.isascii() or b"\x1b" in raw:
        raise _Unusual("not ASCII")
    text = raw.decode("ascii").rstrip("\0 " if uid else " ")
    if "\\" in text or "\0" in text:
        raise _Unusual("several values")
    return text.strip()


def _row_from_values(values: dict[int, bytes], tsuid: str) -> _IndexRow:
    charset = values.get(0x00080005, b"")
    if b"IR 13" in charset:  # JIS X 0201: its backslash is a yen sign; pydicom knows
        raise _Unusual("character set")
    text = {keyword: _ascii(values[tag], keyword.endswith("UID")) if tag in values else ""
            for tag, keyword in _TEXT_TAGS.items()}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not is_valid_uid(text[keyword]):
            raise _Unusual("invalid UID")  # pydicom's reading gives the precise error
    numbers = {keyword: _fast_int(values.get(tag)) for tag, keyword in _IS_TAGS.items()}
    shorts = {keyword: _fast_us(values.get(tag)) for tag, keyword in _US_TAGS.items()}
    position = _fast_decimals(values.get(0x00200032), 3)
    orientation = _fast_decimals(values.get(0x00200037), 6)
    study_uid, series_uid, sop_uid = text["StudyInstanceUID"], text["SeriesInstanceUID"], text["SOPInstanceUID"]
    return _IndexRow(
        (study_uid, text["PatientName"], text["PatientID"], text["PatientBirthDate"], text["PatientSex"],
         text["StudyDate"], text["StudyTime"], text["AccessionNumber"], text["StudyDescription"],
         text["IssuerOfPatientID"]),
        (series_uid, study_uid, text["Modality"], numbers["SeriesNumber"], text["SeriesDescription"],
         text["BodyPartExamined"]),
        (sop_uid, series_uid, text["SOPClassUID"], numbers["InstanceNumber"], position, orientation,
         max(1, numbers["NumberOfFrames"] or 1), shorts["Rows"], shorts["Columns"], tsuid),
    )


def _fast_int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = _ascii(raw)
    if not text:
        return None
    if not _INTEGER_RE.match(text):
        raise _Unusual("IS")
    return int(text)


def _fast_us(raw: bytes | None) -> int | None:
    if raw is None or len(raw) == 0:
        return None
    if len(raw) != 2:
        raise _Unusual("US")
    return int.from_bytes(raw, "little")


def _fast_decimals(raw: bytes | None, count: int) -> str:
    if raw is None:
        return ""
    if not raw.isascii():
        raise _Unusual("not ASCII")
    text = raw.decode("ascii").rstrip(" ")
    if not text.strip():
        return ""
    parts = [p.strip() for p in text.split("\\")]
    if not all(_DECIMAL_RE.match(p) for p in parts):
        raise _Unusual("DS")
    if len(parts) != count:
        return ""
    return "\\".join(repr(float(p)) for p in parts)


def index_row(data: bytes) -> _IndexRow:
    """The index row of a Part 10 file held in memory: the fast reader, or pydicom where it declines (which
    also raises the precise NotDicomError / MalformedDicomError).  Its ``study_uid``, ``series_uid`` and
    ``sop_uid`` place the instance; :meth:`Library.stage` and :meth:`GroupWriter.submit` take it, so a caller
    that checked them does not read the header twice."""
    try:
        row = _fast_index_row(data)
    except (_Unusual, UnicodeDecodeError, ValueError):
        row = _row_from_dataset(read_header(data))
    return plausible_frames(row, len(data))


def plausible_frames(row: _IndexRow, file_bytes: int) -> _IndexRow:
    """`row` with its Number of Frames bounded by what a file of `file_bytes` can hold (a native frame takes at
    least one bit per pixel, an encapsulated one at least an item header) and by
    :data:`FRAMES_PER_INSTANCE_MAX`.  Frames beyond the data then fail to decode one by one, with a sentence;
    nothing is built for two billion of them."""
    instance = row.instance
    frames, rows, columns, tsuid = instance[6], instance[7] or 0, instance[8] or 0, instance[9]
    per_frame = max(rows * columns // 8, 1) if tsuid in _NATIVE_SYNTAXES else _ITEM_HEADER_BYTES
    bound = max(1, min(FRAMES_PER_INSTANCE_MAX, file_bytes // per_frame))
    if frames <= bound:
        return row
    log.warning("instance %s claims %d frames; its %d bytes hold at most %d, which are indexed", row.sop_uid,
                frames, file_bytes, bound)
    return dataclasses.replace(row, instance=(*instance[:6], bound, *instance[7:]))
