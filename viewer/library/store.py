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
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from viewer.errors import (
    InstanceNotFoundError,
    LibraryError,
    MalformedDicomError,
    MifasError,
    StorageFullError,
)
from viewer.imports import need
from viewer.library.disk import (
    _SYNCFS_WORKS,
    _fsync_dir,
    _Keys,
    _remove_dead_writers,
    _start_writeback,
    _syncfs,
    _translate_os_error,
)
from viewer.library.header import _IndexRow, _row_from_dataset, index_row, plausible_frames, read_header
from viewer.library.records import InstanceRecord, SeriesRecord, StoreResult, StudyQuery, StudyRecord
from viewer.private import PRIVATE_DIR, PRIVATE_FILE, private_dir, tighten
from viewer.uid import is_valid_uid as is_valid_uid  # re-exported: callers import it from here

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
# (version reached, script): 1 the index itself, 2 retrieval jobs (viewer.library.jobs), 3 the studies' Issuer
# of Patient ID (no script: Library._add_issuer adds the column and fills it from each study's files), 4 our saved
# readings (viewer.library.drafts).
_UPGRADES: tuple[tuple[int, str], ...] = ((1, "schema.sql"), (2, "schema_v2.sql"), (3, ""), (4, "schema_v4.sql"))
# The studies table's columns, in the order of an index row's ``study`` tuple (viewer.library.header).
STUDY_COLUMNS = ("study_uid", "patient_name", "patient_id", "patient_birth_date", "patient_sex", "study_date",
                 "study_time", "accession_number", "study_description", "issuer_of_patient_id")
COPY_CHUNK_BYTES = 1 << 20


def _parse_decimals(text: str, count: int) -> tuple[float, ...] | None:
    if not text:
        return None
    parts = text.split("\\")
    if len(parts) != count:
        return None
    return tuple(float(p) for p in parts)


def _result(row: _IndexRow, added: bool) -> StoreResult:
    """What storing the instance of `row` did (`added` False when it was already held)."""
    return StoreResult(row.sop_uid, row.series_uid, row.study_uid, added=added)


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
            private_dir(self._objects)  # and the library's own folder: 0700, its files 0600 (viewer.private)
            private_dir(tmp_root)
            self._make_private()
            _remove_dead_writers(tmp_root)
            # Our own temp folder, held by an flock for as long as this Library is open: another process opening
            # the same library sees the lock and leaves our in-flight files alone.
            writer = uuid.uuid4().hex
            self._tmp_lock_path = tmp_root / f"{writer}.lock"
            lock_fd = os.open(self._tmp_lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
            self._tmp_lock = os.fdopen(lock_fd, "wb")  # held until close()
            fcntl.flock(self._tmp_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._tmp = private_dir(tmp_root / writer)
            index = self.root / "index.sqlite"
            os.close(os.open(index, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))  # SQLite's -wal and
            # -shm files take the database file's permissions
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
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows (patients' names) are overwritten
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"The library index in {self.root} is damaged or locked: {exc}.") from exc

    def _make_private(self) -> None:
        """An existing library made before its modes were private (or by hand): take the group's and others'
        permissions off its folders and index, with a line in the log.  The files in objects/ need no change: no
        one else can open their folders then."""
        paths = [self.root, self._objects, self.root / "tmp"]
        paths += [p for p in self._objects.iterdir() if p.is_dir() and not p.is_symlink()]
        paths += [p for p in self.root.glob("index.sqlite*") if p.is_file()]
        tightened = sum(1 for p in paths if tighten(p))
        if tightened:
            log.warning("the library in %s could be read by other users: %d of its folders and files are now "
                        "private to you", self.root, tightened)

    @classmethod
    def open(cls, root: Path | str) -> Library:
        return cls(Path(root))

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if not self._tmp_lock.closed:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp_lock_path.unlink(missing_ok=True)
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
                if script:
                    sql = (Path(__file__).with_name(script)).read_text(encoding="utf-8")
                    self._db.executescript("BEGIN;" + sql + f"PRAGMA user_version={target}; COMMIT;")
                else:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        self._add_issuer()
                        self._db.execute(f"PRAGMA user_version={target}")
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                version = target

    def _add_issuer(self) -> None:
        """Upgrade 2 -> 3 (in the open transaction): the studies' Issuer of Patient ID, read from one file of each
        study already held (a header each; a file that cannot be read leaves it empty)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(studies)")}
        if "issuer_of_patient_id" not in columns:
            self._db.execute("ALTER TABLE studies ADD COLUMN issuer_of_patient_id TEXT NOT NULL DEFAULT ''")
        rows = self._db.execute(
            "SELECT st.study_uid, (SELECT i.relpath FROM instances i JOIN series se USING(series_uid)"
            " WHERE se.study_uid=st.study_uid LIMIT 1) FROM studies st").fetchall()
        filled = 0
        for study_uid, relpath in rows:
            if relpath is None:
                continue
            try:
                issuer = str(read_header(self.root / relpath).get("IssuerOfPatientID", "") or "").strip()
            except (MifasError, OSError):
                continue
            if issuer:
                self._db.execute("UPDATE studies SET issuer_of_patient_id=? WHERE study_uid=?", (issuer, study_uid))
                filled += 1
        if rows:
            log.info("library index upgraded: issuer of patient ID read for %d of %d studies", filled, len(rows))

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
                row = plausible_frames(_row_from_dataset(ds), os.fstat(fp.fileno()).st_size)
                return self._commit(row, self._write_atomic(_chunks(fp)))
        except OSError as exc:
            raise _translate_os_error(exc, path) from exc

    def store_bytes(self, data: bytes) -> StoreResult:
        """Store a complete DICOM Part 10 file held in memory (e.g. received from a PACS).  For many instances
        in a row, :meth:`store_many` (or :class:`viewer.library.writer.GroupWriter`) is much cheaper."""
        row = index_row(data)
        existing = self._existing(row.sop_uid)
        if existing is not None:
            return existing
        return self._commit(row, self._write_atomic(iter((data,))))

    def store_dataset(self, ds: Dataset) -> StoreResult:
        """Store a decoded dataset (it must carry file_meta with a Transfer Syntax UID)."""
        need("pydicom")
        import pydicom

        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        except Exception as exc:
            raise MalformedDicomError(f"The dataset cannot be encoded: {exc}.") from exc
        return self.store_bytes(buf.getvalue())

    def replace_own(self, data: bytes) -> StoreResult:
        """Store a Part 10 file in place of the held copy of the same SOP Instance UID (or as new when none is
        held): for objects this program wrote and has not sent, i.e. a reading draft saved again
        (:mod:`viewer.library.drafts` keeps track of which).  Atomic like :meth:`store_bytes`: the new file is
        written to ``tmp/``, fsync'ed and renamed into ``objects/``; ONE index transaction swaps the row; only
        then is the old file removed.  A crash leaves the old or the new version visible, never neither.

        Refused (:class:`LibraryError`, nothing changed) when the held copy is not an unsent draft of ours: an
        instance received from a PACS or imported, or one already sent, is never overwritten."""
        row = index_row(data)
        relpath, size, sha = self._write_atomic(iter((data,)))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                old = self._db.execute("SELECT relpath FROM instances WHERE sop_instance_uid=?",
                                       (row.sop_uid,)).fetchone()
                draft = self._db.execute("SELECT sent FROM reading_drafts WHERE sop_instance_uid=?",
                                         (row.sop_uid,)).fetchone()
                if old is not None and (draft is None or draft[0]):
                    self._db.execute("ROLLBACK")
                    (self.root / relpath).unlink(missing_ok=True)
                    raise LibraryError("A saved reading can only replace its own unsent draft; the instance held "
                                       "under that UID was kept.")
                self._db.execute("DELETE FROM instances WHERE sop_instance_uid=?", (row.sop_uid,))
                self._insert(row, relpath, size, sha)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._index_failed(exc, [relpath]) from exc
        if old is not None:
            (self.root / old[0]).unlink(missing_ok=True)
        return _result(row, old is None)

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
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE), "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            final = self.root / relpath
            final.parent.mkdir(mode=PRIVATE_DIR, exist_ok=True)
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
        return _result(row, added)

    def _insert(self, row: _IndexRow, relpath: str, size: int, sha: str, entered: set[str] | None = None) -> bool:
        """Enter one instance in the open transaction; False when its SOP Instance UID is already there.
        `entered` (a group commit's) holds the study and series UIDs this transaction already entered, so a
        batch of one series enters its study and series rows once."""
        if entered is None or row.study[0] not in entered:
            self._db.execute(_INSERT_STUDY, row.study)
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
        rows = [index_row(data) for data in blobs]
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
        row = row if row is not None else index_row(data)
        tmp = self._tmp / f"{self._keys.next()}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
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
            existing = self._existing(item.row.sop_uid) if item.row.sop_uid not in seen else _result(item.row, False)
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
            results[index] = _result(item.row, was_added)
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
                    (self._objects / key[:2]).mkdir(mode=PRIVATE_DIR, exist_ok=True)
                    self._object_dirs.add(key[:2])
                folders.add(key[:2])
                try:
                    os.replace(item.tmp, self.root / relpath)
                except FileNotFoundError:  # its folder was removed behind our back: make it again, once
                    (self._objects / key[:2]).mkdir(mode=PRIVATE_DIR, exist_ok=True)
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
            f"SELECT {', '.join('st.' + c for c in STUDY_COLUMNS)}, (SELECT group_concat(DISTINCT modality) FROM series WHERE study_uid=st.study_uid),"
            " (SELECT count(*) FROM series WHERE study_uid=st.study_uid),"
            " (SELECT count(*) FROM instances i JOIN series se USING(series_uid) WHERE se.study_uid=st.study_uid)"
            " FROM studies st"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY st.study_date DESC, st.study_time DESC, st.patient_name"
        )
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            StudyRecord(*r[:9], modalities=tuple(sorted(filter(None, (r[10] or "").split(",")))),
                        series_count=r[11], instance_count=r[12], issuer_of_patient_id=r[9])
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

    def instances(self, series_uid: str, limit: int = -1) -> list[InstanceRecord]:
        """The series' instances in index order (instance number, then UID), the first `limit` (-1: all).
        Geometric ordering is the job of viewer.dicom.geometry, which uses the positions recorded here without
        opening any file."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sop_instance_uid, series_uid, sop_class_uid, instance_number, image_position,"
                " image_orientation, number_of_frames, rows, columns, transfer_syntax_uid, relpath, size_bytes,"
                " sha256 FROM instances WHERE series_uid=?"
                " ORDER BY instance_number IS NULL, instance_number, sop_instance_uid LIMIT ?",
                (series_uid, int(limit)),
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
        from viewer import audit

        study = audit.study_ref(self, study_uid)  # the DICOM Study Deleted audit message names what went
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
        if rows:
            audit.emit(audit.messages.study_deleted, study)
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


_INSERT_STUDY = (f"INSERT INTO studies ({', '.join(STUDY_COLUMNS)}) VALUES ({', '.join('?' * len(STUDY_COLUMNS))})"
                 " ON CONFLICT(study_uid) DO NOTHING")


def _like_pattern(value: str) -> str:
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    escaped = escaped.replace("*", "%").replace("?", "_")
    return f"%{escaped}%"


def _chunks(fp: io.BufferedIOBase) -> Iterator[bytes]:
    while chunk := fp.read(COPY_CHUNK_BYTES):
        yield chunk


def _as_part10(path: Path) -> bytes:
    """Re-encode a DICOM file that lacks the Part 10 header into a proper Part 10 file."""
    need("pydicom")
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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
