"""Import files, folders (recursively) and DICOMDIR media into a :class:`~viewer.library.store.Library`.

A malformed file never stops the others: it is listed in the :class:`ImportSummary` with a reason in plain words.
Progress is reported through a callback; cancellation through a :class:`threading.Event` (already stored
instances stay stored; the summary says ``cancelled``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from viewer import audit
from viewer.errors import LibraryError, MifasError, StorageFullError
from viewer.imports import need
from viewer.library.store import Library, StoreResult
from viewer.limits import WALK_FILES_MAX

# Files stored concurrently: fsync and file I/O release the GIL, parsing does not; more than a few gains nothing.
IMPORT_WORKERS = 4
# A folder walk is bounded so that a symlink loop or a mistaken "/" cannot run forever.
FAILURES_LISTED_MAX = 10_000

Progress = Callable[[int, int], None]  # (files done, files total)


@dataclass(frozen=True)
class ImportFailure:
    path: Path
    reason: str


@dataclass
class ImportSummary:
    added: int = 0
    duplicates: int = 0
    failures: list[ImportFailure] = field(default_factory=list)
    failures_total: int = 0
    cancelled: bool = False
    study_uids: set[str] = field(default_factory=set)
    series_uids: set[str] = field(default_factory=set)

    @property
    def failed(self) -> int:
        return self.failures_total

    def describe(self) -> str:
        parts = [f"{self.added} image(s) added", f"{self.duplicates} already in the library"]
        if self.failures_total:
            parts.append(f"{self.failures_total} file(s) could not be imported")
        text = ", ".join(parts) + "."
        return ("Import cancelled: " + text) if self.cancelled else text


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files to import: plain files as given, folders walked recursively (no symlinked folders), and the files
    that a DICOMDIR references in place of the DICOMDIR itself."""
    found: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen and len(found) < WALK_FILES_MAX:
            seen.add(p)
            found.append(p)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    file = Path(dirpath) / name
                    if name.upper() == "DICOMDIR":
                        for ref in dicomdir_files(file):
                            add(ref)
                    else:
                        add(file)
        elif path.name.upper() == "DICOMDIR":
            for ref in dicomdir_files(path):
                add(ref)
        else:
            add(path)
    return found


def dicomdir_files(path: Path) -> list[Path]:
    """Files referenced by a DICOMDIR (PS3.10 media), resolved inside the DICOMDIR's folder only."""
    need("pydicom")
    import pydicom  # here: reading a DICOMDIR is the only use, and pydicom costs ~0.3 s to import

    base = path.parent.resolve()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        records = ds.DirectoryRecordSequence
    except Exception:
        return []  # an unreadable DICOMDIR: its folder is walked as plain files anyway
    out: list[Path] = []
    for record in records:
        ref = record.get("ReferencedFileID")
        if not ref:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        candidate = (base.joinpath(*[str(p) for p in parts])).resolve()
        if base in candidate.parents and candidate.is_file():  # never follow a reference out of the media
            out.append(candidate)
    return out


def import_paths(
    library: Library,
    paths: Iterable[Path | str],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ImportSummary:
    paths_given = list(paths)
    files = expand_paths(paths_given)
    summary = ImportSummary()
    total = len(files)
    done = 0
    if progress:
        progress(0, total)

    def record(file: Path, fut: Future[StoreResult]) -> None:
        nonlocal done
        done += 1
        try:
            result = fut.result()
        except StorageFullError:
            raise
        except MifasError as exc:
            summary.failures_total += 1
            if len(summary.failures) < FAILURES_LISTED_MAX:
                summary.failures.append(ImportFailure(file, str(exc)))
        except Exception as exc:  # a bug must not lose the rest of the import; say what broke
            summary.failures_total += 1
            summary.failures.append(ImportFailure(file, f"Unexpected error: {type(exc).__name__}: {exc}"))
        else:
            if result.added:
                summary.added += 1
            else:
                summary.duplicates += 1
            summary.study_uids.add(result.study_instance_uid)
            summary.series_uids.add(result.series_instance_uid)
        if progress:
            progress(done, total)

    pending: dict[Future[StoreResult], Path] = {}
    with ThreadPoolExecutor(max_workers=IMPORT_WORKERS, thread_name_prefix="import") as pool:
        try:
            for file in _iter_until_cancelled(files, cancel):
                while len(pending) >= IMPORT_WORKERS * 2:  # bounded queue
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        record(pending.pop(fut), fut)
                pending[pool.submit(library.store_file, file)] = file
            for fut in list(pending):
                record(pending.pop(fut), fut)
        except StorageFullError:
            for fut in pending:
                fut.cancel()
            raise
    summary.cancelled = bool(cancel and cancel.is_set())
    if summary.study_uids:  # the Import audit message: what was taken in, from where (paths in the audit XML only)
        audit.emit(audit.messages.import_, ", ".join(str(p) for p in paths_given)[:1024],
                   [audit.study_ref(library, uid) for uid in sorted(summary.study_uids)],
                   outcome=audit.messages.MINOR_FAILURE if summary.failures_total or summary.cancelled
                   else audit.messages.SUCCESS)
    return summary


def _iter_until_cancelled(files: list[Path], cancel: threading.Event | None) -> Iterator[Path]:
    for file in files:
        if cancel is not None and cancel.is_set():
            return
        yield file


__all__ = ["ImportFailure", "ImportSummary", "dicomdir_files", "expand_paths", "import_paths", "LibraryError"]
