"""The export engine (no Qt): instances of the library to a folder, a ZIP or patient media, as DICOM, pictures or
movies, with or without the patient's identity.

Containers
    ``folder``: ``STUDY001/SERIES001_CT/IM00001.dcm`` (numbers in export order: no name, date or UID of the patient
    in any file or folder name).  ``zip``: the same names in one ZIP (ZIP64 when it grows past 4 GiB), members
    stored, not deflated: DICOM compresses about a third at best and deflating runs at 40-60 MB/s here, 60 times
    slower than storing; compressed images, pictures and movies gain nothing.  ``media``: a DICOMDIR file-set
    ready to burn (:mod:`viewer.share.media`), optionally with the viewer beside it.
Forms
    ``dicom`` (as stored, or de-identified), ``png`` / ``jpeg`` (one picture per frame, :mod:`viewer.share.pictures`),
    ``mp4`` / ``apng`` (one movie per series at its frame rate, :mod:`viewer.share.movie`).
De-identification
    With ``request.deidentify`` each instance goes through one :class:`viewer.share.deidentify.Deidentifier` for the
    whole export (UIDs map consistently).  An image that may carry burned-in identity (``burned_in_reason``) is left
    out, with one sentence per series, unless the series has blackout rectangles or ``include_burned_in`` is set.

Safety: everything is written inside a hidden sibling folder ``.<name>.partial-XXXXXX`` (0700) and renamed into
place at the end, so a cancelled or failed export (full disk, read-only target) leaves nothing that looks complete;
an existing destination is never overwritten.  One instance is read at a time.  Files are 0600, folders 0700.
A successful export is recorded in the audit trail (DICOM Export, once, naming the source studies).
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viewer import audit
from viewer.errors import ExportError, InstanceNotFoundError, MifasError, OperationCancelled, StorageFullError
from viewer.imports import need
from viewer.private import PRIVATE_FILE, private_dir

if TYPE_CHECKING:
    from viewer.library.records import InstanceRecord
    from viewer.library.store import Library

FORMS = ("dicom", "png", "jpeg", "mp4", "apng")
CONTAINERS = ("folder", "zip", "media")
PICTURE_FORMS = ("png", "jpeg")
MOVIE_FORMS = ("mp4", "apng")
COPY_CHUNK_BYTES = 1 << 20
_ZIP64_ABOVE = 0x7FFF_FFFF  # a member this large (or of unknown size) is opened with ZIP64 sizes
_NOT_SAFE = re.compile(r"[^A-Z0-9]")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportRequest:
    instances: Sequence[str]  # SOP Instance UIDs in the library (a study, series, selection, key images)
    destination: Path  # the folder to create, or the .zip file
    container: str = "folder"
    form: str = "dicom"
    deidentify: Any = None  # viewer.share.deidentify.Options; None: exported as stored (identity kept)
    blackout: Mapping[str, Sequence[Any]] = field(default_factory=dict)  # series UID -> Rects blacked out
    include_burned_in: bool = False  # False: images with a burned_in_reason and no blackout are left out
    copy_viewer: bool = False  # media only: the viewer copied beside the DICOMDIR


@dataclass(frozen=True)
class ExportResult:
    destination: Path
    written: int  # instances exported
    excluded: tuple[str, ...] = ()  # one sentence per excluded series / image group


@dataclass
class _Series:
    uid: str
    study_uid: str
    folder: str  # STUDY001/SERIES001_CT
    label: str  # "Series 1 (CT)"
    number: int  # its Series Number, else its place in its study
    records: list[InstanceRecord]
    left_out: int = 0
    reason: str = ""


def export(library: Library, request: ExportRequest, *, progress: Progress | None = None,
           cancel: threading.Event | None = None) -> ExportResult:
    """Write ``request`` (see the module's docstring).  Raises ExportError or StorageFullError (a sentence; nothing
    is left at the destination), or OperationCancelled."""
    _check(request)
    destination = Path(request.destination).expanduser().absolute()
    if os.path.lexists(destination):
        raise ExportError("The destination already exists; choose another name (nothing was overwritten).")
    if not destination.parent.is_dir():
        raise ExportError("The folder to export into does not exist.")
    plan = _plan(library, request.instances)
    need("pydicom")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    except OSError as exc:
        raise _write_error(exc) from exc
    try:
        job = _Job(library, request, plan, staging, progress, cancel)
        built = job.run()
        if not job.written:
            reasons = " ".join(_excluded(plan) + tuple(job.notes))
            raise ExportError(f"Nothing was exported. {reasons}".strip())
        _publish(built, destination)  # the export appears whole, or not at all
    except OSError as exc:
        raise _write_error(exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts: dict[str, int] = {}
    for series in plan:
        counts[series.study_uid] = counts.get(series.study_uid, 0) + len(series.records) - series.left_out
    audit.emit(audit.messages.export, str(destination),
               [audit.study_ref(library, uid, instances=n) for uid, n in counts.items()])
    return ExportResult(destination, job.written, _excluded(plan) + tuple(job.notes))


def _excluded(plan: list[_Series]) -> tuple[str, ...]:
    """One sentence per series with images left out (burned-in identity)."""
    return tuple(f"{s.label}: {s.left_out} image(s) left out because {s.reason[0].lower()}{s.reason[1:]}"
                 .rstrip(".") + "." for s in plan if s.left_out)


def _check(request: ExportRequest) -> None:
    if request.form not in FORMS:
        raise ExportError(f"Unknown export form '{request.form}'; choose one of {', '.join(FORMS)}.")
    if request.container not in CONTAINERS:
        raise ExportError(f"Unknown container '{request.container}'; choose one of {', '.join(CONTAINERS)}.")
    if request.container == "media" and request.form != "dicom":
        raise ExportError("Patient media (DICOMDIR) hold DICOM images only.")
    if request.copy_viewer and request.container != "media":
        raise ExportError("The viewer is copied only onto patient media.")
    if not request.instances:
        raise ExportError("Nothing to export: no images were chosen.")


def _plan(library: Library, uids: Sequence[str]) -> list[_Series]:
    """The instances grouped by study and series, each series in display order, with their folder names."""
    by_series: dict[str, list[InstanceRecord]] = {}
    seen: set[str] = set()
    for uid in uids:
        if uid in seen:
            continue
        seen.add(uid)
        try:
            record = library.instance(uid)
        except InstanceNotFoundError as exc:
            raise ExportError("An image chosen for export is no longer in the local library.") from exc
        by_series.setdefault(record.series_uid, []).append(record)
    series_records = {uid: library.series_record(uid) for uid in by_series}
    studies: dict[str, int] = {}
    plan: list[_Series] = []
    order = sorted(by_series, key=lambda u: (series_records[u].study_uid if series_records[u] else "",
                                             _number(series_records[u].series_number if series_records[u] else None),
                                             u))
    for uid in order:
        record = series_records[uid]
        study_uid = record.study_uid if record else ""
        studies.setdefault(study_uid, len(studies) + 1)
        index = sum(1 for s in plan if s.study_uid == study_uid) + 1
        modality = _NOT_SAFE.sub("", (record.modality if record else "").upper())[:8] or "OT"
        records = _display_order(by_series[uid])
        number = record.series_number if record and record.series_number is not None else index
        plan.append(_Series(uid, study_uid, f"STUDY{studies[study_uid]:03d}/SERIES{index:03d}_{modality}",
                            f"Series {number} ({modality})", number, records))
    return plan


def _display_order(records: list[InstanceRecord]) -> list[InstanceRecord]:
    """`records` in the 2D view's order (:func:`viewer.dicom.series.order_frames`: by position along the slice
    normal, else by Instance Number), so IM00001 and a movie's first frame are the first slice the reader saw;
    instances without a frame of their own (a presentation state filed in the series) go last."""
    from viewer.dicom.series import order_frames

    rank: dict[str, int] = {}
    for index, ref in enumerate(order_frames(records)):
        rank.setdefault(ref.sop_instance_uid, index)
    return sorted(records, key=lambda r: (rank.get(r.sop_instance_uid, len(rank)), _number(r.instance_number),
                                          r.sop_instance_uid))


def _number(value: int | None) -> tuple[int, int]:
    return (1, 0) if value is None else (0, value)


class _Job:
    """One export's writing, inside ``staging``; :meth:`run` returns the finished folder or ZIP to rename."""

    def __init__(self, library: Library, request: ExportRequest, plan: list[_Series], staging: Path,
                 progress: Progress | None, cancel: threading.Event | None) -> None:
        self.library, self.request, self.plan, self.staging = library, request, plan, staging
        self.progress, self.cancel = progress, cancel
        self.total = sum(len(s.records) for s in plan)
        self.done = 0
        self.written = 0
        self.notes: list[str] = []
        self.deidentifier = None
        if request.deidentify is not None:
            from viewer.share.deidentify import Deidentifier

            self.deidentifier = Deidentifier(request.deidentify)
        self.zip: zipfile.ZipFile | None = None
        self.media = None

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self) -> Path:
        request = self.request
        if request.container == "zip":
            built = self.staging / "export.zip"
            fd = os.open(built, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            with zipfile.ZipFile(os.fdopen(fd, "wb"), "w", zipfile.ZIP_STORED, allowZip64=True) as self.zip:
                self._all()
            return built
        built = private_dir(self.staging / "export")
        if request.container == "media":
            from viewer.share.media import MediaWriter, copy_viewer

            self.media = MediaWriter(built, self.staging)
            self._all()
            self._check_cancel()
            if len(self.media):
                self.media.finish()
            if request.copy_viewer:
                copy_viewer(built)
            return built
        self._all()
        return built

    def _all(self) -> None:
        if self.progress:
            self.progress(0, self.total)
        form = self.request.form
        for series in self.plan:
            if form in MOVIE_FORMS:
                self._movie(series)
            else:
                for number, record in enumerate(series.records, 1):
                    self._check_cancel()
                    self._instance(series, number, record)
                    self._step()

    def _step(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise OperationCancelled("The export was cancelled; nothing was written.")

    # -- one instance -----------------------------------------------------------------------------------------

    def _instance(self, series: _Series, number: int, record: InstanceRecord) -> None:
        form = self.request.form
        name = f"{series.folder}/IM{number:05d}"
        if form == "dicom" and self.deidentifier is None and self.media is None:
            self._copy_file(record.path, f"{name}.dcm", record.size_bytes)
            self.written += 1
            return
        ds = self._dataset(series, record)
        if ds is None:
            return
        if form == "dicom":
            if self.media is not None:
                try:
                    self.media.add(ds, series.number, number)
                except (ValueError, KeyError, AttributeError) as exc:
                    raise ExportError(f"An image cannot be put on patient media (instance "
                                      f"{record.sop_instance_uid} lacks what a DICOMDIR record needs).") from exc
            else:
                self._write_dataset(ds, f"{name}.dcm")
        else:
            self._pictures(ds, name)
        self.written += 1

    def _dataset(self, series: _Series, record: InstanceRecord):
        """The instance as a Dataset, de-identified when asked; None when it is left out (burned-in identity)."""
        import pydicom

        try:
            ds = pydicom.dcmread(record.path)
        except Exception as exc:
            raise ExportError(f"The stored file of instance {record.sop_instance_uid} cannot be read.") from exc
        if self.deidentifier is None:
            return ds
        from viewer.share.deidentify import burned_in_reason

        rects = tuple(self.request.blackout.get(series.uid, ()))
        reason = burned_in_reason(ds)
        if reason and not rects and not self.request.include_burned_in:
            series.left_out += 1
            series.reason = series.reason or reason
            return None
        return self.deidentifier.deidentify(ds, blackout=rects)

    def _pictures(self, ds, name: str) -> None:
        from viewer.share.pictures import dataset_frames, write_picture

        suffix = ".jpg" if self.request.form == "jpeg" else ".png"
        frames = dataset_frames([ds])
        first = next(frames, None)
        if first is None:
            return
        second = next(frames, None)
        if second is None:
            self._produce(f"{name}{suffix}", lambda path: write_picture(first, path, self.request.form))
            return
        for index, frame in enumerate(_chain(first, second, frames), 1):
            self._check_cancel()
            self._produce(f"{name}-F{index:04d}{suffix}",
                          lambda path, frame=frame: write_picture(frame, path, self.request.form))

    def _movie(self, series: _Series) -> None:
        from viewer.share.movie import series_timing_for, write_apng, write_mp4
        from viewer.share.pictures import dataset_frames

        def datasets() -> Iterator[Any]:
            for record in series.records:
                self._check_cancel()
                ds = self._dataset(series, record)
                self._step()
                if ds is not None:
                    self.written += 1
                    yield ds

        writer = write_mp4 if self.request.form == "mp4" else write_apng
        suffix = ".mp4" if self.request.form == "mp4" else ".png"
        timing = series_timing_for(self.library, series.uid)
        before = self.written
        try:
            self._produce(f"{series.folder}{suffix}",
                          lambda path: writer(dataset_frames(datasets()), timing, path, cancel=self.cancel))
        except StorageFullError:
            raise
        except ExportError as exc:  # this series makes no movie (one frame, mixed sizes): said, the others go on
            self.written = before
            self.notes.append(f"{series.label}: no movie was made. {exc}")

    # -- writing ----------------------------------------------------------------------------------------------

    def _produce(self, name: str, write: Callable[[Path], object]) -> None:
        """A file made by ``write(path)`` (a picture, a movie): into the folder, or via a temp file into the ZIP."""
        if self.zip is None:
            path = self._target(name)
            write(path)
            return
        tmp = self.staging / "member.tmp"
        try:
            write(tmp)
            self._copy_file(tmp, name, tmp.stat().st_size)
        finally:
            tmp.unlink(missing_ok=True)

    def _target(self, name: str) -> Path:
        path = self.staging / "export" / name
        private_dir(path.parent)
        return path

    def _copy_file(self, source: Path, name: str, size: int) -> None:
        with open(source, "rb") as src:
            if self.zip is not None:
                info = zipfile.ZipInfo.from_file(source, name)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = (0o100000 | PRIVATE_FILE) << 16
                with self.zip.open(info, "w", force_zip64=size > _ZIP64_ABOVE) as out:
                    shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)
                return
            fd = os.open(self._target(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)

    def _write_dataset(self, ds, name: str) -> None:
        if self.zip is not None:
            info = zipfile.ZipInfo(name, date_time=_now())
            info.external_attr = (0o100000 | PRIVATE_FILE) << 16
            buffer = io.BytesIO()  # one instance in memory: pydicom's writer wants a seekable file
            ds.save_as(buffer, enforce_file_format=True)
            with self.zip.open(info, "w", force_zip64=buffer.tell() > _ZIP64_ABOVE) as out:
                out.write(buffer.getbuffer())
            return
        fd = os.open(self._target(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as out:
            ds.save_as(out, enforce_file_format=True)


def _publish(built: Path, destination: Path) -> None:
    """Move the finished export into place without ever replacing something there: a folder by rename (which
    fails on a non-empty folder), a ZIP by a hard link (which fails on any file), or by rename where the file system
    has no links (FAT)."""
    try:
        if built.is_dir():
            if os.path.lexists(destination):
                raise FileExistsError(errno.EEXIST, "exists")
            os.rename(built, destination)
            return
        try:
            os.link(built, destination)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or os.path.lexists(destination):
                raise
            os.rename(built, destination)
    except FileExistsError as exc:
        raise ExportError("The destination already exists; choose another name (nothing was overwritten).") from exc
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise ExportError("The destination already exists; choose another name (nothing was overwritten).") \
                from exc
        raise


def _chain(first: Any, second: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield second
    yield from rest


def _now() -> tuple[int, int, int, int, int, int]:
    import time

    return time.localtime()[:6]


def _write_error(exc: OSError) -> MifasError:
    """The user's sentence for a failed write (the system's reason; no path: it may hold a patient's name).
    pydicom re-raises a write's OSError without its errno (naming the tag): the cause chain still has it."""
    seen = exc
    while seen is not None and getattr(seen, "errno", None) is None:
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, OSError):
        exc = seen
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("The disk is full: the export could not be written, and nothing was left behind.")
    if exc.errno in (errno.EROFS,):
        return ExportError("The export could not be written: the disk is read-only.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ExportError("The export could not be written: no permission to write there.")
    reason = exc.strerror or "the files could not be written"
    return ExportError(f"The export could not be written: {reason[0].lower()}{reason[1:]}.")
