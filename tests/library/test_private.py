"""Data at rest is the user's alone: the library, its index and job records, the settings, the profiles and a
command-line export are created 0700/0600 whatever the umask; a looser existing library is tightened."""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from viewer.dicom.demo import ct_series_datasets
from viewer.library import Library
from viewer.library.jobs import JobStore
from viewer.library.writer import GroupWriter
from viewer.pacs.cli import _FolderSink
from viewer.pacs.cluster import ClusterAddress, ClusterProfile, save_profiles
from viewer.settings import Settings, save_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: whatever we create is then exactly the mode we ask for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def instances(count: int = 3) -> list[bytes]:
    out = []
    for ds in ct_series_datasets(count, rows=16, cols=16, seed=5):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def test_a_new_library_is_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "made" / "library"
    data = instances()
    with Library.open(root) as library:
        library.store_bytes(data[0])  # one instance at a time
        with GroupWriter(library) as writer:  # and the group commit the retrievals use
            for item in data[1:]:
                writer.submit(item)
        JobStore(library).close()
        folders = [root, root.parent, root / "objects", root / "tmp", *[p for p in root.rglob("*") if p.is_dir()]]
        files = [p for p in root.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"}
        assert len([p for p in files if p.suffix == ".dcm"]) == 3 and any(p.suffix == ".lock" for p in files)
        assert {str(p): mode(p) for p in folders} == {str(p): 0o700 for p in folders}
        assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}


def test_an_existing_loose_library_is_tightened_with_a_line_in_the_log(tmp_path: Path, open_umask: None,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "library"
    with Library.open(root) as library:
        library.store_bytes(instances(1)[0])
    loose = [root, root / "objects", *[p for p in (root / "objects").iterdir()]]
    for path in loose:
        os.chmod(path, 0o755)
    os.chmod(root / "index.sqlite", 0o644)
    with caplog.at_level(logging.WARNING, logger="viewer.library.store"), Library.open(root):
        assert {str(p): mode(p) for p in loose} == {str(p): 0o700 for p in loose}
        assert mode(root / "index.sqlite") == 0o600
    assert [r.getMessage() for r in caplog.records if "private to you" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="viewer.library.store"), Library.open(root):
        pass
    assert not [r for r in caplog.records if "private to you" in r.getMessage()]  # once, not at every start


def test_deleted_index_rows_are_overwritten(tmp_path: Path) -> None:
    with Library.open(tmp_path / "library") as library:
        assert library._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        jobs = JobStore(library)
        try:
            assert jobs._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        finally:
            jobs.close()


def test_settings_profiles_and_exports_are_private(tmp_path: Path, open_umask: None) -> None:
    settings = save_settings(Settings(), tmp_path / "config" / "mifas" / "settings.json")
    assert (mode(settings.parent), mode(settings.parent.parent), mode(settings)) == (0o700, 0o700, 0o600)
    profiles = tmp_path / "profiles" / "clusters.json"
    save_profiles(profiles, [ClusterProfile(name="lab", vip=ClusterAddress("127.0.0.1", 104), ae_title="PACS")])
    assert (mode(profiles.parent), mode(profiles)) == (0o700, 0o600)
    export = tmp_path / "export" / "study"
    sink = _FolderSink(export)
    sink(instances(1)[0])
    files = list(export.iterdir())
    assert (mode(export), mode(export.parent), [mode(p) for p in files]) == (0o700, 0o700, [0o600])


def test_folders_that_exist_are_left_as_they_are(tmp_path: Path, open_umask: None) -> None:
    shared = tmp_path / "etc-like"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    save_settings(Settings(), shared / "settings.json")
    assert mode(shared) == 0o755 and mode(shared / "settings.json") == 0o600
