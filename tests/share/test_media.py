"""Patient media: the DICOMDIR that viewer.share.export writes (pydicom FileSet), read by DCMTK, the viewer's own
import and Orthanc; and the viewer copied beside it, started through the disc's launcher."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mifaslab.orthanc import OrthancProcess, orthanc_available
from tests.pacs.conftest import ct_series
from tests.support import require
from viewer.library import Library
from viewer.library.importer import import_paths
from viewer.share.export import ExportRequest, export
from viewer.share.media import LAUNCHER, VIEWER_DIR, copy_viewer, record_counts, tree_size

DCMDUMP, DCMMKDIR = Path("/usr/bin/dcmdump"), Path("/usr/bin/dcmmkdir")


def two_patients(library: Library) -> list[str]:
    """2 patients, 3 studies, 5 series, 10 instances; returns their SOP Instance UIDs."""
    layout = [("Alpha^Ann", "PAT-A", 2), ("Alpha^Ann", "PAT-A", 1), ("Beta^Bob", "PAT-B", 2)]
    uids = []
    seed = 0
    for name, pid, series_count in layout:
        study_uid = None
        for number in range(1, series_count + 1):
            seed += 1
            datasets = ct_series(2, rows=16, columns=16, seed=seed, study_uid=study_uid, patient_name=name,
                                 patient_id=pid, series_number=number)
            study_uid = datasets[0].StudyInstanceUID
            for ds in datasets:
                library.store_dataset(ds)
                uids.append(ds.SOPInstanceUID)
    return uids


@pytest.fixture
def media(library: Library, tmp_path: Path) -> tuple[Path, list[str]]:
    uids = two_patients(library)
    result = export(library, ExportRequest(uids, tmp_path / "disc", container="media"))
    assert result.written == 10 and result.excluded == ()
    return tmp_path / "disc", uids


def test_dicomdir_has_the_right_records_and_private_files(media: tuple[Path, list[str]]) -> None:
    root, _ = media
    assert record_counts(root / "DICOMDIR") == {"PATIENT": 2, "STUDY": 3, "SERIES": 5, "IMAGE": 10}
    names = [p.relative_to(root).as_posix() for p in root.rglob("*")]
    for name in names:  # PS3.10 file IDs: up to 8 upper-case letters, digits or _ per component
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", part) for part in name.split("/")), name
    assert not any("ALPHA" in n or "BETA" in n for n in names)
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert not [p for p in root.parent.iterdir() if ".partial" in p.name]


def test_dcmtk_reads_the_dicomdir_and_accepts_the_files(media: tuple[Path, list[str]], tmp_path: Path) -> None:
    require(DCMDUMP.exists() and DCMMKDIR.exists(), "DCMTK is not installed (apt-get install dcmtk)")
    root, _ = media
    dump = subprocess.run([str(DCMDUMP), "-q", str(root / "DICOMDIR")], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    kinds = re.findall(r"\(0004,1430\) CS \[(\w+)", dump.stdout)
    assert sorted(kinds) == sorted(["PATIENT"] * 2 + ["STUDY"] * 3 + ["SERIES"] * 5 + ["IMAGE"] * 10)
    # DCMTK builds its own DICOMDIR (General Purpose CD-R profile, the default) from the same files
    copy = tmp_path / "again"
    shutil.copytree(root, copy)
    (copy / "DICOMDIR").unlink()
    files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    made = subprocess.run([str(DCMMKDIR), "-Pgp", "+id", str(copy), "--output-file", str(copy / "DICOMDIR"), *files],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert record_counts(copy / "DICOMDIR") == {"PATIENT": 2, "STUDY": 3, "SERIES": 5, "IMAGE": 10}


def test_the_viewer_imports_exactly_the_instances(media: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, uids = media
    with Library.open(tmp_path / "other") as other:
        summary = import_paths(other, [root / "DICOMDIR"])
        assert summary.added == 10 and summary.failed == 0
        assert {r.sop_instance_uid for r in other.iter_instances()} == set(uids)


@pytest.mark.network
def test_orthanc_stores_the_files_the_dicomdir_references(media: tuple[Path, list[str]], tmp_path: Path) -> None:
    require(orthanc_available(), "Orthanc is not installed (apt-get install orthanc)")
    from viewer.library.importer import dicomdir_files

    root, uids = media
    files = dicomdir_files(root / "DICOMDIR")
    assert len(files) == 10
    with OrthancProcess(tmp_path / "orthanc") as orthanc:
        orthanc.upload(files)
        held = {orthanc.rest("GET", f"/instances/{i}/tags?simplify")["SOPInstanceUID"]
                for i in orthanc.rest("GET", "/instances")}
        assert held == set(uids)
        assert len(orthanc.rest("GET", "/patients")) == 2 and len(orthanc.rest("GET", "/series")) == 5


def _small_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv


def test_viewer_copy_runs_from_the_disc_launcher(library: Library, tmp_path: Path) -> None:
    """The copy mechanism on a small venv without the viewer (like an editable install): the package is copied
    in, and the launcher starts the copied interpreter on it (``--version`` answers before Qt is needed)."""
    venv = _small_venv(tmp_path)
    disc = tmp_path / "disc"
    disc.mkdir()
    launcher = copy_viewer(disc, prefix=venv)
    assert launcher == disc / LAUNCHER and os.access(launcher, os.X_OK)
    found = subprocess.run([str(disc / VIEWER_DIR / "bin" / "python"), "-c", "import viewer; print(viewer.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(disc / VIEWER_DIR)
    mounted = tmp_path / "mnt" / "cdrom"  # the disc mounted anywhere else
    mounted.parent.mkdir()
    shutil.move(disc, mounted)
    run = subprocess.run(["sh", str(mounted / LAUNCHER), "--version"], capture_output=True, text=True, timeout=60,
                         cwd="/")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("mifas-viewer ")


@pytest.mark.slow
def test_copied_installation_opens_the_disc(library: Library, tmp_path: Path) -> None:
    """The real installation (this venv, about 1.5 GB) copied onto media, started by the launcher offscreen: it
    imports the DICOMDIR into its private library, paints the first slice and saves a screenshot."""
    uids = two_patients(library)
    started = time.perf_counter()
    result = export(library, ExportRequest(uids, tmp_path / "disc", container="media", copy_viewer=True))
    seconds = time.perf_counter() - started
    disc = result.destination
    size = tree_size(disc / VIEWER_DIR)
    print(f"viewer copy: {size / 1e6:.0f} MB, export with copy {seconds:.1f} s")
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TMPDIR": str(tmp_path)}
    run = subprocess.run(["sh", str(disc / LAUNCHER), "--screenshot", str(shot)], capture_output=True, text=True,
                         timeout=300, env=env, cwd="/")
    assert run.returncode == 0, run.stderr
    assert shot.stat().st_size > 0
    assert not list(tmp_path.glob("mifas-disc-*"))  # its private library went with it
