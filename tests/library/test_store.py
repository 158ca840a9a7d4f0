"""The local store against real files: pydicom's bundled test files, hostile files, a real full disk (tmpfs)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support import require
from viewer.errors import MalformedDicomError, NotDicomError, StorageFullError
from viewer.library import Library, StudyQuery, expand_paths, import_paths

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_dataset(*, patient="Doe^Jane", pid="P1", date="20240102", modality="CT", accession="A1",
                 study_uid=None, series_uid=None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate = patient, pid, date
    ds.Modality, ds.AccessionNumber = modality, accession
    ds.InstanceNumber = 1
    return ds


def test_store_file_is_byte_identical_and_named_by_minted_key(library: Library) -> None:
    result = library.store_file(CT_SMALL)
    assert result.added
    record = library.instance(result.sop_instance_uid)
    assert record.path.read_bytes() == CT_SMALL.read_bytes()
    assert record.sha256 == sha256(CT_SMALL)
    relative = record.path.relative_to(library.root).as_posix()
    assert re.fullmatch(r"objects/[0-9a-f]{2}/[0-9a-f]{32}\.dcm", relative)
    assert result.sop_instance_uid not in relative  # never a path built from DICOM content


def test_store_is_idempotent(library: Library) -> None:
    first = library.store_file(CT_SMALL)
    second = library.store_file(CT_SMALL)
    third = library.store_bytes(CT_SMALL.read_bytes())
    assert first.added and not second.added and not third.added
    assert len(list(library.iter_instances())) == 1
    assert len(list((library.root / "objects").glob("*/*.dcm"))) == 1


def test_import_pydicom_test_files(library: Library, pydicom_test_files: list[Path]) -> None:
    progress: list[tuple[int, int]] = []
    summary = import_paths(library, pydicom_test_files, progress=lambda d, t: progress.append((d, t)))
    assert summary.added > 90
    assert summary.failures_total == len(summary.failures) > 0
    assert all(f.reason and "Traceback" not in f.reason for f in summary.failures)
    reasons = {f.path.name: f.reason for f in summary.failures}
    assert reasons["README.txt"] == "This is not a DICOM file."
    files = expand_paths(pydicom_test_files)  # DICOMDIRs expand to the files they reference
    assert progress[-1] == (len(files), len(files))
    # Every stored file is byte-identical to (one of) its sources, and the index agrees with the disk.
    sources = {sha256(p) for p in pydicom_test_files if p.is_file()}
    for record in library.iter_instances():
        assert record.sha256 == sha256(record.path)
        if record.sha256 not in sources:  # only files re-encoded to Part 10 may differ from their source
            assert pydicom.dcmread(record.path).preamble is not None
    again = import_paths(library, pydicom_test_files)
    assert again.added == 0 and again.duplicates == summary.added + summary.duplicates


def test_import_dicomdir_media(library: Library) -> None:
    dicomdir = Path(get_testdata_file("DICOMDIR"))
    summary = import_paths(library, [dicomdir])
    # pydicom's DICOMDIR test media references 31 image files under 77654033/ and 98892001/ (98892003 has none)
    assert summary.added == 31 and summary.failures_total == 0
    patients = {s.patient_id for s in library.studies()}
    assert patients == {"77654033", "98890234"}


def test_hostile_and_empty_files_are_reported_not_stored(library: Library, tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not dicom at all\n" * 20)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(CT_SMALL.read_bytes()[:300])
    noid = tmp_path / "no-uids.dcm"
    ds = make_dataset()
    del ds.StudyInstanceUID
    ds.save_as(noid, enforce_file_format=True)
    baduid = tmp_path / "bad-uid.dcm"
    ds = make_dataset()
    ds.SeriesInstanceUID = "1.2.3../../../etc"
    ds.save_as(baduid, enforce_file_format=True)
    with pytest.raises(NotDicomError, match="empty"):
        library.store_file(empty)
    with pytest.raises(NotDicomError):
        library.store_file(text)
    with pytest.raises(MalformedDicomError):
        library.store_file(truncated)
    with pytest.raises(MalformedDicomError, match="StudyInstanceUID"):
        library.store_file(noid)
    with pytest.raises(MalformedDicomError, match="SeriesInstanceUID"):
        library.store_file(baduid)
    good = library.store_file(MR_SMALL)
    summary = import_paths(library, [empty, text, truncated, noid, baduid, MR_SMALL])
    assert summary.failures_total == 5 and summary.duplicates == 1
    assert list(library.iter_instances())[0].sop_instance_uid == good.sop_instance_uid
    assert library.partial_files() == []


def test_deeply_nested_sequence_is_stored_or_refused_without_crash(library: Library) -> None:
    ds = make_dataset()
    inner = ds
    for _ in range(200):
        item = Dataset()
        item.CodeMeaning = "x"
        inner.ContentSequence = Sequence([item])
        inner = item
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    result = library.store_bytes(buf.getvalue())  # the header parse is lazy; storing must still work
    assert library.has_instance(result.sop_instance_uid)


def test_file_without_part10_header_is_stored_as_part10(library: Library, tmp_path: Path) -> None:
    ds = make_dataset(patient="Raw^Archive")
    raw = tmp_path / "raw.dcm"
    del ds.file_meta
    pydicom.dcmwrite(raw, ds, implicit_vr=True, little_endian=True)  # no preamble, no meta: old archives
    assert raw.read_bytes()[128:132] != b"DICM"
    stored = library.store_file(raw)
    held = pydicom.dcmread(library.path_of(stored.sop_instance_uid))
    assert held.preamble is not None and held.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert held.PatientName == "Raw^Archive"


def test_study_query_filters(library: Library) -> None:
    library.store_dataset(make_dataset(patient="Smith^John", pid="ID-7", date="20230105", modality="CT", accession="ACC9"))
    library.store_dataset(make_dataset(patient="Jones^Ann", pid="ID-8", date="20240310", modality="MR", accession="ACC10"))
    library.store_dataset(make_dataset(patient="Smithers^Wayland", pid="X", date="", modality="CT", accession=""))
    names = lambda q: sorted(s.patient_name for s in library.studies(q))  # noqa: E731
    assert names(StudyQuery(patient_name="smith")) == ["Smith^John", "Smithers^Wayland"]
    assert names(StudyQuery(patient_name="Smith^J*")) == ["Smith^John"]
    assert names(StudyQuery(patient_id="ID-8")) == ["Jones^Ann"]
    assert names(StudyQuery(modality="mr")) == ["Jones^Ann"]
    assert names(StudyQuery(accession_number="ACC9")) == ["Smith^John"]
    assert names(StudyQuery(date_from="20240101")) == ["Jones^Ann"]
    assert names(StudyQuery(date_to="20231231")) == ["Smith^John"]
    assert names(StudyQuery(patient_name="50%_")) == []


def test_crash_leftovers_are_invisible_and_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    lib = Library.open(root)
    kept = lib.store_file(CT_SMALL)
    # A crash while writing leaves a .part file in the dead writer's tmp folder (its lock file free); a crash
    # after the rename but before the index commit leaves an object file nobody references.  Neither may be
    # visible.
    dead = root / "tmp" / ("d" * 32)
    dead.mkdir()
    (dead.with_suffix(".lock")).touch()
    (dead / "deadbeef.part").write_bytes(MR_SMALL.read_bytes()[:1000])
    orphan = root / "objects" / "ab" / ("ab" + "0" * 30 + ".dcm")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(MR_SMALL.read_bytes())
    lib.close()
    assert set((root / "tmp").iterdir()) == {dead, dead.with_suffix(".lock")}
    lib = Library.open(root)
    assert lib.partial_files() == [] and not dead.exists()
    assert [r.sop_instance_uid for r in lib.iter_instances()] == [kept.sop_instance_uid]
    assert lib.fsck() == {"orphans_removed": 1, "missing": 0}
    assert not orphan.exists()
    lib.close()
    assert list((root / "tmp").iterdir()) == []  # closing removes our own temp folder and lock


def test_a_second_opener_leaves_a_live_writers_temp_files_alone(tmp_path: Path) -> None:
    """Regression: opening a library used to empty tmp/, deleting another process's in-flight writes."""
    root = tmp_path / "lib"
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from viewer.library import Library
            lib = Library.open({str(root)!r})
            (lib._tmp / "inflight.part").write_bytes(b"x" * 1000)
            print("ready", flush=True)
            sys.stdin.readline()
            print((lib._tmp / "inflight.part").exists(), flush=True)
            lib.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        other = Library.open(root)  # the second process opening the same library
        assert [p.name for p in other.partial_files()] == ["inflight.part"]
        other.close()
        out, _ = writer.communicate("go\n", timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert out.strip() == "True"
    assert writer.returncode == 0
    # a writer killed without closing leaves its folder; the next opener finds the lock free and removes it
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import os
            from viewer.library import Library
            lib = Library.open({str(root)!r})
            (lib._tmp / "partial.part").write_bytes(b"x" * 1000)
            os._exit(9)
        """)], cwd=Path(__file__).parents[2])
    assert killed.returncode == 9
    assert any((root / "tmp").rglob("partial.part"))
    with Library.open(root) as lib:
        assert lib.partial_files() == []


def test_cancel_stops_import_and_keeps_what_was_stored(library: Library, pydicom_test_files: list[Path]) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 20:
            cancel.set()

    summary = import_paths(library, pydicom_test_files, progress=progress, cancel=cancel)
    assert summary.cancelled
    held = len(list(library.iter_instances()))
    assert 0 < held == summary.added < 100
    assert "cancelled" in summary.describe().lower()


def test_full_disk_is_reported_and_damages_nothing(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a small tmpfs to fill a real disk needs root")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=True)
    try:
        with Library.open(mnt / "lib") as lib:
            first = lib.store_file(CT_SMALL)  # ~39 KB
            big = make_dataset()
            big.add_new(0x7FE00010, "OB", b"\0" * (2 << 20))  # 2 MiB of Pixel Data: cannot fit
            with pytest.raises(StorageFullError, match="full"):
                lib.store_dataset(big)
            assert not any(p.suffix == ".part" for p in (mnt / "lib" / "tmp").rglob("*"))
            assert [r.sop_instance_uid for r in lib.iter_instances()] == [first.sop_instance_uid]
            assert sha256(lib.path_of(first.sop_instance_uid)) == sha256(CT_SMALL)
            second = lib.store_file(MR_SMALL)  # space is still usable after the failure
            assert lib.has_instance(second.sop_instance_uid)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
