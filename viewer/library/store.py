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
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
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
                return self._commit(ds, self._write_atomic(_chunks(fp)))
        except OSError as exc:
            raise _translate_os_error(exc, path) from exc

    def store_bytes(self, data: bytes) -> StoreResult:
        """Store a complete DICOM Part 10 file held in memory (e.g. received from a PACS)."""
        ds = read_header(data)
        existing = self._existing(str(ds.SOPInstanceUID))
        if existing is not None:
            return existing
        return self._commit(ds, self._write_atomic(iter((data,))))

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
        key = uuid.uuid4().hex
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

    def _commit(self, ds: Dataset, written: tuple[str, int, str]) -> StoreResult:
        relpath, size, sha = written
        study_uid, series_uid, sop_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        tsuid = ""
        if getattr(ds, "file_meta", None) is not None:
            tsuid = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if self._db.execute("SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_uid,)).fetchone():
                    self._db.execute("ROLLBACK")
                    (self.root / relpath).unlink(missing_ok=True)  # lost a race with a concurrent store
                    return StoreResult(sop_uid, series_uid, study_uid, added=False)
                self._db.execute(
                    "INSERT INTO studies VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO NOTHING",
                    (study_uid, _text(ds, "PatientName"), _text(ds, "PatientID"), _text(ds, "PatientBirthDate"),
                     _text(ds, "PatientSex"), _text(ds, "StudyDate"), _text(ds, "StudyTime"),
                     _text(ds, "AccessionNumber"), _text(ds, "StudyDescription")),
                )
                self._db.execute(
                    "INSERT INTO series VALUES (?,?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING",
                    (series_uid, study_uid, _text(ds, "Modality"), _int_or_none(ds, "SeriesNumber"),
                     _text(ds, "SeriesDescription"), _text(ds, "BodyPartExamined")),
                )
                frames = _int_or_none(ds, "NumberOfFrames") or 1
                self._db.execute(
                    "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sop_uid, series_uid, _text(ds, "SOPClassUID"), _int_or_none(ds, "InstanceNumber"),
                     _decimals(ds, "ImagePositionPatient", 3), _decimals(ds, "ImageOrientationPatient", 6),
                     max(1, frames), _int_or_none(ds, "Rows"), _int_or_none(ds, "Columns"), tsuid,
                     relpath, size, sha, time.time()),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                (self.root / relpath).unlink(missing_ok=True)
                if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
                    raise StorageFullError("The disk holding the library is full; nothing was stored.") from exc
                raise LibraryError(f"The library index could not be updated: {exc}.") from exc
        return StoreResult(sop_uid, series_uid, study_uid, added=True)

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
