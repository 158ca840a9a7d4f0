"""``mifas-pacs export`` as a user runs it: the installed console script in a subprocess, on a real library."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.pacs.conftest import ct_series
from tests.support import require
from viewer.library import Library

MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"


def mifas_pacs(*args: str, audit: Path) -> subprocess.CompletedProcess[str]:
    require(MIFAS_PACS.exists(), "mifas-pacs is not installed in the venv (pip install -e .)")
    env = {**os.environ, "MIFAS_AUDIT_DIR": str(audit)}
    return subprocess.run([str(MIFAS_PACS), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def held(tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A library folder holding one study of two series of 3 CT images."""
    folder = tmp_path / "library"
    study_uid = None
    series = []
    with Library.open(folder) as library:
        for number in (1, 2):
            datasets = ct_series(3, rows=16, columns=16, seed=number, study_uid=study_uid, series_number=number)
            study_uid = datasets[0].StudyInstanceUID
            series.append(datasets[0].SeriesInstanceUID)
            for ds in datasets:
                library.store_dataset(ds)
    assert study_uid is not None
    return folder, study_uid, series


def test_export_a_study_to_a_zip_and_a_series_to_a_folder(held: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    folder, study_uid, series = held
    audit = tmp_path / "audit"
    run = mifas_pacs("export", "--library", str(folder), "--study", study_uid, "--out", str(tmp_path / "s.zip"),
                     "--container", "zip", audit=audit)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    answer = json.loads(lines[0])
    assert answer == {"destination": str(tmp_path / "s.zip"), "written": 6, "excluded": []}
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        assert archive.testzip() is None and len(archive.namelist()) == 6
    log = "".join(p.read_text() for p in audit.glob("audit-*.log"))
    assert "110106" in log and study_uid in log  # DICOM "Export" (DCM 110106), naming the study

    run = mifas_pacs("export", "--library", str(folder), "--study", study_uid, "--series", series[1],
                     "--out", str(tmp_path / "one"), audit=audit)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["written"] == 3
    assert len(list((tmp_path / "one").rglob("*.dcm"))) == 3


def test_failures_are_one_sentence_with_the_exit_status(held: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    folder, study_uid, _ = held
    audit = tmp_path / "audit"
    (tmp_path / "taken").mkdir()
    run = mifas_pacs("export", "--library", str(folder), "--study", study_uid, "--out", str(tmp_path / "taken"),
                     audit=audit)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "already exists" in run.stderr
    run = mifas_pacs("export", "--library", str(folder), "--study", "not-a-uid", "--out", str(tmp_path / "x"),
                     audit=audit)
    assert run.returncode == 2 and "not a valid UID" in run.stderr
    run = mifas_pacs("export", "--library", str(folder), "--study", "1.2.3", "--out", str(tmp_path / "x"),
                     audit=audit)
    assert run.returncode == 1 and "does not hold that study" in run.stderr
    assert not (tmp_path / "x").exists()


def test_deidentified_export_with_an_option(held: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    pytest.importorskip("viewer.share.deidentify")
    import pydicom

    folder, study_uid, _ = held
    run = mifas_pacs("export", "--library", str(folder), "--study", study_uid, "--out", str(tmp_path / "anon"),
                     "--deidentify", "--option", "retain-modified-dates", audit=tmp_path / "audit")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["written"] == 6
    for path in (tmp_path / "anon").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID != study_uid
    run = mifas_pacs("export", "--library", str(folder), "--study", study_uid, "--out", str(tmp_path / "x"),
                     "--deidentify", "--option", "no-such-option", audit=tmp_path / "audit")
    assert run.returncode == 2 and "unknown --option" in run.stderr


def test_ctrl_c_cancels_between_two_files_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT once the first file is written (its progress line read from stderr): exit 130, a sentence, and neither
    the destination nor its partial folder left (viewer.share.interrupt.run_cancellable)."""
    require(MIFAS_PACS.exists(), "mifas-pacs is not installed in the venv (pip install -e .)")
    folder = tmp_path / "library"
    with Library.open(folder) as library:
        datasets = ct_series(400, rows=64, columns=64, seed=5)
        for ds in datasets:
            library.store_dataset(ds)
    env = {**os.environ, "MIFAS_AUDIT_DIR": str(tmp_path / "audit")}
    out = tmp_path / "exports"
    out.mkdir()
    # de-identified, so that each of the 400 files takes a few milliseconds: the signal lands long before the end
    process = subprocess.Popen([str(MIFAS_PACS), "export", "--library", str(folder), "--study",
                                datasets[0].StudyInstanceUID, "--out", str(out / "case"), "--deidentify",
                                "--progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        while first and not first.startswith("exported 1/"):
            first = process.stderr.readline()
        assert first.startswith("exported 1/400"), first
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stdout == "" and "cancel" in stderr.lower()
    assert list(out.iterdir()) == []  # no export, no .case.partial-XXXXXX
