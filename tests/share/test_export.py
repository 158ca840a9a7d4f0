"""The export engine (viewer.share.export): folder and ZIP containers, pictures and movies dispatched, and the bad
cases (existing destination, cancel midway, full disk, read-only disk) leaving nothing that looks complete."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

from tests.pacs.conftest import ct_series
from tests.support import require
from viewer.errors import ExportError, OperationCancelled, StorageFullError
from viewer.library import Library
from viewer.share.export import ExportRequest, export


def stored(library: Library, count: int = 6, series: int = 2, rows: int = 32) -> list[str]:
    uids = []
    study_uid = None
    for number in range(1, series + 1):
        datasets = ct_series(count, rows=rows, columns=rows, seed=number, study_uid=study_uid,
                             patient_name="Secret^Name", series_number=number)
        study_uid = datasets[0].StudyInstanceUID
        for ds in datasets:
            library.store_dataset(ds)
            uids.append(ds.SOPInstanceUID)
    return uids


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_folder_export_is_byte_identical_private_and_nameless(library: Library, tmp_path: Path) -> None:
    uids = stored(library)
    seen: list[tuple[int, int]] = []
    result = export(library, ExportRequest(uids, tmp_path / "out"), progress=lambda d, t: seen.append((d, t)))
    assert result.written == 12 and result.excluded == ()
    assert seen[0] == (0, 12) and seen[-1] == (12, 12) and len(seen) == 13
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "out").as_posix() for p in files[:2]] == [
        "STUDY001/SERIES001_CT/IM00001.dcm", "STUDY001/SERIES001_CT/IM00002.dcm"]
    assert {sha(p) for p in files} == {library.instance(u).sha256 for u in uids}
    for path in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
        assert "secret" not in path.name.lower() and uids[0] not in path.name
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    assert leftovers(tmp_path) == ["library", "out"]


def test_zip_export_members_hold_every_instance(library: Library, tmp_path: Path) -> None:
    uids = stored(library)
    result = export(library, ExportRequest(uids, tmp_path / "out.zip", container="zip"))
    assert result.written == 12
    assert stat.S_IMODE((tmp_path / "out.zip").stat().st_mode) == 0o600
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(names) == 12 and names[0] == "STUDY001/SERIES001_CT/IM00001.dcm"
        digests = {hashlib.sha256(archive.read(n)).hexdigest() for n in names}
    assert digests == {library.instance(u).sha256 for u in uids}
    assert leftovers(tmp_path) == ["library", "out.zip"]


def test_an_existing_destination_is_never_overwritten(library: Library, tmp_path: Path) -> None:
    uids = stored(library, count=2, series=1)
    (tmp_path / "out.zip").write_bytes(b"mine")
    with pytest.raises(ExportError, match="already exists"):
        export(library, ExportRequest(uids, tmp_path / "out.zip", container="zip"))
    assert (tmp_path / "out.zip").read_bytes() == b"mine"
    assert leftovers(tmp_path) == ["library", "out.zip"]


@pytest.mark.parametrize("container", ["folder", "zip", "media"])
def test_cancel_midway_leaves_nothing(library: Library, tmp_path: Path, container: str) -> None:
    uids = stored(library)
    cancel = threading.Event()
    done: list[int] = []

    def progress(n: int, total: int) -> None:
        done.append(n)
        if n == 5:
            cancel.set()

    target = tmp_path / ("out.zip" if container == "zip" else "out")
    with pytest.raises(OperationCancelled, match="cancelled"):
        export(library, ExportRequest(uids, target, container=container), progress=progress, cancel=cancel)
    assert max(done) == 5
    assert leftovers(tmp_path) == ["library"]  # neither the export nor its hidden partial


@pytest.fixture
def small_disk(tmp_path: Path):
    require(os.geteuid() == 0, "mounting a small tmpfs to fill a real disk needs root")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("container", ["folder", "zip", "media"])
def test_full_disk_is_a_sentence_and_leaves_nothing(library: Library, small_disk: Path, container: str) -> None:
    uids = stored(library, count=8, rows=128)  # 16 x 32 KiB: about 530 KiB, twice that for media's stage
    (small_disk / "filler").write_bytes(b"\0" * (300 << 10))
    target = small_disk / ("out.zip" if container == "zip" else "out")
    with pytest.raises(StorageFullError, match="disk is full"):
        export(library, ExportRequest(uids, target, container=container))
    assert leftovers(small_disk) == ["filler"]


def test_read_only_disk_is_a_sentence(library: Library, tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a read-only tmpfs needs root")
    uids = stored(library, count=2, series=1)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(ExportError, match="read-only"):
            export(library, ExportRequest(uids, mnt / "out", container="folder"))
        assert leftovers(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_pictures_and_movies_are_dispatched(library: Library, tmp_path: Path) -> None:
    uids = stored(library, count=3)
    pictures = export(library, ExportRequest(uids, tmp_path / "png", form="png"))
    names = sorted(p.relative_to(tmp_path / "png").as_posix() for p in (tmp_path / "png").rglob("*.png"))
    assert pictures.written == 6 and len(names) == 6 and names[0] == "STUDY001/SERIES001_CT/IM00001.png"
    movies = export(library, ExportRequest(uids, tmp_path / "mp4.zip", container="zip", form="mp4"))
    with zipfile.ZipFile(tmp_path / "mp4.zip") as archive:
        assert sorted(archive.namelist()) == ["STUDY001/SERIES001_CT.mp4", "STUDY001/SERIES002_CT.mp4"]
        assert archive.read("STUDY001/SERIES001_CT.mp4")[4:8] == b"ftyp"
    assert movies.written == 6


@pytest.mark.slow
def test_zip_over_4_gib_is_zip64_and_every_crc_holds(library: Library, tmp_path: Path) -> None:
    """Five instances of 880 MiB (zeros: stored members keep their size, so the archive passes 4 GiB without
    costly data); the archive is checked member by member against its CRCs, and by Info-ZIP's ``unzip -t``."""
    study_uid = None
    size = 0
    started = time.perf_counter()
    for index in range(5):
        ds = ct_series(1, rows=1024, columns=1024, seed=index, study_uid=study_uid)[0]
        study_uid = ds.StudyInstanceUID
        ds.NumberOfFrames = 440
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # MF grey word SC
        ds.PixelData = bytes(1024 * 1024 * 2 * 440)
        size += len(ds.PixelData)
        library.store_dataset(ds)
        del ds
    stored_s = time.perf_counter() - started
    uids = [r.sop_instance_uid for r in library.iter_instances()]
    started = time.perf_counter()
    export(library, ExportRequest(uids, tmp_path / "big.zip", container="zip"))
    export_s = time.perf_counter() - started
    assert (tmp_path / "big.zip").stat().st_size > size > 4 << 30
    started = time.perf_counter()
    with zipfile.ZipFile(tmp_path / "big.zip") as archive:
        assert archive.testzip() is None  # reads every member and checks its CRC-32
        assert len(archive.infolist()) == 5
    check_s = time.perf_counter() - started
    if Path("/usr/bin/unzip").exists():
        run = subprocess.run(["/usr/bin/unzip", "-tqq", str(tmp_path / "big.zip")], capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    print(f"zip64: stored {stored_s:.1f} s, exported {export_s:.1f} s, checked {check_s:.1f} s")
    assert pydicom.dcmread(library.iter_instances().__next__().path, stop_before_pixels=True).NumberOfFrames == 440


def us_series(library: Library, study_uid: str, count: int = 2) -> list[str]:
    """An ultrasound-like series (Burned In Annotation YES) in ``study_uid``."""
    uids = []
    for ds in ct_series(count, rows=16, columns=16, seed=9, study_uid=study_uid, patient_name="Secret^Name",
                        series_number=7):
        ds.Modality = "US"
        ds.BurnedInAnnotation = "YES"
        library.store_dataset(ds)
        uids.append(ds.SOPInstanceUID)
    return uids


def test_deidentified_export_keeps_references_and_leaves_burned_in_out(library: Library, tmp_path: Path) -> None:
    deid = pytest.importorskip("viewer.share.deidentify")
    uids = stored(library, count=3)
    study_uid = pydicom.dcmread(library.instance(uids[0]).path).StudyInstanceUID
    burned = us_series(library, study_uid)
    result = export(library, ExportRequest(uids + burned, tmp_path / "anon", deidentify=deid.Options()))
    assert result.written == 6
    assert len(result.excluded) == 1 and "Series 7 (US): 2 image(s) left out" in result.excluded[0]
    datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / "anon").rglob("*.dcm"))]
    assert len(datasets) == 6
    originals = set(uids) | {study_uid}
    for ds in datasets:
        assert "Secret" not in str(ds.PatientName) and ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID not in originals and ds.StudyInstanceUID not in originals
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1  # one export, one mapping
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    # blackout rectangles for the series, or include_burned_in, bring the images back
    series_uid = library.instance(burned[0]).series_uid
    again = export(library, ExportRequest(burned, tmp_path / "blacked", deidentify=deid.Options(),
                                          blackout={series_uid: [deid.Rect(0, 0, 8, 4)]}))
    assert again.written == 2 and again.excluded == ()
    kept = export(library, ExportRequest(burned, tmp_path / "kept.zip", container="zip", deidentify=deid.Options(),
                                         include_burned_in=True))
    assert kept.written == 2 and kept.excluded == ()


def test_deidentified_media_name_the_pseudonym(library: Library, tmp_path: Path) -> None:
    deid = pytest.importorskip("viewer.share.deidentify")
    uids = stored(library, count=2)
    export(library, ExportRequest(uids, tmp_path / "disc", container="media", deidentify=deid.Options()))
    records = pydicom.dcmread(tmp_path / "disc" / "DICOMDIR").DirectoryRecordSequence
    patients = [r for r in records if r.DirectoryRecordType == "PATIENT"]
    assert len(patients) == 1 and "Secret" not in str(patients[0].PatientName)
    assert sum(1 for r in records if r.DirectoryRecordType == "IMAGE") == 4


def test_each_series_is_exported_in_the_order_the_2d_view_shows_it(library: Library, tmp_path: Path) -> None:
    """Instance Numbers that run against the slice positions: IM00001 is the slice the view shows first (lowest
    position along the normal), not the lowest Instance Number."""
    datasets = ct_series(5, rows=16, columns=16)
    for number, ds in enumerate(datasets):
        ds.InstanceNumber = 5 - number  # the first slice in space carries the highest number
        library.store_dataset(ds)
    export(library, ExportRequest([ds.SOPInstanceUID for ds in datasets], tmp_path / "out"))
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    assert positions == sorted(positions) and len(positions) == 5
    assert [int(pydicom.dcmread(f).InstanceNumber) for f in files] == [5, 4, 3, 2, 1]
