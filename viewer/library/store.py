"""The local study store: an SQLite index plus DICOM files under minted names.

Layout of a library folder::

    index.sqlite          the index (studies, series, instances); the only way an instance becomes visible
    objects/ab/<hex>.dcm  stored files, named by a random key: never by anything read from DICOM content
    tmp/<id>/ + <id>.lock files being written, one folder per open Library (per process); a folder whose lock
                          is free belongs to a writer that is gone, and is removed when a library is opened

Writes are atomic: an instance is written to ``tmp/``, fsync'ed, renamed into ``objects/`` (and the folder
fsync'ed), and only then entered in the index.  A crash at any point leaves either nothing visible or the whole
instance; an orphaned object file (renamed but not indexed) is invisible and is removed by :meth:`Library.fsck`.

Storing an instance whose SOP Instance UID is already held is idempotent: the held copy is kept and the result
says ``added=False``.

A full disk raises :class:`~viewer.errors.StorageFullError`; the partial temp file is removed and nothing
already stored is touched.

Group commit (:meth:`Library.store_many`, or :meth:`Library.stage` then :meth:`Library.publish`, driven for a
stream by :class:`viewer.library.writer.GroupWriter`) keeps that order for a whole batch and shares its costs:
the temp files are written, then ONE ``syncfs(2)`` makes all their data durable, they are renamed, a second
``syncfs`` makes the renames durable, and ONE index transaction enters the batch.  ``syncfs`` writes back every
dirty page and inode of the file system and flushes the device cache before returning, so after it each temp
file is as durable as after its own ``fsync``; since Linux 5.8 it also reports writeback errors (before, it
did not, so there and on other systems each file is ``fdatasync``'ed and each touched folder ``fsync``'ed
instead).  Its cost is that of the dirty data of the whole file system, which on a busy disk may include other
programs' writes: batches are bounded for that reason too.  A crash mid-batch leaves temp files (removed at
the next open) and renamed-but-unindexed files (invisible, removed by :meth:`Library.fsck`), never a partial
visible instance.

Header reading for the index: :func:`_fast_index_row` takes the dozen elements the index needs straight from
the bytes (little-endian transfer syntaxes, plain ASCII values), about 20x cheaper than pydicom, and leaves
everything else to pydicom, which gives the same row.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import sqlite3
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from viewer.errors import (
    InstanceNotFoundError,
    LibraryError,
    MalformedDicomError,
    NotDicomError,
    StorageFullError,
)

SCHEMA_VERSION = 2
# (version reached, script): 1 the index itself, 2 retrieval jobs (viewer.library.jobs).
_UPGRADES: tuple[tuple[int, str], ...] = ((1, "schema.sql"), (2, "schema_v2.sql"))
COPY_CHUNK_BYTES = 1 << 20
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UID_LENGTH_MAX = 64

# Header reading stops before Pixel Data; this caps what a hostile header may make us read.
HEADER_BYTES_MAX = 64 << 20
# Loose files directly in tmp/ (the layout before per-writer folders) older than this are crash leftovers.
LOOSE_TMP_STALE_S = 600


def is_valid_uid(value: object) -> bool:
    """A UID per PS3.5 9.1: digits and dots, no empty component, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= UID_LENGTH_MAX and bool(UID_RE.match(value))


@dataclass(frozen=True)
class StoreResult:
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    added: bool  # False when the instance was already held (idempotent re-store)


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    modalities: tuple[str, ...]
    series_count: int
    instance_count: int


@dataclass(frozen=True)
class SeriesRecord:
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    instance_count: int


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, float, float, float, float, float] | None
    number_of_frames: int
    rows: int | None
    columns: int | None
    transfer_syntax_uid: str
    path: Path
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class StudyQuery:
    """Filters for :meth:`Library.studies`.  Text filters match case-insensitively anywhere ('*' and '?' are
    DICOM-style wildcards); dates are ``YYYYMMDD`` and inclusive."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""


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


def _parse_decimals(text: str, count: int) -> tuple[float, ...] | None:
    if not text:
        return None
    parts = text.split("\\")
    if len(parts) != count:
        return None
    return tuple(float(p) for p in parts)


def read_header(source: str | os.PathLike | io.BufferedIOBase | bytes) -> Dataset:
    """Read a DICOM header (up to Pixel Data) and check the identifying UIDs.

    Raises NotDicomError for anything that is not DICOM (including empty files) and MalformedDicomError for DICOM
    that is truncated or lacks valid Study/Series/SOP Instance UIDs.
    """
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
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble)
        except InvalidDicomError as exc:
            raise NotDicomError("This is not a DICOM file.") from exc
        except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError, RecursionError,
                NotImplementedError, AttributeError) as exc:
            if has_preamble:
                raise MalformedDicomError(f"The DICOM file is damaged and cannot be read ({type(exc).__name__}).") from exc
            raise NotDicomError("This is not a DICOM file.") from exc
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



# -- the index row, and a fast way to read it ----------------------------------------------------------------

@dataclass(frozen=True)
class _IndexRow:
    """What the index records of one instance, read from its header (everything but where and how big)."""

    study: tuple  # studies columns
    series: tuple  # series columns
    instance: tuple  # instances columns up to transfer_syntax_uid

    @property
    def sop_uid(self) -> str:
        return self.instance[0]

    def result(self, added: bool) -> StoreResult:
        return StoreResult(self.instance[0], self.series[0], self.study[0], added=added)


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
         _text(ds, "StudyDescription")),
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
    0x00100030: "PatientBirthDate", 0x00100040: "PatientSex", 0x00180015: "BodyPartExamined",
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
         text["StudyDate"], text["StudyTime"], text["AccessionNumber"], text["StudyDescription"]),
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


def _index_row(data: bytes) -> _IndexRow:
    """The index row of a Part 10 file held in memory: the fast reader, or pydicom where it declines (which
    also raises the precise NotDicomError / MalformedDicomError)."""
    try:
        return _fast_index_row(data)
    except (_Unusual, UnicodeDecodeError, ValueError):
        return _row_from_dataset(read_header(data))


@dataclass(frozen=True)
class Staged:
    """An instance written to its temp file by :meth:`Library.stage`, waiting for :meth:`Library.publish`."""

    row: _IndexRow
    tmp: Path
    size: int
    sha256: str

    @property
    def sop_instance_uid(self) -> str:
        return self.row.sop_uid


class Library:
    """The local study store.  Thread-safe: one SQLite connection guarded by a lock (writes are short)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        tmp_root = self.root / "tmp"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            tmp_root.mkdir(parents=True, exist_ok=True)
            _remove_dead_writers(tmp_root)
            # Our own temp folder, held by an flock for as long as this Library is open: another process opening
            # the same library sees the lock and leaves our in-flight files alone.
            writer = uuid.uuid4().hex
            self._tmp_lock = open(tmp_root / f"{writer}.lock", "wb")  # noqa: SIM115 - held until close()
            fcntl.flock(self._tmp_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._tmp = tmp_root / writer
            self._tmp.mkdir()
        except OSError as exc:
            raise LibraryError(f"Cannot create the library folder {self.root}: {exc.strerror}.") from exc
        self._lock = threading.RLock()
        self._keys = _Keys()
        self._object_dirs: set[str] = set()  # objects/<ab> folders known to exist (made at most once per open)
        try:
            self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL keeps the index consistent across a crash; the newest commits may be lost, which leaves
            # their files orphaned (invisible) and a re-import restores them.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"The library index in {self.root} is damaged or locked: {exc}.") from exc

    @classmethod
    def open(cls, root: Path | str) -> Library:
        return cls(Path(root))

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if not self._tmp_lock.closed:
                shutil.rmtree(self._tmp, ignore_errors=True)
                Path(self._tmp_lock.name).unlink(missing_ok=True)
                self._tmp_lock.close()

    def partial_files(self) -> list[Path]:
        """Temp files of writes in flight or left by a crash (never visible through the index)."""
        return sorted(p for p in (self.root / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock")

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply the numbered upgrades the index lacks, in order, each in its own transaction."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"The library in {self.root} was written by a newer MIFAS Viewer (index version {version})."
            )
        for target, script in _UPGRADES:
            if version < target:
                sql = (Path(__file__).with_name(script)).read_text(encoding="utf-8")
                self._db.executescript("BEGIN;" + sql + f"PRAGMA user_version={target}; COMMIT;")
                version = target

    # -- writing ------------------------------------------------------------------------------------------

    def store_file(self, path: Path | str) -> StoreResult:
        """Copy one DICOM file from disk into the library (atomic, idempotent).

        Files without the Part 10 preamble/meta header are accepted when they parse as DICOM; they are stored
        re-encoded as proper Part 10 files.
        """
        path = Path(path)
        try:
            with open(path, "rb") as fp:
                ds = read_header(fp)
                if ds.preamble is None or not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
                    return self.store_bytes(_as_part10(path))
                existing = self._existing(str(ds.SOPInstanceUID))
                if existing is not None:
                    return existing
                fp.seek(0)
                return self._commit(_row_from_dataset(ds), self._write_atomic(_chunks(fp)))
        except OSError as exc:
            raise _translate_os_error(exc, path) from exc

    def store_bytes(self, data: bytes) -> StoreResult:
        """Store a complete DICOM Part 10 file held in memory (e.g. received from a PACS).  For many instances
        in a row, :meth:`store_many` (or :class:`viewer.library.writer.GroupWriter`) is much cheaper."""
        row = _index_row(data)
        existing = self._existing(row.sop_uid)
        if existing is not None:
            return existing
        return self._commit(row, self._write_atomic(iter((data,))))

    def store_dataset(self, ds: Dataset) -> StoreResult:
        """Store a decoded dataset (it must carry file_meta with a Transfer Syntax UID)."""
        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        except Exception as exc:
            raise MalformedDicomError(f"The dataset cannot be encoded: {exc}.") from exc
        return self.store_bytes(buf.getvalue())

    def _existing(self, sop_uid: str) -> StoreResult | None:
        with self._lock:
            row = self._db.execute(
                "SELECT i.series_uid, s.study_uid FROM instances i JOIN series s USING(series_uid)"
                " WHERE i.sop_instance_uid=?",
                (sop_uid,),
            ).fetchone()
        return StoreResult(sop_uid, row[0], row[1], added=False) if row else None

    def _write_atomic(self, chunks: Iterable[bytes]) -> tuple[str, int, str]:
        key = self._keys.next()
        relpath = f"objects/{key[:2]}/{key}.dcm"
        tmp = self._tmp / f"{key}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            final = self.root / relpath
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _translate_os_error(exc, self.root) from exc
        return relpath, size, digest.hexdigest()

    def _commit(self, row: _IndexRow, written: tuple[str, int, str]) -> StoreResult:
        relpath, size, sha = written
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                added = self._insert(row, relpath, size, sha)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._index_failed(exc, [relpath]) from exc
        if not added:
            (self.root / relpath).unlink(missing_ok=True)  # lost a race with a concurrent store
        return row.result(added)

    def _insert(self, row: _IndexRow, relpath: str, size: int, sha: str, entered: set[str] | None = None) -> bool:
        """Enter one instance in the open transaction; False when its SOP Instance UID is already there.
        `entered` (a group commit's) holds the study and series UIDs this transaction already entered, so a
        batch of one series enters its study and series rows once."""
        if entered is None or row.study[0] not in entered:
            self._db.execute("INSERT INTO studies VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO NOTHING",
                             row.study)
        if entered is None or row.series[0] not in entered:
            self._db.execute("INSERT INTO series VALUES (?,?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING", row.series)
        if entered is not None:
            entered.update((row.study[0], row.series[0]))
        cursor = self._db.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                                  " ON CONFLICT(sop_instance_uid) DO NOTHING",
                                  (*row.instance, relpath, size, sha, time.time()))
        return cursor.rowcount == 1

    def _index_failed(self, exc: sqlite3.Error, relpaths: Iterable[str]) -> Exception:
        """Undo a failed index transaction and its files (renamed, never visible); the error to raise."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        for relpath in relpaths:
            (self.root / relpath).unlink(missing_ok=True)
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
            return StorageFullError("The disk holding the library is full; nothing was stored.")
        return LibraryError(f"The library index could not be updated: {exc}.")

    # -- group commit -------------------------------------------------------------------------------------

    def store_many(self, blobs: Sequence[bytes]) -> list[StoreResult]:
        """Store several Part 10 files held in memory as one group commit: the same guarantees as
        :meth:`store_bytes` (atomic, idempotent, nothing partial ever visible) for a fraction of the cost,
        because the batch shares its durability calls and its index transaction (see :meth:`publish`).

        Every header is read before anything is written: a file that is not storable DICOM raises
        NotDicomError / MalformedDicomError and nothing of the batch is stored.  Keep batches bounded
        (:mod:`viewer.library.writer` does so for a stream of instances).
        """
        rows = [_index_row(data) for data in blobs]
        staged: list[Staged] = []
        try:
            for row, data in zip(rows, blobs, strict=True):
                staged.append(self.stage(data, row))
        except BaseException:
            self.discard(staged)
            raise
        return self.publish(staged)

    def stage(self, data: bytes, row: _IndexRow | None = None) -> Staged:
        """First half of a group commit: read the header (unless given) and write the temp file in this
        Library's temp folder, not yet durable.  Raises NotDicomError / MalformedDicomError for a file that
        cannot be stored and StorageFullError when the disk is full (the temp file is then removed)."""
        row = row if row is not None else _index_row(data)
        tmp = self._tmp / f"{self._keys.next()}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if _SYNCFS_WORKS:
                    _start_writeback(fd)
                else:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _translate_os_error(exc, self.root) from exc
        return Staged(row, tmp, len(data), hashlib.sha256(data).hexdigest())

    def discard(self, staged: Iterable[Staged]) -> None:
        """Drop staged instances that will not be published (their temp files go)."""
        for item in staged:
            item.tmp.unlink(missing_ok=True)

    def publish(self, staged: Sequence[Staged]) -> list[StoreResult]:
        """Second half of a group commit, in the order the module docstring states for one instance:

        1. the temp files' data is made durable: one ``syncfs`` for the batch (Linux >= 5.8, where it reports
           writeback errors), else ``fdatasync`` per file, done by :meth:`stage`;
        2. each is renamed into ``objects/`` and the renames are made durable (``syncfs`` again, else one
           ``fsync`` per touched folder);
        3. the whole batch enters the index in ONE transaction.

        Instances already held (or repeated within the batch) are not stored again (``added=False``).  On a
        failure nothing of the batch becomes visible: temp and renamed files are removed, and StorageFullError
        or LibraryError is raised.
        """
        results: dict[int, StoreResult] = {}
        fresh: list[tuple[int, Staged]] = []
        seen: set[str] = set()
        for index, item in enumerate(staged):
            existing = self._existing(item.row.sop_uid) if item.row.sop_uid not in seen else item.row.result(False)
            seen.add(item.row.sop_uid)
            if existing is not None:
                item.tmp.unlink(missing_ok=True)
                results[index] = existing
            else:
                fresh.append((index, item))
        placed = self._place([item for _, item in fresh])
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                entered: set[str] = set()
                added = [self._insert(item.row, relpath, item.size, item.sha256, entered)
                         for (_, item), relpath in zip(fresh, placed, strict=True)]
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._index_failed(exc, placed) from exc
        for (index, item), relpath, was_added in zip(fresh, placed, added, strict=True):
            if not was_added:
                (self.root / relpath).unlink(missing_ok=True)  # lost a race with a concurrent store
            results[index] = item.row.result(was_added)
        return [results[i] for i in range(len(staged))]

    def _place(self, staged: Sequence[Staged]) -> list[str]:
        """Make the staged files durable, rename them into objects/, make the renames durable; relpaths."""
        placed: list[str] = []
        try:
            if staged and _SYNCFS_WORKS:
                _syncfs(self._tmp)
            folders: set[str] = set()
            for item in staged:
                key = self._keys.next()
                relpath = f"objects/{key[:2]}/{key}.dcm"
                if key[:2] not in self._object_dirs:
                    (self._objects / key[:2]).mkdir(exist_ok=True)
                    self._object_dirs.add(key[:2])
                folders.add(key[:2])
                try:
                    os.replace(item.tmp, self.root / relpath)
                except FileNotFoundError:  # its folder was removed behind our back: make it again, once
                    (self._objects / key[:2]).mkdir(exist_ok=True)
                    os.replace(item.tmp, self.root / relpath)
                placed.append(relpath)
            if placed and _SYNCFS_WORKS:
                _syncfs(self._objects)
            else:
                for folder in folders:
                    _fsync_dir(self._objects / folder)
        except OSError as exc:
            self.discard(staged)
            for relpath in placed:
                (self.root / relpath).unlink(missing_ok=True)
            raise _translate_os_error(exc, self.root) from exc
        return placed

    # -- reading ------------------------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)
            ).fetchone() is not None

    def instance_uids(self, series_uid: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT sop_instance_uid FROM instances WHERE series_uid=?", (series_uid,))
            return {r[0] for r in rows}

    def studies(self, query: StudyQuery | None = None) -> list[StudyRecord]:
        q = query or StudyQuery()
        where, args = [], []
        for column, value in (("st.patient_name", q.patient_name), ("st.patient_id", q.patient_id),
                              ("st.accession_number", q.accession_number)):
            if value:
                where.append(f"{column} LIKE ? ESCAPE '!'")
                args.append(_like_pattern(value))
        if q.date_from:
            where.append("st.study_date >= ?")
            args.append(q.date_from)
        if q.date_to:
            where.append("st.study_date <= ? AND st.study_date != ''")
            args.append(q.date_to)
        if q.modality:
            where.append("EXISTS (SELECT 1 FROM series m WHERE m.study_uid=st.study_uid AND upper(m.modality)=upper(?))")
            args.append(q.modality)
        sql = (
            "SELECT st.*, (SELECT group_concat(DISTINCT modality) FROM series WHERE study_uid=st.study_uid),"
            " (SELECT count(*) FROM series WHERE study_uid=st.study_uid),"
            " (SELECT count(*) FROM instances i JOIN series se USING(series_uid) WHERE se.study_uid=st.study_uid)"
            " FROM studies st"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY st.study_date DESC, st.study_time DESC, st.patient_name"
        )
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            StudyRecord(*r[:9], modalities=tuple(sorted(filter(None, (r[9] or "").split(",")))),
                        series_count=r[10], instance_count=r[11])
            for r in rows
        ]

    def study(self, study_uid: str) -> StudyRecord | None:
        return next((s for s in self.studies() if s.study_uid == study_uid), None)

    def series(self, study_uid: str) -> list[SeriesRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.*, (SELECT count(*) FROM instances i WHERE i.series_uid=s.series_uid) FROM series s"
                " WHERE s.study_uid=? ORDER BY s.series_number IS NULL, s.series_number, s.series_description",
                (study_uid,),
            ).fetchall()
        return [SeriesRecord(*r) for r in rows]

    def series_record(self, series_uid: str) -> SeriesRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT s.*, (SELECT count(*) FROM instances i WHERE i.series_uid=s.series_uid) FROM series s"
                " WHERE s.series_uid=?",
                (series_uid,),
            ).fetchone()
        return SeriesRecord(*row) if row else None

    def instances(self, series_uid: str) -> list[InstanceRecord]:
        """The series' instances in index order (instance number, then UID).  Geometric ordering is the
        job of viewer.dicom.geometry, which uses the positions recorded here without opening any file."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sop_instance_uid, series_uid, sop_class_uid, instance_number, image_position,"
                " image_orientation, number_of_frames, rows, columns, transfer_syntax_uid, relpath, size_bytes,"
                " sha256 FROM instances WHERE series_uid=?"
                " ORDER BY instance_number IS NULL, instance_number, sop_instance_uid",
                (series_uid,),
            ).fetchall()
        return [self._instance(r) for r in rows]

    def instance(self, sop_instance_uid: str) -> InstanceRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT sop_instance_uid, series_uid, sop_class_uid, instance_number, image_position,"
                " image_orientation, number_of_frames, rows, columns, transfer_syntax_uid, relpath, size_bytes,"
                " sha256 FROM instances WHERE sop_instance_uid=?",
                (sop_instance_uid,),
            ).fetchone()
        if row is None:
            raise InstanceNotFoundError("That image is not in the local library.")
        return self._instance(row)

    def path_of(self, sop_instance_uid: str) -> Path:
        return self.instance(sop_instance_uid).path

    def _instance(self, r: tuple) -> InstanceRecord:
        return InstanceRecord(
            sop_instance_uid=r[0], series_uid=r[1], sop_class_uid=r[2], instance_number=r[3],
            image_position=_parse_decimals(r[4], 3), image_orientation=_parse_decimals(r[5], 6),  # type: ignore[arg-type]
            number_of_frames=r[6], rows=r[7], columns=r[8], transfer_syntax_uid=r[9],
            path=self.root / r[10], size_bytes=r[11], sha256=r[12],
        )

    def iter_instances(self) -> Iterator[InstanceRecord]:
        with self._lock:
            uids = [r[0] for r in self._db.execute("SELECT sop_instance_uid FROM instances")]
        for uid in uids:
            yield self.instance(uid)

    # -- maintenance --------------------------------------------------------------------------------------

    def delete_study(self, study_uid: str) -> int:
        """Remove a study from the index, then its files.  Returns the number of instances removed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT relpath FROM instances WHERE series_uid IN (SELECT series_uid FROM series WHERE study_uid=?)",
                (study_uid,),
            ).fetchall()
            self._db.execute(
                "DELETE FROM instances WHERE series_uid IN (SELECT series_uid FROM series WHERE study_uid=?)",
                (study_uid,),
            )
            self._db.execute("DELETE FROM series WHERE study_uid=?", (study_uid,))
            self._db.execute("DELETE FROM studies WHERE study_uid=?", (study_uid,))
            self._db.execute("COMMIT")
        for (relpath,) in rows:
            (self.root / relpath).unlink(missing_ok=True)
        return len(rows)

    def fsck(self) -> dict[str, int]:
        """Remove orphaned object files (renamed but never indexed) and report indexed files that are missing."""
        with self._lock:
            indexed = {r[0] for r in self._db.execute("SELECT relpath FROM instances")}
        orphans = 0
        for path in self._objects.glob("*/*.dcm"):
            if path.relative_to(self.root).as_posix() not in indexed:
                path.unlink(missing_ok=True)
                orphans += 1
        missing = sum(1 for rel in indexed if not (self.root / rel).exists())
        return {"orphans_removed": orphans, "missing": missing}


def _like_pattern(value: str) -> str:
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    escaped = escaped.replace("*", "%").replace("?", "_")
    return f"%{escaped}%"


def _chunks(fp: io.BufferedIOBase) -> Iterator[bytes]:
    while chunk := fp.read(COPY_CHUNK_BYTES):
        yield chunk


def _as_part10(path: Path) -> bytes:
    """Re-encode a DICOM file that lacks the Part 10 header into a proper Part 10 file."""
    try:
        ds = pydicom.dcmread(path, force=True)
        meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
        if "TransferSyntaxUID" not in meta:
            implicit = getattr(ds, "original_encoding", (True, True))[0]
            meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    except Exception as exc:
        raise MalformedDicomError(f"The DICOM file cannot be re-encoded for storage: {exc}.") from exc
    return buf.getvalue()


def _remove_dead_writers(tmp_root: Path) -> None:
    """Remove the temp folders of writers that are gone (their lock is free): partial writes of a crash, never
    visible, now deleted.  Folders whose lock is held belong to a live Library, in this or another process."""
    for lock_path in tmp_root.glob("*.lock"):
        try:
            with open(lock_path, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
                lock_path.unlink(missing_ok=True)
        except BlockingIOError:
            continue  # a live writer
        except FileNotFoundError:
            continue  # its owner closed it meanwhile
    now = time.time()
    for path in tmp_root.iterdir():
        if path.is_dir() and not path.with_suffix(".lock").exists():
            if now - path.stat().st_mtime > LOOSE_TMP_STALE_S:
                shutil.rmtree(path, ignore_errors=True)  # a folder whose lock file was lost, long idle
        elif path.is_file() and path.suffix != ".lock" and now - path.stat().st_mtime > LOOSE_TMP_STALE_S:
            path.unlink(missing_ok=True)  # a loose leftover of the earlier layout


class _Keys:
    """Random 128-bit object keys as 32 hex digits, drawn from the OS in blocks (one getrandom call per
    :data:`KEYS_PER_DRAW` keys instead of one per key).  Thread-safe."""

    KEYS_PER_DRAW = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""

    def next(self) -> str:
        with self._lock:
            if not self._block:
                self._block = os.urandom(16 * self.KEYS_PER_DRAW)
            key, self._block = self._block[:16], self._block[16:]
        return key.hex()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate_os_error(exc: OSError, where: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("The disk holding the library is full; nothing was stored and nothing was damaged.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LibraryError(f"No permission to write in {where}.")
    if exc.errno == errno.ENOENT:
        return LibraryError(f"{where} does not exist.")
    return LibraryError(f"Reading or writing {where} failed: {exc.strerror or exc}.")


def _syncfs_works() -> bool:
    """Whether syncfs(2) can stand in for per-file fsync: Linux >= 5.8, where it reports writeback errors
    (earlier kernels returned success even when writing back failed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        major, minor = (int(p) for p in re.findall(r"\d+", os.uname().release)[:2])
        return (major, minor) >= (5, 8) and hasattr(ctypes.CDLL(None), "syncfs")
    except (ValueError, OSError):
        return False


_SYNCFS_WORKS = _syncfs_works()
_LIBC = ctypes.CDLL(None, use_errno=True) if _SYNCFS_WORKS else None


SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the dirty pages, do not wait for it


def _start_writeback(fd: int) -> None:
    """Start writing a staged file back now (sync_file_range(2), asynchronous): the disk then works while the
    next instances arrive, and the batch's syncfs finds little left to do.  Durability still comes from that
    syncfs; this call is only a head start, so its failure is ignored."""
    assert _LIBC is not None
    _LIBC.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE)


def _syncfs(folder: Path) -> None:
    """syncfs(2) on the file system holding `folder`: every dirty page and inode of it is written and the
    device cache flushed before it returns, which covers each file of a batch like an fsync would."""
    assert _LIBC is not None
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
