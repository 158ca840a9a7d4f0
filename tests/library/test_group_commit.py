"""Group commit (Library.store_many / stage / publish, viewer.library.writer.GroupWriter) against real files: the
fast header reader agrees with pydicom, byte-identical and idempotent storage, a process killed in the middle of a
batch, and a real full disk (tmpfs)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tests.support import require
from viewer.errors import MalformedDicomError, NotDicomError, StorageFullError
from viewer.library import Library
from viewer.library import header as header_module
from viewer.library import store as store_module
from viewer.library.writer import GroupWriter, Withdrawn

ROOT = Path(__file__).parents[2]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ct(count: int, *, rows: int = 32, implicit: bool = False, study_uid: str | None = None,
       patient: str = "Test^Group", seed: int = 0) -> list[bytes]:
    """Small CT instances as Part 10 bytes, with a nested sequence (undefined length) before the wanted tags."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    out = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 192"
        inner = Dataset()
        inner.ReferencedSOPClassUID = CTImageStorage
        inner.ReferencedSOPInstanceUID = generate_uid()
        nested = Dataset()
        nested.CodeValue, nested.CodingSchemeDesignator = "1", "DCM"
        inner.PurposeOfReferenceCodeSequence = Sequence([nested])
        ds.ReferencedImageSequence = Sequence([inner])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = patient, "G1", "20240102", "101010"
        ds.Modality, ds.AccessionNumber, ds.StudyDescription, ds.SeriesDescription = "CT", "A7", "Group", "Axial"
        ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = "CHEST", 3, i + 1
        ds.ImagePositionPatient = [-125.0, -125.5, float(i) * 1.25]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = rng.integers(-1000, 1000, (rows, rows), dtype=np.int16).tobytes()
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def assert_complete_and_clean(library: Library, sources: dict[str, bytes]) -> None:
    """Every indexed instance is whole and verified against its source; nothing partial; fsck clean."""
    for record in library.iter_instances():
        data = record.path.read_bytes()
        assert sha256(data) == record.sha256 == sha256(sources[record.sop_instance_uid])
        assert record.size_bytes == len(data)
    assert library.partial_files() == []
    assert library.fsck() == {"orphans_removed": 0, "missing": 0}


# -- the fast header reader --------------------------------------------------------------------------------


def test_fast_header_reader_agrees_with_pydicom() -> None:
    """Where the fast reader answers, its index row is pydicom's; where it declines, pydicom answers."""
    blobs = ct(3) + ct(3, implicit=True) + ct(2, patient="Müller^Jürgen")
    for name in get_testdata_files("*.dcm"):
        blobs.append(Path(name).read_bytes())
    fast = 0
    for data in blobs:
        try:
            reference = header_module._row_from_dataset(header_module.read_header(data))
        except (NotDicomError, MalformedDicomError):
            with pytest.raises((NotDicomError, MalformedDicomError)):
                header_module.index_row(data)
            continue
        try:
            row = header_module._fast_index_row(data)
        except header_module._Unusual:
            assert header_module.index_row(data) == reference
            continue
        assert row == reference
        fast += 1
    assert fast >= 8  # our own CT (both VR encodings) and many of pydicom's take the fast path


# -- store_many ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-per-file"])
def test_store_many_is_byte_identical_idempotent_and_leaves_nothing_partial(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path, syncfs: bool) -> None:
    if not syncfs:  # the durability path of kernels before 5.8 and of other systems
        monkeypatch.setattr(store_module, "_SYNCFS_WORKS", False)
    blobs = ct(10)
    with Library.open(tmp_path / "lib") as library:
        results = library.store_many(blobs[:6] + blobs[:2])  # a repeat within the batch is stored once
        assert [r.added for r in results] == [True] * 6 + [False] * 2
        again = library.store_many(blobs)  # already held ones are kept, the rest added
        assert [r.added for r in again] == [False] * 6 + [True] * 4
        assert [r.sop_instance_uid for r in again] == [uid_of(b) for b in blobs]
        sources = {uid_of(b): b for b in blobs}
        assert {r.sop_instance_uid for r in library.iter_instances()} == set(sources)
        assert len(list((library.root / "objects").glob("*/*.dcm"))) == len(blobs)
        assert_complete_and_clean(library, sources)
        record = library.instance(uid_of(blobs[3]))
        assert record.instance_number == 4 and record.rows == 32 and record.image_position == (-125.0, -125.5, 3.75)


def test_store_many_refuses_a_bad_batch_whole(tmp_path: Path) -> None:
    blobs = ct(3)
    with Library.open(tmp_path / "lib") as library:
        with pytest.raises(NotDicomError):
            library.store_many([blobs[0], b"not dicom at all" * 20, blobs[1]])
        assert list(library.iter_instances()) == [] and library.partial_files() == []


# -- the group writer ----------------------------------------------------------------------------------------


def test_group_writer_commits_every_instance_and_reports_each(tmp_path: Path) -> None:
    blobs = ct(40)
    sources = {uid_of(b): b for b in blobs}
    added: list[str] = []
    kept: list[str] = []
    refused: list[BaseException] = []
    lock = threading.Lock()

    def done(result, error) -> None:  # noqa: ANN001 - the writer's callback
        with lock:
            if error is not None:
                refused.append(error)
            else:
                (added if result.added else kept).append(result.sop_instance_uid)

    with Library.open(tmp_path / "lib") as library:
        with GroupWriter(library, batch_instances_max=7, linger_s=0.01) as writer:
            for data in blobs[:20]:
                writer.submit(data, done)
            writer.submit(b"\0" * 300, done)  # not DICOM: refused alone, the stream goes on
            for data in blobs[20:] + blobs[:5]:  # five repeats: idempotent
                writer.submit(data, done)
            writer.flush()
            assert sorted(added) == sorted(sources) and sorted(kept) == sorted(uid_of(b) for b in blobs[:5])
            assert len(refused) == 1 and isinstance(refused[0], NotDicomError)
            assert library.instance_uids(library.instance(uid_of(blobs[0])).series_uid) == set(sources)
            more = ct(1)[0]
            result = writer(more)  # the plain Sink interface waits for its commit
            assert result.added and library.has_instance(result.sop_instance_uid)
            sources[result.sop_instance_uid] = more
        assert_complete_and_clean(library, sources)


def test_a_held_writer_publishes_only_what_its_check_keeps(tmp_path: Path) -> None:
    """hold(): staged, nothing published until release(); then each instance's check decides: kept ones are
    stored, the others withdrawn (their temp files gone, their callback told so), nothing of them visible."""
    blobs = ct(10)
    keep = {uid_of(b) for b in blobs[::2]}
    told: dict[str, object] = {}
    lock = threading.Lock()

    def done_for(uid: str):  # noqa: ANN202 - the writer's callback
        def done(result, error) -> None:  # noqa: ANN001
            with lock:
                told[uid] = error if error is not None else result.added
        return done

    with Library.open(tmp_path / "lib") as library:
        writer = GroupWriter(library, batch_instances_max=4, linger_s=0.01)
        writer.hold()
        for data in blobs:
            uid = uid_of(data)
            writer.submit(data, done_for(uid), check=lambda uid=uid: uid in keep)
        release = threading.Timer(0.3, writer.release)  # the plan arrives later, from another thread
        release.start()
        assert not any(library.has_instance(uid_of(b)) for b in blobs)  # held: nothing published yet
        writer.close()  # flush: waits for the release
        release.join()
        assert {uid for uid, value in told.items() if value is True} == keep
        assert all(isinstance(told[uid_of(b)], Withdrawn) for b in blobs if uid_of(b) not in keep)
        assert {r.sop_instance_uid for r in library.iter_instances()} == keep
        assert library.partial_files() == [] and library.fsck() == {"orphans_removed": 0, "missing": 0}


def test_a_part_batch_is_committed_by_the_timer_without_a_flush(tmp_path: Path) -> None:
    """Progress keeps moving: a batch that never fills is published once its oldest instance has waited."""
    committed = threading.Event()
    data = ct(1)[0]
    with Library.open(tmp_path / "lib") as library:
        with GroupWriter(library, batch_instances_max=1000, linger_s=0.05) as writer:
            writer.submit(data, lambda result, error: committed.set() if result is not None else None)
            assert committed.wait(30)  # no flush asked: the timer did it
            assert library.has_instance(uid_of(data))


def test_a_process_killed_in_the_middle_of_a_batch_leaves_only_whole_instances(tmp_path: Path) -> None:
    """The writer process dies (os._exit) after renaming part of a batch into objects/, before its index
    commit: what was committed before is whole and verified, nothing is half-visible, fsck cleans the rest."""
    root = tmp_path / "lib"
    blobs = ct(30, seed=5)
    source = tmp_path / "blobs"
    source.mkdir()
    for i, data in enumerate(blobs):
        (source / f"{i:03d}.dcm").write_bytes(data)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from pathlib import Path
        from viewer.library import Library
        from viewer.library.writer import GroupWriter, Withdrawn
        blobs = [p.read_bytes() for p in sorted(Path({str(source)!r}).iterdir())]
        lib = Library.open({str(root)!r})
        writer = GroupWriter(lib, batch_instances_max=8, linger_s=5.0)
        for data in blobs[:16]:
            writer.submit(data)
        writer.flush()  # two whole batches committed
        print("committed", flush=True)
        replace, renamed = os.replace, []
        def dying_replace(src, dst):
            replace(src, dst)
            renamed.append(dst)
            if len(renamed) == 3:  # the third batch: three of its files renamed, not yet indexed
                os._exit(9)
        os.replace = dying_replace
        for data in blobs[16:]:
            writer.submit(data)
        writer.flush()
        print("not reached", flush=True)
    """)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 9, child.stderr
    assert child.stdout.split() == ["committed"]
    sources = {uid_of(b): b for b in blobs}
    with Library.open(root) as library:
        held = {r.sop_instance_uid for r in library.iter_instances()}
        assert held == {uid_of(b) for b in blobs[:16]}
        assert library.partial_files() == []  # the dead writer's temp folder is gone
        assert library.fsck() == {"orphans_removed": 3, "missing": 0}  # the renamed, never indexed files
        assert_complete_and_clean(library, sources)
        assert [r.added for r in library.store_many(blobs)] == [False] * 16 + [True] * 14  # resumable
        assert_complete_and_clean(library, sources)


def test_full_disk_in_a_batch_is_reported_and_damages_nothing(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting a small tmpfs to fill a real disk needs root")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=True)
    try:
        with Library.open(mnt / "lib") as library:
            first = ct(2, rows=16)
            assert all(r.added for r in library.store_many(first))
            big = ct(3, rows=512)  # 3 x 512 KiB of pixels: the batch cannot fit
            writer = GroupWriter(library, batch_instances_max=8, linger_s=5.0)
            errors: list[BaseException] = []
            for data in big:
                try:
                    writer.submit(data, lambda result, error: errors.append(error) if error else None)
                except StorageFullError as exc:  # once the writer failed, further submits are refused
                    errors.append(exc)
            with pytest.raises(StorageFullError, match="full"):
                writer.flush()
            with pytest.raises(StorageFullError):
                writer.submit(first[0])
            with pytest.raises(StorageFullError):
                writer.close()
            assert errors and all(isinstance(e, StorageFullError) for e in errors)
            assert library.partial_files() == []
            sources = {uid_of(b): b for b in first}
            assert {r.sop_instance_uid for r in library.iter_instances()} == set(sources)
            assert_complete_and_clean(library, sources)
            small = ct(1, rows=16)[0]
            with GroupWriter(library) as fresh:  # space is usable again once the failed batch is gone
                assert fresh(small).added
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
